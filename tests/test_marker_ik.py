"""Marker IK (pipeline.lab.marker_ik): recovery of known poses from our own virtual markers, matching, rejection."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.lab import marker_ik as ik
from pipeline import markers as mk
from pipeline import rotations as rot
from pipeline import skeleton as sk

Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # template y-up, facing +z → world z-up


def _gait_like(n: int = 200, fps: float = 100.0, height: float = 1.78, seed: int = 0):
    """Poses within gait-like ranges around the neutral pose, a walking pelvis, FK virtual markers."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    aa = np.zeros((n, 24, 3))
    heading = 0.3 * np.sin(0.5 * t)
    aa[:, 0] = rot.rotmat_to_aa(rot.aa_to_rotmat(np.stack([0 * t, 0 * t, heading], 1)) @ Z_UP)
    amp = np.zeros((24, 3))
    amp[[1, 2]] = (0.5, 0.15, 0.15)  # hips: flexion, twist, ab/adduction
    amp[[4, 5]] = (0.6, 0.1, 0.05)  # knees
    amp[[7, 8]] = (0.3, 0.1, 0.1)  # ankles
    amp[[3, 6, 9, 12, 15]] = 0.08
    amp[[13, 14]] = 0.05
    amp[[16, 17, 18, 19, 20, 21]] = 0.3
    phase = rng.uniform(0, 2 * np.pi, (24, 3))
    aa[:, 1:] = ik.REST_POSE[1:] + amp[1:] * np.sin(2 * np.pi * 0.9 * t[:, None, None] + phase[1:])
    root = np.stack([1.2 * t, 0.05 * np.sin(t), 0.95 + 0.02 * np.sin(2 * np.pi * 1.8 * t)], axis=1)
    skel = sk.anthropometric_skeleton(height)
    glob, joints = sk.forward_kinematics(rot.aa_to_rotmat(aa), root, skel.offsets_m)
    return aa, root, joints, mk.marker_positions(glob, joints, skel)


def _angle_deg(a, b):
    q1, q2 = rot.aa_to_quat(a), rot.aa_to_quat(b)
    return np.degrees(2 * np.arccos(np.clip(np.abs((q1 * q2).sum(-1)), 0.0, 1.0)))


def _fk(res: ik.IKResult):
    pose = np.concatenate([res.root_orient_aa_rad[:, None], res.body_pose_aa_rad], axis=1)
    skel = sk.anthropometric_skeleton(res.height_m)
    return pose, sk.forward_kinematics(rot.aa_to_rotmat(pose), res.root_pos_m, skel.offsets_m)[1]


def test_recovers_known_pose_height_and_joints_from_virtual_markers():
    aa, _, joints, markers = _gait_like()
    markers[np.random.default_rng(1).random(markers.shape[:2]) < 0.05] = np.nan  # 5 % dropouts
    labels = [f"Subject01:{n}" for n in mk.MARKER_NAMES]  # prefixed as in Vicon files
    t0 = time.perf_counter()
    res = ik.fit_markers(markers, labels, ik.IKConfig(calibrate_offsets=False))
    elapsed = time.perf_counter() - t0
    assert abs(res.height_m - 1.78) < 0.01
    assert res.solved.mean() > 0.95  # frames with < 3 pelvis markers are interpolated
    assert np.nanmedian(res.rmse_m) < 0.002 and np.nanmax(res.rmse_m) < 0.005
    pose, fitted_joints = _fk(res)
    err = np.linalg.norm(fitted_joints - joints, axis=-1)
    assert np.median(err) < 0.003 and err[:, :22].max() < 0.02  # metres (hands carry no marker)
    ang = _angle_deg(pose, aa)
    assert np.median(ang[:, 0]) < 0.5 and ang[:, 0].max() < 2.0  # pelvis, degrees
    legs = [1, 2, 4, 5, 7, 8]
    assert np.median(ang[:, legs]) < 2.0 and np.percentile(ang[:, legs], 95) < 5.0
    assert np.median(ang[:, :22]) < 2.0
    assert elapsed < 10.0


def test_offset_calibration_keeps_the_fit_and_unobserved_joints_stay_neutral():
    _, _, joints, markers = _gait_like(n=120, seed=3)
    res = ik.fit_markers(markers, list(mk.MARKER_NAMES))  # default: wand offsets calibrated
    assert np.nanmedian(res.rmse_m) < 0.002
    pose, fitted = _fk(res)
    assert np.median(np.linalg.norm(fitted - joints, axis=-1)) < 0.01
    np.testing.assert_allclose(pose[:, [10, 11, 22, 23]], 0.0, atol=1e-9)  # feet and hands: no markers


def test_label_matching_aliases_and_rejection():
    labels = ["Bob:LASI", "Bob:RASI", "VSAC", "L.CAL", "LMT2", "LLMAL", "LMMAL", "LLFC", "LKNE_2", "RHEE", "RTOE",
              "RANK", "RKNE", "RSHA", "IJ", "PX", "C7", "junk"]
    ts = ik.match_targets(labels)
    got = dict(zip(ts.names, ts.labels))
    assert got["SACR"] == ("VSAC",) and got["LHEE"] == ("L.CAL",) and got["LTOE"] == ("LMT2",)
    assert got["LANK"] == ("LLMAL",) and got["LMED"] == ("LMMAL",) and got["LKNE"] == ("LLFC",)
    assert got["LKNM"] == ("LKNE_2",) and got["RTIB"] == ("RSHA",)
    assert got["CLAV"] == ("IJ",) and got["STRN"] == ("PX",)
    assert ik.check_targets(ts) is None
    bad = ik.match_targets(["RFT1", "RFT2", "LSK1", "PV1", "PV2", "PV3"])
    msg = ik.check_targets(bad)
    assert msg is not None and "pelvis has 0" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="too few named markers"):
        ik.fit_markers(np.zeros((10, 6, 3)), ["RFT1", "RFT2", "LSK1", "PV1", "PV2", "PV3"])


def test_lift_toes_puts_toe_tips_on_the_floor():
    aa, root, _, _ = _gait_like(n=50)
    aa[:, 7] = (0.8, 0.0, 0.0)  # strong ankle plantarflexion: the rigid toe tips dive below the floor
    skel = sk.anthropometric_skeleton(1.78)
    glob, j = sk.forward_kinematics(rot.aa_to_rotmat(aa), root, skel.offsets_m)
    floor = float(j[:, [10, 11], 2].min()) - 0.005  # the ball joints stay above the floor
    before = sk.sole_points(glob, j, skel)[:, [1, 3], 2]
    assert before.min() < floor - 0.01
    lifted = ik.lift_toes(aa, root, 1.78, floor)
    glob2, j2 = sk.forward_kinematics(rot.aa_to_rotmat(lifted), root, skel.offsets_m)
    after = sk.sole_points(glob2, j2, skel)
    was_below = before < floor
    assert np.all(after[:, [1, 3], 2][was_below] > floor - 0.001)
    assert np.all(after[:, [1, 3], 2][was_below] < floor + 0.001)  # lifted just onto the floor
    np.testing.assert_allclose(np.delete(lifted, [10, 11], axis=1), np.delete(aa, [10, 11], axis=1))
    np.testing.assert_allclose(j2, j)  # joints do not move, only the toe segment
