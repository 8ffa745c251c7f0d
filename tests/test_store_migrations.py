"""Schema evolution: read-time upgrade, ``migrate_store``, the registry and ``dynaset migrate``, on
real stores written by dynaset before 2.0.0 (tests/fixtures/stores, see make_old_stores.py)."""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.store import (
    MIGRATIONS,
    SUPPORTED_MAJOR,
    Migration,
    SchemaError,
    SchemaUpgradeWarning,
    load_schema,
    migrate_store,
    migration_path,
    open_store,
    plan_store,
    stage_sequence,
    validate_store,
    write_store,
)
from pipeline.store import migrations as mig
from test_store_writer import ATTRS, COORDS, SMALL, synthetic_arrays, tree_bytes

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stores"
OLD = {"motion": "motion-1.0.0.zarr", "ground_reaction": "ground_reaction-1.1.0.zarr"}
RENAMED = {"seq_sha256": "seq_source_sha256"}


@pytest.fixture
def old(tmp_path) -> dict[str, Path]:
    """Fresh copies of the committed old stores."""
    return {s: Path(shutil.copytree(FIXTURES / name, tmp_path / name)) for s, name in OLD.items()}


def _group(path: Path) -> zarr.Group:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_group(str(path), mode="r", use_consolidated=False)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    g = _group(path)
    return {n: np.asarray(g[n][...]) for n in g.array_keys()}


def _assert_same_values(before: dict[str, np.ndarray], after: dict[str, np.ndarray], renames=RENAMED):
    assert set(after) == {renames.get(n, n) for n in before}
    for name, value in before.items():
        got = after[renames.get(name, name)]
        assert got.dtype == value.dtype and got.shape == value.shape, name
        if value.dtype.kind == "f":
            np.testing.assert_array_equal(got, value, err_msg=name)  # NaN == NaN here
        else:
            assert got.tolist() == value.tolist(), name


def _set_version(path: Path, version: str) -> None:
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    g.attrs["schema_version"] = version
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# The committed stores really are old


def test_fixtures_are_old_dynaset_stores():
    for subset, name in OLD.items():
        path = FIXTURES / name
        attrs = dict(_group(path).attrs)
        assert attrs["schema_name"] == subset and attrs["schema_version"] == name.split("-")[1][: -len(".zarr")]
        assert validate_store(path) == []
        names = set(_group(path).array_keys())
        assert "seq_sha256" in names and "seq_source_sha256" not in names and "seq_licence" not in names
        assert len(_group(path)["seq_id"][...]) == 3
    # the ground_reaction store carries some of 1.1.0's optional simulation arrays
    assert {"mpjpe_m", "foot_contact", "seq_pass"} <= set(_group(FIXTURES / OLD["ground_reaction"]).array_keys())
    files = [p for p in FIXTURES.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000


# ---------------------------------------------------------------------------------------------
# Reading old stores


@pytest.mark.parametrize("subset", list(OLD))
def test_reader_presents_old_major_in_current_layout(subset):
    path = FIXTURES / OLD[subset]
    raw = _arrays(path)
    with pytest.warns(SchemaUpgradeWarning, match=rf"reading it as 2\.0\.0 \(renamed on read: seq_sha256 -> "
                      rf"seq_source_sha256\)\. Upgrade it on disk with: dynaset migrate {path}"):
        ds = open_store(path)
    assert ds.attrs["schema_version"] == "2.0.0" and ds.attrs["stored_schema_version"] == raw_version(path)
    assert "seq_sha256" not in ds.variables
    assert ds["seq_source_sha256"].values.tolist() == raw["seq_sha256"].tolist()
    assert all(len(h) == 64 for h in ds["seq_source_sha256"].values.tolist())
    np.testing.assert_array_equal(ds["joint_pos_m"].values, raw["joint_pos_m"])
    assert "seq_licence" not in ds.variables  # optional in 2.0.0, never invented
    if subset == "ground_reaction":  # 1.1.0's optional arrays come through
        np.testing.assert_array_equal(ds["mpjpe_m"].values, raw["mpjpe_m"])
        assert ds["seq_pass"].values.tolist() == [0, 0, 0]


def raw_version(path: Path) -> str:
    return str(_group(path).attrs["schema_version"])


def test_open_release_and_build_reader_read_old_stores(old):
    from pipeline.loaders import open_release
    from pipeline.quality.collect import BuildReader

    raw = _arrays(old["motion"])
    with pytest.warns(SchemaUpgradeWarning):
        ds, index = open_release(old["motion"], subset="motion", split="train")
    assert "seq_source_sha256" in index.columns and "seq_sha256" not in index.columns
    assert set(index["seq_source_sha256"]) <= set(raw["seq_sha256"].tolist()) and len(index) > 0
    with pytest.warns(SchemaUpgradeWarning):
        reader = BuildReader(old["motion"].parent)
    # simulated passes of the ground_reaction store are keyed <seq_id>#pass<k>, apart from the motions
    assert any("#pass" in s for s in reader.seq_ids)
    sid = next(s for s in reader.seq_ids if s in raw["seq_id"].tolist())
    _, values = reader.sequence(sid)
    i = raw["seq_id"].tolist().index(sid)
    assert values["seq_source_sha256"] == raw["seq_sha256"][i] and "seq_sha256" not in values


def test_minor_older_store_without_optional_arrays_opens_and_migrates(tmp_path):
    """ground_reaction 1.0.0 (before the optional simulation arrays) opens, and migrates to a valid
    2.0.0 store without them."""
    frame, window, values = synthetic_arrays("amass/CMU/01/seq_0", 120, "ground_reaction")
    values = {**values, "seq_sha256": values["seq_source_sha256"]}
    staged = stage_sequence(tmp_path / "staging", "amass/CMU/01/seq_0", frame, window, values)
    path = write_store(plan_store("ground_reaction", [staged], ATTRS, COORDS, SMALL, schema_version="1.0.0"),
                       tmp_path / "ground_reaction.zarr")
    assert raw_version(path) == "1.0.0" and "mpjpe_m" not in _group(path)
    with pytest.warns(SchemaUpgradeWarning):
        ds = open_store(path)
    assert "mpjpe_m" not in ds and ds["seq_source_sha256"].values.tolist() == [values["seq_sha256"]]
    before = _arrays(path)
    r = migrate_store(path)
    assert (r.from_version, r.to_version) == ("1.0.0", "2.0.0") and validate_store(path) == []
    _assert_same_values(before, _arrays(path))


# ---------------------------------------------------------------------------------------------
# migrate_store


@pytest.mark.parametrize("subset", list(OLD))
def test_migrate_in_place(old, subset):
    path = old[subset]
    version = raw_version(path)
    before, files_before = _arrays(path), tree_bytes(path)
    r = migrate_store(path)
    assert r.changed and not r.dry_run and r.dst == path
    assert (r.subset, r.from_version, r.to_version) == (subset, version, "2.0.0")
    assert r.steps == (f"{subset} 1.x -> 2.0.0: rename seq_sha256 -> seq_source_sha256",)
    assert validate_store(path) == []
    _assert_same_values(before, _arrays(path))
    # chunk files are untouched (linked, not rewritten); only metadata files were copied
    files_after = tree_bytes(path)
    chunks = {k: v for k, v in files_before.items() if not k.endswith("zarr.json")}
    moved = {k.replace("seq_sha256/", "seq_source_sha256/", 1): v for k, v in chunks.items()}
    assert {k: v for k, v in files_after.items() if not k.endswith("zarr.json")} == moved
    assert r.linked_files == len(chunks) and r.copied_files == len(files_before) - len(chunks)
    # attrs and history
    attrs = dict(_group(path).attrs)
    assert attrs["schema_version"] == "2.0.0" and attrs["dynaset_version"] == dict(_group(FIXTURES / OLD[subset]).attrs)["dynaset_version"]
    (h,) = attrs["migrated_from"]
    assert h["from"] == version and h["to"] == "2.0.0" and h["renamed"] == RENAMED and "sha256" in h["reason"]
    # consolidated metadata was refreshed: plain xarray (consolidated read) sees the new name, silently
    meta = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert "seq_source_sha256" in meta and "seq_sha256" not in meta
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path)
        again = open_store(path)  # current major: no SchemaUpgradeWarning
    assert ds["seq_source_sha256"].values.tolist() == before["seq_sha256"].tolist()
    assert again.attrs["schema_version"] == "2.0.0" and "stored_schema_version" not in again.attrs
    assert _leftovers(path.parent) == []
    # migrating again is a no-op
    r2 = migrate_store(path)
    assert not r2.changed and r2.from_version == r2.to_version == "2.0.0"
    assert tree_bytes(path) == files_after


def test_migrate_to_new_location_leaves_source_untouched(old, tmp_path):
    src = old["ground_reaction"]
    files_before = tree_bytes(src)
    dst = tmp_path / "new" / "ground_reaction.zarr"
    r = migrate_store(src, dst)
    assert r.dst == dst and r.linked_files == 0 and r.copied_files == len(files_before)
    assert tree_bytes(src) == files_before and raw_version(src) == "1.1.0"
    assert validate_store(dst) == [] and raw_version(dst) == "2.0.0"
    _assert_same_values(_arrays(src), _arrays(dst))
    assert _leftovers(dst.parent) == []
    with pytest.raises(SchemaError, match="already exists"):
        migrate_store(src, dst)


def test_dry_run_changes_nothing(old):
    path = old["motion"]
    files = tree_bytes(path)
    r = migrate_store(path, dry_run=True)
    assert r.dry_run and r.changed and r.to_version == "2.0.0" and r.seconds == 0
    assert tree_bytes(path) == files


def test_a_failing_migration_leaves_the_store_as_it_was(old, monkeypatch):
    path = old["motion"]
    files = tree_bytes(path)

    def crash(group):
        """crash half way"""
        assert "seq_source_sha256" in set(group.array_keys())  # the rename already happened
        raise RuntimeError("power cut")

    monkeypatch.setitem(MIGRATIONS, ("motion", 1), replace(MIGRATIONS[("motion", 1)], transform=crash))
    with pytest.raises(RuntimeError, match="power cut"):
        migrate_store(path)
    assert tree_bytes(path) == files and _leftovers(path.parent) == []

    def drop_required(group):
        """delete a required array"""
        del group["seq_split"]

    monkeypatch.setitem(MIGRATIONS, ("motion", 1), replace(MIGRATIONS[("motion", 1)], transform=drop_required))
    with pytest.raises(SchemaError, match=r"migrated .* \(motion 1\.0\.0 -> 2\.0\.0\) is invalid: missing array seq_split"):
        migrate_store(path)
    assert tree_bytes(path) == files and _leftovers(path.parent) == []
    assert _group(path)["seq_split"].shape == (3,)  # hard links did not leak the deletion


# ---------------------------------------------------------------------------------------------
# Version gates and the registry


def test_old_reader_refuses_the_migrated_store(old, monkeypatch):
    path = old["motion"]
    migrate_store(path)
    monkeypatch.setitem(SUPPORTED_MAJOR, "motion", 1)  # a dynaset from before 2.0.0
    with pytest.raises(SchemaError, match=rf"store {path} has schema motion 2\.0\.0, newer than this dynaset "
                       r".* reads \(major 1\); upgrade dynaset to read it"):
        open_store(path)
    with pytest.raises(SchemaError, match="there are no downgrades"):
        migrate_store(path)


def test_no_migration_path_is_refused(old):
    path = old["motion"]
    _set_version(path, "0.9.0")
    with pytest.raises(SchemaError, match=r"schema motion 0\.9\.0; this dynaset reads major 2: no migration "
                       r"registered from motion major 0 to 1"):
        open_store(path)
    with pytest.raises(SchemaError, match=rf"cannot migrate {path}: no migration registered from motion major 0 to 1"):
        migrate_store(path)
    with pytest.raises(SchemaError, match="no migration registered from torque major 0"):
        migration_path("torque", "0.1.0")


def test_non_rename_migration_is_not_applied_on_read(old, monkeypatch):
    path = old["motion"]

    def add_attr(group):
        """add an attribute"""
        group.attrs["touched"] = True

    monkeypatch.setitem(MIGRATIONS, ("motion", 1), replace(MIGRATIONS[("motion", 1)], transform=add_attr))
    with pytest.raises(SchemaError, match=rf"schema motion 1\.0\.0; this dynaset reads major 2\. "
                       rf"Migrate it with: dynaset migrate {path}$"):
        open_store(path)
    r = migrate_store(path)
    assert r.steps == ("motion 1.x -> 2.0.0: rename seq_sha256 -> seq_source_sha256; add an attribute",)
    assert dict(_group(path).attrs)["touched"] is True
    assert open_store(path).attrs["schema_version"] == "2.0.0"


def test_register_refuses_bad_migrations(monkeypatch):
    monkeypatch.setattr(mig, "MIGRATIONS", dict(MIGRATIONS))
    with pytest.raises(SchemaError, match="already registered"):
        mig.register(Migration("motion", 1, "2.0.0", "again"))
    with pytest.raises(SchemaError, match="must go to major 2"):
        mig.register(Migration("contact", 1, "3.0.0", "skips a major"))
    with pytest.raises(SchemaError, match="unknown schema"):
        mig.register(Migration("kinematics", 1, "2.0.0", "no such subset"))


def test_chained_renames_compose(monkeypatch):
    """A later 2 -> 3 rename of the renamed array reads a 1.x store's array under its newest name."""
    monkeypatch.setitem(SUPPORTED_MAJOR, "motion", 3)
    monkeypatch.setitem(MIGRATIONS, ("motion", 2), Migration(
        "motion", 2, "3.0.0", "test", renames=(("seq_source_sha256", "seq_source_digest"), ("seq_name", "seq_title"))))
    steps = migration_path("motion", "1.2.0")
    assert [s.to_version for s in steps] == ["2.0.0", "3.0.0"]
    assert dict(mig.read_renames(steps)) == {"seq_sha256": "seq_source_digest", "seq_name": "seq_title"}
    assert migration_path("motion", "3.0.0") == ()


def test_rename_array_in_a_non_local_store():
    g = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    g.create_array("a", shape=(300,), chunks=(64,), dtype="int32", dimension_names=["sequence"],
                   attributes={"units": "1"})
    g["a"][:] = np.arange(300)
    mig.rename_array(g, "a", "b")
    assert set(g.array_keys()) == {"b"}
    np.testing.assert_array_equal(g["b"][:], np.arange(300))
    assert g["b"].attrs["units"] == "1" and g["b"].metadata.dimension_names == ("sequence",)
    with pytest.raises(SchemaError, match="has no array a"):
        mig.rename_array(g, "a", "c")


# ---------------------------------------------------------------------------------------------
# dynaset migrate


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dynaset")
    mig.add_migrate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_migrate_folder(old, tmp_path, capsys):
    folder = old["motion"].parent
    files = {s: tree_bytes(p) for s, p in old.items()}
    assert _cli(["migrate", str(folder), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would    {old['ground_reaction']}: ground_reaction 1.1.0 -> 2.0.0" in out
    assert f"would    {old['motion']}: motion 1.0.0 -> 2.0.0" in out
    assert "rename seq_sha256 -> seq_source_sha256" in out
    assert {s: tree_bytes(p) for s, p in old.items()} == files

    out_dir = tmp_path / "migrated"
    assert _cli(["migrate", str(old["motion"]), "--out", str(out_dir)]) == 0
    assert validate_store(out_dir / old["motion"].name) == [] and tree_bytes(old["motion"]) == files["motion"]
    assert _cli(["migrate", str(old["motion"]), "--out", str(out_dir)]) == 1
    assert "FAILED" in capsys.readouterr().out

    assert _cli(["migrate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.count("migrated ") == 2 and all(validate_store(p) == [] for p in old.values())
    assert _cli(["migrate", *map(str, old.values())]) == 0
    assert capsys.readouterr().out.count("current  ") == 2
    assert _cli(["migrate", str(tmp_path / "nothing.zarr")]) == 1
    assert "not a zarr v3 store" in capsys.readouterr().out


def test_current_writer_output_needs_no_migration(tmp_path):
    frame, window, values = synthetic_arrays("amass/CMU/01/seq_0", 50, "motion")
    values["seq_licence"] = "CC0-1.0"
    staged = stage_sequence(tmp_path / "staging", "amass/CMU/01/seq_0", frame, window, values)
    path = write_store(plan_store("motion", [staged], ATTRS, COORDS, SMALL), tmp_path / "motion.zarr")
    assert raw_version(path) == load_schema("motion").version and load_schema("motion").major == 2
    assert not migrate_store(path).changed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = open_store(path)
    assert ds["seq_licence"].values.tolist() == ["CC0-1.0"]


def test_full_check_scans_the_data(old):
    """A rename-only migration validates the structure; --full-check also scans the index."""
    path = old["motion"]
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    g["frame_sequence"][5] = 2  # corrupt the index (sequence 0 owns frame 5)
    files = tree_bytes(path)
    assert validate_store(path, index=False) == [] and validate_store(path) != []
    with pytest.raises(SchemaError, match=r"is invalid: frame_sequence\[5\] = 2, offsets say 0"):
        migrate_store(path, full_check=True)
    assert tree_bytes(path) == files
    assert _cli(["migrate", str(path), "--full-check"]) == 1
    assert migrate_store(path).changed  # structure only: the data are carried over as they are
    assert validate_store(path, index=False) == [] and raw_version(path) == "2.0.0"
