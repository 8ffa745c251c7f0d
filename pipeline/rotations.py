"""Vectorized rotation conversions and interpolation (numpy, any leading shape).

Conventions
-----------
* Quaternions are ``(..., 4)`` arrays ordered ``(w, x, y, z)``, Hamilton product, and act on
  column vectors: ``v' = q v q*`` equals ``R v`` with ``R = quat_to_rotmat(q)``.
* Axis-angle vectors are ``(..., 3)``: unit axis times angle in radians.
* Rotation matrices are ``(..., 3, 3)`` acting on column vectors.
* The 6D representation (Zhou et al., CVPR 2019) is the first two *columns* of the rotation matrix,
  concatenated: ``(R[:, 0], R[:, 1])`` → ``(..., 6)``.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def _normalize(v: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.maximum(n, _EPS)


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (zero quaternions raise ``ValueError``)."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < 1e-8):
        raise ValueError("cannot normalize a (near-)zero quaternion")
    return q / n


def aa_to_quat(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) rad → unit quaternion (..., 4) (w, x, y, z); w ≥ 0 for angles ≤ π."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    # sin(θ/2)/θ = 0.5 sinc(θ / 2π) with numpy's normalized sinc: exact and smooth at θ = 0.
    scale = 0.5 * np.sinc(angle / (2.0 * np.pi))
    return np.concatenate([np.cos(0.5 * angle), aa * scale], axis=-1)


def _quat_to_aa_raw(q: np.ndarray) -> np.ndarray:
    """Axis-angle of quaternions *without* sign canonicalization: angle = 2 atan2(|v|, w) ∈ [0, 2π]."""
    w = q[..., :1]
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, w)
    small = s < 1e-8
    # For |v| → 0 (and w > 0), angle/|v| → 2/w; the w < 0 branch (angle → 2π) is degenerate.
    safe_w = np.where(np.abs(w) < _EPS, _EPS, w)
    factor = np.where(small, 2.0 / safe_w, angle / np.where(small, 1.0, s))
    return v * factor


def quat_to_aa(q: np.ndarray) -> np.ndarray:
    """Quaternion (..., 4) → axis-angle (..., 3) rad with angle in [0, π] (sign chosen so w ≥ 0)."""
    q = quat_normalize(q)
    q = np.where(q[..., :1] < 0.0, -q, q)
    return _quat_to_aa_raw(q)


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Quaternion (..., 4) (normalized internally) → rotation matrix (..., 3, 3)."""
    q = quat_normalize(q)
    w, x, y, z = np.moveaxis(q, -1, 0)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    m = np.stack(
        [
            1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
        ],
        axis=-1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (..., 3, 3) → unit quaternion (..., 4) with w ≥ 0.

    Shepperd's method: of the four algebraically equivalent formulas the one with the largest
    pivot (trace, R00, R11, R22) is used, so precision is uniform over SO(3).
    """
    R = np.asarray(R, dtype=np.float64)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    tr = m00 + m11 + m22
    # Candidate quaternions scaled by 4·(pivot component); each row is (w, x, y, z).
    cands = np.stack(
        [
            np.stack([1 + tr, m21 - m12, m02 - m20, m10 - m01], axis=-1),
            np.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], axis=-1),
            np.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], axis=-1),
            np.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], axis=-1),
        ],
        axis=-2,
    )  # (..., 4, 4)
    pivots = np.stack([tr, m00, m11, m22], axis=-1)
    best = np.argmax(pivots, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = _normalize(q)
    return np.where(q[..., :1] < 0.0, -q, q)


def aa_to_rotmat(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) rad → rotation matrix (..., 3, 3)."""
    return quat_to_rotmat(aa_to_quat(aa))


def rotmat_to_aa(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (..., 3, 3) → axis-angle (..., 3) rad, angle in [0, π]."""
    return quat_to_aa(rotmat_to_quat(R))


def quat_mul(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Hamilton product ``q1 ⊗ q2`` (..., 4) (broadcasting); the rotation of ``q2`` is applied first."""
    q1 = np.asarray(q1, dtype=np.float64)
    q2 = np.asarray(q2, dtype=np.float64)
    w1, x1, y1, z1 = np.moveaxis(q1, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(q2, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (inverse for unit quaternions) (..., 4)."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_make_continuous(q: np.ndarray, axis: int = 0) -> np.ndarray:
    """Flip quaternion signs along ``axis`` (time) so consecutive quaternions have a dot ≥ 0.

    The first sample along ``axis`` keeps its sign. Shape (..., 4) unchanged.
    """
    q = np.asarray(q, dtype=np.float64)
    axis = axis % (q.ndim - 1) if q.ndim > 1 else 0
    qm = np.moveaxis(q, axis, 0)
    if qm.shape[0] < 2:
        return q.copy()
    dots = np.sum(qm[1:] * qm[:-1], axis=-1)
    flips = np.concatenate([np.zeros((1,) + dots.shape[1:], dtype=np.int64), (dots < 0).astype(np.int64)])
    sign = np.where(np.cumsum(flips, axis=0) % 2 == 1, -1.0, 1.0)
    return np.moveaxis(qm * sign[..., None], 0, axis)


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical linear interpolation along the shortest arc, (..., 4).

    ``t`` (broadcastable to ``q0.shape[:-1]``) is 0 at ``q0`` and 1 at ``q1``. Nearly identical
    quaternions fall back to normalized linear interpolation. Output is normalized.
    """
    q0 = quat_normalize(q0)
    q1 = quat_normalize(q1)
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6
    safe_sin = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe_sin)
    w1 = np.where(near, t, np.sin(t * theta) / safe_sin)
    return _normalize(w0 * q0 + w1 * q1)


def resample_quats(times_src: np.ndarray, q: np.ndarray, times_dst: np.ndarray) -> np.ndarray:
    """Resample a quaternion time series by slerp between the bracketing source samples.

    Args:
        times_src: (T,) strictly increasing source times, s (T ≥ 2).
        q: (T, ..., 4) quaternions at ``times_src``.
        times_dst: (N,) target times, s, within ``[times_src[0], times_src[-1]]`` (1e-9 s slack).

    Returns:
        (N, ..., 4) unit quaternions.
    """
    ts = np.asarray(times_src, dtype=np.float64)
    td = np.asarray(times_dst, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if ts.ndim != 1 or ts.shape[0] < 2 or q.shape[0] != ts.shape[0]:
        raise ValueError(f"need ≥ 2 source samples with matching times; got times {ts.shape}, q {q.shape}")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("times_src must be strictly increasing")
    tol = 1e-9
    if td.size and (td.min() < ts[0] - tol or td.max() > ts[-1] + tol):
        raise ValueError(
            f"target times [{td.min()}, {td.max()}] s extrapolate beyond source [{ts[0]}, {ts[-1]}] s"
        )
    idx = np.clip(np.searchsorted(ts, td, side="right") - 1, 0, ts.shape[0] - 2)
    u = np.clip((td - ts[idx]) / (ts[idx + 1] - ts[idx]), 0.0, 1.0)
    u = u.reshape(u.shape + (1,) * (q.ndim - 2))
    return slerp(q[idx], q[idx + 1], u)


def rotmat_to_6d(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (..., 3, 3) → 6D representation (..., 6): first column, then second column."""
    R = np.asarray(R, dtype=np.float64)
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def rot6d_to_rotmat(d6: np.ndarray) -> np.ndarray:
    """6D representation (..., 6) → rotation matrix (..., 3, 3) by Gram–Schmidt orthonormalization."""
    d6 = np.asarray(d6, dtype=np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def aa_continuous(aa: np.ndarray, axis: int = 0) -> np.ndarray:
    """Axis-angle time series (..., 3) rad without the ±π wrap jumps, for smooth curve fitting.

    Converts to quaternions, makes them sign-continuous along ``axis`` (time), flips each whole
    series so its mean ``w`` is ≥ 0 (keeps angles small where possible), and converts back with
    angle ``2·atan2(|v|, w)`` ∈ [0, 2π]. Every output still represents the same rotation as the
    input; only a series passing through a full 2π turn can still jump.
    """
    aa = np.asarray(aa, dtype=np.float64)
    q = quat_make_continuous(aa_to_quat(aa), axis=axis)
    time_axis = axis % (q.ndim - 1)
    mean_w = np.sum(q[..., 0], axis=time_axis, keepdims=True)
    q = np.where((mean_w < 0.0)[..., None], -q, q)
    return _quat_to_aa_raw(q)
