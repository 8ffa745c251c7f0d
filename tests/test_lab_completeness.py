"""Tests for pipeline.lab.completeness: frames whose plates cannot have measured the whole load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.lab.body_mass import GRAVITY_MPS2
from pipeline.lab.completeness import incomplete_frames, mask_incomplete

FPS = 30.0
C3D_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "c3d"
if not C3D_ROOT.is_dir():
    C3D_ROOT = Path("/work/shared/data/c3d")


def _walk(mass_kg: float = 70.0, seconds: float = 3.0, step_hz: float = 2.0):
    """Per-foot forces and joints of a centre of mass bobbing 2.5 cm at ``step_hz``: the total vertical
    force is Newton's, shared between the feet in alternation (each foot's share a smooth 0..1 wave)."""
    t = np.arange(int(seconds * FPS)) / FPS
    w = 2 * np.pi * step_hz
    z = 0.95 + 0.025 * np.sin(w * t)
    fz = mass_kg * (GRAVITY_MPS2 - 0.025 * w * w * np.sin(w * t))
    share = 0.5 + 0.5 * np.sin(0.5 * w * t)
    grf = np.zeros((t.size, 2, 3))
    grf[:, 0, 2] = share * fz
    grf[:, 1, 2] = (1 - share) * fz
    joints = np.zeros((t.size, 24, 3))
    joints[..., 2] = z[:, None]
    return grf, joints


def test_a_consistent_walk_has_no_incomplete_frame():
    grf, joints = _walk()
    bad = incomplete_frames(grf, joints, FPS, height_m=1.75)
    assert bad is not None and not bad.any()


def test_a_foot_partly_off_its_plate_is_found_and_only_there():
    grf, joints = _walk()
    grf[40:44, 0, 2] *= 0.3  # the left foot's plate sees 30 % of its load on 4 frames
    grf[40:44, 1, 2] = 0.0   # and the right foot, "swinging", is really on the unmeasured floor
    bad = incomplete_frames(grf, joints, FPS, height_m=1.75)
    assert bad is not None
    assert set(np.flatnonzero(bad)) <= set(range(38, 46)) and bad[41] and bad[42]


def test_a_stated_mass_that_disagrees_with_the_plates_flags_nothing():
    """The check uses the plates' own fitted mass: a file stating 10 % less does not matter."""
    grf, joints = _walk(mass_kg=80.0)
    bad = incomplete_frames(grf, joints, FPS, height_m=1.75)
    assert bad is not None and not bad.any()


def test_a_trial_the_model_cannot_explain_is_not_checked():
    """Sprinting at 30 FPS: the 6 Hz model misses most frames; nothing is flagged, the count is NaN."""
    grf, joints = _walk()
    rng = np.random.default_rng(0)
    grf[..., 2] *= rng.uniform(0.2, 1.8, size=(grf.shape[0], 1))  # impacts the kinematics do not show
    assert incomplete_frames(grf, joints, FPS, height_m=1.75) is None
    grf[:] = np.nan  # nothing known
    assert incomplete_frames(grf, joints, FPS, height_m=1.75) is None


def test_real_walks_only_walking2_loses_the_frames_its_plates_missed():
    """opensim-core walking2 at 30 FPS: frames 23–26, where its plates read 0.19–0.89 BW with the other foot
    called swinging, are stored unknown; PiG_Motion3_FF and Gait keep every frame; a sprint is not checked."""
    if not C3D_ROOT.is_dir():
        pytest.skip("real C3D samples absent (shared/data/MANIFEST.md)")
    from pipeline.process import BuildConfig, process_motion
    from pipeline.sources.base import get_source

    src = get_source("c3d")
    cfg = BuildConfig(simulate=None)
    w2 = process_motion(src.read(C3D_ROOT / "opensim-core/walking2.c3d", C3D_ROOT)[0], cfg)
    m = w2.measured
    assert m.extra_metrics["grf_incomplete_frames"] == 4
    gone = [23, 24, 25, 26]
    assert np.isnan(m.grf_n[gone]).all() and np.isnan(m.cop_m[gone]).all() and (m.foot_contact[gone] == 255).all()
    assert np.isnan(m.grf_total_n[gone]).all()
    known = np.isfinite(m.grf_n).all(axis=(1, 2))
    assert known.sum() == 23
    pig = process_motion(src.read(C3D_ROOT / "btk/PiG/PiG_Motion3_FF.c3d", C3D_ROOT)[0], cfg)
    assert pig.measured.extra_metrics["grf_incomplete_frames"] == 0
    # what is left is consistent: a second pass finds nothing more
    assert mask_incomplete(m, w2.motion).extra_metrics["grf_incomplete_frames"] == 0
