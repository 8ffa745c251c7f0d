"""OpenSim / AddBiomechanics upload source (pipeline.sources.opensim, pipeline.lab.opensim_files) against the
real samples in ../shared/data/addbiomechanics (MANIFEST.md); skipped where absent. Malformed variants are
generated here from the real files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.lab import opensim_files as of
from pipeline.process import BuildConfig, process_motion
from pipeline.sources.base import SourceError, get_source

ADDB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "addbiomechanics"
if not ADDB.is_dir():
    ADDB = Path("/work/shared/data/addbiomechanics")
pytestmark = pytest.mark.skipif(not ADDB.is_dir(), reason=f"AddBiomechanics samples absent ({ADDB}); see shared/data/MANIFEST.md")
TUT = ADDB / "tutorial_walk"
JA1 = ADDB / "JA1Gait35"


def test_parsers_on_the_real_files():
    trc = of.parse_trc((JA1 / "JA1Gait35.trc").read_text())
    assert trc.rate_hz == 250 and trc.markers_m.shape == (322, 53, 3) and trc.units == "m"
    assert trc.labels[:3] == ("C7", "LARM", "LASI")
    tut = of.parse_trc((TUT / "motion_capture_walk_trimmed.trc").read_text())
    assert tut.units == "mm" and tut.rate_hz == 100 and tut.time_s[0] == pytest.approx(0.5)
    assert 0.5 < np.nanmedian(tut.markers_m[..., 1]) < 1.5  # mm → m, y up
    model = of.parse_osim((JA1 / "rescaled.osim").read_text())
    assert model.marker_bodies["LASI"] == "pelvis" and model.marker_bodies["RSH"] == "torso"
    assert len(model.coordinates) == 35 and len(model.dof_names) == 33 and "knee_angle_r_beta" not in model.dof_names
    assert 60 < model.mass_kg < 80
    table = of.parse_mot((JA1 / "JA1Gait35_grf.mot").read_text())
    loads = of.parse_external_loads((JA1 / "JA1Gait35_external_forces.xml").read_text())
    forces = of.applied_forces(table, loads)
    assert len(forces) == len(loads) == 8 and {f.body for f in forces} == {"calcn_r", "calcn_l"}
    walk = of.applied_forces(of.parse_mot((TUT / "grf_walk_trimmed.mot").read_text()), None)
    assert [f.body for f in walk] == ["calcn_r", "calcn_l"]  # sides from ground_force_r_/l_ column names


def test_tutorial_walk_builds_with_measured_forces_per_foot():
    src = get_source("opensim")
    files = src.discover(ADDB)
    assert [p.suffix for p in files] == [".trc", ".trc"]
    (raw,) = src.read(TUT / "motion_capture_walk_trimmed.trc", ADDB)
    prov = raw.provenance
    assert (prov.dataset, prov.subject, prov.name) == ("addbiomechanics", "tutorial_walk", "motion_capture_walk_trimmed")
    assert raw.measured.forces is not None and raw.measured.forces.known.all()
    assert np.nanmedian(raw.measured.ik.rmse_m) < 0.015
    p = process_motion(raw, BuildConfig(simulate=None))
    m = p.measured
    assert m.has_grf and m.grf_source == "force_plate" and "ground_reaction" in p.subsets
    bw = p.motion.mass_kg * 9.81
    peak = np.nanmax(m.grf_n[..., 2], axis=0) / bw
    assert np.all((peak > 1.0) & (peak < 1.6)), peak  # walking: 1.0–1.5 body weights per foot
    # both feet carry weight at some frames, swing at others; the COP lies under the skeleton's feet
    stance = m.grf_n[..., 2] > 0.2 * bw
    assert stance[:, 0].any() and stance[:, 1].any() and (~stance).any()
    foot = p.motion.joint_pos_m[:, [7, 8], :2]
    d = np.linalg.norm(m.cop_m[..., :2] - foot, axis=-1)[stance]
    assert np.nanmedian(d) < 0.15
    # the tutorial's model is the generic, unscaled Rajagopal 2015 template (75.337 kg), not this subject:
    # the plates' vertical Newton fit replaces a model's mass (it agrees with a scaled model's, below)
    assert raw.measured.mass_kg == pytest.approx(75.337, abs=0.01) and raw.measured.mass_is_model
    assert m.mass_source.startswith("plates_gait") and "the model's mass is 75.3 kg" in m.mass_source
    assert 80.0 < m.mass_kg < 90.0 and p.motion.mass_kg == m.mass_kg


@pytest.mark.parametrize("variant", ["truncated_header", "garbage", "bad_units", "bad_number"])
def test_malformed_trc_is_one_clear_line(tmp_path, variant):
    text = (TUT / "motion_capture_walk_trimmed.trc").read_text()
    folder = tmp_path / "subj"
    folder.mkdir()
    bad = {"truncated_header": text[:200], "garbage": "\x00\x01garbage" * 50,
           "bad_units": text.replace(" mm\t", " furlong\t", 1),
           "bad_number": text.replace("\t-5.107\t", "\tabc\t", 1)}[variant]
    (folder / "m.trc").write_text(bad)
    with pytest.raises(SourceError) as exc:
        get_source("opensim").read(folder / "m.trc", tmp_path)
    msg = str(exc.value)
    assert msg.startswith("subj/m.trc: ") and "\n" not in msg


@pytest.mark.parametrize("which", ["mot", "osim", "xml"])
def test_malformed_companions_name_their_file(tmp_path, which):
    folder = tmp_path / "JA1"
    shutil.copytree(JA1, folder)
    name = {"mot": "JA1Gait35_grf.mot", "osim": "rescaled.osim", "xml": "JA1Gait35_external_forces.xml"}[which]
    data = (folder / name).read_text()
    cut = {"mot": data.replace("endheader", "end_of_nothing"), "osim": data[: len(data) // 3],
           "xml": data[: len(data) // 2]}[which]
    if which == "xml":
        cut = "<OpenSimDocument><ExternalLoads" + cut[cut.index("<ExternalLoads") + len("<ExternalLoads"):]
    (folder / name).write_text(cut)
    if which == "mot":  # a table without 'endheader' is not a GRF table of this layout any more
        (folder / name).write_text("ground_force_1_vx\n" + cut)
    with pytest.raises(SourceError) as exc:
        get_source("opensim").read(folder / "JA1Gait35.trc", tmp_path)
    assert str(exc.value).startswith(f"JA1/{name}: ") and "\n" not in str(exc.value)


def test_sprint_impacts_do_not_ring_into_swing_frames():
    """JA1Gait35 is a sprint (3.7 BW peaks, stances of ~4 frames at 30 FPS). The 12 Hz low-pass rang into the
    swing frames next to each stance (−95…+37 N where the plate reads exactly 0 N); the positive lobes counted
    as loaded, with COPs up to 0.4 m off the foot, and excluded the trial (cop_far_outside, 0.30 > 0.25).
    Frames unloaded throughout their interval now hold zero force and no COP — except where the foot stands on
    the floor beside the plates (its first left step, frames 4–6): unknown, not 0 N."""
    from pipeline.lab import forceplate as fp
    from pipeline.lab.trial import off_plate_frames
    from pipeline.quality import evaluate_flags
    from pipeline.quality.integration import sequence_metrics

    (raw,) = get_source("opensim").read(JA1 / "JA1Gait35.trc", ADDB)
    p = process_motion(raw, BuildConfig(simulate=None))
    f, m = raw.measured.forces, p.measured
    idle = fp.unloaded_frames(f.force_n[..., 2], f.rate_hz, raw.measured.t0_s - f.t0_s + p.motion.time_s, 20.0)
    off = off_plate_frames(p.motion.foot_points_m, np.where(idle, 0.0, 1e3), p.motion.fps_hz,
                           p.motion.ground_offset_m)
    assert off[4:7, 0].all() and off.sum() <= 8  # the unmeasured left step; a few stance-end frames at most
    assert 25 <= idle.sum(axis=0).min() and idle.sum() < idle.size  # swing frames; stances stay
    swing = idle & ~off
    assert (m.grf_n[swing] == 0).all() and np.isnan(m.cop_m[swing]).all() and (m.foot_contact[swing] == 0).all()
    assert np.isnan(m.grf_n[off]).all() and (m.foot_contact[off] == 255).all()
    assert np.nanmax(m.grf_n[..., 2]) / (p.motion.mass_kg * 9.81) > 3.5  # the impacts themselves are kept
    # the 6 Hz vertical model cannot explain a sprint at 30 FPS (its fit missed by a median > 0.1 BW and, without
    # the unmeasured step's frames, read 91 kg): the model's mass, scaled to the subject by AddBiomechanics, stays
    assert m.mass_source.startswith("model") and m.mass_kg == pytest.approx(68.1, abs=0.05)
    row = sequence_metrics(p)
    assert row["cop_outside_foot_frac"] < 0.25, row["cop_outside_foot_frac"]
    assert "cop_far_outside" not in {fl.name for fl in evaluate_flags(row, None)}
