"""Reference trajectory at the control rate from a ``CanonicalMotion`` (pure numpy).

MuJoCo coordinates of the humanoid (``pipeline.simulate.humanoid``):

* ``qpos`` (7 + 23·4): pelvis position (world, m), pelvis quaternion (w, x, y, z: template → world,
  = canonical joint 0), then the 23 ball-joint quaternions (= canonical local rotations 1..23);
* ``qvel`` (6 + 23·3): pelvis linear velocity (world, m/s), pelvis angular velocity (**pelvis body
  frame**, rad/s), then each ball joint's angular velocity of the child relative to the parent in
  the **child body frame** (rad/s) — MuJoCo's free/ball-joint conventions;
* ``qacc``: time derivative of ``qvel`` in the same frames (m/s², rad/s²).

Interpolation and differentiation: the 30 FPS canonical samples are interpolated by not-a-knot
cubic splines — the pelvis position component-wise, each joint's quaternion component-wise after
making the signs continuous in time, then renormalised (the samples are unit quaternions, so this
is a C² curve through them: a "cubic slerp"). Velocities and accelerations are the analytic
spline derivatives: with ``p(t)`` the spline and ``q = p/|p|``,
``q̇ = (ṗ − q (q·ṗ))/|p|``, ``ω_body = 2 vec(q* ⊗ q̇)``, ``ω̇_body = 2 vec(q* ⊗ q̈)`` (the
``|q̇|²`` term is scalar). No further smoothing is applied. The spline is evaluated one canonical
frame past the last sample (its cubic extrapolation) so the last frame also has a full interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.records import CanonicalMotion

N_BALL = sk.N_JOINTS - 1
NQ = 7 + 4 * N_BALL
NV = 6 + 3 * N_BALL


@dataclass(frozen=True)
class Reference:
    """Reference state at the control rate.

    Attributes:
        time_s: (K,) control times ``k / control_hz`` from the first frame, s; the last one is one
            canonical frame interval past the motion's last frame.
        qpos: (K, 99) reference generalized positions (module docstring).
        qvel: (K, 75) reference generalized velocities.
        qacc: (K, 75) reference generalized accelerations.
        steps_per_frame: control steps per canonical frame (integer).
    """

    time_s: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray
    qacc: np.ndarray
    steps_per_frame: int


def _vec_of_conj_mul(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Vector part of ``q* ⊗ r`` (..., 3)."""
    return rot.quat_mul(rot.quat_conj(q), r)[..., 1:]


def build_reference(motion: CanonicalMotion, control_hz: float = 60.0) -> Reference:
    """Reference qpos/qvel/qacc at ``control_hz`` (an integer multiple of ``motion.fps_hz``)."""
    fps = float(motion.fps_hz)
    ratio = control_hz / fps
    spf = int(round(ratio))
    if spf < 1 or abs(ratio - spf) > 1e-9:
        raise ValueError(f"control_hz ({control_hz}) must be an integer multiple of the motion fps ({fps})")
    n = motion.n_frames
    if n < 2:
        raise ValueError("need at least 2 frames to simulate")
    t_src = np.arange(n) / fps
    k = n * spf + 1
    t = np.arange(k) / float(control_hz)  # up to t_N = N / fps (one frame extrapolated)

    pos = np.asarray(motion.root_pos_m, np.float64)
    bc = "not-a-knot" if n >= 4 else "natural"
    ps = CubicSpline(t_src, pos, axis=0, bc_type=bc, extrapolate=True)
    q_src = rot.quat_make_continuous(rot.aa_to_quat(np.asarray(motion.joint_rot_aa_rad, np.float64)), axis=0)
    qs = CubicSpline(t_src, q_src, axis=0, bc_type=bc, extrapolate=True)
    p = qs(t)
    dp = qs(t, 1)
    ddp = qs(t, 2)
    norm = np.linalg.norm(p, axis=-1, keepdims=True)
    q = p / norm
    dq = (dp - q * np.sum(q * dp, axis=-1, keepdims=True)) / norm
    ddq = (ddp - q * np.sum(q * ddp, axis=-1, keepdims=True)) / norm
    omega = 2.0 * _vec_of_conj_mul(q, dq)  # (K, 24, 3) body frame
    alpha = 2.0 * _vec_of_conj_mul(q, ddq)

    qpos = np.empty((k, NQ))
    qpos[:, :3] = ps(t)
    qpos[:, 3:] = q.reshape(k, -1)
    qvel = np.empty((k, NV))
    qvel[:, :3] = ps(t, 1)
    qvel[:, 3:] = omega.reshape(k, -1)
    qacc = np.empty((k, NV))
    qacc[:, :3] = ps(t, 2)
    qacc[:, 3:] = alpha.reshape(k, -1)
    return Reference(time_s=t, qpos=qpos, qvel=qvel, qacc=qacc, steps_per_frame=spf)
