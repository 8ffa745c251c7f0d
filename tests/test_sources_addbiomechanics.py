"""AddBiomechanics .b3d source (pipeline.sources.addbiomechanics) against ../shared/data/addbiomechanics/b3d
(MANIFEST.md, format notes ../shared/formats/b3d.md); skipped where absent. Malformed variants are made here
from the real file's bytes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.sources.addbiomechanics import b3d
from pipeline.sources.base import SourceError, get_source

B3D = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "addbiomechanics" / "b3d"
if not B3D.is_dir():
    B3D = Path("/work/shared/data/addbiomechanics/b3d")
pytestmark = pytest.mark.skipif(not B3D.is_dir(), reason=f"AddBiomechanics .b3d sample absent ({B3D}); see shared/data/MANIFEST.md")
FILE = B3D / "results.b3d"


def test_header_and_byte_arithmetic_match_the_format_notes():
    data = FILE.read_bytes()
    h = b3d.parse_header(data)
    assert len(data) == 1_948_025 and h.header_bytes == 1_212_932
    assert (h.version, h.num_dofs, h.sensor_frame_size, h.pass_frame_size) == (4, 33, 1401, 1394)
    assert [t.length for t in h.trials] == [132, 131] and all(len(t.passes) == 1 for t in h.trials)
    assert h.contact_bodies == ("calcn_r", "calcn_l") and len(h.marker_names) == 52
    assert h.trials[0].timestep_s == pytest.approx(0.01) and h.mass_kg == pytest.approx(68.0)
    trial = b3d.read_trial(data, h, 1)
    assert trial.markers_m.shape == (131, 52, 3) and 0.5 < np.isfinite(trial.markers_m).mean() <= 1.0
    assert np.isfinite(trial.pos).all() and trial.tau.shape == (131, 33)


def test_every_trial_builds_by_marker_ik_with_the_embedded_marker_set():
    src = get_source("addbiomechanics")
    assert src.discover(B3D.parent) == [FILE.absolute()]
    raws = src.read(FILE, B3D)
    assert [r.provenance.name for r in raws] == ["walking2_segment_0", "walking1_segment_0"]
    for r in raws:
        assert r.provenance.subject == "results" and r.fps_hz == pytest.approx(100.0)
        ik = r.measured.ik
        assert ik.targets.free.sum() > 10  # markers placed by the model's MarkerSet
        assert np.nanmedian(ik.rmse_m) < 0.015 and 1.5 < ik.height_m < 1.9
        res = r.measured.source_results
        assert len(res.dof_names) == 33 and res.dof_names[0] == "pelvis_tilt" and res.tau.shape[1] == 33
        # the sample was processed for kinematics only: no contact forces, the trial builds without them
        assert r.measured.forces is None and "addb_marker_rms_m" in r.measured.extra_metrics


def _set_version(data: bytes, version: int) -> bytes:
    """The file with the header's top-level field 10 (version, a one-byte varint) set to ``version``."""
    (h,) = struct.unpack_from("<q", data, 0)
    i, hdr = 8, data[: 8 + h]
    while i < 8 + h:
        tag, j = b3d._varint(hdr, i)
        field, wt = tag >> 3, tag & 7
        if field == 10 and wt == 0:
            return data[:j] + bytes([version]) + data[j + 1:]
        if wt == 0:
            _, i = b3d._varint(hdr, j)
        elif wt == 1:
            i = j + 8
        elif wt == 5:
            i = j + 4
        else:
            ln, k = b3d._varint(hdr, j)
            i = k + ln
    raise AssertionError("no version field")


@pytest.mark.parametrize("variant, words", [
    ("truncated", "truncated"), ("header_cut", "does not fit"), ("old_version", "unsupported .b3d version 3"),
    ("old_magic", "magic 424242"), ("garbage", "b3d"), ("trailing", "trailing bytes"), ("tiny", "truncated"),
])
def test_malformed_files_are_one_clear_line(tmp_path, variant, words):
    data = FILE.read_bytes()
    bad = {"truncated": data[:-1000], "header_cut": data[:500_000], "old_version": _set_version(data, 3),
           "old_magic": struct.pack("<i", 424242) + data[4:4000], "garbage": b"\x07" * 8 + b"junk" * 100,
           "trailing": data + b"\x00" * 10, "tiny": data[:5]}[variant]
    (tmp_path / "bad.b3d").write_bytes(bad)
    with pytest.raises(SourceError) as exc:
        get_source("addbiomechanics").read(tmp_path / "bad.b3d", tmp_path)
    msg = str(exc.value)
    assert msg.startswith("bad.b3d: ") and words in msg and "\n" not in msg, msg


def test_addbiomechanics_own_figures_become_quality_metrics():
    """The .b3d's own per-trial marker RMS and root residuals reach the sequence's metrics row."""
    from pipeline.process import BuildConfig, process_motion
    from pipeline.quality.integration import sequence_metrics
    from pipeline.quality.metrics import CATALOG

    raw = get_source("addbiomechanics").read(FILE, B3D)[0]
    row = sequence_metrics(process_motion(raw, BuildConfig()))
    for k in ("addb_marker_rms_m", "addb_linear_residual_n", "addb_angular_residual_nm"):
        assert k in CATALOG and np.isfinite(row[k]) and row[k] > 0, (k, row.get(k))


# --- AddBiomechanics' own ID torques in the torque subset (torque 2.3.0) ---------------------------

@pytest.fixture(scope="module")
def tau_build(tmp_path_factory):
    """A dataset root built three times (serial driver, one imitation pass): a small synthetic AMASS corpus;
    then with the .b3d added (its trials are kinematics-only, so they reach the torque subset through their
    simulated passes); then with one more AMASS file. Torque-store values are read after each run."""
    import shutil

    import xarray as xr

    from pipeline.dataset.build import build_dataset
    from pipeline.demo import MotionSpec, generate_corpus
    from pipeline.process import BuildConfig
    from pipeline.sources.base import SourceSpec

    base = tmp_path_factory.mktemp("addb_tau")
    corpus = base / "amass"
    files = generate_corpus(corpus, n_subjects=1, seed=3, duration_s=(2.0, 2.5),
                            motions=(MotionSpec("walk", 1.2), MotionSpec("stand")))
    addb = base / "addb"
    addb.mkdir()
    (addb / FILE.name).symlink_to(FILE)
    root = base / "root"
    amass, b3d_src = SourceSpec("amass", corpus), SourceSpec("addbiomechanics", addb)

    def run(sources):
        summary = build_dataset(sources, root, BuildConfig(), workers=1, report=False)
        ds = xr.open_zarr(root / "torque.zarr")
        return summary, ds.load()

    out = {"amass_only": run([amass]), "mixed": run([amass, b3d_src])}
    extra = corpus / "DynasetSynth" / "S_extra"
    extra.mkdir()
    shutil.copyfile(files[0], extra / files[0].name)
    out["appended"] = run([amass, b3d_src])
    out["root"], out["addb"] = root, addb
    return out


def _rows(ds, i):
    a, n = int(ds.seq_frame_offset[i]), int(ds.seq_frame_count[i])
    return ds.isel(frame=slice(a, a + n))


def test_b3d_tau_is_stored_in_opensim_coordinates_resampled_as_the_forces(tau_build):
    from pipeline.lab import forceplate as fp
    from pipeline.store import validate_store

    summary, ds = tau_build["mixed"]
    assert validate_store(tau_build["root"] / "torque.zarr") == []
    addb = tau_build["addb"]
    raws = {r.provenance.sequence_id: r for r in get_source("addbiomechanics").read(addb / FILE.name, addb)}
    names = next(iter(raws.values())).measured.source_results.dof_names
    assert ds.source_dof.values.tolist() == sorted(names)
    tau = ds.source_tau_opensim
    assert tau.dims == ("frame", "source_dof") and tau.dtype == np.float32
    assert (tau.attrs["units"], tau.attrs["units_rotational_dof"], tau.attrs["units_translational_dof"]) == ("N·m | N", "N·m", "N")
    assert "OpenSim" in tau.attrs["sign_convention"]
    ids = ds.seq_id.values.tolist()
    assert sorted(i for i in ids if i.startswith("addbiomechanics/")) == sorted(raws)  # one pass per trial
    fps = float(ds.attrs["fps_hz"])
    for seq_id, raw in raws.items():
        i = ids.index(seq_id)
        assert ds.seq_torque_source.values[i] == "simulation" and ds.seq_source_dofs.values[i] == " ".join(names)
        res, rate = raw.measured.source_results, raw.measured.rate_hz
        n = int(ds.seq_frame_count[i])
        # the decoded tau at the kept marker frames, low-passed at 0.4 fps and interpolated at k / fps
        smooth = fp.lowpass(res.tau, rate, 0.4 * fps)
        t = np.arange(n) / fps
        expected = np.stack([np.interp(t, np.arange(len(res.tau)) / rate, smooth[:, j]) for j in range(len(names))], 1)
        got = _rows(ds, i).source_tau_opensim.sel(source_dof=list(names)).values
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
        # what the filter changes: little for the knee and ankle, much for the noisy root of this fixture
        k = names.index("knee_angle_r")
        assert np.corrcoef(got[:, k], np.interp(t, np.arange(len(res.tau)) / rate, res.tau[:, k]))[0, 1] > 0.95


def test_mixed_store_has_nan_tau_for_sequences_without_it(tau_build):
    _, ds = tau_build["mixed"]
    for i, seq_id in enumerate(ds.seq_id.values.tolist()):
        rows = _rows(ds, i).source_tau_opensim.values
        if seq_id.startswith("amass/"):
            assert np.isnan(rows).all() and ds.seq_source_dofs.values[i] == ""
        else:
            assert np.isfinite(rows).all()


def test_source_dof_rule_for_incremental_runs(tau_build):
    """The first sequences with source DOFs change the store's source_dof coordinate: the torque store is
    rewritten in full while motion is appended to; later sequences with known (or no) DOFs are appended."""
    s1, ds1 = tau_build["amass_only"]
    assert "source_tau_opensim" not in ds1 and "source_dof" not in ds1.coords and "seq_source_dofs" not in ds1
    s2, ds2 = tau_build["mixed"]
    assert s2["subsets"]["torque"]["mode"] == "full" and s2["subsets"]["motion"]["mode"] == "append"
    s3, ds3 = tau_build["appended"]
    assert s3["subsets"]["torque"]["mode"] == "append" and s3["subsets"]["torque"]["written_sequences"] == 1
    assert ds3.source_dof.values.tolist() == ds2.source_dof.values.tolist()
    n2 = ds2.sizes["sequence"]
    np.testing.assert_array_equal(ds3.source_tau_opensim.values[: ds2.sizes["frame"]], ds2.source_tau_opensim.values)
    assert np.isnan(_rows(ds3, n2).source_tau_opensim.values).all() and ds3.seq_source_dofs.values[n2] == ""


def test_a_trial_with_forces_stages_its_tau_beside_the_inverse_dynamics():
    """A trial with contact forces joins the torque subset with our inverse dynamics; its own tau is staged
    with it (the sample has none: half the body weight under each foot, below the pelvis, stands in)."""
    import dataclasses

    from pipeline.lab.trial import FootForces
    from pipeline.process import BuildConfig, process_motion, stage_payload
    from pipeline.store import load_schema, validate_arrays

    raw = get_source("addbiomechanics").read(FILE, B3D)[0]
    m = raw.measured
    n = len(m.markers_z_up_m)
    force = np.zeros((n, 2, 3))
    force[..., 2] = m.mass_kg * 9.81 / 2
    below = np.zeros((n, 2, 3))
    below[..., :2] = m.ik.root_pos_m[:, None, :2]
    forces = FootForces(rate_hz=m.rate_hz, t0_s=m.t0_s, force_n=force, moment_origin_nm=np.cross(below, force),
                        known=np.array([True, True]), grf_source="addbiomechanics")
    p = process_motion(dataclasses.replace(raw, measured=dataclasses.replace(m, forces=forces)), BuildConfig(simulate=None))
    assert "torque" in p.subsets
    frame, _, seq = stage_payload(p)
    names = m.source_results.dof_names
    assert seq["seq_source_dofs"].split() == list(names) and seq["seq_torque_source"] == "inverse_dynamics"
    np.testing.assert_array_equal(frame["source_tau_opensim"], p.source_torques.tau.astype(np.float32))
    assert frame["source_tau_opensim"].shape == (p.motion.n_frames, len(names))
    sizes = {"source_dof": len(names), "frame": p.motion.n_frames}
    assert validate_arrays(load_schema("torque"), {"source_tau_opensim": frame["source_tau_opensim"]}, sizes) == []
    # a trial without forces stays out of the torque subset and stages no tau (its passes carry it)
    p0 = process_motion(raw, BuildConfig(simulate=None))
    assert "torque" not in p0.subsets and p0.source_torques is not None
    assert "source_tau_opensim" not in stage_payload(p0)[0]
