"""Schema files, ``validate_arrays`` and ``validate_store`` on corrupted stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.skeleton import BONE_NAMES, FOOT_POINT_NAMES, JOINT_NAMES
from pipeline.store import (
    MIGRATIONS,
    SUPPORTED_MAJOR,
    SchemaError,
    available_versions,
    load_schema,
    validate_arrays,
    validate_store,
)
from test_store_writer import SMALL, build

SUBSETS = ("motion", "contact", "ground_reaction", "torque")
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
UNIT_SUFFIX = {"_m": "m", "_rad": "rad", "_s": "s", "_n": "N", "_nm": "N·m", "_kg": "kg", "_hz": "Hz"}

MOTION_FRAME = {"time_s", "frame_sequence", "root_pos_m", "joint_rot_aa_rad", "joint_pos_m", "marker_pos_m"}
MOTION_WINDOW = {
    "window_sequence", "window_start", "joint_pos_coef_m", "joint_pos_fit_rmse_m", "joint_rot_coef_rad",
    "joint_rot_fit_rmse_rad",
}
SEQ = {
    "seq_frame_offset", "seq_frame_count", "seq_window_offset", "seq_window_count", "seq_id", "seq_source",
    "seq_dataset", "seq_subject", "seq_name", "seq_path", "seq_sha256", "seq_split", "seq_gender",
    "seq_skeleton", "seq_height_m", "seq_mass_kg", "seq_ground_offset_m", "seq_source_fps_hz",
    "seq_duration_s", "seq_betas", "seq_bone_length_m",
}
GR_FRAME = {"contact", "grf_n", "grm_nm", "cop_m", "grf_total_n"}
GR_WINDOW = {"grf_coef_n", "grm_coef_nm", "grf_fit_rmse_n"}
EXPECTED = {
    "motion": MOTION_FRAME | MOTION_WINDOW | SEQ,
    "contact": MOTION_FRAME | MOTION_WINDOW | SEQ | {"contact"},
    "ground_reaction": MOTION_FRAME | MOTION_WINDOW | SEQ | GR_FRAME | GR_WINDOW,
    "torque": MOTION_FRAME | MOTION_WINDOW | SEQ | GR_FRAME | GR_WINDOW
    | {"joint_torque_nm", "torque_coef_nm", "torque_fit_rmse_nm"},
}


@pytest.mark.parametrize("subset", SUBSETS)
def test_schema_files(subset):
    raw = json.loads((SCHEMA_DIR / subset / "1.0.0.json").read_text(encoding="utf-8"))
    assert raw["name"] == subset and raw["version"] == "1.0.0"
    s = load_schema(subset, "1.0.0")
    assert s.version == "1.0.0" and s.major == 1
    assert available_versions(subset)[0] == "1.0.0"
    assert set(s.arrays) == EXPECTED[subset]
    assert all(a.required for a in s.arrays.values())
    assert set(s.required_attrs) == {"schema_name", "schema_version", "dynaset_version", "fps_hz",
                                     "frame_convention", "created_by"}
    # every dim used is declared, every coord dim has a coordinate
    used = {d for a in s.arrays.values() for d in a.dims}
    assert used == set(s.dims)
    assert set(s.coords) == set(s.dims) - {"frame", "window", "sequence", "beta"}
    for name, spec in s.arrays.items():
        assert spec.description and spec.units
        suffix = next((u for suf, u in UNIT_SUFFIX.items() if name.endswith(suf)), None)
        if suffix is not None and spec.dtype.startswith("float"):
            assert spec.units == suffix, name
        if spec.dtype.startswith("int") or spec.dtype.startswith("uint") or spec.dtype == "str":
            assert spec.units == "1", name
        if spec.dims[0] in ("frame", "window") and spec.dtype.startswith("float"):
            assert spec.dtype == "float32", name
    assert s.arrays["time_s"].units == "s" and s.arrays["seq_source_fps_hz"].dtype == "float64"
    assert s.arrays["seq_betas"].dims == ("sequence", "beta") and s.dims["beta"].size == 16
    assert s.dims["beta"].padded
    assert s.arrays["window_start"].dtype == "int64" and s.arrays["frame_sequence"].dtype == "int32"
    assert s.arrays["seq_split"].allowed_values == ("train", "val", "test")
    assert s.coords["joint"].values == JOINT_NAMES
    assert s.coords["bone"].values == BONE_NAMES
    assert s.coords["marker"].values is None and s.dims["marker"].size is None
    if "contact" in s.arrays:
        assert s.arrays["contact"].dtype == "uint8" and s.arrays["contact"].attrs["flag_values"] == [0, 1]
        assert s.coords["foot_point"].values == FOOT_POINT_NAMES
    if subset == "torque":
        assert s.coords["actuated_joint"].values == JOINT_NAMES[1:]
        assert s.arrays["torque_coef_nm"].dims == ("window", "linear_power", "actuated_joint", "xyz")
        assert s.arrays["joint_torque_nm"].units == "N·m"


@pytest.mark.parametrize("subset", SUBSETS)
def test_minor_versions_only_add_optional_arrays(subset):
    """Schema policy: a minor version keeps every array of the previous one (dtype, dims, units,
    required) and only adds optional arrays, so readers of the older version keep working."""
    versions = available_versions(subset)
    assert load_schema(subset).version == versions[-1]
    for old_v, new_v in zip(versions, versions[1:]):
        old, new = load_schema(subset, old_v), load_schema(subset, new_v)
        if new.major != old.major:
            continue
        for name, spec in old.arrays.items():
            got = new.arrays[name]
            assert (got.dtype, got.dims, got.units, got.required) == (spec.dtype, spec.dims, spec.units, spec.required)
        for name in set(new.arrays) - set(old.arrays):
            assert not new.arrays[name].required, (subset, new_v, name)
        assert set(old.required_attrs) <= set(new.required_attrs)


@pytest.mark.parametrize("subset", SUBSETS)
def test_latest_schema_is_the_supported_major(subset):
    """2.0.0: seq_sha256 renamed seq_source_sha256, optional seq_licence; everything else as in 1.x."""
    s = load_schema(subset)
    assert s.major == SUPPORTED_MAJOR[subset] == 2
    expected = (EXPECTED[subset] - {"seq_sha256"}) | {"seq_source_sha256"}
    assert {n for n, a in s.arrays.items() if a.required} == expected
    assert s.arrays["seq_source_sha256"].dtype == "str" and s.arrays["seq_source_sha256"].dims == ("sequence",)
    lic = s.arrays["seq_licence"]
    assert (lic.dtype, lic.dims, lic.units, lic.required) == ("str", ("sequence",), "1", False)
    assert "seq_sha256" not in s.arrays


@pytest.mark.parametrize("subset", SUBSETS)
def test_every_major_has_a_migration_from_the_previous(subset):
    """Schema policy: major k > 1 comes with a registered migration from k - 1 that lands on the
    first k.x version, and a pure-rename migration describes the layout change exactly: every array
    of the last (k-1).x version is in k.0.0 under its new name with the same dtype, dims, units and
    required flag, and arrays new in k.0.0 are optional."""
    versions = available_versions(subset)
    majors = sorted({load_schema(subset, v).major for v in versions})
    assert majors == list(range(1, SUPPORTED_MAJOR[subset] + 1))
    for k in majors[1:]:
        step = MIGRATIONS[(subset, k - 1)]
        first_new = next(v for v in versions if v.startswith(f"{k}."))
        last_old = [v for v in versions if v.startswith(f"{k - 1}.")][-1]
        assert step.to_version == first_new
        old, new = load_schema(subset, last_old), load_schema(subset, first_new)
        renames = step.rename_map
        assert set(renames) <= set(old.arrays) and not set(renames) & set(new.arrays)
        if not step.is_pure_rename:
            continue
        for name, spec in old.arrays.items():
            got = new.arrays[renames.get(name, name)]
            assert (got.dtype, got.dims, got.units, got.required) == (spec.dtype, spec.dims, spec.units, spec.required)
        carried = {renames.get(n, n) for n in old.arrays}
        assert all(not new.arrays[n].required for n in set(new.arrays) - carried), (subset, k)
        assert set(old.required_attrs) <= set(new.required_attrs)
    assert (subset, SUPPORTED_MAJOR[subset]) not in MIGRATIONS  # nothing migrates past what we write


def test_schemas_nest():
    """Each subset extends the previous one with the same definitions (first versions); in 2.0.0
    with the same dtype, dims, units and required flag (simulated subsets reword descriptions)."""
    chain = [load_schema(s, "1.0.0") for s in SUBSETS]
    for small, big in zip(chain, chain[1:]):
        for name, spec in small.arrays.items():
            assert big.arrays[name] == spec, (small.name, big.name, name)
        for name, dim in small.dims.items():
            assert big.dims[name] == dim
    chain = [load_schema(s, "2.0.0") for s in SUBSETS]
    for small, big in zip(chain, chain[1:]):
        for name, a in small.arrays.items():
            b = big.arrays[name]
            assert (a.dtype, a.dims, a.units, a.required) == (b.dtype, b.dims, b.units, b.required), (big.name, name)
        assert all(big.dims[name] == dim for name, dim in small.dims.items())


def test_unknown_schema_or_version():
    with pytest.raises(SchemaError, match="unknown schema 'kinematics'"):
        load_schema("kinematics")
    with pytest.raises(SchemaError, match="no version '9.0.0'"):
        load_schema("motion", "9.0.0")
    assert issubclass(SchemaError, ValueError)


def _good(n=10, w=3, m=5):
    return {
        "time_s": np.arange(n, dtype=np.float64),
        "joint_pos_m": np.zeros((n, 24, 3), np.float32),
        "marker_pos_m": np.zeros((n, m, 3)),
        "window_start": np.arange(w, dtype=np.int32),
        "joint_pos_coef_m": np.zeros((w, 4, 24, 3), np.float32),
        "seq_betas": np.zeros((1, 16)),
        "seq_id": np.array(["a"], dtype=object),
        "seq_gender": np.array(["male"]),
    }


def test_validate_arrays():
    s = load_schema("motion")
    assert validate_arrays(s, _good(), {"frame": 10}) == []
    assert validate_arrays(s, {"contact": np.zeros((3, 4))}, allow_extra=True) == []  # not motion: ignored

    def problems(**changes):
        return validate_arrays(s, {**_good(), **changes}, {"frame": 10, "marker": 5})

    assert any("dim joint has size 23, schema fixes 24" in p for p in problems(joint_pos_m=np.zeros((10, 23, 3))))
    assert any("rank 2" in p for p in problems(joint_pos_m=np.zeros((10, 72))))
    assert any("dim frame has size 9, expected 10" in p for p in problems(time_s=np.zeros(9)))
    assert any("dim marker has size 4, expected 5" in p for p in problems(marker_pos_m=np.zeros((10, 4, 3))))
    assert any("float64 cannot be stored as int64" in p for p in problems(window_start=np.zeros(3)))
    assert any("cannot be stored as str" in p for p in problems(seq_id=np.array([3])))
    assert any("cannot be stored as str" in p for p in problems(seq_id=np.array([b"x", None], dtype=object)[:1]))
    assert any("cannot be stored as float32" in p for p in problems(time_s=np.array(["1"] * 10)))
    # free dims must agree across arrays even without dim_sizes
    free = validate_arrays(s, {**_good(), "joint_rot_coef_rad": np.zeros((4, 4, 24, 3))})
    assert any("dim window has size 4, expected 3 (from window_start)" in p for p in free)
    assert validate_arrays(s, {}, required=["time_s"]) == ["missing array time_s"]
    assert validate_arrays(s, {"bogus": np.zeros(1)}, allow_extra=False) == [
        f"unknown array bogus (not in schema motion {s.version})"
    ]
    # widening/narrowing inside a kind, ints and bools into floats/uint8 are fine
    assert validate_arrays(load_schema("contact"), {"contact": np.zeros((2, 4), bool), "time_s": np.arange(2)}) == []


# ---------------------------------------------------------------------------------------------
# validate_store on corrupted copies of a valid store


@pytest.fixture(scope="module")
def valid_store(tmp_path_factory) -> Path:
    path, _, _ = build(tmp_path_factory.mktemp("valid"), "contact", SMALL, lengths=(700, 37, 300))
    assert validate_store(path) == []
    return path


@pytest.fixture
def store(valid_store, tmp_path) -> Path:
    dst = tmp_path / "copy.zarr"
    shutil.copytree(valid_store, dst)
    return dst


def _rw(path: Path) -> zarr.Group:
    return zarr.open_group(str(path), mode="r+", use_consolidated=False)


def test_corrupt_offsets(store):
    _rw(store)["seq_frame_offset"][1] = 701
    assert any("seq_frame_offset is not the cumulative sum" in p and "sequence 1: 701 != 700" in p
               for p in validate_store(store))


def test_corrupt_counts(store):
    g = _rw(store)
    g["seq_window_count"][2] = 10
    assert any("seq_window_count sums to" in p for p in validate_store(store))


def test_corrupt_frame_sequence(store):
    _rw(store)["frame_sequence"][720] = 0
    assert validate_store(store) == ["frame_sequence[720] = 0, offsets say 1"]


def test_corrupt_window_start(store):
    _rw(store)["window_start"][0] = 900
    assert validate_store(store) == ["window_start[0] = 900 lies outside sequence 0"]


def test_corrupt_window_sequence(store):
    _rw(store)["window_sequence"][-1] = 0
    assert any(p.startswith("window_sequence[") for p in validate_store(store))


def test_missing_array(store):
    shutil.rmtree(store / "contact")
    assert validate_store(store) == ["missing array contact"]


def test_bad_attrs(store):
    g = _rw(store)
    del g.attrs["fps_hz"]
    g["joint_pos_m"].attrs["units"] = "mm"
    problems = validate_store(store)
    assert "missing group attr fps_hz" in problems
    assert "joint_pos_m: units attr 'mm', expected 'm'" in problems


def test_bad_split_and_contact(store):
    g = _rw(store)
    g["seq_split"][1] = "holdout"
    g["contact"][800, 2] = 2
    problems = validate_store(store)
    assert "seq_split has values ['holdout'] outside ['train', 'val', 'test']" in problems
    assert "contact frame 800 has values outside flag_values [0, 1]" in problems


def test_bad_dims_and_dtype(store):
    g = _rw(store)
    del g["root_pos_m"]
    g.create_array("root_pos_m", shape=(1037, 3), chunks=(64, 3), dtype="float64",
                   dimension_names=["frame", "xyz2"], attributes={"units": "m"})
    problems = validate_store(store)
    assert problems == ["root_pos_m: dimension_names ('frame', 'xyz2'), expected ('frame', 'xyz')"]
    del g["root_pos_m"]
    g.create_array("root_pos_m", shape=(1037, 3), chunks=(64, 3), dtype="float64",
                   dimension_names=["frame", "xyz"], attributes={"units": "m"})
    assert validate_store(store) == ["root_pos_m: dtype float64, expected float32"]


def test_bad_coordinate_and_schema_name(store, tmp_path):
    g = _rw(store)
    g["xyz"][2] = "w"
    assert any("coordinate xyz values" in p for p in validate_store(store))
    g.attrs["schema_name"] = "kinematics"
    assert any("unknown schema 'kinematics'" in p for p in validate_store(store))
    assert validate_store(tmp_path / "nothing.zarr")[0].startswith("cannot open")
