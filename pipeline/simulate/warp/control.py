"""The tracking controller's per-tick math batched over W worlds (pure numpy, float64).

Same computation as ``pipeline.simulate.controller.TrackingController.compute`` (see its module
docstring for the method), written as array functions with a leading world axis so one call
serves a whole batch of sequences. MuJoCo layouts throughout: ``qpos`` (W, 99) = free joint
(pelvis position world m, quaternion w x y z) then 23 ball-joint quaternions; dofs (W, 75) = free
joint (linear world, angular pelvis frame) then 23 × 3 ball dofs (child frames).

Conventions of the contact arrays: a fixed **contact budget** C per world; slot ``c`` of world
``w`` is used when ``valid[w, c]``; positions world (m), forces world (N, on the body, from the
floor).

The contact-force plan ``argmin_{β ≥ 0} ‖A β − b‖² + reg ‖β‖²`` (one per world, A (R, n) with R ≤ 9
rows and n = 4·C columns) is solved through its **dual**, an unconstrained strongly concave
piecewise-quadratic problem in R unknowns (``solve_force_plan_batched``): a fixed number of
semismooth Newton iterations with a batched backtracking line search; every world does the same
arithmetic (no data-dependent control flow), so it maps one-to-one onto a GPU kernel. It returns
the exact NNLS solution once the active set is found (typically 1–4 iterations; tests compare it
with ``scipy.optimize.nnls``).
"""

from __future__ import annotations

import numpy as np

from pipeline.simulate.controller import quat_log_error


def differentiate_pos(qpos: np.ndarray, qpos_ref: np.ndarray) -> np.ndarray:
    """(W, 75) ``mj_differentiatePos(qpos → qpos_ref, dt=1)`` for the humanoid's joints (free
    joint first, then ball joints): position difference (world) and rotation vectors
    ``log(q* ⊗ q_ref)`` in the body frames, shortest path."""
    w = qpos.shape[0]
    out = np.empty((w, 75))
    out[:, :3] = qpos_ref[:, :3] - qpos[:, :3]
    quats = qpos[:, 3:].reshape(w, 24, 4)
    quats_ref = qpos_ref[:, 3:].reshape(w, 24, 4)
    out[:, 3:] = quat_log_error(quats, quats_ref).reshape(w, 72)
    return out


def desired_acceleration(qpos, qvel, q_ref, v_ref, a_ref, kp, kd) -> np.ndarray:
    """(W, 75) ``a* = a_ref + kp·e + kd·(v_ref − v)``; ``kp``, ``kd`` (W, 75) per world."""
    return a_ref + kp * differentiate_pos(qpos, q_ref) + kd * (v_ref - qvel)


def pyramid_edges(mu: float) -> np.ndarray:
    """(4, 3) unit edges of the linearised friction pyramid (same as ``TrackingController``)."""
    e = np.array([[mu, 0, 1], [-mu, 0, 1], [0, mu, 1], [0, -mu, 1]], float)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def force_plan_system(pts, valid, right, root_pos, root_R, demand, edges, w6, foot_target, target_weight):
    """Weighted least-squares system of the per-tick contact distribution, batched.

    Args:
        pts: (W, C, 3) contact points, world m; valid: (W, C) bool; right: (W, C) bool (contact on
            the right foot's bodies).
        root_pos: (W, 3) pelvis joint position; root_R: (W, 3, 3) pelvis body → world.
        demand: (W, 6) root generalized force (force world, torque pelvis frame).
        edges: (4, 3) pyramid edges; w6: (6,) row weights (1 for force, torque_weight for torque).
        foot_target: (W, 2, 3) planned per-foot forces or ``None``; target_weight: weight of the
            load-share rows (used where both feet have contacts and the plan's Σ Fz > 0).

    Returns:
        A (W, 9, 4C), b (W, 9): rows 0–5 the weighted root wrench, rows 6–8 the load-share rows
        (zero where unused, which leaves the solution unchanged). Columns of invalid slots are 0.
    """
    w, c = valid.shape
    r = pts - root_pos[:, None, :]  # (W, C, 3)
    ex, ey, ez = edges[:, 0], edges[:, 1], edges[:, 2]
    zero = np.zeros(4)
    skew = np.stack([np.stack([zero, -ez, ey], -1), np.stack([ez, zero, -ex], -1),
                     np.stack([-ey, ex, zero], -1)], 1)  # (4, 3, 3): (r × e)ᵀ = rᵀ [e]ₓ
    A = np.zeros((w, 9, c, 4))
    A[:, :3] = edges.T[None, :, None, :]
    # torque rows in the pelvis frame: Rᵀ (r × e) = (rᵀ [e]ₓ R)ᵀ
    A[:, 3:6] = np.einsum("wkb,jbc,wcd->wdkj", r, skew, root_R)
    A[:, :6] *= w6[None, :, None, None]
    b = np.zeros((w, 9))
    b[:, :6] = demand * w6
    if foot_target is not None and target_weight > 0.0:
        has_r = (valid & right).any(1)
        has_l = (valid & ~right).any(1)
        fz = foot_target[:, :, 2].sum(1)
        use = has_r & has_l & (fz > 0.0)
        share = np.where(use, foot_target[:, 0, 2] / np.where(fz > 0.0, fz, 1.0), 0.0)
        coef = np.where(right, -share[:, None], 1.0 - share[:, None]) * use[:, None]  # (W, C)
        A[:, 6:9] = (coef[:, None, :, None] * edges.T[None, :, None, :]) * target_weight
    A *= valid[:, None, :, None]
    return A.reshape(w, 9, 4 * c), b


def _dual_value(nu, A, b, reg):
    """Dual objective ``g(ν) = −½‖ν‖² + νᵀb − ‖max(0, Aᵀν)‖²/(2 reg)`` (..., W)."""
    z = np.maximum(np.einsum("...wrn,...wr->...wn", A, nu), 0.0)
    return -0.5 * (nu * nu).sum(-1) + (nu * b).sum(-1) - 0.5 / reg * (z * z).sum(-1)


def solve_force_plan_batched(A: np.ndarray, b: np.ndarray, reg: float, iterations: int = 12,
                             backtracks: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``argmin_{β ≥ 0} ‖A β − b‖² + reg ‖β‖²`` for every world, via the dual.

    The primal is strictly convex; its dual ``max_ν g(ν)`` (``_dual_value``) is unconstrained in
    R unknowns with ``β(ν) = max(0, Aᵀν)/reg``, and ``∇g = b − ν − A β(ν)``. Start: the
    unconstrained minimiser ``ν₀ = reg (AAᵀ + reg I)⁻¹ b`` (exact when its β ≥ 0, the CPU
    controller's fast path). Then ``iterations`` semismooth Newton steps
    ``(I + A_S A_Sᵀ/reg) Δ = ∇g`` (S: columns with ``Aᵀν > 0``) with an Armijo backtracking line
    search over ``t ∈ {1, ½, …, 2^−backtracks}`` evaluated for all worlds at once.

    Args:
        A: (W, R, n); b: (W, R); reg > 0.

    Returns:
        β (W, n) ≥ 0 and the final KKT residual ``‖∇g‖`` (W,) (0 at the optimum; the backend
        records its maximum).
    """
    w, rdim, n = A.shape
    eye = np.eye(rdim)
    AAt = A @ A.transpose(0, 2, 1)
    nu = reg * np.linalg.solve(AAt + reg * eye, b[..., None])[..., 0]
    steps = 0.5 ** np.arange(backtracks + 1)  # (T,)
    for _ in range(iterations):
        z = np.einsum("wrn,wr->wn", A, nu)
        beta = np.maximum(z, 0.0) / reg
        grad = b - nu - np.einsum("wrn,wn->wr", A, beta)
        S = (z > 0.0).astype(A.dtype)
        H = eye + np.einsum("wrn,wn,wsn->wrs", A, S, A) / reg
        delta = np.linalg.solve(H, grad[..., None])[..., 0]
        g0 = _dual_value(nu, A, b, reg)  # (W,)
        cand = nu[None] + steps[:, None, None] * delta[None]  # (T, W, R)
        gt = _dual_value(cand, A[None], b[None], reg)  # (T, W)
        slope = (grad * delta).sum(-1)  # > 0: ascent direction
        ok = gt >= g0[None] + 1e-4 * steps[:, None] * slope[None]
        first = np.where(ok.any(0), ok.argmax(0), backtracks)
        take = (slope > 0.0)[:, None]
        nu = np.where(take, cand[first, np.arange(w)], nu)
    z = np.einsum("wrn,wr->wn", A, nu)
    beta = np.maximum(z, 0.0) / reg
    grad = b - nu - np.einsum("wrn,wn->wr", A, beta)
    return beta, np.linalg.norm(grad, axis=-1)


def contact_generalized_force(cdof, dof_body, subtree, root_com, bodies, pts, forces, valid) -> np.ndarray:
    """(W, nv) ``Σ_c J_c(p_c)ᵀ f_c``: the generalized force of point forces on bodies (what
    ``mj_applyFT`` accumulates), from MuJoCo's ``cdof``.

    ``cdof`` (W, nv, 6) are the dof motion axes [angular; linear at ``root_com``] in world
    orientation (MuJoCo's com-based frame, ``root_com`` = ``subtree_com`` of the tree's root body);
    the power of a wrench [τ about root_com; f] on dof i is ``cdof_i · [τ; f]``, and a dof moves
    every body of its body's subtree. ``subtree`` (nbody, nbody) bool: ``subtree[a, b]`` = b is in
    a's subtree; ``dof_body`` (nv,) the body of each dof; ``bodies`` (W, C) int, ``pts``/``forces``
    (W, C, 3) world, ``valid`` (W, C).
    """
    w, c = valid.shape
    nbody = subtree.shape[0]
    f = forces * valid[..., None]
    tau = np.cross(pts - root_com[:, None, :], f)  # (W, C, 3)
    wrench = np.concatenate([tau, f], axis=-1)  # (W, C, 6)
    onehot = (bodies[..., None] == np.arange(nbody)) & valid[..., None]  # (W, C, nbody)
    body_w = np.einsum("wcb,wcs->wbs", onehot.astype(float), wrench)  # (W, nbody, 6)
    sub_w = np.einsum("ab,wbs->was", subtree.astype(float), body_w)  # (W, nbody, 6)
    return np.einsum("wis,wis->wi", cdof, sub_w[:, dof_body])


def cap_norm(x: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
    """Scale each row of ``x`` (..., 3) down to norm ``limit`` (broadcast) where it exceeds it."""
    n = np.linalg.norm(x, axis=-1)
    lim = np.broadcast_to(limit, n.shape)
    scale = np.where(n > lim, lim / np.where(n > 0.0, n, 1.0), 1.0)
    return x * scale[..., None]


def seat_chain(model, ankle_bodies, leg_dofs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static index arrays of the landing seat for one humanoid topology (every subject shares it).

    ``ankle_bodies`` (2,): the left/right ankle body ids; ``leg_dofs`` (2, 6): each leg's hip and
    knee dofs (``TrackingController._seat_dofs``). Returns ``chain`` (2, n) the dofs that move each
    ankle body (its ancestor chain, ``dof_parentid``), ``quat`` (2, n) bool (dofs of a ball joint or
    a free joint's rotation: their ``ċdof`` is ``cvel × cdof``, as ``mj_jacDot`` computes it) and
    ``leg_pos`` (2, 6) the positions of ``leg_dofs`` in ``chain``."""
    import mujoco

    chains, quats, pos = [], [], []
    for f, body in enumerate(ankle_bodies):
        i = int(model.body_dofadr[body] + model.body_dofnum[body] - 1)
        dofs = []
        while i >= 0:
            dofs.append(i)
            i = int(model.dof_parentid[i])
        dofs = np.array(dofs[::-1], dtype=np.int64)
        jnt = model.dof_jntid[dofs]
        kind = model.jnt_type[jnt]
        quat = (kind == mujoco.mjtJoint.mjJNT_BALL) | ((kind == mujoco.mjtJoint.mjJNT_FREE)
                                                        & (dofs >= model.jnt_dofadr[jnt] + 3))
        chains.append(dofs)
        quats.append(quat)
        pos.append(np.searchsorted(dofs, np.asarray(leg_dofs[f])))
    return np.stack(chains), np.stack(quats), np.stack(pos)


def landing_seat(qacc, qvel, seat, touched, sole_z, ankle_pos, root_com, cvel_ankle, cvel_dof, cdof,
                 chain, quat, leg_pos, kp: float, kd: float, margin: float) -> None:
    """The landing seat of ``TrackingController.seat_landing_feet``, batched; edits ``qacc`` (W, nv)
    and ``touched`` (W, 2) bool in place.

    Per world and foot: ``seat`` (W, 2) the reference ankle's downward velocity at this tick (m/s,
    NaN: not a seated stance, which clears ``touched``); ``sole_z`` (W, 2) the foot's lowest sole
    corner height, m; ``ankle_pos`` (W, 2, 3) the ankle body's origin, ``root_com`` (W, 3) the
    tree's ``subtree_com`` (MuJoCo's com-based frame); ``cvel_ankle`` (W, 2, 6) the ankle bodies'
    ``cvel``; ``cvel_dof`` (W, 2, n, 6) the ``cvel`` of the body of each chain dof; ``cdof`` (W, 2,
    n, 6) the chain dofs' ``cdof`` (all rot:lin). ``chain``/``quat``/``leg_pos``: ``seat_chain``.
    The ankle's vertical Jacobian row and ``J̇ v`` follow ``mj_jacBody`` / ``mj_jacDot``.
    """
    for f in range(2):
        s = seat[:, f]
        off = np.isnan(s)
        touched[off, f] = False
        newly = ~off & ~touched[:, f] & (sole_z[:, f] <= margin)
        touched[newly, f] = True
        act = np.flatnonzero(~off & ~touched[:, f])
        if act.size == 0:
            continue
        offset = ankle_pos[act, f] - root_com[act]  # (A, 3)
        cv = cvel_ankle[act, f]
        pvel = cv[:, 3:] + np.cross(cv[:, :3], offset)  # the ankle point's linear velocity
        cd = cdof[act, f]  # (A, n, 6)
        cb = cvel_dof[act, f]
        cdd_ang = np.cross(cb[..., :3], cd[..., :3])
        cdd_lin = np.cross(cb[..., :3], cd[..., 3:]) + np.cross(cb[..., 3:], cd[..., :3])
        q = quat[f][None, :, None]
        cdd_ang = np.where(q, cdd_ang, 0.0)
        cdd_lin = np.where(q, cdd_lin, 0.0)
        jz = cd[..., 5] + np.cross(cd[..., :3], offset[:, None, :])[..., 2]  # (A, n)
        jdz = (cdd_lin[..., 2] + np.cross(cdd_ang, offset[:, None, :])[..., 2]
               + np.cross(cd[..., :3], pvel[:, None, :])[..., 2])
        v = qvel[act][:, chain[f]]
        vz = (jz * v).sum(1)
        want = -kp * sole_z[act, f] + kd * (s[act] - vz)
        delta = want - (jz * qacc[act][:, chain[f]]).sum(1) - (jdz * v).sum(1)
        js = jz[:, leg_pos[f]]  # (A, 6)
        dofs = chain[f][leg_pos[f]]
        qacc[act[:, None], dofs[None, :]] += js * (delta / ((js * js).sum(1) + 1e-3))[:, None]
