"""Inverse dynamics with measured ground reactions on the simulator's humanoid (pure: numpy + MuJoCo).

``inverse_dynamics(motion, grf_n, cop_m, free_moment_nm)`` computes, at every frame of a canonical
motion, the joint torques that reproduce its accelerations given the measured per-foot ground
reactions (lab data: force plates), on **the same MuJoCo humanoid the simulator uses**
(``pipeline.simulate.humanoid.build_humanoid``: de Leva masses, subject skeleton):

    τ_id = M(q) q̈ + c(q, q̇) − Σ_feet J_fᵀ w_f

* ``q, q̇, q̈`` at the motion's frames ``t_i = i / fps`` are the simulator's reference
  (``pipeline.simulate.reference.build_reference`` at the motion's own rate: not-a-knot cubic
  splines of the pelvis position and of every joint quaternion, analytic derivatives; no other
  filtering — the plates are low-passed at 0.4 × fps by ``pipeline.sources.c3d.process``).
* ``M q̈ + c`` is MuJoCo's recursive Newton–Euler (``mj_rne``, gravity included). MuJoCo's
  ``mj_rne`` does **not** include joint armature (a dof property, not a body inertia; checked:
  ``mj_rne − qfrc_bias`` equals ``mj_mulM(q̈)`` minus ``armature · q̈``). The humanoid's armature
  (0.01 kg·m² per ball dof, ``HumanoidParams.armature``) is a numerical model term, not part of
  the human, so by default it is left out (rigid-body inverse dynamics, the biomechanics
  convention); ``include_armature=True`` adds ``armature · q̈`` — the torque the simulator's model
  needs for the same accelerations (it integrates ``(M + armature) q̈``).
* ``w_f``: the measured force ``grf_n[t, f]`` (world, N, on the subject) applied at the centre of
  pressure ``cop_m[t, f]`` plus the vertical free moment ``free_moment_nm[t, f]`` (N·m, NaN read as 0)
  on the foot's **ankle body** (SMPL joint 7 ``left_ankle``, 8 ``right_ankle``) with
  ``mujoco.mj_applyFT``. For every joint above the ankle this is the same generalized force as
  applying it on the toe body; only the toe joint (10, 11) does not see the load (its ID torque is
  the toe segment's own dynamics). Where a foot's force is known but its COP is not (vertical force
  ≤ 20 N, e.g. swing: force 0), the force is applied at the floor point below the ankle joint centre.

Outputs, the simulator's conventions exactly (``SimulationResult``, docs/simulation.md):

* ``joint_torque_nm`` (N, 23, 3): joints 1..23, **child-body (joint-local) frame**, torque applied
  **by the parent on the child** — mapped from MuJoCo's dof order as ``engine._finish`` does, so
  it is directly comparable to ``SimulationResult.joint_torque_nm``. The joint-local frames are the
  SMPL template frames (x left, y up, z forward): flexion/extension of hips, knees and ankles is
  about local x (``sagittal``).
* ``residual_wrench`` (N, 6): the root part ``τ_id[:6]`` — force (N, world, through the pelvis
  joint) and torque (N·m, about the pelvis joint, rotated from the pelvis frame to the world
  frame with the pelvis orientation) that the kinematics need beyond the measured forces
  (the "residual" of Hicks et al. 2015; ≈ 0 for consistent data).
* ``known`` (N,) bool: both feet's forces are known (finite) and so are the kinematics. Elsewhere
  inverse dynamics is undefined (a foot stands on the floor off the plates): torques and residual
  are NaN there. A motion with any non-finite pose (a gap) has no known frame: the reference
  splines need every frame, as the simulator does.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from pipeline.records import CanonicalMotion

ANKLE_JOINTS = (7, 8)
"""SMPL joints whose bodies (rear/mid-foot) receive the left / right foot's ground reaction."""

SAGITTAL_JOINTS: dict[str, int] = {
    "left_hip": 1, "right_hip": 2, "left_knee": 4, "right_knee": 5, "left_ankle": 7, "right_ankle": 8,
}
"""SMPL joint index of the joints whose flexion/extension ``sagittal`` returns."""

SAGITTAL_AXIS = 0
"""Joint-local axis of flexion/extension (template x, pointing to the subject's left)."""

KINEMATICS_CUTOFF_HZ = 6.0
"""Low-pass cut-off of the kinematics before inverse dynamics of measured sequences, Hz (OpenSim's
recommendation for gait coordinates). The marker-IK poses at 30 FPS carry ~1° frame-to-frame
noise; unfiltered, a second derivative of it reads ±1.5 N·m/kg at the hips of
opensim-core/walking2 (mean |second difference| of the hip torque 1.02 → 0.13 N·m/kg at 6 Hz),
while knee and ankle torques, dominated by the ground reaction, change by < 0.1 N·m/kg."""

PHYSICS_DT_S = 1.0 / 480.0
"""Physics step of the humanoid built here (the simulator's default; part of its cache key only)."""


@dataclass(frozen=True)
class IDResult:
    """Inverse-dynamics result of one motion (N frames); see the module docstring.

    Attributes:
        joint_torque_nm: (N, 23, 3) joints 1..23, child-body frame, parent on child, N·m; NaN where
            not ``known``.
        residual_wrench: (N, 6) root residual: force N (world), torque N·m (world, about the
            pelvis joint); NaN where not ``known``.
        known: (N,) both feet's ground reactions (and the kinematics) are known.
        mass_kg: body mass of the model, kg.
        include_armature: whether ``armature · q̈`` is in the torques.
    """

    joint_torque_nm: np.ndarray
    residual_wrench: np.ndarray
    known: np.ndarray
    mass_kg: float
    include_armature: bool = False

    @property
    def n_frames(self) -> int:
        return int(self.known.shape[0])


def inverse_dynamics(
    motion: CanonicalMotion,
    grf_n: np.ndarray,
    cop_m: np.ndarray,
    free_moment_nm: np.ndarray,
    humanoid=None,
    include_armature: bool = False,
    params=None,
    cutoff_hz: float | None = None,
) -> IDResult:
    """Joint torques and root residual of ``motion`` under the measured per-foot ground reactions.

    Args:
        motion: canonical motion (N frames, ≥ 2).
        grf_n: (N, 2, 3) force on the left / right foot, world frame, N; NaN where unknown.
        cop_m: (N, 2, 3) centre of pressure, world frame, m; NaN where undefined.
        free_moment_nm: (N, 2) vertical free moment about the COP, N·m; NaN read as 0.
        humanoid: a ``pipeline.simulate.humanoid.Humanoid`` of this subject; built (cached) from the
            motion (``skeleton_from_motion``, ``motion.mass_kg``, ``motion.gender``) when ``None``.
        include_armature: add the model's joint armature term ``armature · q̈`` (module docstring).
        params: ``HumanoidParams`` for the humanoid built here (default ``HumanoidParams()``).
        cutoff_hz: low-pass the kinematics first (``lowpass_motion``: zero-phase 2nd-order
            Butterworth, forward and backward, of the pelvis position and the joint quaternions);
            ``None`` uses the motion as it is. Measured sequences use ``KINEMATICS_CUTOFF_HZ``.
    """
    from pipeline.simulate.humanoid import HumanoidParams, build_humanoid, skeleton_from_motion
    from pipeline.simulate.reference import build_reference

    n = motion.n_frames
    grf = np.asarray(grf_n, dtype=np.float64)
    cop = np.asarray(cop_m, dtype=np.float64)
    free = np.asarray(free_moment_nm, dtype=np.float64)
    if grf.shape != (n, 2, 3) or cop.shape != (n, 2, 3) or free.shape != (n, 2):
        raise ValueError(f"expected grf/cop (N, 2, 3) and free moment (N, 2) with N = {n}, got "
                         f"{grf.shape}, {cop.shape}, {free.shape}")
    hum = humanoid or build_humanoid(skeleton_from_motion(motion), motion.mass_kg, motion.gender,
                                     params or HumanoidParams(), PHYSICS_DT_S)
    if not (np.isfinite(motion.root_pos_m).all() and np.isfinite(motion.joint_rot_aa_rad).all()):
        # a gap in the kinematics: the reference splines (and the simulator) need every frame
        return _undefined(n, hum.mass_kg, include_armature)
    if cutoff_hz is not None:
        motion = lowpass_motion(motion, cutoff_hz)
    m = hum.model
    d = mujoco.MjData(m)
    ref = build_reference(motion, motion.fps_hz)  # K = N + 1 samples at the motion's frames
    qpos = hum.qpos_to_mj(ref.qpos[:n])
    qvel = hum.dof_to_mj(ref.qvel[:n])
    qacc = hum.dof_to_mj(ref.qacc[:n])
    armature = np.asarray(m.dof_armature, dtype=np.float64) if include_armature else None
    ankle_bodies = [int(hum.body_ids[j]) for j in ANKLE_JOINTS]
    root_body = int(hum.body_ids[0])
    # states must be finite too (belt and braces: gaps were caught above)
    known = np.isfinite(grf).all(axis=(1, 2)) & np.isfinite(np.concatenate([qpos, qvel, qacc], axis=1)).all(axis=1)
    nv = m.nv
    tau_all = np.full((n, nv), np.nan)
    res = np.full((n, 6), np.nan)
    tau = np.zeros(nv)
    qfrc = np.zeros(nv)
    zero3 = np.zeros(3)
    for i in np.flatnonzero(known):
        d.qpos[:] = qpos[i]
        d.qvel[:] = qvel[i]
        d.qacc[:] = qacc[i]
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_comVel(m, d)
        mujoco.mj_rne(m, d, 1, tau)
        qfrc[:] = 0.0
        for f, body in enumerate(ankle_bodies):
            force = grf[i, f]
            if not np.any(force):
                continue
            point = cop[i, f]
            if not np.isfinite(point).all():
                point = d.xpos[body].copy()
                point[2] = 0.0
            mz = free[i, f]
            torque = np.array([0.0, 0.0, mz]) if np.isfinite(mz) else zero3
            mujoco.mj_applyFT(m, d, force, torque, point, body, qfrc)
        t = tau - qfrc
        if armature is not None:
            t = t + armature * qacc[i]
        tau_all[i] = t
        res[i, :3] = t[:3]
        res[i, 3:] = d.xmat[root_body].reshape(3, 3) @ t[3:6]
    # MuJoCo dof order → SMPL order, exactly as engine._finish maps the simulator's torques
    tau75 = np.zeros((n, 75))
    tau75[:, 6:] = tau_all[:, 6:]
    joint = hum.dof_from_mj(tau75)[:, 6:].reshape(n, 23, 3)
    joint[~known] = np.nan
    for a in (joint, res, known):
        a.setflags(write=False)
    return IDResult(joint_torque_nm=joint, residual_wrench=res, known=known, mass_kg=float(hum.mass_kg),
                    include_armature=bool(include_armature))


def _undefined(n: int, mass_kg: float, include_armature: bool) -> IDResult:
    joint, res, known = np.full((n, 23, 3), np.nan), np.full((n, 6), np.nan), np.zeros(n, dtype=bool)
    for a in (joint, res, known):
        a.setflags(write=False)
    return IDResult(joint, res, known, float(mass_kg), bool(include_armature))


def sagittal(joint_torque_nm: np.ndarray, joint_rot_aa_rad: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Flexion/extension torques (N,) of hips, knees and ankles, left and right, N·m.

    Without ``joint_rot_aa_rad``: the joint-local x component (template x = the subject's left) of
    ``joint_torque_nm`` (N, 23, 3; child frame, parent on child).

    With the pose ``joint_rot_aa_rad`` (N, 24, 3; canonical: joint 0 global, others local) the
    torque the pose was expressed in is rotated to the world frame and projected on the
    **pelvis's mediolateral axis** (template x of joint 0). This is the anatomical sagittal
    moment even where the pose twists a segment about its long axis (marker IK leaves the twist of
    segments with collinear markers, e.g. the foot's heel–toe line or a thigh, poorly determined:
    then the child's local x is not mediolateral); for an untwisted leg the two agree.

    Signs (right-hand rule about the subject's left): positive = hip **extension**, knee
    **flexion**, ankle **plantarflexion** moment (the child's forward axis turns downwards);
    e.g. the stance-phase push-off needs a positive ankle torque."""
    t = np.asarray(joint_torque_nm, dtype=np.float64)
    if joint_rot_aa_rad is None:
        return {name: t[:, j - 1, SAGITTAL_AXIS] for name, j in SAGITTAL_JOINTS.items()}
    glob = global_rotations(joint_rot_aa_rad)  # (N, 24, 3, 3)
    axis = glob[:, 0, :, SAGITTAL_AXIS]  # (N, 3) pelvis left axis in the world
    out = {}
    for name, j in SAGITTAL_JOINTS.items():
        world = np.einsum("nab,nb->na", glob[:, j], t[:, j - 1])
        out[name] = np.einsum("na,na->n", world, axis)
    return out


def global_rotations(joint_rot_aa_rad: np.ndarray) -> np.ndarray:
    """(N, 24, 3, 3) global rotation of every joint's frame (template → world) from canonical
    rotations (joint 0 global, others local)."""
    from pipeline import rotations as rot
    from pipeline import skeleton as sk

    r = np.asarray(joint_rot_aa_rad, dtype=np.float64)
    glob, _ = sk.forward_kinematics(rot.aa_to_rotmat(r), np.zeros((r.shape[0], 3)), np.zeros((sk.N_JOINTS, 3)))
    return glob


def lowpass_motion(motion: CanonicalMotion, cutoff_hz: float, order: int = 2) -> CanonicalMotion:
    """``motion`` with its pelvis position and joint rotations low-passed (zero-phase Butterworth of
    ``order``, run forward and backward: no lag, 2·order effective). Quaternion signs are made
    continuous in time, filtered component-wise and renormalised. Other arrays are unchanged (the
    reference and the dynamics read only ``root_pos_m`` and ``joint_rot_aa_rad``). Sequences too
    short for ``filtfilt``'s padding (≤ 3·(order + 1) frames) are returned as they are."""
    import dataclasses

    from pipeline.dynamics import lowpass_pose

    fps = float(motion.fps_hz)
    if not 0.0 < cutoff_hz < 0.5 * fps:
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie in (0, {0.5 * fps}) Hz (the motion's Nyquist rate)")
    if motion.n_frames <= 3 * (order + 1):
        return motion
    pos, aa = lowpass_pose(motion, cutoff_hz, order)
    return dataclasses.replace(motion, root_pos_m=pos, joint_rot_aa_rad=aa)


def measured_inverse_dynamics(motion: CanonicalMotion, measured, params=None,
                              cutoff_hz: float | None = KINEMATICS_CUTOFF_HZ) -> IDResult:
    """``inverse_dynamics`` of a sequence with measured ground reactions
    (``pipeline.lab.measured.MeasuredGroundReaction``: ``grf_n``, ``cop_m``, ``free_moment_nm``),
    kinematics low-passed at ``cutoff_hz`` (``KINEMATICS_CUTOFF_HZ``)."""
    return inverse_dynamics(motion, measured.grf_n, measured.cop_m, measured.free_moment_nm, params=params,
                            cutoff_hz=cutoff_hz)


__all__ = ["ANKLE_JOINTS", "IDResult", "KINEMATICS_CUTOFF_HZ", "SAGITTAL_AXIS", "SAGITTAL_JOINTS",
           "global_rotations", "inverse_dynamics", "lowpass_motion", "measured_inverse_dynamics", "sagittal"]
