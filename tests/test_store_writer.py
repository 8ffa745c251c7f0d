"""Staging + region-parallel atomic writer: round trips, shard-aligned regions, parallel = serial,
crash safety. ``stage_synthetic``/``build`` are shared with the other store tests."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import multiprocessing
import pickle
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.skeleton import BONE_NAMES
from pipeline.store import (
    Chunking,
    SchemaError,
    create_store,
    finalize_store,
    load_schema,
    load_staged,
    plan_store,
    stage_sequence,
    temporary_path,
    validate_store,
    write_frame_region,
    write_store,
    write_window_region,
)
from pipeline.store import writer as writer_mod

MARKERS = ("C7", "CLAV", "LASI", "RASI", "LHEE")
ATTRS = {"fps_hz": 60.0, "frame_convention": "world: z up, metres; joint 0 global axis-angle, others local"}
COORDS = {"marker": MARKERS}
WINDOW = 8  # frames per synthetic window
SMALL = Chunking(frame_chunk=64, frame_shard=256, window_chunk=16, window_shard=64, shards_per_region=2)
SUBSET_FRAME_EXTRA = {
    "motion": (),
    "contact": ("contact",),
    "ground_reaction": ("contact", "grf_n", "grm_nm", "cop_m", "grf_total_n"),
    "torque": ("contact", "grf_n", "grm_nm", "cop_m", "grf_total_n", "joint_torque_nm"),
}


def synthetic_arrays(key: str, n: int, subset: str = "motion", seed: int = 0) -> tuple[dict, dict, dict]:
    """(frame_arrays, window_arrays, sequence_values) of a smooth random motion of ``n`` frames."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / ATTRS["fps_hz"]
    phase = rng.uniform(0, 2 * np.pi, size=(1, 24, 3))
    freq = rng.uniform(0.3, 2.0, size=(1, 24, 3))
    joint_pos = np.sin(2 * np.pi * freq * t[:, None, None] + phase) * 0.3 + rng.normal(0, 1e-3, (n, 24, 3))
    frame = {
        "time_s": t,  # float64 on purpose: the writer casts to float32
        "root_pos_m": joint_pos[:, 0].copy(),
        "joint_rot_aa_rad": np.cos(2 * np.pi * freq * t[:, None, None] + phase) * 0.5,
        "joint_pos_m": joint_pos.astype(np.float32),
        "marker_pos_m": joint_pos[:, : len(MARKERS)] + 0.05,
    }
    if "contact" in SUBSET_FRAME_EXTRA[subset]:
        frame["contact"] = (rng.random((n, 4)) < 0.5)  # bool: stored as uint8 0/1
    if "grf_n" in SUBSET_FRAME_EXTRA[subset]:
        frame["grf_n"] = rng.normal(0, 300, (n, 2, 3)).astype(np.float32)
        frame["grm_nm"] = rng.normal(0, 10, (n, 2, 3)).astype(np.float32)
        frame["cop_m"] = rng.normal(0, 0.1, (n, 2, 3)).astype(np.float32)
        frame["grf_total_n"] = frame["grf_n"].sum(axis=1)
    if subset == "torque":
        frame["joint_torque_nm"] = rng.normal(0, 20, (n, 23, 3)).astype(np.float32)
    starts = np.arange(0, n, WINDOW, dtype=np.int64)
    nw = starts.size
    window = {
        "window_start": starts,
        "joint_pos_coef_m": rng.normal(size=(nw, 4, 24, 3)).astype(np.float32),
        "joint_pos_fit_rmse_m": rng.random(nw).astype(np.float32),
        "joint_rot_coef_rad": rng.normal(size=(nw, 4, 24, 3)).astype(np.float32),
        "joint_rot_fit_rmse_rad": rng.random(nw).astype(np.float32),
    }
    if subset in ("ground_reaction", "torque"):
        window["grf_coef_n"] = rng.normal(size=(nw, 4, 2, 3)).astype(np.float32)
        window["grm_coef_nm"] = rng.normal(size=(nw, 4, 2, 3)).astype(np.float32)
        window["grf_fit_rmse_n"] = rng.random(nw).astype(np.float32)
    if subset == "torque":
        window["torque_coef_nm"] = rng.normal(size=(nw, 2, 23, 3)).astype(np.float32)
        window["torque_fit_rmse_nm"] = rng.random(nw).astype(np.float32)
    source, dataset, subject, name = key.split("/")
    values = {
        "seq_id": key, "seq_source": source, "seq_dataset": dataset, "seq_subject": subject,
        "seq_name": name, "seq_path": f"{dataset}/{subject}/{name}_poses.npz",
        "seq_source_sha256": hashlib.sha256(key.encode()).hexdigest(), "seq_split": ("train", "val", "test")[seed % 3],
        "seq_gender": "female", "seq_skeleton": "anthropometric", "seq_height_m": 1.6 + 0.01 * seed,
        "seq_mass_kg": 60.0 + seed, "seq_ground_offset_m": -0.01 * seed, "seq_source_fps_hz": 120.0,
        "seq_duration_s": (n - 1) / ATTRS["fps_hz"],
        "seq_betas": rng.normal(size=10).astype(np.float32),  # 10 < 16: NaN-padded by the writer
        "seq_bone_length_m": rng.uniform(0.05, 0.5, size=len(BONE_NAMES)),
    }
    return frame, window, values


def stage_synthetic(root: Path, key: str, n: int, subset: str = "motion", seed: int = 0):
    """Stage a synthetic sequence; returns (StagedSequence, (frame, window, values))."""
    arrays = synthetic_arrays(key, n, subset, seed)
    return stage_sequence(root, key, *arrays), arrays


LENGTHS = (5000, 37, 3000)


def build(tmp_path: Path, subset: str = "motion", chunking: Chunking | None = None, lengths=LENGTHS):
    """Stage ``lengths`` synthetic sequences and write a store; returns (path, plan, raw arrays)."""
    staged, raw = [], []
    for i, n in enumerate(lengths):
        s, arrays = stage_synthetic(tmp_path / "staging", f"amass/CMU/{i:02d}/seq_{i}", n, subset, seed=i)
        staged.append(s)
        raw.append(arrays)
    plan = plan_store(subset, staged, ATTRS, COORDS, chunking)
    path = write_store(plan, tmp_path / f"{subset}.zarr")
    return path, plan, raw


def tree_bytes(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------


def test_staging_roundtrip_and_mmap(tmp_path):
    s, (frame, window, values) = stage_synthetic(tmp_path, "amass/CMU/01/01_01", 100, "contact")
    assert s.n_frames == 100 and s.n_windows == 13
    assert s.subsets == ("motion", "contact")
    again = load_staged(s.path)
    assert again == s
    jp = again.frame_array("joint_pos_m")
    assert isinstance(jp, np.memmap) and not jp.flags.writeable
    np.testing.assert_array_equal(jp, frame["joint_pos_m"])
    seqv = again.sequence_values()
    assert seqv["seq_id"] == "amass/CMU/01/01_01" and seqv["seq_source_fps_hz"] == 120.0
    np.testing.assert_array_equal(seqv["seq_betas"], values["seq_betas"])
    # restaging replaces atomically, no leftovers
    s2, _ = stage_synthetic(tmp_path, "amass/CMU/01/01_01", 50, "motion")
    assert s2.path == s.path and load_staged(s.path).n_frames == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == [s.path.name]


def test_staging_rejects_inconsistent_and_derived(tmp_path):
    frame, window, values = synthetic_arrays("a/b/c/d", 20)
    with pytest.raises(SchemaError, match="disagree"):
        stage_sequence(tmp_path, "k", {**frame, "time_s": frame["time_s"][:10]}, window, values)
    with pytest.raises(SchemaError, match="computed by the writer"):
        stage_sequence(tmp_path, "k", {**frame, "frame_sequence": np.zeros(20, np.int32)}, window, values)
    with pytest.raises(SchemaError, match="lacks required"):
        stage_sequence(tmp_path, "k", frame, window, values, subsets=("torque",))
    assert list(tmp_path.iterdir()) == []


def test_plan_regions_are_shard_aligned(tmp_path):
    staged = [stage_synthetic(tmp_path, f"a/b/c/{i}", n, seed=i)[0] for i, n in enumerate(LENGTHS)]
    plan = plan_store("motion", staged, ATTRS, COORDS, SMALL)
    assert plan.frame_offsets == (0, 5000, 5037) and plan.n_frames == 8037
    assert plan.window_counts == (625, 5, 375) and plan.window_offsets == (0, 625, 630)
    size = SMALL.frame_shard * SMALL.shards_per_region
    assert plan.frame_regions[0] == (0, size) and plan.frame_regions[-1][1] == 8037
    assert all(a % SMALL.frame_shard == 0 for a, _ in plan.frame_regions)
    assert all(b1 == a2 for (_, b1), (a2, _) in zip(plan.frame_regions, plan.frame_regions[1:]))
    assert all(a % SMALL.window_shard == 0 for a, _ in plan.window_regions)
    assert pickle.loads(pickle.dumps(plan)) == plan
    default = plan_store("motion", staged, ATTRS, COORDS)
    assert default.frame_regions == ((0, 8037),) and default.chunking == Chunking()
    with pytest.raises(SchemaError, match="marker"):
        plan_store("motion", staged, ATTRS, {})
    with pytest.raises(SchemaError, match="frame_convention"):
        plan_store("motion", staged, {"fps_hz": 60.0}, COORDS)
    with pytest.raises(SchemaError, match="not staged for subset contact"):
        plan_store("contact", staged, ATTRS, COORDS)
    with pytest.raises(SchemaError, match="differs from the schema"):
        plan_store("motion", staged, ATTRS, {**COORDS, "xyz": ("x", "y", "w")})
    with pytest.raises(ValueError, match="multiple"):
        Chunking(frame_chunk=100, frame_shard=250)


@pytest.mark.parametrize("chunking", [None, SMALL], ids=["default", "small"])
def test_roundtrip_exact(tmp_path, chunking):
    path, plan, raw = build(tmp_path, "contact", chunking)
    assert validate_store(path) == []
    g = zarr.open_group(str(path), mode="r")
    assert g.attrs["schema_name"] == "contact" and g.attrs["schema_version"] == load_schema("contact").version
    ch = chunking or Chunking()
    assert g["joint_pos_m"].shards == (ch.frame_shard, 24, 3) and g["joint_pos_m"].chunks == (ch.frame_chunk, 24, 3)
    assert g["joint_pos_coef_m"].shards == (ch.window_shard, 4, 24, 3)
    assert g["seq_id"].chunks == (3,)
    np.testing.assert_array_equal(g["seq_frame_offset"][:], [0, 5000, 5037])
    np.testing.assert_array_equal(g["seq_frame_count"][:], LENGTHS)
    np.testing.assert_array_equal(g["seq_window_offset"][:], [0, 625, 630])
    np.testing.assert_array_equal(g["frame_sequence"][:], np.repeat([0, 1, 2], LENGTHS))
    for i, (frame, window, values) in enumerate(raw):
        f0, nf = plan.frame_offsets[i], plan.frame_counts[i]
        w0, nw = plan.window_offsets[i], plan.window_counts[i]
        for name, value in frame.items():
            got = g[name][f0 : f0 + nf]
            assert got.dtype == np.dtype(load_schema("contact").arrays[name].dtype)
            np.testing.assert_array_equal(got, np.asarray(value).astype(got.dtype), err_msg=name)
        for name, value in window.items():
            got = g[name][w0 : w0 + nw]
            expect = value + f0 if name == "window_start" else value
            np.testing.assert_array_equal(got, expect, err_msg=name)
        assert g["seq_id"][i] == values["seq_id"] and g["seq_split"][i] == values["seq_split"]
        assert g["seq_source_fps_hz"][i] == 120.0 and g["seq_source_fps_hz"].dtype == np.float64
        betas = g["seq_betas"][i]
        np.testing.assert_array_equal(betas[:10], values["seq_betas"])
        assert np.isnan(betas[10:]).all() and betas.shape == (16,)
        np.testing.assert_array_equal(g["seq_bone_length_m"][i], values["seq_bone_length_m"].astype(np.float32))
    # per-array attrs from the schema
    assert g["joint_pos_m"].attrs["units"] == "m" and g["grm_nm" if "grm_nm" in g else "time_s"].attrs["units"]
    assert g["contact"].attrs["flag_values"] == [0, 1]
    assert list(g["marker"][:]) == list(MARKERS) and list(g["xyz"][:]) == ["x", "y", "z"]
    # nothing but the store remains next to it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contact.zarr", "staging"]


def test_plain_xarray_opens_without_warnings(tmp_path):
    path, _, raw = build(tmp_path, "motion", SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path)
        assert ds.attrs["schema_version"] == load_schema("motion").version
        assert ds.sizes["frame"] == 8037 and ds.sizes["marker"] == len(MARKERS)
        assert ds["joint_pos_m"].dims == ("frame", "joint", "xyz")
        assert ds["joint_pos_m"].attrs["units"] == "m"
        assert list(ds["joint"].values[:2]) == ["pelvis", "left_hip"]
        np.testing.assert_array_equal(ds["cubic_power"].values, [0, 1, 2, 3])
        np.testing.assert_array_equal(ds["root_pos_m"][5000:5037].values, raw[1][0]["root_pos_m"].astype(np.float32))
        assert ds["time_s"].dtype == np.float32  # not decoded as timedelta


@pytest.mark.parametrize("subset", ["ground_reaction", "torque"])
def test_empty_store_is_valid_and_opens(tmp_path, subset):
    plan = plan_store(subset, [], ATTRS, COORDS)
    path = write_store(plan, tmp_path / f"{subset}.zarr")
    assert validate_store(path) == []
    schema = load_schema(subset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path)
    # without any sequence naming source DOFs, the source_dof arrays are left out (torque >= 2.3.0)
    absent = {"source_tau_opensim", "seq_source_dofs"} if subset == "torque" else set()
    assert plan.absent == absent | ({"source_dof"} if absent else set())
    assert set(schema.arrays) - absent <= set(ds.data_vars) and not absent & set(ds.variables)
    assert ds.sizes["frame"] == 0 and ds.sizes["window"] == 0 and ds.sizes["sequence"] == 0
    assert ds["grf_n"].dims == ("frame", "foot", "xyz") and ds.sizes["foot"] == 2
    if subset == "torque":
        assert ds.sizes["actuated_joint"] == 23 and ds["torque_coef_nm"].shape == (0, 2, 23, 3)


def test_every_subset_roundtrips(tmp_path):
    for subset in ("motion", "ground_reaction", "torque"):
        path, plan, raw = build(tmp_path / subset, subset, SMALL, lengths=(300, 1))
        assert validate_store(path) == [], subset
        g = zarr.open_group(str(path), mode="r")
        assert set(load_schema(subset).arrays) - plan.absent <= set(g.array_keys())  # absent: no source DOFs
        if subset == "torque":
            np.testing.assert_array_equal(g["joint_torque_nm"][300], raw[1][0]["joint_torque_nm"][0])


def test_schema_mismatch_names_sequence(tmp_path):
    frame, window, values = synthetic_arrays("a/b/c/bad", 40, seed=1)
    frame["joint_pos_m"] = frame["joint_pos_m"][:, :23]  # 23 joints
    bad = stage_sequence(tmp_path / "st", "a/b/c/bad", frame, window, values)
    good, _ = stage_synthetic(tmp_path / "st", "a/b/c/good", 40)
    plan = plan_store("motion", [good, bad], ATTRS, COORDS)
    with pytest.raises(SchemaError, match=r"'a/b/c/bad'.*joint_pos_m: dim joint has size 23"):
        write_store(plan, tmp_path / "m.zarr")
    frame, window, values = synthetic_arrays("a/b/c/bad2", 40, seed=1)
    frame["joint_rot_aa_rad"] = frame["joint_rot_aa_rad"].astype(np.complex64)
    values["seq_split"] = "holdout"
    bad2 = stage_sequence(tmp_path / "st", "a/b/c/bad2", frame, window, values)
    with pytest.raises(SchemaError, match=r"'a/b/c/bad2'.*complex64.*seq_split=\['holdout'\]"):
        write_store(plan_store("motion", [bad2], ATTRS, COORDS), tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]


def _write_region_job(args):
    kind, plan, tmp, i = args
    (write_frame_region if kind == "frame" else write_window_region)(plan, tmp, i)
    return kind, i


def test_parallel_regions_equal_serial(tmp_path):
    path, plan, _ = build(tmp_path / "serial", "contact", SMALL)
    assert len(plan.frame_regions) == 16 and len(plan.window_regions) == 8
    final = tmp_path / "parallel" / "contact.zarr"
    final.parent.mkdir()
    tmp = temporary_path(final)
    create_store(plan, tmp)
    jobs = [("frame", plan, tmp, i) for i in range(len(plan.frame_regions))]
    jobs += [("window", plan, tmp, i) for i in range(len(plan.window_regions))]
    jobs = jobs[::-1]  # reverse order: last (partial) shards first
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        done = list(pool.map(_write_region_job, jobs))
    assert len(done) == len(jobs)
    finalize_store(plan, tmp, final)
    assert tree_bytes(final) == tree_bytes(path)
    assert not tmp.exists()


def test_unwritten_region_fails_validation(tmp_path):
    s, _ = stage_synthetic(tmp_path / "st", "a/b/c/d", 1000)
    plan = plan_store("motion", [s], ATTRS, COORDS, SMALL)
    final = tmp_path / "m.zarr"
    tmp = temporary_path(final)
    create_store(plan, tmp)
    for i in range(len(plan.frame_regions) - 1):  # skip the last frame region
        write_frame_region(plan, tmp, i)
    for i in range(len(plan.window_regions)):
        write_window_region(plan, tmp, i)
    with pytest.raises(SchemaError, match=r"frame_sequence\[512\] = -1"):
        finalize_store(plan, tmp, final)
    assert not final.exists()


def test_crash_leaves_no_store_and_keeps_old(tmp_path, monkeypatch):
    old_path, old_plan, _ = build(tmp_path, "motion", SMALL, lengths=(100,))
    before = tree_bytes(old_path)
    staged = [stage_synthetic(tmp_path / "st2", f"a/b/c/{i}", n, seed=i)[0] for i, n in enumerate(LENGTHS)]
    plan = plan_store("motion", staged, ATTRS, COORDS, SMALL)
    real = writer_mod._write_region
    calls = []

    def crashing(plan_, tmp_, dim, a, b, *rest):
        calls.append((dim, a))
        if dim == "frame" and a >= 2048:
            raise RuntimeError("simulated worker crash")
        return real(plan_, tmp_, dim, a, b, *rest)

    monkeypatch.setattr(writer_mod, "_write_region", crashing)
    with pytest.raises(RuntimeError, match="simulated"):
        write_store(plan, old_path)  # existing store: must stay intact
    with pytest.raises(RuntimeError, match="simulated"):
        write_store(plan, tmp_path / "fresh.zarr")  # no store yet: none may appear
    assert len(calls) == 10
    assert tree_bytes(old_path) == before and validate_store(old_path) == []
    assert not (tmp_path / "fresh.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motion.zarr", "st2", "staging"]
    # and a successful rewrite replaces the old store in place, leaving no trash behind
    monkeypatch.setattr(writer_mod, "_write_region", real)
    write_store(plan, old_path)
    assert zarr.open_group(str(old_path), mode="r")["seq_frame_count"].shape == (3,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motion.zarr", "st2", "staging"]


def test_failed_swap_restores_old_store(tmp_path, monkeypatch):
    old_path, _, _ = build(tmp_path, "motion", SMALL, lengths=(100,))
    before = tree_bytes(old_path)
    s, _ = stage_synthetic(tmp_path / "st2", "a/b/c/new", 300)
    plan = plan_store("motion", [s], ATTRS, COORDS, SMALL)
    import pipeline.store.staging as staging_mod

    real_rename = staging_mod.os.rename

    def flaky_rename(src, dst):
        if ".tmp-" in Path(src).name:
            raise OSError("simulated rename failure")
        return real_rename(src, dst)

    monkeypatch.setattr(staging_mod.os, "rename", flaky_rename)
    with pytest.raises(OSError, match="simulated"):
        write_store(plan, old_path)
    assert tree_bytes(old_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["motion.zarr", "st2", "staging"]


def test_region_plans_write_the_same_store_as_the_whole_plan(tmp_path):
    """Writers fed per-region plans (only the overlapping sequences) give identical bytes."""
    from pipeline.store import create_store, finalize_store, region_plan, temporary_path
    from pipeline.store.writer import _write_region

    whole, plan, _ = build(tmp_path / "whole", "motion", SMALL, lengths=(5000, 37, 3000))
    final = tmp_path / "parts" / "motion.zarr"
    final.parent.mkdir()
    tmp = temporary_path(final)
    create_store(plan, tmp)
    for dim, regions in (("frame", plan.frame_regions), ("window", plan.window_regions)):
        for i in range(len(regions)):
            sub = region_plan(plan, dim, i)
            assert sub.n_sequences <= plan.n_sequences
            a, b = sub.frame_regions[0] if dim == "frame" else sub.window_regions[0]
            _write_region(sub, tmp, dim, a, b)
    finalize_store(plan, tmp, final)
    assert tree_bytes(final) == tree_bytes(whole)


def test_whole_shard_writer_equals_zarrs_own_writer(tmp_path):
    """The shard encoder (``pipeline.store.shards``) and zarr's array assignment give the same
    decoded arrays, and byte-identical shard objects where no inner chunk is all fill."""
    import zarr

    from pipeline.store import create_store, write_frame_region, write_window_region

    staged = [stage_synthetic(tmp_path / "st", f"a/b/c/{i}", n, "torque", seed=i)[0] for i, n in enumerate(LENGTHS)]
    staged.append(_stage_with_dofs(tmp_path / "st", 7, 300, ("knee_angle_r", "hip_flexion_r"))[0])  # source_dof
    plan = plan_store("torque", staged, ATTRS, COORDS, SMALL)
    assert plan.absent == frozenset()
    paths = {}
    for method in ("shards", "zarr"):
        paths[method] = tmp_path / f"{method}.zarr"
        create_store(plan, paths[method])
        for i in range(len(plan.frame_regions)):
            write_frame_region(plan, paths[method], i, method=method)
        for i in range(len(plan.window_regions)):
            write_window_region(plan, paths[method], i, method=method)
    a, b = zarr.open_group(str(paths["shards"]), mode="r"), zarr.open_group(str(paths["zarr"]), mode="r")
    for name in plan.schema.arrays:
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
    # joint_pos_m shard 0: every inner chunk holds data, so zarr stores all of them, as we do
    shard = Path("joint_pos_m/c.0.0.0")  # flat chunk keys (writer.CHUNK_KEY_ENCODING)
    assert (paths["shards"] / shard).read_bytes() == (paths["zarr"] / shard).read_bytes()
    assert validate_store(paths["shards"]) == []


def test_shard_writer_never_modifies_an_existing_object(tmp_path):
    """A shard is written as a new file renamed into place: a hard link to the old one (a release)
    keeps the old bytes."""
    from pipeline.store import create_store, write_frame_region
    from pipeline.store.shards import ShardLayout

    staged = [stage_synthetic(tmp_path / "st", "a/b/c/0", 300, seed=0)[0]]
    plan = plan_store("motion", staged, ATTRS, COORDS, SMALL)
    create_store(plan, tmp_path / "s.zarr")
    write_frame_region(plan, tmp_path / "s.zarr", 0)
    lay = ShardLayout.read(tmp_path / "s.zarr" / "joint_pos_m")
    obj = lay.key(0)
    link = tmp_path / "release-link"
    os.link(obj, link)
    before = link.read_bytes()
    lay.write(0, np.zeros((256, 24, 3), np.float32))
    assert link.read_bytes() == before and obj.read_bytes() != before


# --- a dim labelled per sequence: source_dof (torque 2.3.0) ----------------------------------------

def _stage_with_dofs(root: Path, i: int, n: int, dofs: tuple[str, ...] | None):
    """A synthetic torque sequence; with ``dofs`` also ``source_tau_opensim`` (n, len(dofs)) and
    ``seq_source_dofs``. Returns (StagedSequence, its tau or None)."""
    frame, window, values = synthetic_arrays(f"addbiomechanics/lab/{i:02d}/trial_{i}", n, "torque", seed=i)
    tau = None
    if dofs is not None:
        tau = np.random.default_rng(100 + i).normal(0, 50, (n, len(dofs))).astype(np.float32)
        frame["source_tau_opensim"] = tau
        values["seq_source_dofs"] = " ".join(dofs)
    return stage_sequence(root, f"addbiomechanics/lab/{i:02d}/trial_{i}", frame, window, values), tau


def _tau_of(ds, i: int) -> "xr.DataArray":
    a, n = int(ds.seq_frame_offset[i]), int(ds.seq_frame_count[i])
    return ds.source_tau_opensim[a:a + n]


def test_source_dof_is_the_union_and_each_sequence_fills_its_own_columns(tmp_path):
    dofs = [None, ("knee_angle_r", "pelvis_tx", "hip_flexion_r"), ("hip_flexion_r", "mtp_angle_l")]
    staged, taus = zip(*[_stage_with_dofs(tmp_path / "st", i, n, d) for i, (n, d) in enumerate(zip((300, 37, 500), dofs))])
    plan = plan_store("torque", staged, ATTRS, COORDS, SMALL)
    assert plan.coords["source_dof"] == ("hip_flexion_r", "knee_angle_r", "mtp_angle_l", "pelvis_tx")  # sorted union
    path = write_store(plan, tmp_path / "torque.zarr")
    assert validate_store(path) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # string coordinate and array: no zarr/xarray warnings
        ds = xr.open_zarr(path)
    tau = ds.source_tau_opensim
    assert tau.dims == ("frame", "source_dof") and tau.dtype == np.float32
    assert tau.attrs["units"] == "N·m | N" and tau.attrs["units_translational_dof"] == "N"
    assert ds.seq_source_dofs.values.tolist() == ["", "knee_angle_r pelvis_tx hip_flexion_r", "hip_flexion_r mtp_angle_l"]
    assert np.isnan(_tau_of(ds, 0).values).all()  # a sequence without source DOFs: all NaN
    for i in (1, 2):
        np.testing.assert_array_equal(_tau_of(ds, i).sel(source_dof=list(dofs[i])).values, taus[i])
        others = [d for d in plan.coords["source_dof"] if d not in dofs[i]]
        assert np.isnan(_tau_of(ds, i).sel(source_dof=others).values).all()  # DOFs its model lacks


def test_appending_keeps_the_source_dof_columns_and_refuses_a_new_name(tmp_path):
    from pipeline.store.append import plan_append, prepare_append

    root = tmp_path / "st"
    first = [_stage_with_dofs(root, 0, 300, None), _stage_with_dofs(root, 1, 200, ("knee_angle_r", "pelvis_tx"))]
    path = write_store(plan_store("torque", [s for s, _ in first], ATTRS, COORDS, SMALL), tmp_path / "torque.zarr")
    coords = {**COORDS, "source_dof": ("knee_angle_r", "pelvis_tx")}  # the store's, as assembly passes it
    new = [_stage_with_dofs(root, 2, 90, ("pelvis_tx",)), _stage_with_dofs(root, 3, 40, None)]
    plan = plan_append(path, plan_store("torque", [s for s, _ in new], ATTRS, coords, SMALL))
    tmp = temporary_path(path)
    prepare_append(path, plan, [0], tmp)
    for i in range(len(plan.frame_regions)):
        write_frame_region(plan, tmp, i)
    for i in range(len(plan.window_regions)):
        write_window_region(plan, tmp, i)
    finalize_store(plan, tmp, path)
    assert validate_store(path) == []
    ds = xr.open_zarr(path)
    assert ds.sizes["sequence"] == 4 and ds.source_dof.values.tolist() == ["knee_angle_r", "pelvis_tx"]
    np.testing.assert_array_equal(_tau_of(ds, 1).values, first[1][1])  # kept rows
    np.testing.assert_array_equal(_tau_of(ds, 2).sel(source_dof="pelvis_tx").values, new[0][1][:, 0])
    assert np.isnan(_tau_of(ds, 2).sel(source_dof="knee_angle_r").values).all()
    assert np.isnan(_tau_of(ds, 3).values).all() and np.isnan(_tau_of(ds, 0).values).all()
    assert ds.seq_source_dofs.values.tolist()[2:] == ["pelvis_tx", ""]
    # a name the store's coordinate lacks cannot be appended: the whole store must be rewritten
    odd, _ = _stage_with_dofs(root, 4, 50, ("lumbar_bending",))
    with pytest.raises(SchemaError, match=r"\['lumbar_bending'\] are not in the source_dof coordinate"):
        prepare_append(path, plan_append(path, plan_store("torque", [odd], ATTRS, coords, SMALL)), [], temporary_path(path))


def test_torque_2_2_stores_are_still_written_and_read(tmp_path):
    """The previous minor version (no source_dof) stays valid: written on request, opened as is."""
    from pipeline.store import open_store

    staged = [_stage_with_dofs(tmp_path / "st", 0, 120, ("knee_angle_r",))[0]]
    plan = plan_store("torque", staged, ATTRS, COORDS, SMALL, schema_version="2.2.0")
    assert "source_dof" not in plan.coords and plan.absent == frozenset()
    path = write_store(plan, tmp_path / "torque.zarr")
    assert validate_store(path) == []
    ds = open_store(path)
    assert ds.attrs["schema_version"] == "2.2.0" and "source_tau_opensim" not in ds and "source_dof" not in ds.coords


def test_validation_scan_can_start_at_the_appended_records(tmp_path):
    """An appended store's record scan starts at its first rewritten shard: a bad record before it
    is not re-read (it is the validated store's own object), one after it is found; the
    per-sequence checks stay whole."""
    from pipeline.store import validate_store
    from pipeline.store.writer import scan_start

    s, _ = stage_synthetic(tmp_path / "st", "a/b/c/d", 1000)
    plan = plan_store("motion", [s], ATTRS, COORDS, SMALL)
    tmp = temporary_path(tmp_path / "m.zarr")
    create_store(plan, tmp)
    for i in range(len(plan.frame_regions) - 1):  # the last frame region stays unwritten (-1)
        write_frame_region(plan, tmp, i)
    for i in range(len(plan.window_regions)):
        write_window_region(plan, tmp, i)
    last = plan.frame_regions[-1][0]
    assert any("frame_sequence" in p for p in validate_store(tmp, scan_from={"frame": last}))
    assert validate_store(tmp, scan_from={"frame": plan.n_frames, "window": plan.n_windows}) == []
    assert scan_start(plan) is None  # a whole store: every record is scanned
    appended = replace(plan, kept_frames=700, kept_windows=3, frame_regions=((512, 1000),), window_regions=())
    assert scan_start(appended) == {"frame": 512, "window": plan.n_windows}


def test_trash_deletes_replaced_directories_in_the_background(tmp_path):
    from pipeline.store.staging import Trash, replace_dir

    old, new = tmp_path / "s.zarr", tmp_path / ".s.zarr.tmp-1"
    for d, n in ((old, 300), (new, 3)):
        for i in range(n):
            (d / "c" / str(i)).mkdir(parents=True)
            (d / "c" / str(i) / "0").write_bytes(b"x")
    left = tmp_path / ".other.zarr.trash-0123"  # what an interrupted run left behind
    (left / "c").mkdir(parents=True)
    trash = Trash()
    assert trash.sweep(tmp_path) == 1
    replace_dir(new, old, trash.add)
    assert sorted(p.name for p in (old / "c").iterdir()) == ["0", "1", "2"]  # swapped at once
    trash.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_grown_metadata_is_what_zarr_writes(tmp_path):
    """An append rewrites a per-sequence array from its old zarr.json with the new shape: the very
    bytes zarr's create_array writes for that shape (numbers and strings)."""
    import zarr

    from pipeline.store.append import _grown_metadata

    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    for name, dtype, fill in (("seq_height_m", "float32", np.nan), ("seq_id", str, "")):
        kw = dict(dtype=dtype, dimension_names=["sequence"], fill_value=fill, attributes={"units": "m"})
        g.create_array(name, shape=(10,), chunks=(10,), **kw)
        g.create_array(name + "_2", shape=(17,), chunks=(17,), **kw)
        want = (tmp_path / "s.zarr" / (name + "_2") / "zarr.json").read_text()
        got = _grown_metadata(tmp_path / "s.zarr" / name, (17,), (17,))
        assert got == want
