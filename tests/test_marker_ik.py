"""Marker IK (pipeline.lab.marker_ik): recovery of known poses from our own virtual markers, matching, rejection."""

from __future__ import annotations

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
    res = ik.fit_markers(markers, labels, ik.IKConfig(calibrate_offsets=False))  # speed: benchmarks/marker_ik_bench.py
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
    msg = ik.check_targets(bad)  # cluster names: the pelvis cluster counts, the legs have too few markers
    assert msg is not None and "pelvis" not in msg and "left leg has 1 targets and none on the foot" in msg
    assert "right leg has 2" in msg and "\n" not in msg
    assert ik.check_targets(ik.match_targets(["RFT1", "LSK1", "junk"])).count("pelvis has 0") == 1
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


def _clusters(glob, joints, rng, per_segment):
    """Rigid technical-marker clusters: ``per_segment`` {label prefix: (joint, n)} at random body-fixed offsets."""
    labels, pts = [], []
    for prefix, (j, n) in per_segment.items():
        offs = rng.uniform(-0.08, 0.08, (n, 3))
        offs[:, 1] -= 0.12 if j not in (0, 7, 8) else 0.0  # along the segment, below the joint
        for k in range(n):
            labels.append(f"{prefix}{k + 1}")
            pts.append(joints[:, j] + np.einsum("tij,j->ti", glob[:, j], offs[k]))
    return labels, np.stack(pts, axis=1)


CLUSTERS = {"PV": (0, 4), "LTH": (1, 3), "RTH": (2, 3), "LSK": (4, 3), "RSK": (5, 3), "LFT": (7, 3), "RFT": (8, 3)}


def test_cluster_only_marker_set_is_fitted_from_segment_targets():
    """Clusters with unknown offsets (BTK sample01-style names): segments from the name table, offsets
    calibrated; joint centres are recovered to a few centimetres and the markers fit to millimetres."""
    aa, root, joints, _ = _gait_like(n=200, seed=5)
    skel = sk.anthropometric_skeleton(1.78)
    glob, _ = sk.forward_kinematics(rot.aa_to_rotmat(aa), root, skel.offsets_m)
    labels, markers = _clusters(glob, joints, np.random.default_rng(2), CLUSTERS)
    ts = ik.match_targets(labels)
    assert ts.free.all() and ik.check_targets(ts) is None
    res = ik.fit_markers(markers, labels)
    assert np.nanmedian(res.rmse_m) < 0.01
    _, fitted = _fk(res)
    legs = [0, 1, 2, 4, 5, 7, 8]
    err = np.linalg.norm(fitted[:, legs] - joints[:, legs] - (fitted[:, :1] - joints[:, :1]), axis=-1)
    assert np.median(err) < 0.06  # joint positions relative to the pelvis, metres


def test_segment_targets_join_named_ones_and_unknown_markers_by_rigidity():
    from pipeline.lab import marker_sets as ms

    aa, root, joints, markers = _gait_like(n=150, seed=7)
    skel = sk.anthropometric_skeleton(1.78)
    glob, _ = sk.forward_kinematics(rot.aa_to_rotmat(aa), root, skel.offsets_m)
    c_labels, c_markers = _clusters(glob, joints, np.random.default_rng(4), {"LTB": (4, 3), "RTB": (5, 3)})
    labels = list(mk.MARKER_NAMES) + c_labels
    allm = np.concatenate([markers, c_markers], axis=1)
    assert not ik.match_targets(labels).free.any()  # named markers suffice: cluster names are not added
    segments = {n: ("left_shank" if n[0] == "L" else "right_shank") for n in c_labels}
    ts = ik.match_targets(labels, segments)  # a model's marker set places them
    assert int(ts.free.sum()) == 6 and {ts.parents[k] for k in np.flatnonzero(ts.free)} == {4, 5}
    res = ik.fit_markers(allm, labels, targets=ts)
    assert np.nanmedian(res.rmse_m) < 0.005
    # rigidity: an unnamed marker on the left shank joins the left shank, a random one joins nothing
    idx = {n: i for i, n in enumerate(labels)}
    known = {idx[n]: s for n, s in (("LKNE", "left_shank"), ("LTIB", "left_shank"), ("LANK", "left_foot"),
                                     ("LHEE", "left_foot"), ("RKNE", "right_shank"), ("RTIB", "right_shank"))}
    noise = allm[:, [idx["LTB1"]]] + np.random.default_rng(0).normal(0, 0.05, (allm.shape[0], 1, 3))
    got = ms.assign_by_rigidity(np.concatenate([allm, noise], axis=1), known, [idx["LTB2"], allm.shape[1]])
    assert got == {idx["LTB2"]: "left_shank"}


def test_marker_set_tables():
    from pipeline.lab import marker_sets as ms

    assert ms.segment_of_body("femur_r") == "right_thigh" and ms.segment_of_body("calcn_l") == "left_foot"
    assert ms.segment_of_body("torso") == "trunk" and ms.segment_of_body("/bodyset/tibia_l") == "left_shank"
    assert ms.segment_of_body("ground") is None
    assert ms.segment_from_name("RTH1") == "right_thigh" and ms.segment_from_name("pv4") == "pelvis"
    assert ms.segment_from_name("L.SH2") == "left_shank" and ms.segment_from_name("LTHI") is None
    assert ms.segment_from_name("TH1") is None  # a sided segment needs a side
    ts = ik.match_targets(["R.ASIS", "L.ASIS", "S2", "R.Knee", "R.Ankle", "R.Heel", "R.Toe", "r_mknee_study",
                           "L.PSIS", "LLEPI", "C7_study"])
    got = dict(zip(ts.names, ts.labels))
    assert got["RASI"] == ("R.ASIS",) and got["RKNE"] == ("R.Knee",) and got["RANK"] == ("R.Ankle",)
    assert got["RKNM"] == ("r_mknee_study",) and got["LKNE"] == ("LLEPI",) and got["C7"] == ("C7_study",)
    assert got["SACR"] == ("S2",) and got["LPSI"] == ("L.PSIS",)


def test_score_centre_recovers_a_ball_joint_and_ignores_a_jumping_marker():
    from pipeline.lab import functional as fn

    rng = np.random.default_rng(3)
    n = 120
    centre = np.stack([np.linspace(0, 1.2, n), 0.02 * np.sin(np.arange(n) / 9), np.full(n, 0.5)], 1)
    t = np.arange(n) / 30.0
    rp = rot.aa_to_rotmat(np.stack([0.2 * np.sin(t), 0.1 * np.cos(t), 0 * t], 1))
    rc = rot.aa_to_rotmat(np.stack([0.7 * np.sin(2 * t), 0.2 * np.sin(t), 0.15 * np.cos(3 * t)], 1))
    p_local = rng.uniform(-0.05, 0.05, (4, 3)) + [0.08, 0.2, 0.0]  # parent cluster 20 cm above the joint
    c_local = rng.uniform(-0.05, 0.05, (3, 3)) + [0.06, -0.2, 0.02]
    parent = centre[:, None] + np.einsum("tij,kj->tki", rp, p_local)
    child = centre[:, None] + np.einsum("tij,kj->tki", rc, c_local)
    child[40, 1] += 0.08  # one frame with a jumping marker
    child[50:55, 2] = np.nan  # three of three markers needed: frames left out
    c = fn.score_centre(parent, child)
    assert fn.usable(c) and c.frames == n - 5 - 1
    ok = np.isfinite(c.centre_m[:, 0])
    # the Tikhonov term (REG = 0.01) pulls the centre towards the clusters' midpoint, here by ≈ 4 cm
    assert np.abs(c.centre_m[ok] - centre[ok]).max() < 0.05
    assert np.abs(fn.score_centre(parent, child, reg=1e-3).centre_m[ok] - centre[ok]).max() < 0.015
    exact = fn.score_centre(parent, child, reg=0.0)
    assert np.abs(exact.centre_m[ok] - centre[ok]).max() < 0.001
    assert not fn.usable(fn.score_centre(parent, parent + 0.1))  # no relative motion: no centre
