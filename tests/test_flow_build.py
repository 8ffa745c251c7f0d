"""End to end: a generated AMASS corpus with bad files → `dynaset build` (Prefect + Dask) → stores.

One build per test session (Prefect's ephemeral API and a 2-worker local Dask cluster start once).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pipeline.cli import main as cli_main
from pipeline.demo import DEMO_LICENCE, generate_corpus, write_bad_files
from pipeline.process import BuildConfig, process_motion
from pipeline.sources.amass import read_amass
from pipeline.split import SUBSETS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    from flows.runtime import prefect_api

    root = tmp_path_factory.mktemp("e2e")
    corpus = root / "corpus"
    files = generate_corpus(corpus, n_subjects=3, seed=1)
    bad = write_bad_files(corpus)
    # a second file with the same sequence id (AMASS SMPL-X naming) is quarantined, not built twice
    first = files[0]
    twin = first.with_name(first.name.replace("_poses.npz", "_stageii.npz"))
    shutil.copyfile(first, twin)
    bad[twin.relative_to(corpus).as_posix()] = "duplicate sequence id"
    out = root / "out"
    with _placement("cluster"), prefect_api():  # this corpus is small: the rule would skip the cluster
        rc = cli_main(["build", "--source", f"amass={corpus}", "--out", str(out), "--workers", "2"])
    assert rc == 0
    return {"corpus": corpus, "out": out, "files": files, "bad": bad}


@contextlib.contextmanager
def _placement(mode: str):
    """``DYNASET_PLACEMENT=mode`` for a build (``pipeline.dataset.placement``)."""
    from pipeline.dataset.placement import PLACEMENT_ENV

    before = os.environ.get(PLACEMENT_ENV)
    os.environ[PLACEMENT_ENV] = mode
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PLACEMENT_ENV, None)
        else:
            os.environ[PLACEMENT_ENV] = before


def _store_digest(root) -> dict:
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*.zarr/**/*")) if p.is_file()}


def test_in_process_build_equals_the_cluster_build(built, tmp_path, capfd, monkeypatch):
    """The same corpus built with every task in the flow's process (no local Dask cluster; simulation
    on) gives byte-identical stores to the fixture's build on the 2-worker cluster."""
    import distributed

    from flows.runtime import prefect_api

    def no_cluster(*args, **kwargs):
        raise AssertionError("a local Dask cluster was started")

    monkeypatch.setattr(distributed.LocalCluster, "__init__", no_cluster)
    out = tmp_path / "in-process"
    with _placement("in-process"), prefect_api():
        assert cli_main(["build", "--source", f"amass={built['corpus']}", "--out", str(out), "--workers", "2"]) == 0
    err = capfd.readouterr().err
    assert "tasks run in this process (no local Dask cluster)" in err
    assert _store_digest(out) == _store_digest(built["out"])


def test_good_files_built_and_bad_files_quarantined(built):
    out = built["out"]
    summary = json.loads((out / "build.json").read_text())
    quarantine = json.loads((out / "quarantine.json").read_text())
    listed = {q["path"].removeprefix("amass:"): q for q in quarantine}
    assert set(listed) == set(built["bad"])
    for rel, keyword in built["bad"].items():
        assert keyword.lower() in listed[rel]["reason"].lower(), (rel, listed[rel])
        assert listed[rel]["stage"]
    assert summary["files_built"] == len(built["files"])
    assert summary["files_quarantined"] == len(built["bad"])


def test_stores_open_with_plain_xarray_and_no_dynaset_import(built):
    code = textwrap.dedent(
        f"""
        import sys, warnings
        warnings.simplefilter("error")
        import xarray as xr
        for subset in {list(SUBSETS)!r}:
            ds = xr.open_zarr({str(built["out"])!r} + "/" + subset + ".zarr")
            assert ds.attrs["schema_name"] == subset, ds.attrs
            assert ds.attrs["schema_version"].startswith("2."), ds.attrs
            assert set(ds.seq_licence.values.tolist()) <= {{{DEMO_LICENCE!r}}}, ds.attrs
            print(subset, ds.sizes["sequence"], ds.sizes["frame"])
        assert not any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr
    counts = {line.split()[0]: tuple(map(int, line.split()[1:])) for line in res.stdout.splitlines()}
    assert counts["motion"][0] == len(built["files"])
    assert counts["contact"] == counts["motion"]
    # every motion is imitated once; passes that fail a quality rule are excluded (exclusions.json)
    excluded = {e["seq_id"] for e in json.loads((built["out"] / "exclusions.json").read_text())}
    n_sim_excluded = sum(1 for e in excluded if "#pass" in e)
    assert counts["ground_reaction"] == counts["torque"]
    assert counts["torque"][0] == counts["motion"][0] - n_sim_excluded > 0


def test_validate_command(built, tmp_path, capsys):
    stores = [str(built["out"] / f"{s}.zarr") for s in SUBSETS]
    assert cli_main(["validate", *stores]) == 0
    broken = tmp_path / "broken.zarr"
    shutil.copytree(stores[0], broken)
    shutil.rmtree(broken / "joint_pos_m")
    capsys.readouterr()
    assert cli_main(["validate", str(broken)]) == 1
    assert "joint_pos_m" in capsys.readouterr().out


def test_store_content_equals_the_pure_stages(built):
    import xarray as xr

    ds = xr.open_zarr(built["out"] / "contact.zarr")
    ids = list(ds.seq_id.values)
    cfg = BuildConfig()
    for path in built["files"][:: max(1, len(built["files"]) // 3)]:
        raw = read_amass(path, built["corpus"])
        p = process_motion(raw, cfg)
        i = ids.index(p.motion.provenance.sequence_id)
        a, n = int(ds.seq_frame_offset[i]), int(ds.seq_frame_count[i])
        assert n == p.motion.n_frames
        sl = ds.isel(frame=slice(a, a + n))
        np.testing.assert_allclose(sl.joint_pos_m.values, p.motion.joint_pos_m, atol=1e-5)
        np.testing.assert_allclose(sl.marker_pos_m.values, p.motion.marker_pos_m, atol=1e-5)
        np.testing.assert_array_equal(sl.contact.values, p.contact.astype(np.uint8))
        np.testing.assert_array_equal(sl.frame_sequence.values, i)
        np.testing.assert_allclose(sl.time_s.values, np.arange(n) / 30.0, atol=1e-6)
        wa, wn = int(ds.seq_window_offset[i]), int(ds.seq_window_count[i])
        w = ds.isel(window=slice(wa, wa + wn))
        np.testing.assert_array_equal(w.window_start.values, a + p.window_start)
        np.testing.assert_allclose(w.joint_pos_coef_m.values, p.joint_pos_fit.coef, atol=1e-4)
        assert str(ds.seq_source_sha256.values[i]) == raw.provenance.sha256
        assert str(ds.seq_licence.values[i]) == raw.provenance.licence == DEMO_LICENCE
        assert str(ds.seq_split.values[i]) == p.split
        assert float(ds.seq_source_fps_hz[i]) == raw.fps_hz


def test_splits_are_subject_wise_and_rates_mixed(built):
    import xarray as xr

    ds = xr.open_zarr(built["out"] / "motion.zarr")
    by_subject: dict[str, set] = {}
    for subj, split in zip(ds.seq_subject.values, ds.seq_split.values):
        by_subject.setdefault(str(subj), set()).add(str(split))
    assert all(len(s) == 1 for s in by_subject.values())
    assert {60.0, 100.0, 120.0, 250.0} <= set(np.unique(ds.seq_source_fps_hz.values).tolist())


def test_no_half_written_leftovers(built):
    names = {p.name for p in built["out"].iterdir()} - {".prefect", "quality_previews"}
    expected = {"build.json", "quarantine.json", "metrics.parquet", "flags.json", "exclusions.json", "report.html",
                "stats.json", "dataset.json", "ledger.sqlite", ".cache", ".dynaset.lock"}
    assert names == expected | {f"{s}.zarr" for s in SUBSETS}
    leftovers = [p for p in built["out"].rglob("*") if ".tmp-" in p.name or ".trash-" in p.name]
    assert not leftovers
    # every processing-cache entry is complete (its outcome.json marks it)
    entries = [e for f in (built["out"] / ".cache" / "files").iterdir() for e in f.iterdir()]
    assert entries and all((e / "outcome.json").is_file() for e in entries)


def test_simulated_subsets_are_physically_consistent(built):
    """Torque store: the simulator's own states with torques and floor forces; over each sequence
    the vertical impulse of floor + residual forces balances gravity (Newton, averaged)."""
    import xarray as xr

    ds = xr.open_zarr(built["out"] / "torque.zarr")
    motion = xr.open_zarr(built["out"] / "motion.zarr")
    assert ds.sizes["sequence"] > 0 and set(ds.seq_id.values) <= set(motion.seq_id.values)
    assert (ds.seq_pass.values == 0).all()
    assert ds.attrs["schema_version"] == "2.3.0"  # 2.1.0 added seq_torque_source, 2.2.0 seq_tombstone, 2.3.0 source_tau_opensim
    assert (ds.seq_licence.values == DEMO_LICENCE).all()
    assert ds.joint_torque_nm.attrs["units"] == "N·m" and ds.grf_n.attrs["units"] == "N"
    assert ds.imposed_angmom_nms.attrs["units"] == "N·m·s"
    for i in range(ds.sizes["sequence"]):
        a, n = int(ds.seq_frame_offset[i]), int(ds.seq_frame_count[i])
        sl = ds.isel(frame=slice(a, a + n))
        if sl.reset.values.any():
            continue
        weight = float(ds.seq_mass_kg[i]) * 9.81
        fz = sl.grf_total_n.values[:, 2] + sl.residual_force_n.values[:, 2]
        assert np.isfinite(sl.joint_torque_nm.values).all()
        assert abs(fz.mean() / weight - 1.0) < 0.1, (str(ds.seq_id.values[i]), fz.mean() / weight)
        # the tracked reference is the motion subset's canonical sequence
        j = list(motion.seq_id.values).index(ds.seq_id.values[i])
        ma = int(motion.seq_frame_offset[j])
        np.testing.assert_allclose(sl.ref_joint_pos_m.values, motion.joint_pos_m.values[ma:ma + n], atol=1e-6)
        assert np.median(sl.mpjpe_m.values) < 0.08


def test_stats_shipped_with_the_build_match_numpy(built):
    import xarray as xr

    stats = json.loads((built["out"] / "stats.json").read_text())
    ds = xr.open_zarr(built["out"] / "motion.zarr")
    got = stats["subsets"]["motion"]["arrays"]["joint_pos_m"]
    x = ds.joint_pos_m.values.reshape(ds.sizes["frame"], -1).astype(np.float64)
    np.testing.assert_allclose(np.asarray(got["mean"], float).reshape(-1), x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["max"], float).reshape(-1), x.max(0), rtol=1e-6)
    assert set(stats["subsets"]) == set(SUBSETS)


def test_rerun_with_simulation_is_a_no_op_and_ledger_keeps_statuses(built):
    """A second run over the same corpus (simulation on) processes nothing, rewrites nothing, and
    the ledger still marks the bad files and the duplicate as quarantined with their reasons."""
    from flows.runtime import prefect_api
    from pipeline.store.ledger import LEDGER_FILE, Ledger

    out = built["out"]

    def digest() -> dict:
        return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns
                for s in SUBSETS for p in (out / f"{s}.zarr").rglob("*") if p.is_file()}

    before = digest()
    with prefect_api():
        assert cli_main(["ingest", str(out), "--workers", "1"]) == 0
    assert digest() == before
    summary = json.loads((out / "build.json").read_text())
    assert summary["files_built"] == len(built["files"])
    with Ledger(out / LEDGER_FILE) as ledger:
        last = ledger.runs()[-1]
        rows = {r.path: r for r in ledger.files()}
    assert (last.files_new, last.files_changed, last.stores_written) == (0, 0, 0)
    for rel, keyword in built["bad"].items():
        assert rows[rel].status == "quarantined" and keyword.lower() in rows[rel].reason.lower(), rows[rel]
    assert sum(1 for r in rows.values() if r.status == "built") == len(built["files"])
