"""Dynamics pass: make a kinematic reference dynamically consistent before it is tracked (pure).

Three steps, run on a ``CanonicalMotion`` before simulation (docs/simulation.md, "Dynamics pass"):

1. **Conditioning.** Zero-phase low-pass filtering (2nd-order Butterworth run forward and
   backward: 4th-order magnitude, no lag) of the pelvis position and of every joint quaternion
   (signs made continuous in time, renormalised after filtering). The cut-off follows the motion's
   speed: ``cutoff_hz = clip(walk_cutoff_hz + slope·(v − walk_speed_mps), walk, fast)`` with
   ``v`` the 90th percentile of the pelvis speed — 6 Hz for walking (OpenSim's recommendation
   for gait coordinates), up to 12 Hz for running and jumping, always below 0.45 × the frame rate.
2. **Whole-sequence optimization.** A convex least-squares program with bounds over all frames
   at once (a sparse convex QP solved by Clarabel, ``solve_nonneg_lsq``): unknowns are a correction ``δp_t`` of the
   pelvis (whole-body) translation per frame and, per frame and candidate sole corner of the
   humanoid (``Humanoid.sole_points_local``: 4 rear-/mid-foot and 2 toe corners per foot), the 4
   non-negative edge magnitudes of a linearised friction pyramid (``mu``). Rows (each scaled by
   its tolerance, so 1 = "as bad as the tolerance"):

   * Newton: ``Σ f_c,t − m·(c̈_t + δp̈_t) + m·g = 0`` (tolerance ``newton_tol_bw`` × body weight);
   * Euler about the centre of mass: ``Σ (r_c,t − c_t) × f_c,t − L̇_t = 0`` (``euler_tol_nm``);
     a whole-body translation changes neither ``r − c`` nor ``L``, so these rows are exact;
   * stance feet on the floor: the lowest corner of a foot in stance at height 0 after the
     correction (``floor_tol_m``);
   * small, smooth corrections: ``δp_t`` (``correction_tol_m``), its velocity
     (``correction_rate_tol_mps``) and acceleration (``correction_acc_tol_mps2``, and
     ``correction_acc_end_tol_mps2`` at the first and last frames, which one Newton row each pins
     only loosely: without it the ends could take spurious accelerations);
   * optional measured forces (lab data; ``use_measured``): per-foot ``Σ f = F_plate``
     (``measured_tol_bw``) on frames where the plate value is known;
   * small tangential (friction) forces (``tangential_tol_bw``) and a small ridge on all forces
     (spreads load between corners): tie-breaks of an otherwise degenerate force distribution.

   ``c``, ``L`` (centroidal angular momentum) and the corners come from MuJoCo on the subject's
   own humanoid (``pipeline.simulate.humanoid``), so the plan is consistent with the simulator's
   mass model. Candidate corners: within ``contact_height_m`` of the floor and slower than
   ``contact_speed_mps`` horizontally, and not leaving it (higher than ``contact_lift_height_m``
   and rising faster than ``contact_lift_speed_mps``: a take-off foot may not push on from
   centimetres up, a push-off the simulated foot, already in the air, cannot deliver); forces
   elsewhere are zero (flight phases have none).
3. **Contact refinement** (``contact_refinements`` times, default once): the correction may lift a
   loaded corner off the floor — the demo jump's take-off pushed 0.5 BW through toes the corrected
   pelvis had raised to 3 cm while they rose at 1 m/s, and the simulated humanoid, whose feet had
   left, jumped 9 cm too low and landed a frame early at 7 BW. Corners carrying more than
   ``refine_load_bw`` while the correction put them above ``refine_height_m`` and rising faster than
   ``contact_lift_speed_mps`` (``lifted_loaded_corners``) are dropped and the program solved again.

Output: the corrected motion (pelvis translation + δp, joints unchanged), the planned per-foot
contact forces and how far the motion moved (``DynamicsResult.metrics``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mujoco
import numpy as np
from scipy import sparse
from scipy.signal import butter, filtfilt

from pipeline import rotations as rot
from pipeline.records import CanonicalMotion

GRAVITY_MPS2 = 9.81


@dataclass(frozen=True)
class DynamicsConfig:
    """Settings of the dynamics pass (units in the names; see the module docstring)."""

    walk_cutoff_hz: float = 6.0
    fast_cutoff_hz: float = 12.0
    walk_speed_mps: float = 1.5
    cutoff_slope_hz_per_mps: float = 2.5
    contact_height_m: float = 0.06
    contact_speed_mps: float = 1.0
    contact_lift_height_m: float = 0.01
    contact_lift_speed_mps: float = 0.3
    stance_height_m: float = 0.04
    stance_speed_mps: float = 0.5
    mu: float = 0.8
    newton_tol_bw: float = 0.01
    euler_tol_nm: float = 5.0
    floor_tol_m: float = 0.02
    correction_tol_m: float = 0.05
    correction_rate_tol_mps: float = 0.05
    correction_acc_tol_mps2: float = 0.5
    correction_acc_end_tol_mps2: float = 0.02
    force_ridge_bw: float = 20.0
    tangential_tol_bw: float = 0.5
    use_measured: bool = False
    measured_tol_bw: float = 0.02
    optimize: bool = True
    contact_refinements: int = 1
    refine_height_m: float = 0.02
    refine_load_bw: float = 0.02


@dataclass(frozen=True)
class DynamicsResult:
    """The consistent motion and its contact-force plan.

    Attributes:
        motion: conditioned motion with the pelvis translation corrected by ``root_correction_m``.
        cutoff_hz: low-pass cut-off used, Hz.
        root_correction_m: (N, 3) δp added to the pelvis position, world, m.
        foot_force_n: (N, 2, 3) planned floor force per foot (left, right), world, N.
        corner_force_n: (N, 12, 3) planned force per sole corner (left 0–5, right 6–11), N.
        newton_residual_n: (N, 3) unexplained force per frame, N.
        euler_residual_nm: (N, 3) unexplained moment about the COM per frame, N·m.
        metrics: per-sequence numbers (``dyn_*``): correction RMS/max (m), residual RMS (N, N·m).
    """

    motion: CanonicalMotion
    cutoff_hz: float
    root_correction_m: np.ndarray
    foot_force_n: np.ndarray
    corner_force_n: np.ndarray
    newton_residual_n: np.ndarray
    euler_residual_nm: np.ndarray
    metrics: dict


def cutoff_for(motion: CanonicalMotion, cfg: DynamicsConfig) -> float:
    """Low-pass cut-off (Hz) from the motion's speed (module docstring)."""
    v = np.linalg.norm(np.diff(np.asarray(motion.root_pos_m, float), axis=0), axis=-1) * motion.fps_hz
    speed = float(np.percentile(v, 90)) if v.size else 0.0
    fc = cfg.walk_cutoff_hz + cfg.cutoff_slope_hz_per_mps * max(0.0, speed - cfg.walk_speed_mps)
    return float(min(max(fc, cfg.walk_cutoff_hz), cfg.fast_cutoff_hz, 0.45 * motion.fps_hz))


def lowpass_pose(motion: CanonicalMotion, cutoff_hz: float, order: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Zero-phase Butterworth low-pass (``order``, run forward and backward) of the pelvis
    position (N, 3) m and the joint rotations (N, 24, 3) rad: quaternion signs made continuous in
    time, filtered component-wise, renormalised. Odd padding of up to 3·(order + 1) frames."""
    b, a = butter(order, cutoff_hz / (0.5 * motion.fps_hz))
    pad = min(3 * max(len(a), len(b)), motion.n_frames - 1)

    def zero_phase(x: np.ndarray) -> np.ndarray:
        return filtfilt(b, a, x, axis=0, padtype="odd" if pad > 0 else None, padlen=pad)

    pos = zero_phase(np.asarray(motion.root_pos_m, float))
    q = zero_phase(rot.quat_make_continuous(rot.aa_to_quat(np.asarray(motion.joint_rot_aa_rad, float)), axis=0))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return pos, rot.quat_to_aa(q)


def condition(motion: CanonicalMotion, cutoff_hz: float) -> CanonicalMotion:
    """Zero-phase low-pass of the pelvis position and the joint rotations (module docstring);
    joint positions and markers are recomputed by forward kinematics."""
    if motion.n_frames < 4:
        return motion
    return with_pose(motion, *lowpass_pose(motion, cutoff_hz))


def with_pose(motion: CanonicalMotion, root_pos_m: np.ndarray, joint_rot_aa_rad: np.ndarray) -> CanonicalMotion:
    """A copy of ``motion`` with a new pose; joint positions and markers follow by FK."""
    from pipeline import markers as mk
    from pipeline.simulate.humanoid import skeleton_from_motion
    from pipeline import skeleton as sk

    skel = skeleton_from_motion(motion)
    glob, joints = sk.forward_kinematics(rot.aa_to_rotmat(joint_rot_aa_rad), root_pos_m, skel.offsets_m)
    feet = sk.sole_points(glob, joints, skel)
    return dataclasses.replace(
        motion, root_pos_m=np.asarray(root_pos_m, motion.root_pos_m.dtype),
        joint_rot_aa_rad=np.asarray(joint_rot_aa_rad, motion.joint_rot_aa_rad.dtype),
        joint_pos_m=joints.astype(motion.joint_pos_m.dtype),
        marker_pos_m=mk.marker_positions(glob, joints, skel).astype(motion.marker_pos_m.dtype),
        foot_points_m=feet.astype(motion.foot_points_m.dtype))


def centroidal_state(motion: CanonicalMotion, humanoid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: COM (N, 3) m, angular momentum about the COM (N, 3) N·m·s (world) and the 12
    sole corners (N, 12, 3) m, from the humanoid's mass model at the motion's poses/velocities."""
    from pipeline.simulate.reference import build_reference

    ref = build_reference(motion, motion.fps_hz)
    n = motion.n_frames
    m = humanoid.model
    d = mujoco.MjData(m)
    qpos = humanoid.qpos_to_mj(ref.qpos[:n])
    qvel = humanoid.dof_to_mj(ref.qvel[:n])
    sole_ids = humanoid.body_ids[humanoid.sole_point_body.reshape(-1)]
    local = humanoid.sole_points_local.reshape(-1, 3)
    com = np.empty((n, 3))
    ang = np.empty((n, 3))
    corners = np.empty((n, 12, 3))
    for t in range(n):
        d.qpos[:] = qpos[t]
        d.qvel[:] = qvel[t]
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_comVel(m, d)
        mujoco.mj_subtreeVel(m, d)
        com[t] = d.subtree_com[0]
        ang[t] = d.subtree_angmom[0]
        R = d.xmat[sole_ids].reshape(-1, 3, 3)
        corners[t] = d.xpos[sole_ids] + np.einsum("kij,kj->ki", R, local)
    return com, ang, corners


def _edges(mu: float) -> np.ndarray:
    e = np.array([[mu, 0, 1], [-mu, 0, 1], [0, mu, 1], [0, -mu, 1]], float)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _skew(r: np.ndarray) -> np.ndarray:
    z = np.zeros(r.shape[:-1])
    return np.stack([np.stack([z, -r[..., 2], r[..., 1]], -1), np.stack([r[..., 2], z, -r[..., 0]], -1),
                     np.stack([-r[..., 1], r[..., 0], z], -1)], -2)


def dynamics_pass(motion: CanonicalMotion, humanoid, cfg: DynamicsConfig = DynamicsConfig(),
                  measured_grf_n: np.ndarray | None = None) -> DynamicsResult:
    """Condition ``motion`` and solve the whole-sequence program (module docstring).

    ``measured_grf_n``: (N, 2, 3) per-foot plate forces (NaN = unknown), used as targets only
    with ``cfg.use_measured``.
    """
    fc = cutoff_for(motion, cfg)
    mo = condition(motion, fc)
    n = mo.n_frames
    fps = float(mo.fps_hz)
    mass = float(humanoid.mass_kg)
    bw = mass * GRAVITY_MPS2
    com, L, corners = centroidal_state(mo, humanoid)
    zero = np.zeros((n, 3))
    if not cfg.optimize or n < 5:
        return DynamicsResult(mo, fc, zero, np.zeros((n, 2, 3)), np.zeros((n, 12, 3)), zero, zero,
                              _metrics(zero, zero, zero, bw, fc, 0.0))
    # candidate corners and stance feet from the conditioned reference
    cv = np.gradient(corners, axis=0) * fps
    hspeed = np.linalg.norm(cv[..., :2], axis=-1)
    cand = _candidates(corners, cv, hspeed, cfg)  # (n, 12)
    low = np.stack([corners[:, :6, 2].min(1), corners[:, 6:, 2].min(1)], 1)  # (n, 2)
    low_arg = np.stack([corners[:, :6, 2].argmin(1), 6 + corners[:, 6:, 2].argmin(1)], 1)
    foot_speed = np.stack([hspeed[np.arange(n), low_arg[:, 0]], hspeed[np.arange(n), low_arg[:, 1]]], 1)
    stance = (low < cfg.stance_height_m) & (foot_speed < cfg.stance_speed_mps)

    nd = 3 * n
    for attempt in range(cfg.contact_refinements + 1):
        A, rhs, tc = program_matrix(fps, mass, com, L, corners, cand, stance, low, cfg, measured_grf_n)
        x, cost = solve_nonneg_lsq(A, rhs, nd)
        dp = x[:nd].reshape(n, 3)
        beta = x[nd:].reshape(len(tc), 4)
        corner_f = np.zeros((n, 12, 3))
        corner_f[tc[:, 0], tc[:, 1]] = beta @ _edges(cfg.mu)
        if attempt == cfg.contact_refinements:
            break
        off = cand & lifted_loaded_corners(corners, cv, corner_f, dp, fps, bw, cfg)
        if not off.any():
            break
        cand = cand & ~off
    foot_f = np.stack([corner_f[:, :6].sum(1), corner_f[:, 6:].sum(1)], 1)
    # residuals of the solved program, in physical units
    centre = np.clip(np.arange(n), 1, n - 2)
    acc = (com[centre + 1] - 2 * com[centre] + com[centre - 1]) * fps * fps
    Ldot = np.gradient(L, axis=0) * fps
    g = np.array([0.0, 0.0, -GRAVITY_MPS2])
    ddp = (dp[centre + 1] - 2 * dp[centre] + dp[centre - 1]) * fps * fps
    newton = foot_f.sum(1) - mass * (acc + ddp) + mass * g
    euler = np.cross(corners - com[:, None], corner_f).sum(1) - Ldot
    corrected = with_pose(mo, np.asarray(mo.root_pos_m, float) + dp, np.asarray(mo.joint_rot_aa_rad, float))
    return DynamicsResult(corrected, fc, dp, foot_f, corner_f, newton, euler,
                          _metrics(dp, newton, euler, bw, fc, cost))


def program_matrix(fps: float, mass: float, com: np.ndarray, L: np.ndarray, corners: np.ndarray,
                   cand: np.ndarray, stance: np.ndarray, low: np.ndarray, cfg: DynamicsConfig,
                   measured_grf_n: np.ndarray | None = None) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """The whole-sequence program's scaled rows ``(A, b)`` (module docstring, step 2), built with
    array operations (one block per row family, in a fixed order).

    Unknowns: ``δp`` (n·3, m) then 4 edge magnitudes per candidate ``(t, c)`` of
    ``np.argwhere(cand)`` (N). ``com``/``L`` (n, 3) m, kg·m²/s; ``corners`` (n, 12, 3) m;
    ``cand`` (n, 12) bool; ``stance``/``low`` (n, 2) bool, m. Returns the CSR matrix, the rhs and
    the candidate index ``tc`` (k, 2).
    """
    n = com.shape[0]
    bw = mass * GRAVITY_MPS2
    tc = np.argwhere(cand)
    k = tc.shape[0]
    nd = 3 * n
    E = _edges(cfg.mu)  # (4, 3)
    col_beta = nd + 4 * np.arange(k)
    beta_cols = col_beta[:, None] + np.arange(4)  # (k, 4)
    ax3 = np.arange(3)
    rows, cols, vals, rhs = [], [], [], []
    r0 = 0

    def block(rr, cc, vv):
        rr, cc, vv = np.broadcast_arrays(np.asarray(rr), np.asarray(cc), np.asarray(vv, float))
        rows.append(rr.ravel())
        cols.append(cc.ravel())
        vals.append(vv.ravel())

    # Newton rows (row 3t + ax): Σ f − m δp̈ = m (c̈ − g), central second differences, and at the
    # first/last frame those of their neighbour (one-sided), so no frame is left free
    centre = np.clip(np.arange(n), 1, n - 2)
    acc = (com[centre + 1] - 2 * com[centre] + com[centre - 1]) * fps * fps
    sN = 1.0 / (cfg.newton_tol_bw * bw)
    g = np.array([0.0, 0.0, -GRAVITY_MPS2])
    newton_r = np.arange(3 * n).reshape(n, 3)
    stencil = np.array([1.0, -2.0, 1.0])
    cc = 3 * (centre[:, None, None] + np.array([-1, 0, 1])[None, None, :]) + ax3[None, :, None]  # (n, 3, 3)
    block(newton_r[:, :, None], cc, -mass * stencil * fps * fps * sN)
    rhs.append((mass * (acc - g) * sN).ravel())
    r0 += 3 * n
    # Euler rows (row 3n + 3t + ax): Σ (r − c) × f − L̇ = 0 (L̇ central, one-sided at the ends)
    Ldot = np.gradient(L, axis=0) * fps
    sE = 1.0 / cfg.euler_tol_nm
    euler_r = r0 + newton_r
    rhs.append((Ldot * sE).ravel())
    r0 += 3 * n
    # each candidate's edges in its frame's Newton and Euler rows
    t_of = tc[:, 0]
    block(newton_r[t_of][:, :, None], beta_cols[:, None, :], (E.T * sN)[None, :, :])  # (k, 3, 4)
    arm = corners[tc[:, 0], tc[:, 1]] - com[t_of]  # (k, 3)
    mom = np.cross(arm[:, None, :], E[None, :, :])  # (k, 4, 3)
    block(euler_r[t_of][:, :, None], beta_cols[:, None, :], mom.transpose(0, 2, 1) * sE)
    # stance feet on the floor: low + δp_z = 0
    sF = 1.0 / cfg.floor_tol_m
    st = np.argwhere(stance)
    m = len(st)
    block(r0 + np.arange(m), 3 * st[:, 0] + 2, sF)
    rhs.append(-low[st[:, 0], st[:, 1]] * sF)
    r0 += m
    # small, smooth corrections: δp, δp̈ (ends tighter), δṗ
    sC = 1.0 / cfg.correction_tol_m
    block(r0 + np.arange(nd), np.arange(nd), sC)
    rhs.append(np.zeros(nd))
    r0 += nd
    if n > 2:
        ti = np.arange(1, n - 1)
        tol = np.where((ti == 1) | (ti == n - 2), cfg.correction_acc_end_tol_mps2, cfg.correction_acc_tol_mps2)
        sA = 1.0 / (tol / (fps * fps))
        rr = r0 + np.arange(3 * (n - 2)).reshape(n - 2, 3)
        cc = 3 * (ti[:, None, None] + np.array([-1, 0, 1])[None, None, :]) + ax3[None, :, None]
        block(rr[:, :, None], cc, sA[:, None, None] * stencil)
        rhs.append(np.zeros(3 * (n - 2)))
        r0 += 3 * (n - 2)
    sR = 1.0 / (cfg.correction_rate_tol_mps / fps)
    rr = r0 + np.arange(3 * (n - 1)).reshape(n - 1, 3)
    cc = 3 * (np.arange(n - 1)[:, None, None] + np.array([0, 1])[None, None, :]) + ax3[None, :, None]
    block(rr[:, :, None], cc, np.array([-sR, sR]))
    rhs.append(np.zeros(3 * (n - 1)))
    r0 += 3 * (n - 1)
    # measured per-foot forces as targets (lab data), rows (t, foot, ax) where the plate is known
    if cfg.use_measured and measured_grf_n is not None:
        sM = 1.0 / (cfg.measured_tol_bw * bw)
        meas = np.asarray(measured_grf_n, float)
        known = np.isfinite(meas).all(-1)  # (n, 2)
        row_of = np.full((n, 2), -1)
        kn = np.argwhere(known)
        row_of[kn[:, 0], kn[:, 1]] = r0 + 3 * np.arange(len(kn))
        foot_of = (tc[:, 1] >= 6).astype(int)
        base = row_of[t_of, foot_of]
        sel = base >= 0
        block((base[sel][:, None, None] + ax3[None, :, None]), beta_cols[sel][:, None, :], (E.T * sM)[None, :, :])
        rhs.append((meas[kn[:, 0], kn[:, 1]] * sM).ravel())
        r0 += 3 * len(kn)
    # small tangential (friction) forces: without these rows the program is degenerate in f (a
    # horizontal force makes a moment about the COM as cheaply as moving the centre of pressure)
    # and the solver's tie-break would put spurious horizontal accelerations into δp
    sT = 1.0 / (cfg.tangential_tol_bw * bw)
    rr = r0 + np.arange(2 * k).reshape(k, 2)
    block(rr[:, :, None], beta_cols[:, None, :], (E.T[:2] * sT)[None, :, :])
    rhs.append(np.zeros(2 * k))
    r0 += 2 * k
    # ridge on the forces
    nb = 4 * k
    sB = 1.0 / (cfg.force_ridge_bw * bw)
    block(r0 + np.arange(nb), nd + np.arange(nb), sB)
    rhs.append(np.zeros(nb))
    r0 += nb
    A = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r0, nd + nb))
    return A, np.concatenate(rhs), tc


def _candidates(corners: np.ndarray, corner_vel: np.ndarray, hspeed: np.ndarray, cfg: DynamicsConfig) -> np.ndarray:
    """(N, 12) bool: sole corners that may carry floor force — within ``contact_height_m`` of the
    floor, slower than ``contact_speed_mps`` horizontally, and not leaving it (higher than
    ``contact_lift_height_m`` and rising faster than ``contact_lift_speed_mps``).
    ``corners`` (N, 12, 3) m and ``corner_vel`` (N, 12, 3) m/s, world; ``hspeed`` (N, 12) m/s."""
    z = corners[..., 2]
    leaving = (z > cfg.contact_lift_height_m) & (corner_vel[..., 2] > cfg.contact_lift_speed_mps)
    return (z < cfg.contact_height_m) & (hspeed < cfg.contact_speed_mps) & ~leaving


def lifted_loaded_corners(corners: np.ndarray, corner_vel: np.ndarray, corner_force_n: np.ndarray,
                          root_correction_m: np.ndarray, fps: float, body_weight_n: float,
                          cfg: DynamicsConfig) -> np.ndarray:
    """(N, 12) bool: corners that carry more than ``refine_load_bw`` of planned vertical force
    although the pelvis correction lifted them above ``refine_height_m`` while rising faster
    than ``contact_lift_speed_mps`` — a push the simulated foot, already off the floor, cannot
    deliver. ``corners``/``corner_vel`` (N, 12, 3) of the conditioned reference (m, m/s),
    ``corner_force_n`` (N, 12, 3) N, ``root_correction_m`` (N, 3) m."""
    z = corners[..., 2] + root_correction_m[:, None, 2]
    vz = corner_vel[..., 2] + (np.gradient(root_correction_m[:, 2]) * fps)[:, None]
    return ((corner_force_n[..., 2] > cfg.refine_load_bw * body_weight_n) & (z > cfg.refine_height_m)
            & (vz > cfg.contact_lift_speed_mps))


def solve_nonneg_lsq(A: sparse.spmatrix, b: np.ndarray, n_free: int) -> tuple[np.ndarray, float]:
    """``argmin ½‖A x − b‖²`` with ``x[n_free:] ≥ 0``, as a sparse convex QP solved by Clarabel
    (interior point; ``P = AᵀA``, ``q = −Aᵀb``, a non-negative cone on the bounded block).

    Returns (x, ½‖A x − b‖²). Raises ``ArithmeticError`` when the solver does not converge.
    """
    import clarabel

    n = A.shape[1]
    A = sparse.csc_matrix(A)
    P = sparse.triu(A.T @ A, format="csc")
    q = -(A.T @ b)
    nb = n - n_free
    G = sparse.hstack([sparse.csc_matrix((nb, n_free)), -sparse.identity(nb, format="csc")], format="csc")
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    # the rows are already scaled by their tolerances; Clarabel's own equilibration made it take
    # 58 interior-point iterations instead of 14 on a 3 s walk (0.52 → 0.12 s) and stop at a
    # slightly worse objective (664.7 vs 661.3)
    settings.equilibrate_enable = False
    solver = clarabel.DefaultSolver(P, q, G, np.zeros(nb), [clarabel.NonnegativeConeT(nb)], settings)
    sol = solver.solve()
    if str(sol.status) not in ("Solved", "AlmostSolved"):
        raise ArithmeticError(f"dynamics pass: the QP solver stopped with status {sol.status}")
    x = np.asarray(sol.x, dtype=float)
    x[n_free:] = np.maximum(x[n_free:], 0.0)
    res = A @ x - b
    return x, float(0.5 * res @ res)


def _metrics(dp, newton, euler, bw, fc, cost) -> dict:
    corr = np.linalg.norm(dp, axis=-1)
    nf = np.linalg.norm(newton, axis=-1)
    ne = np.linalg.norm(euler, axis=-1)
    return {
        "dyn_cutoff_hz": float(fc),
        "dyn_root_correction_rms_m": float(np.sqrt(np.mean(corr**2))),
        "dyn_root_correction_max_m": float(corr.max()),
        "dyn_newton_residual_rms_n": float(np.sqrt(np.mean(nf**2))),
        "dyn_newton_residual_rms_bw": float(np.sqrt(np.mean(nf**2)) / bw),
        "dyn_euler_residual_rms_nm": float(np.sqrt(np.mean(ne**2))),
        "dyn_cost": cost,
    }
