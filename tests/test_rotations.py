"""Rotation utilities against scipy's Rotation and analytic expectations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline import rotations as rot


def _random_rotations(n: int, seed: int = 0) -> Rotation:
    return Rotation.random(n, random_state=seed)


def _geodesic(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotation matrices, rad (scipy's magnitude: accurate near 0)."""
    rel = np.swapaxes(R1, -1, -2) @ R2
    return Rotation.from_matrix(rel.reshape(-1, 3, 3)).magnitude().reshape(rel.shape[:-2])


def _wxyz(r: Rotation) -> np.ndarray:
    return r.as_quat(scalar_first=True)


def test_aa_to_quat_and_rotmat_match_scipy():
    r = _random_rotations(500)
    aa = r.as_rotvec()
    q = rot.aa_to_quat(aa)
    assert np.all(q[:, 0] >= 0)
    assert np.allclose(q, _wxyz(r) * np.sign(_wxyz(r)[:, :1]), atol=1e-12)
    assert np.allclose(rot.aa_to_rotmat(aa), r.as_matrix(), atol=1e-12)
    assert np.allclose(rot.quat_to_rotmat(q), r.as_matrix(), atol=1e-12)


def test_round_trips_any_leading_shape():
    r = _random_rotations(60, seed=1)
    aa = r.as_rotvec().reshape(3, 4, 5, 3)
    R = rot.aa_to_rotmat(aa)
    assert R.shape == (3, 4, 5, 3, 3)
    assert np.allclose(rot.rotmat_to_aa(R), aa, atol=1e-10)
    assert np.allclose(rot.quat_to_aa(rot.rotmat_to_quat(R)), aa, atol=1e-10)
    q = rot.rotmat_to_quat(R)
    assert np.allclose(rot.quat_to_rotmat(q), R, atol=1e-12)
    d6 = rot.rotmat_to_6d(R)
    assert d6.shape == (3, 4, 5, 6)
    assert np.allclose(rot.rot6d_to_rotmat(d6), R, atol=1e-12)


def test_rotmat_to_quat_matches_scipy_including_near_pi_and_identity():
    angles = np.array([0.0, 1e-9, 1e-4, 0.5, np.pi - 1e-6, np.pi])
    axes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -2, 3], [-1, 0.5, 0.2]], dtype=float)
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    aa = (axes[:, None, :] * angles[None, :, None]).reshape(-1, 3)
    r = Rotation.from_rotvec(aa)
    q = rot.rotmat_to_quat(r.as_matrix())
    q_ref = _wxyz(r)
    # same rotation up to sign
    assert np.allclose(np.abs(np.sum(q * q_ref, axis=-1)), 1.0, atol=1e-12)
    assert np.all(q[:, 0] >= 0)
    assert np.all(_geodesic(rot.quat_to_rotmat(q), r.as_matrix()) < 1e-7)
    aa_back = rot.rotmat_to_aa(r.as_matrix())
    assert np.all(np.linalg.norm(aa_back, axis=-1) <= np.pi + 1e-12)
    assert np.all(_geodesic(rot.aa_to_rotmat(aa_back), r.as_matrix()) < 1e-7)


def test_quat_to_aa_angle_in_zero_pi_for_negative_w():
    r = _random_rotations(200, seed=2)
    q = -_wxyz(r) * np.sign(_wxyz(r)[:, :1])  # all w ≤ 0
    aa = rot.quat_to_aa(q)
    assert np.all(np.linalg.norm(aa, axis=-1) <= np.pi + 1e-12)
    assert np.allclose(Rotation.from_rotvec(aa).as_matrix(), r.as_matrix(), atol=1e-10)


def test_quat_mul_and_conj_match_scipy_composition():
    a, b = _random_rotations(100, seed=3), _random_rotations(100, seed=4)
    q = rot.quat_mul(_wxyz(a), _wxyz(b))
    assert np.allclose(rot.quat_to_rotmat(q), (a * b).as_matrix(), atol=1e-12)
    ident = rot.quat_mul(_wxyz(a), rot.quat_conj(_wxyz(a)))
    assert np.allclose(ident, np.tile([1.0, 0, 0, 0], (100, 1)), atol=1e-12)


def test_slerp_endpoints_midpoint_and_shortest_path():
    a, b = _random_rotations(50, seed=5), _random_rotations(50, seed=6)
    qa, qb = _wxyz(a), _wxyz(b)
    qb_flipped = -qb  # same rotations, opposite hemisphere: slerp must still take the short arc
    for q1 in (qb, qb_flipped):
        s0 = rot.slerp(qa, q1, 0.0)
        s1 = rot.slerp(qa, q1, 1.0)
        mid = rot.slerp(qa, q1, 0.5)
        assert np.allclose(rot.quat_to_rotmat(s0), a.as_matrix(), atol=1e-12)
        assert np.allclose(rot.quat_to_rotmat(s1), b.as_matrix(), atol=1e-12)
        d_total = _geodesic(a.as_matrix(), b.as_matrix())
        d_a = _geodesic(a.as_matrix(), rot.quat_to_rotmat(mid))
        d_b = _geodesic(rot.quat_to_rotmat(mid), b.as_matrix())
        assert np.allclose(d_a, d_total / 2, atol=1e-9)
        assert np.allclose(d_b, d_total / 2, atol=1e-9)
    # against scipy's Slerp at arbitrary t
    from scipy.spatial.transform import Slerp

    key = Rotation.concatenate([a[0], b[0]])
    ts = np.linspace(0, 1, 11)
    ref = Slerp([0, 1], key)(ts).as_matrix()
    ours = rot.quat_to_rotmat(rot.slerp(qa[0], qb[0], ts))
    assert np.allclose(ours, ref, atol=1e-12)


def test_slerp_near_identical_quaternions_is_finite():
    q0 = np.array([1.0, 0.0, 0.0, 0.0])
    q1 = rot.aa_to_quat(np.array([1e-12, 0.0, 0.0]))
    out = rot.slerp(q0, q1, np.array([0.0, 0.3, 1.0]))
    assert np.all(np.isfinite(out))
    assert np.allclose(np.linalg.norm(out, axis=-1), 1.0)
    assert np.allclose(out, q0, atol=1e-11)


def test_resample_quats_constant_angular_velocity_is_exact():
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    omega = 2.0  # rad/s
    ts = np.arange(0, 25) / 10.0
    q = rot.aa_to_quat(axis * omega * ts[:, None])  # angles exceed π: w changes sign (not continuous)
    q_joint = np.stack([q, rot.aa_to_quat(-axis * 0.5 * omega * ts[:, None])], axis=1)  # (T, 2, 4)
    td = np.linspace(0, ts[-1], 37)
    out = rot.resample_quats(ts, q_joint, td)
    assert out.shape == (37, 2, 4)
    exp0 = Rotation.from_rotvec(axis * omega * td[:, None]).as_matrix()
    exp1 = Rotation.from_rotvec(-axis * 0.5 * omega * td[:, None]).as_matrix()
    assert np.all(_geodesic(rot.quat_to_rotmat(out[:, 0]), exp0) < 1e-9)
    assert np.all(_geodesic(rot.quat_to_rotmat(out[:, 1]), exp1) < 1e-9)
    with pytest.raises(ValueError, match="extrapolate"):
        rot.resample_quats(ts, q, np.array([0.0, ts[-1] + 0.01]))


def test_quat_make_continuous_and_aa_continuous():
    axis = np.array([0.0, 0.0, 1.0])
    t = np.linspace(0, 1, 201)
    angles = 1.8 * np.pi * t  # passes through π: axis-angle wraps, quaternion w changes sign
    aa = axis * angles[:, None]
    q = rot.aa_to_quat(aa)
    q[::3] *= -1  # random-ish sign flips
    qc = rot.quat_make_continuous(q, axis=0)
    assert np.all(np.sum(qc[1:] * qc[:-1], axis=-1) > 0)
    assert np.allclose(np.abs(np.sum(qc * q, axis=-1)), 1.0)  # same rotations
    wrapped = rot.quat_to_aa(q)
    assert np.max(np.linalg.norm(np.diff(wrapped, axis=0), axis=-1)) > 1.0  # has a jump
    cont = rot.aa_continuous(rot.quat_to_aa(q), axis=0)
    assert np.max(np.linalg.norm(np.diff(cont, axis=0), axis=-1)) < 0.05
    assert np.allclose(cont, aa, atol=1e-9)
    # along a non-leading time axis, with several joints
    aa2 = np.stack([aa, -0.5 * aa], axis=0)  # (2, T, 3): time is axis 1
    cont2 = rot.aa_continuous(rot.quat_to_aa(rot.aa_to_quat(aa2)), axis=1)
    assert np.allclose(cont2, aa2, atol=1e-9)
