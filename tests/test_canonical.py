"""Canonicalize stage: analytic resampling accuracy, exact timestamps, ground, up axis, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline import canonical as cn
from pipeline import markers as mk
from pipeline import skeleton as sk
from pipeline.records import CanonicalMotion, Provenance, RawMotion, SubjectInfo

PROV = Provenance(
    source="amass", path="TEST/s1/walk_poses.npz", sha256="0" * 64, dataset="TEST", subject="s1",
    name="walk", size_bytes=1,
)
HEIGHT = 1.8
OMEGA_AXIS = np.array([0.2, -0.1, 1.0]) / np.linalg.norm([0.2, -0.1, 1.0])
OMEGA = 1.3  # rad/s
UPRIGHT = Rotation.from_euler("x", 90, degrees=True)  # SMPL template (y up) → z-up world, facing -y


def knee_angle(t):
    return 0.5 * np.sin(2 * np.pi * 0.7 * t)


def analytic_root(t) -> Rotation:
    return Rotation.from_rotvec(OMEGA * t[:, None] * OMEGA_AXIS) * UPRIGHT


def analytic_trans(t):
    return np.stack(
        [1.2 * t + 0.1 * np.sin(2 * np.pi * 0.5 * t), 0.05 * np.cos(2 * np.pi * 0.3 * t), 0.9 + 0.02 * t], axis=-1
    )


def make_raw(fps: float, n: int, **subject_kw) -> RawMotion:
    t = np.arange(n) / fps
    body = np.zeros((n, 23, 3))
    body[:, 3, 0] = knee_angle(t)  # joint 4 (left knee) about template x
    body[:, 4, 0] = 0.3 * knee_angle(t)  # right knee
    subject = SubjectInfo(**({"gender": "male", "height_m": HEIGHT} | subject_kw))
    return RawMotion(
        provenance=PROV, subject=subject, fps_hz=fps, root_orient_aa_rad=analytic_root(t).as_rotvec(),
        body_pose_aa_rad=body, trans_m=analytic_trans(t), up_axis="z", model_type="smplh",
    )


def geodesic_deg(aa, r_ref: Rotation):
    return np.degrees((Rotation.from_rotvec(aa.reshape(-1, 3)).inv() * r_ref).magnitude())


@pytest.mark.parametrize("fps", [120.0, 100.0, 250.0])
def test_analytic_motion_resampled_to_30fps(fps):
    raw = make_raw(fps, int(3.0 * fps) + 1)
    cm = cn.canonicalize(raw, cn.CanonicalConfig())
    t = cm.time_s
    assert np.array_equal(t, np.arange(91) / 30.0)
    assert cm.joint_rot_aa_rad.shape == (91, 24, 3)
    assert np.max(geodesic_deg(cm.joint_rot_aa_rad[:, 0], analytic_root(t))) < 0.5
    knee = Rotation.from_rotvec(np.stack([knee_angle(t), 0 * t, 0 * t], -1))
    err_knee = geodesic_deg(cm.joint_rot_aa_rad[:, 4], knee)
    assert np.max(err_knee) < 0.5
    # slerp is far better than picking the nearest source frame (≈ 0.4° here at 100 Hz)
    assert np.max(err_knee) < 0.05
    others = [j for j in range(1, 24) if j not in (4, 5)]
    assert np.allclose(cm.joint_rot_aa_rad[:, others], 0.0, atol=1e-12)
    j0 = sk.anthropometric_skeleton(HEIGHT).rest_joints_m[0]
    expected_pelvis = analytic_trans(t) + j0 + np.array([0, 0, cm.ground_offset_m])
    assert np.max(np.abs(cm.root_pos_m - expected_pelvis)) < 1e-3
    assert np.allclose(cm.joint_pos_m[:, 0], cm.root_pos_m)
    # decimation would pick a source frame; at 100 Hz t = 1/30 falls between frames 3 and 4
    assert cm.fps_hz == 30.0 and cm.source_fps_hz == fps


def test_linear_translation_interp_is_less_accurate_but_close():
    raw = make_raw(100.0, 301)
    lin = cn.canonicalize(raw, cn.CanonicalConfig(translation_interp="linear"))
    cub = cn.canonicalize(raw, cn.CanonicalConfig())
    j0 = sk.anthropometric_skeleton(HEIGHT).rest_joints_m[0]
    exp = analytic_trans(lin.time_s) + j0
    e_lin = np.abs(lin.root_pos_m - [0, 0, lin.ground_offset_m] - exp).max()
    e_cub = np.abs(cub.root_pos_m - [0, 0, cub.ground_offset_m] - exp).max()
    assert e_cub < e_lin < 1e-3
    with pytest.raises(ValueError, match="translation_interp"):
        cn.CanonicalConfig(translation_interp="quadratic")


@pytest.mark.parametrize(
    "fps,n_src,n_expected",
    [(100.0, 301, 91), (100.0, 300, 90), (100.0, 2, 1), (60.0, 181, 91), (60.0, 100, 50), (60.0, 3, 2),
     (250.0, 751, 91), (250.0, 1000, 120), (120.0, 5, 2), (30.0, 10, 10), (29.97, 1000, 1001)],
)
def test_target_times_exact(fps, n_src, n_expected):
    t = cn.target_times(n_src, fps, 30.0)
    assert t.dtype == np.float64
    assert t.shape == (n_expected,)
    assert np.array_equal(t, np.arange(n_expected) / 30.0)
    assert t[-1] <= (n_src - 1) / fps + 1e-12


@pytest.mark.parametrize("fps,n", [(100.0, 301), (60.0, 100), (250.0, 1000)])
def test_canonical_timestamps_exact(fps, n):
    cm = cn.canonicalize(make_raw(fps, n), cn.CanonicalConfig())
    expected_n = int(np.floor((n - 1) / fps * 30 + 1e-9)) + 1
    assert cm.n_frames == expected_n
    assert np.array_equal(cm.time_s, np.arange(expected_n) / 30)
    assert cm.marker_pos_m.shape == (expected_n, mk.N_MARKERS, 3)
    assert cm.foot_points_m.shape == (expected_n, 4, 3)


def _upright_walk(n=241, fps=120.0, dz=0.0, subject=None) -> RawMotion:
    t = np.arange(n) / fps
    root = Rotation.from_euler("z", 0.4 * np.sin(2 * np.pi * 0.5 * t)[:, None]) * UPRIGHT
    body = np.zeros((n, 23, 3))
    body[:, 3, 0] = 0.6 * np.clip(np.sin(2 * np.pi * t), 0, None)  # left knee flexes (foot lifts)
    body[:, 6, 0] = -0.5 * np.clip(np.sin(2 * np.pi * t), 0, None)  # left ankle keeps the foot ~level
    trans = np.stack([0.8 * t, 0 * t, 0.02 * np.sin(4 * np.pi * t) + dz], axis=-1)
    return RawMotion(
        provenance=PROV, subject=subject or SubjectInfo(gender="female"), fps_hz=fps,
        root_orient_aa_rad=root.as_rotvec(), body_pose_aa_rad=body, trans_m=trans,
    )


def _assert_same(a: CanonicalMotion, b: CanonicalMotion, atol=1e-9):
    for f in ("time_s", "root_pos_m", "joint_pos_m", "marker_pos_m", "foot_points_m", "bone_length_m"):
        assert np.allclose(getattr(a, f), getattr(b, f), atol=atol), f
    ra = Rotation.from_rotvec(a.joint_rot_aa_rad.reshape(-1, 3))
    rb = Rotation.from_rotvec(b.joint_rot_aa_rad.reshape(-1, 3))
    assert np.max((ra.inv() * rb).magnitude()) < 1e-7


def test_ground_alignment_and_vertical_shift_invariance():
    cfg = cn.CanonicalConfig()
    a = cn.canonicalize(_upright_walk(), cfg)
    assert abs(a.foot_points_m[..., 2].min()) < 1e-9
    idx = [mk.MARKER_NAMES.index(m) for m in ("LHEE", "RHEE", "LTOE", "RTOE")]
    assert a.marker_pos_m[:, idx, 2].min() >= -1e-9
    # upright: the right (stance) foot carries the lowest point and bobs with trans z (± 0.02 m);
    # the pelvis is 0.555 H above it
    stance = a.foot_points_m[:, 2:, 2]
    assert abs(stance.min()) < 1e-9 and stance.max() < 0.04 + 1e-6
    assert np.allclose(a.root_pos_m[:, 2] - stance[:, 0], 0.555 * a.height_m, atol=1e-6)
    b = cn.canonicalize(_upright_walk(dz=0.5), cfg)
    _assert_same(a, b)
    assert b.ground_offset_m == pytest.approx(a.ground_offset_m - 0.5, abs=1e-9)


def test_y_up_source_matches_equivalent_z_up_source():
    cfg = cn.CanonicalConfig()
    z = _upright_walk()
    up = cn.up_rotation("y")
    assert np.allclose(up @ [0, 1, 0], [0, 0, 1]) and np.allclose(up @ [1, 0, 0], [1, 0, 0])
    assert np.isclose(np.linalg.det(up), 1.0)
    j0 = cn.subject_skeleton(z.subject, cfg).rest_joints_m[0]
    up_r = Rotation.from_matrix(up)
    root_y = (up_r.inv() * Rotation.from_rotvec(z.root_orient_aa_rad)).as_rotvec()
    trans_y = (z.trans_m + j0) @ up - j0  # up^T applied to row vectors
    y = dataclasses.replace(z, root_orient_aa_rad=root_y, trans_m=trans_y, up_axis="y")
    _assert_same(cn.canonicalize(z, cfg), cn.canonicalize(y, cfg))
    # and treating the y-up data as z-up gives something different
    wrong = dataclasses.replace(y, up_axis="z")
    assert not np.allclose(cn.canonicalize(wrong, cfg).joint_pos_m, cn.canonicalize(z, cfg).joint_pos_m, atol=1e-3)


def test_subject_defaults():
    cfg = cn.CanonicalConfig()
    f = cn.canonicalize(_upright_walk(), cfg)
    assert f.gender == "female" and f.height_m == pytest.approx(1.62)
    assert f.mass_kg == pytest.approx(23.0 * 1.62**2)
    assert f.skeleton_origin == "anthropometric"
    assert np.allclose(f.bone_length_m, sk.anthropometric_skeleton(1.62).bone_lengths_m)
    m = cn.canonicalize(_upright_walk(subject=SubjectInfo(gender="male", height_m=1.9, mass_kg=80.0)), cfg)
    assert m.height_m == 1.9 and m.mass_kg == 80.0
    assert np.allclose(m.bone_length_m, sk.anthropometric_skeleton(1.9).bone_lengths_m)
    n = cn.canonicalize(_upright_walk(subject=SubjectInfo()), cn.CanonicalConfig(default_bmi_kg_m2=20.0))
    assert n.height_m == pytest.approx(1.70) and n.mass_kg == pytest.approx(20.0 * 1.70**2)
    with pytest.raises(ValueError, match="gender"):
        cn.canonicalize(_upright_walk(subject=SubjectInfo(gender="other")), cfg)


def test_bad_inputs_raise_clear_errors():
    cfg = cn.CanonicalConfig()
    good = make_raw(120.0, 50)
    one = dataclasses.replace(
        good, root_orient_aa_rad=good.root_orient_aa_rad[:1], body_pose_aa_rad=good.body_pose_aa_rad[:1],
        trans_m=good.trans_m[:1],
    )
    with pytest.raises(ValueError, match="at least 2 frames"):
        cn.canonicalize(one, cfg)
    trans = good.trans_m.copy()
    trans[3, 1] = np.nan
    trans[7, 2] = np.inf
    with pytest.raises(ValueError, match="trans_m has 2 non-finite"):
        cn.canonicalize(dataclasses.replace(good, trans_m=trans), cfg)
    body = good.body_pose_aa_rad.copy()
    body[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="body_pose_aa_rad has 1 non-finite"):
        cn.canonicalize(dataclasses.replace(good, body_pose_aa_rad=body), cfg)
    for fps in (0.0, -30.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="fps"):
            cn.canonicalize(dataclasses.replace(good, fps_hz=fps), cfg)
    short = make_raw(120.0, 4)  # 3/120 s = 25 ms < 33.3 ms
    with pytest.raises(ValueError, match="shorter than one canonical frame interval"):
        cn.canonicalize(short, cfg)
    assert cn.canonicalize(make_raw(120.0, 5), cfg).n_frames == 2  # exactly one interval is fine
    with pytest.raises(ValueError, match="body_pose_aa_rad has shape"):
        cn.canonicalize(dataclasses.replace(good, body_pose_aa_rad=good.body_pose_aa_rad[:, :21]), cfg)
    with pytest.raises(ValueError, match="up axis"):
        cn.canonicalize(dataclasses.replace(good, up_axis="x"), cfg)
    with pytest.raises(ValueError, match="fps"):
        cn.CanonicalConfig(fps_hz=0.0)
    with pytest.raises(ValueError, match="fps"):
        cn.target_times(10, 0.0, 30.0)


@pytest.mark.smpl
def test_subject_skeleton_uses_smpl_model_dir(tmp_path):
    pytest.importorskip("smplx")
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    base = sk.anthropometric_skeleton(1.7).rest_joints_m
    v = np.repeat(base, 2, axis=0) + rng.normal(scale=0.01, size=(48, 3))
    v = np.concatenate([v, [[0, base[0, 1] - 0.555 * 1.7, 0], [0, base[0, 1] + 0.445 * 1.7, 0]]])
    J = np.zeros((24, 50))
    J[np.repeat(np.arange(24), 2), np.arange(48)] = 0.5
    arrays = dict(
        v_template=v, shapedirs=rng.normal(scale=0.01, size=(50, 3, 10)), posedirs=np.zeros((50, 3, 207)),
        J_regressor=J, weights=np.eye(24)[np.minimum(np.arange(50) // 2, 23)],
        kintree_table=np.array([[4294967295] + list(sk.PARENTS[1:]), list(range(24))], dtype=np.uint32),
        f=np.array([[0, 1, 2]], dtype=np.uint32),
    )
    (tmp_path / "smplh").mkdir()
    arrays["J_regressor"] = np.concatenate([J, np.tile(J[22:23], (28, 1))])  # 52 joints, SMPL-H shaped
    np.savez(tmp_path / "smplh" / "SMPLH_FEMALE.npz", **arrays)
    raw = _upright_walk(subject=SubjectInfo(gender="female", betas=np.linspace(-1, 1, 10).astype(np.float32)))
    cm = cn.canonicalize(raw, cn.CanonicalConfig(smpl_model_dir=str(tmp_path)))
    assert cm.skeleton_origin == "smpl-model:SMPLH_FEMALE.npz"
    assert cm.height_m == pytest.approx(1.7, abs=0.15)
    assert abs(cm.foot_points_m[..., 2].min()) < 1e-9
