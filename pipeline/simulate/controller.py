"""Model-based tracking controller: PD-corrected inverse dynamics with contact-force distribution.

At every control tick (default 120 Hz) for the current simulated state ``(q, v)``:

1. **Desired acceleration** ``a* = a_ref + kp·e + kd·ė`` in MuJoCo's generalized coordinates:
   pelvis position error in the world frame; for the pelvis orientation and every ball joint the
   rotation-vector error ``log(q* ⊗ q_ref)`` in the body (child) frame, matching the frames of
   ``qvel``. ``kp = ω²``, ``kd = 2ζω`` (computed-torque gains: with an exact model the error
   dynamics are decoupled second-order systems of natural frequency ω). With the torque held
   over the control interval (zero-order hold) ω·Δt_ctrl ≈ 0.4 keeps the discrete loop well
   damped.
2. **Inverse dynamics** ``τ = M(q) a* + c(q, v)`` (``mj_rne``; MuJoCo's own model, so the
   torques are consistent with the simulated dynamics).
3. **Contact distribution**: the 6 root components of ``τ`` (the wrench the floating base needs)
   must come from the floor. The candidate contact points are MuJoCo's own body–floor contacts at
   the tick (``mj_collision``; box–plane contacts are the sole-box corners within the contact
   margin), restricted to feet the reference has in stance over the interval
   (``ContactQP.stance_gate_height_m``) and minus ``ContactQP.exclude_bodies``. Each point's force is a
   non-negative combination of the 4 edges of a linearised friction pyramid (coefficient ``mu``),
   so ``min ‖W (A β − τ_root)‖² + λ‖β‖², β ≥ 0`` is an NNLS (``scipy.optimize.nnls``): unilateral
   contact and friction cones are exact constraints and the centre of pressure stays inside the
   support polygon. ``W`` weights the force rows by 1/N and the torque rows by ``torque_weight``.
4. **Joint torques** ``τ_joint = τ[6:] − (Σ Jᵀ f)[6:]``: the joints carry the load the planned
   contact forces imply. The unsupplied root part ``s = τ[:6] − Aβ`` is the residual *demand*;
   the **residual wrench** (residual force control, Yuan & Kitani 2020) applied to the root is
   the demand capped in norm (force and torque separately); it never enters the joint torques.
   The part the root does not get changes its acceleration by ``Δa_r = −M_rr⁻¹ (s − residual)``
   and the joint torques by ``M_jr Δa_r`` (floating-base inverse dynamics that keeps the joint
   accelerations ``a*_j``). Joint torques are clipped to a per-joint norm limit.
5. **Joint damping**: the joint D-term is realised by MuJoCo dof damping ``b = 2ζω M_ii``
   (integrated implicitly at every physics step) plus a feed-forward ``b·v_ref``; the damper
   torque is part of the recorded joint torque.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.optimize import nnls

from pipeline.simulate.humanoid import Humanoid

N_BALL = 23


@dataclass(frozen=True)
class Gains:
    """PD gains as natural frequencies (rad/s) and a damping ratio.

    Attributes:
        joint_omega: ω of the 23 ball joints.
        root_pos_omega: ω of the pelvis position.
        root_rot_omega: ω of the pelvis orientation.
        zeta: damping ratio (1 = critical).
    """

    joint_omega: float = 25.0
    root_pos_omega: float = 10.0
    root_rot_omega: float = 15.0
    zeta: float = 1.0

    def scaled(self, s: float) -> Gains:
        return Gains(self.joint_omega * s, self.root_pos_omega * s, self.root_rot_omega * s, self.zeta)


@dataclass(frozen=True)
class ContactQP:
    """Contact-force distribution settings.

    Attributes:
        mu: friction coefficient of the linearised pyramid (below the simulated 1.0 for margin).
        contact_dist_m: a MuJoCo body–floor contact (``mj_collision`` at the control tick) whose
            signed distance is below this may carry planned force (default: every detected
            contact, i.e. within the geoms' contact margin).
        torque_weight: weight of the root-torque rows relative to the force rows, 1/m. 0.75 since
            the root residual torque is capped (1 N·m/kg): the contacts must supply the balance
            torque; at 0.5 one of 12 lab-walk passes (Gait, pass 1) lost balance and reset, at 1.0
            the uncapped force demand stays ≤ 5 % BW on only 57–86 % of lab-walk frames.
        regularization: λ (the weighted columns have norms ≈ 1–2), spreads the load.
        exclude_bodies: bodies whose floor contacts are never planned (their contact forces
            still act in the simulation and are recorded). Default: none. (The 60 Hz controller
            used to exclude the ≈0.2 kg toe bodies because their chain diverged under a 60 Hz
            zero-order hold; at 120 Hz with joint armature, the stance gate and the toe spring
            (``SimConfig.stiff_joints``) planning toe contacts is stable, and without it the
            humanoid had no planned support during push-off and fell onto the next heel strike.)
        stance_gate_height_m: a foot's (ankle + toe body) contacts are planned over a control
            interval only if the *reference* says that foot is in stance at both ends of it:
            its lowest sole point (``skeleton.sole_points`` of the reference pose) is below this
            height, m. Planning force on a foot the reference is lifting leaves a large ankle
            torque acting on a free foot for the rest of the interval (joint flips); planning on a
            landing swing foot slams it down. ``inf`` disables the gate.
    """

    mu: float = 0.8
    contact_dist_m: float = np.inf
    torque_weight: float = 0.75
    regularization: float = 1e-4
    exclude_bodies: tuple[str, ...] = ()
    stance_gate_height_m: float = 0.02


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product over the last axis (broadcasting; faster than ``np.cross`` for small arrays)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


try:  # the gufunc behind np.linalg.solve(a, b) for a vector b: the same LAPACK call without the wrapper's checks
    from numpy.linalg import _umath_linalg as _np_linalg

    _SOLVE1 = _np_linalg.solve1
except (ImportError, AttributeError):  # pragma: no cover - a numpy without it: the public function
    _SOLVE1 = None
try:  # the routine behind scipy.optimize.nnls, without its argument checks
    from scipy.optimize._slsqplib import nnls as _NNLS
except ImportError:  # pragma: no cover
    _NNLS = None

_SCALED_EYE: dict[tuple[int, float], np.ndarray] = {}


def _scaled_eye(n: int, s: float) -> np.ndarray:
    """``s * np.eye(n)`` (read-only, cached: the per-tick systems reuse a few sizes)."""
    key = (n, s)
    e = _SCALED_EYE.get(key)
    if e is None:
        e = s * np.eye(n)
        e.setflags(write=False)
        _SCALED_EYE[key] = e
    return e


def small_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.linalg.solve(a, b)`` for one float64 square system and a vector ``b``, bit for bit: the same
    LAPACK gufunc called directly (the wrapper's checks cost ≈ 4× the 6×6 solve itself). A result
    that is not finite (singular ``a``, NaN input) is recomputed by ``np.linalg.solve``, which then
    raises or returns as it always did."""
    if _SOLVE1 is not None:
        x = _SOLVE1(a, b, signature="dd->d")
        if math.isfinite(x.dot(x)):  # (an overflow to inf only costs the fallback)
            return x
    return np.linalg.solve(a, b)


def _nnls(A: np.ndarray, b: np.ndarray, maxiter: int) -> np.ndarray:
    """``scipy.optimize.nnls(A, b, maxiter=maxiter)[0]``, bit for bit (same routine, its checks
    done here only where they can fail: non-finite input goes through ``nnls`` itself)."""
    a = A.reshape(-1)
    if _NNLS is None or not math.isfinite(a.dot(a) + b.dot(b)):  # (an overflow only costs the fallback)
        return nnls(A, b, maxiter=maxiter)[0]
    x, _, info = _NNLS(A, b, maxiter)
    if info == 3:
        raise RuntimeError("Maximum number of iterations reached.")
    return x


def solve_force_plan(A: np.ndarray, b: np.ndarray, reg: float) -> np.ndarray:
    """``argmin_{β ≥ 0} ||A β − b||² + reg ||β||²`` for a (6, n) ``A``.

    The objective is strictly convex, so when the unconstrained minimizer
    ``β = Aᵀ (A Aᵀ + reg I)⁻¹ b`` (one 6×6 solve) is non-negative it is the answer; otherwise the
    bounded problem is solved by NNLS on the augmented system ``[A; √reg I] β ≈ [b; 0]``. Quiet
    stance mostly takes the first branch, which is ~10× cheaper.
    """
    m, n = A.shape
    beta = A.T @ small_solve(A @ A.T + _scaled_eye(m, reg), b)
    if beta.min() >= 0.0:
        return beta
    A_aug = np.empty((m + n, n))  # nnls works in float64
    A_aug[:m] = A
    A_aug[m:] = _scaled_eye(n, math.sqrt(reg))
    b_aug = np.zeros(m + n)
    b_aug[:m] = b
    return _nnls(A_aug, b_aug, 20 * n)


def quat_log_error(q: np.ndarray, q_ref: np.ndarray) -> np.ndarray:
    """Rotation vectors ``log(q* ⊗ q_ref)`` (..., 3), shortest path, in the frame of ``q``."""
    w1, x1, y1, z1 = q[..., 0], -q[..., 1], -q[..., 2], -q[..., 3]
    w2, x2, y2, z2 = q_ref[..., 0], q_ref[..., 1], q_ref[..., 2], q_ref[..., 3]
    w = w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2
    v = np.stack(
        [w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
         w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=-1)
    sign = np.where(w < 0.0, -1.0, 1.0)
    w = w * sign
    v = v * sign[..., None]
    s = np.linalg.norm(v, axis=-1)
    angle = 2.0 * np.arctan2(s, w)
    factor = np.where(s > 1e-9, angle / np.maximum(s, 1e-12), 2.0)
    return v * factor[..., None]


class TrackingController:
    """Per-sequence controller state bound to one humanoid and ``MjData``."""

    def __init__(self, humanoid: Humanoid, gains: Gains, qp: ContactQP, residual: bool = True,
                 torque_limits: bool = True, residual_force_max_n: float = np.inf,
                 residual_torque_max_nm: float = np.inf, implicit_damping: bool = True,
                 model: mujoco.MjModel | None = None, seat_omega: float = 25.0,
                 seat_margin_m: float = 0.005) -> None:
        self.h = humanoid
        self.m = model if model is not None else humanoid.model
        self.gains = gains
        self.qp = qp
        self.residual = residual
        self.torque_limits = torque_limits
        self.residual_force_max = float(residual_force_max_n)
        self.residual_torque_max = float(residual_torque_max_nm)
        self.last_residual_demand = np.zeros(6)
        self.implicit_damping = implicit_damping
        self.damping = np.zeros(self.m.nv)
        nv = self.m.nv
        self._tau = np.zeros(nv)
        self._err = np.zeros(nv)
        g = gains
        self._kp = np.full(nv, g.joint_omega**2)
        # joint D-term: MuJoCo's implicit dof damping (set by ``joint_damping``) realises it at every
        # physics step; only the pelvis keeps an explicit D-term
        self._kd = np.full(nv, 0.0 if implicit_damping else 2 * g.zeta * g.joint_omega)
        self._kp[:3], self._kd[:3] = g.root_pos_omega**2, 2 * g.zeta * g.root_pos_omega
        self._kp[3:6], self._kd[3:6] = g.root_rot_omega**2, 2 * g.zeta * g.root_rot_omega
        self._qfrc_c = np.zeros(nv)
        self._M = np.zeros((nv, nv))
        mu = qp.mu
        e = np.array([[mu, 0, 1], [-mu, 0, 1], [0, mu, 1], [0, -mu, 1]], float)
        self._edges = e / np.linalg.norm(e, axis=1, keepdims=True)  # (4, 3) world
        ex, ey, ez = self._edges[:, 0], self._edges[:, 1], self._edges[:, 2]
        zero = np.zeros(4)
        # [e]ₓ with r × e = −[e]ₓ r, so (r × e)ᵀ = rᵀ [e]ₓ
        self._edge_skew = np.stack([np.stack([zero, -ez, ey], -1), np.stack([ez, zero, -ex], -1),
                                    np.stack([-ey, ex, zero], -1)], 1)  # (4, 3, 3)
        self._sole_body_ids = humanoid.body_ids[humanoid.sole_point_body.reshape(-1)]  # (12,)
        self._sole_local = humanoid.sole_points_local.reshape(-1, 3)  # (12, 3)
        # torque limits in MuJoCo's ball-joint order (blocks of 3 dofs after the free joint)
        self._limit = np.empty(N_BALL)
        self._limit[(humanoid.dof_index[6::3] - 6) // 3] = humanoid.torque_limit_nm
        w = np.ones(6)
        w[3:] = qp.torque_weight
        self._w = w
        self.last_contact_force = np.zeros((0, 3))
        self.last_contact_pos = np.zeros((0, 3))
        self._zero3 = np.zeros(3)
        self._floor = mujoco.mj_name2id(self.m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
        from pipeline.skeleton import JOINT_NAMES

        self._right_bodies = humanoid.body_ids[[JOINT_NAMES.index("right_ankle"), JOINT_NAMES.index("right_foot")]]
        self._plannable = np.ones(self.m.nbody, dtype=bool)
        self._plannable[[humanoid.body_ids[JOINT_NAMES.index(n)] for n in qp.exclude_bodies]] = False
        # per-tick constants (``compute`` runs at 120 Hz on tiny arrays: its numpy call overhead is
        # what it costs, so what does not change is computed once)
        self._is_right = np.zeros(self.m.nbody, dtype=bool)
        self._is_right[self._right_bodies] = True
        self._w_col = self._w[:, None]
        self._root_body = int(humanoid.body_ids[0])
        self._edges_t = np.ascontiguousarray(self._edges.T)  # (3, 4)
        self._edges_tiled: np.ndarray = np.tile(self._edges.T, 8)  # grown on demand (``_tiled_edges``)
        # landing seat (``seat_landing_feet``): ankle bodies, each leg's hip + knee dofs, PD gains
        self._seat_kp, self._seat_kd = seat_omega**2, 2.0 * seat_omega
        self._seat_margin = float(seat_margin_m)
        self._seat_ankle = [int(humanoid.body_ids[JOINT_NAMES.index(f"{s}_ankle")]) for s in ("left", "right")]
        self._seat_dofs = [np.concatenate([int(self.m.body_dofadr[humanoid.body_ids[JOINT_NAMES.index(f"{s}_{j}")]])
                                           + np.arange(3) for j in ("hip", "knee")]) for s in ("left", "right")]
        self._seat_touched = [False, False]  # this stance's foot has touched the floor
        self._seat_jacp = np.zeros((3, self.m.nv))
        self._seat_jdot = np.zeros((3, self.m.nv))

    def _tiled_edges(self, k: int) -> np.ndarray:
        """``np.tile(self._edges.T, k)`` (3, 4k), a read-only view of a cached tiling."""
        t = self._edges_tiled
        if t.shape[1] < 4 * k:
            t = self._edges_tiled = np.tile(self._edges.T, max(k, 2 * t.shape[1] // 4))
            t.setflags(write=False)
        return t[:, :4 * k]

    def joint_damping(self, d: mujoco.MjData) -> np.ndarray:
        """Per-dof damping ``b = 2ζω·M_ii`` (N·m·s/rad) of the ball dofs from the current mass
        matrix diagonal (``d`` after ``mj_forward``); written to ``model.dof_damping`` by the engine."""
        M = self._M
        mujoco.mj_fullM(self.m, d, M)
        b = np.zeros(self.m.nv)
        if self.implicit_damping:
            b[6:] = 2 * self.gains.zeta * self.gains.joint_omega * np.diag(M)[6:]
        self.damping = b
        return b

    def seat_landing_feet(self, d: mujoco.MjData, qacc: np.ndarray, seat: np.ndarray) -> None:
        """Correct ``qacc`` (a*, in place) so that a landing foot still above the floor comes down.

        ``seat`` (2,): per foot (left, right), NaN = not a seated stance at this tick (the
        foot's touched-state resets), else the reference ankle's downward vertical velocity
        ``vz_ref`` (m/s, ≤ 0; ``engine.landing_seat_targets``). Until the foot's lowest sole corner
        has first come within ``seat_margin_m`` of the floor in this stance, the ankle's vertical
        acceleration is asked to be ``−kp·h + kd·(vz_ref − vz)`` (``h`` the lowest corner's height,
        ``vz`` the ankle's vertical velocity), by a damped-least-squares change (λ² = 10⁻³ m²) of
        that leg's hip and knee accelerations only, with ``J̇v`` from ``mj_jacDot``.
        """
        m = self.m
        for f in range(2):
            vz_ref = float(seat[f])
            if math.isnan(vz_ref):  # not seating; the next seated stance starts afresh
                self._seat_touched[f] = False
                continue
            if self._seat_touched[f]:
                continue
            h = float(self.sole_points_world(d)[6 * f:6 * f + 6, 2].min())
            if h <= self._seat_margin:
                self._seat_touched[f] = True
                continue
            body = self._seat_ankle[f]
            mujoco.mj_jacBody(m, d, self._seat_jacp, None, body)
            jz = self._seat_jacp[2]
            mujoco.mj_jacDot(m, d, self._seat_jdot, None, d.xpos[body], body)
            vz = float(jz @ d.qvel)
            want = -self._seat_kp * h + self._seat_kd * (vz_ref - vz)
            delta = want - float(jz @ qacc) - float(self._seat_jdot[2] @ d.qvel)
            dofs = self._seat_dofs[f]
            js = jz[dofs]
            qacc[dofs] += js * (delta / (float(js @ js) + 1e-3))

    def sole_points_world(self, d: mujoco.MjData) -> np.ndarray:
        """(12, 3) world positions of the sole corners (left 0–5, right 6–11)."""
        R = d.xmat[self._sole_body_ids].reshape(-1, 3, 3)
        return d.xpos[self._sole_body_ids] + np.einsum("kij,kj->ki", R, self._sole_local)

    def desired_acceleration(self, d: mujoco.MjData, q_ref: np.ndarray, v_ref: np.ndarray,
                             a_ref: np.ndarray) -> np.ndarray:
        """``a*`` (MuJoCo dof layout) from the reference ``q_ref``, ``v_ref``, ``a_ref`` (MuJoCo
        qpos/dof layouts: the root block comes first, then the ball joints depth-first)."""
        # position errors of every joint in one call: pelvis position (world), then rotation
        # vectors log(q* ⊗ q_ref) in the body frames (free-joint and ball-joint conventions of qvel)
        e = self._err
        mujoco.mj_differentiatePos(self.m, e, 1.0, d.qpos, q_ref)
        return a_ref + self._kp * e + self._kd * (v_ref - d.qvel)

    def compute(self, d: mujoco.MjData, q_ref: np.ndarray, v_ref: np.ndarray, a_ref: np.ndarray,
                plannable: np.ndarray | None = None, foot_target: np.ndarray | None = None,
                target_weight: float = 0.0, seat: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Joint torques (69,) (ball dofs in MuJoCo order, child frames) and the root residual (6,)
        generalized force. References are in MuJoCo layout (``Humanoid.qpos_to_mj``).

        ``d`` must hold up-to-date kinematics, com positions and com velocities
        (``mj_kinematics``, ``mj_comPos``, ``mj_comVel``). The residual's force part is world
        frame (at the pelvis origin), its torque part pelvis-frame (MuJoCo free-joint dofs).

        ``foot_target`` (2, 3): planned floor force per foot (left, right; world, N) from the
        dynamics pass; with ``target_weight`` > 0 and contacts on both feet, the rows
        ``target_weight · (Σ_left f − s Σ_all f)`` (``s`` = the plan's left share of the vertical
        force) join the least-squares problem: the whole-sequence plan sets how the load is
        shared between the feet (not only the per-tick ridge), the root demand sets the total.
        ``seat`` (2,): the landing seat's per-foot input at this tick (``seat_landing_feet``).
        """
        m = self.m
        # a* straight into d.qacc (``desired_acceleration``, the same operations)
        e = self._err
        mujoco.mj_differentiatePos(m, e, 1.0, d.qpos, q_ref)
        qacc = d.qacc
        np.add(a_ref + self._kp * e, self._kd * (v_ref - d.qvel), out=qacc)
        if seat is not None:
            self.seat_landing_feet(d, qacc, seat)
        tau = self._tau
        mujoco.mj_rne(m, d, 1, tau)
        tau += m.dof_armature * qacc  # mj_rne leaves out the armature that mj_crb adds to M
        demand = tau[:6]
        mujoco.mj_collision(m, d)
        if d.ncon:
            con = d.contact
            geom = con.geom
            floor_first = geom[:, 0] == self._floor
            other = np.where(floor_first, geom[:, 1], geom[:, 0])
            keep = (floor_first | (geom[:, 1] == self._floor)) & (con.dist < self.qp.contact_dist_m)
            geom_body = m.geom_bodyid
            keep &= (self._plannable if plannable is None else plannable)[geom_body[other]]
            pts = con.pos[keep]
            bodies = geom_body[other[keep]]
        else:
            pts = np.zeros((0, 3))
            bodies = np.zeros(0, dtype=int)
        nc = pts.shape[0]
        qfrc_c = self._qfrc_c
        qfrc_c.fill(0.0)
        if nc:
            root = d.qpos[:3]
            R = d.xmat[self._root_body].reshape(3, 3)
            r = pts - root  # (k, 3)
            k4 = 4 * nc
            right = self._is_right[bodies]
            n_right = int(np.count_nonzero(right))
            ft = None if foot_target is None else np.asarray(foot_target, float)
            plan_rows = False
            if ft is not None and target_weight > 0.0 and 0 < n_right < nc:
                fz_total = ft[:, 2].sum()
                plan_rows = fz_total > 0.0
            # columns: for each corner and each pyramid edge: [edge; Rᵀ (r × edge)];
            # (r × e)ᵀ R = rᵀ [e]ₓ R with [e]ₓ the (fixed) skew matrices of the 4 edges
            Aw = np.empty((9 if plan_rows else 6, k4))
            bw = np.zeros(Aw.shape[0])
            edges = self._tiled_edges(nc)
            Aw[:3] = edges
            Aw[3:6] = np.einsum("kb,jbc->ckj", r, self._edge_skew @ R).reshape(3, k4)
            Aw[:6] *= self._w_col
            np.multiply(demand, self._w, out=bw[:6])
            if plan_rows:
                # the plan sets how the load is shared between the feet, the demand sets the total:
                # Σ_left f − s Σ_all f = 0 with s the plan's left share of the vertical force
                share = ft[0, 2] / fz_total
                coef = np.where(right, -share, 1.0 - share)  # per contact
                np.multiply(np.repeat(coef, 4)[None, :] * edges, target_weight, out=Aw[6:])
            beta = solve_force_plan(Aw, bw, self.qp.regularization)
            f = beta.reshape(nc, 4) @ self._edges  # (k, 3) world
            zero3 = self._zero3
            for c in range(nc):
                mujoco.mj_applyFT(m, d, f[c], zero3, pts[c], int(bodies[c]), qfrc_c)
            forces = f
        else:
            forces = np.zeros((0, 3))
        self.last_contact_force = forces
        self.last_contact_pos = pts
        joint = tau[6:] - qfrc_c[6:]
        if self.implicit_damping:
            joint += self.damping[6:] * v_ref[6:]  # damper adds b (v_ref − v) in total
        demand = tau[:6] - qfrc_c[:6]
        self.last_residual_demand = demand
        if self.residual:
            residual = demand.copy()
            fn = math.sqrt(residual[0] ** 2 + residual[1] ** 2 + residual[2] ** 2)
            if fn > self.residual_force_max:
                residual[:3] *= self.residual_force_max / fn
            tn = math.sqrt(residual[3] ** 2 + residual[4] ** 2 + residual[5] ** 2)
            if tn > self.residual_torque_max:
                residual[3:] *= self.residual_torque_max / tn
        else:
            residual = np.zeros(6)
        shortfall = demand - residual
        if np.count_nonzero(shortfall):
            # The root cannot get the wrench a* needs: keep the joint accelerations a*_j and let the
            # root accelerate as the available wrench allows, Δa_r = −M_rr⁻¹ s; the joint torques
            # then change by M_jr Δa_r (consistent floating-base inverse dynamics).
            mujoco.mj_crb(m, d)
            M = self._M
            mujoco.mj_fullM(m, d, M)
            da = -small_solve(M[:6, :6], shortfall)
            joint = joint + M[6:, :6] @ da
        if self.torque_limits:
            # the limit applies to the net joint torque the actuator and damper produce together
            # (what is recorded): the command's feed-forward b·v_ref is mostly cancelled by the
            # damper's −b·v, so clipping the command itself would cut fast joints (a running
            # hip's b·v_ref alone reaches the limit) while their net torque is moderate
            passive = self.damping[6:] * d.qvel[6:] if self.implicit_damping else 0.0
            jt = (joint - passive).reshape(N_BALL, 3)
            norm = np.sqrt(np.add.reduce(jt * jt, axis=1))  # np.linalg.norm(jt, axis=1)
            over = norm > self._limit
            if np.count_nonzero(over):
                jt[over] *= (self._limit[over] / norm[over])[:, None]
            joint = jt.reshape(-1) + passive
        return joint, residual
