"""The tracking controller's per-tick math as Warp kernels (the device controller of ``MjWarpBackend``).

Same computation as the numpy reference ``pipeline.simulate.warp.control`` (and so as the CPU
controller) plus the per-tick bookkeeping of ``backend._simulate_batch`` (flight anchor, fall check
and reset masks, recording, interval sums), with no host round trip: every kernel reads the
control tick from a one-element device counter (``tick``) that the last kernel of a tick
increments, so one tick is the same launch sequence every time and can be captured as one CUDA
graph (``backend``).

Precision: MuJoCo Warp's state is float32; the controller math here runs in **float64** on it
(the numpy reference does the same), and its outputs (``qacc`` for ``rne``, ``qfrc_applied``,
``qpos_spring``) are rounded to float32 as the numpy path's ``assign`` does. The force plan's NNLS
is the numpy path's dual semismooth Newton (Cholesky instead of LU for the R × R solves),
one thread per world; its line search stops at the first accepted step (the numpy version
evaluates all steps and takes the first accepted one: the same step).

Layouts: W worlds; ``K = kmax + 1`` reference ticks; references (W, K, ·) float64; the contact
budget C slots per world; the plan columns ``4c + e`` (slot c, pyramid edge e); R = 9 plan rows.
The kernels are launched by ``backend._device_loop`` and, one by one, by the parity tests
(``tests/test_warp_kernels.py``).
"""

from __future__ import annotations

import warp as wp

f64 = wp.float64
NROWS = 9
"""Rows of the force-plan system: 6 root-wrench rows + 3 load-share rows."""


@wp.func
def _v3(a: wp.vec3) -> wp.vec3d:
    return wp.vec3d(f64(a[0]), f64(a[1]), f64(a[2]))


@wp.func
def quat_log_error(w1: f64, x1: f64, y1: f64, z1: f64, w2: f64, x2: f64, y2: f64, z2: f64) -> wp.vec3d:
    """``log(q1* ⊗ q2)`` (rotation vector, shortest path) as ``controller.quat_log_error``."""
    cx = -x1
    cy = -y1
    cz = -z1
    w = w1 * w2 - cx * x2 - cy * y2 - cz * z2
    v = wp.vec3d(w1 * x2 + cx * w2 + cy * z2 - cz * y2, w1 * y2 - cx * z2 + cy * w2 + cz * x2,
                 w1 * z2 + cx * y2 - cy * x2 + cz * w2)
    if w < f64(0.0):
        w = -w
        v = -v
    s = wp.length(v)
    angle = f64(2.0) * wp.atan2(s, w)
    factor = f64(2.0)
    if s > f64(1e-9):
        factor = angle / wp.max(s, f64(1e-12))
    return v * factor


@wp.func
def _chol_solve(H: wp.array3d(dtype=f64), w: int, n: int, rhs: wp.array2d(dtype=f64), x: wp.array2d(dtype=f64)):
    """Solve ``H[w] x[w] = rhs[w]`` (SPD, n × n; lower triangle read, overwritten by its Cholesky factor)."""
    for j in range(n):
        s = H[w, j, j]
        for k in range(j):
            s = s - H[w, j, k] * H[w, j, k]
        dj = wp.sqrt(wp.max(s, f64(1e-300)))
        H[w, j, j] = dj
        for i in range(j + 1, n):
            t = H[w, i, j]
            for k in range(j):
                t = t - H[w, i, k] * H[w, j, k]
            H[w, i, j] = t / dj
    for i in range(n):
        t = rhs[w, i]
        for k in range(i):
            t = t - H[w, i, k] * x[w, k]
        x[w, i] = t / H[w, i, i]
    for ii in range(n):
        i = n - 1 - ii
        t = x[w, i]
        for k in range(i + 1, n):
            t = t - H[w, k, i] * x[w, k]
        x[w, i] = t / H[w, i, i]


# ------------------------------------------------------------------------------------------------
# tick start: flight anchor, fall check, resets, recording
# ------------------------------------------------------------------------------------------------


@wp.func
def _ankle(xpos: wp.array2d(dtype=wp.vec3), body_ids: wp.array2d(dtype=wp.int32), w: int, f: int) -> wp.vec3d:
    return _v3(xpos[w, body_ids[w, 7 + f]])


@wp.kernel
def anchor_fall_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32), kmax: int, spf: int,
    qpos: wp.array2d(dtype=wp.float32), xpos: wp.array2d(dtype=wp.vec3),
    rq: wp.array3d(dtype=f64), ref_pos: wp.array3d(dtype=f64), body_ids: wp.array2d(dtype=wp.int32),
    plan: wp.array3d(dtype=f64), has_plan: wp.array(dtype=wp.int32),
    plan_gate_n: f64, min_flight: int, control_hz: f64, still_mps: f64, reset_height_m: f64, reset_mpjpe_m: f64,
    anchor: wp.array2d(dtype=f64), max_shift: wp.array(dtype=f64), airborne: wp.array(dtype=wp.int32),
    landed: wp.array(dtype=wp.int32), prev: wp.array2d(dtype=f64), fix_pending: wp.array(dtype=wp.int32),
    do_reset: wp.array(dtype=wp.int32), reset_rec: wp.array2d(dtype=wp.int32),
):
    """Per world: ``FlightAnchor.update`` (ticks < kmax) and the fall check → ``do_reset``."""
    w = wp.tid()
    k = tick[0]
    tot = total[w]
    kk = wp.min(k, tot)
    a0 = _ankle(xpos, body_ids, w, 0)
    a1 = _ankle(xpos, body_ids, w, 1)
    if fix_pending[w] != 0:  # restarted after a divergence at the end of the last tick (FlightAnchor.reset)
        anchor[w, 0] = f64(0.0)
        anchor[w, 1] = f64(0.0)
        anchor[w, 2] = f64(0.0)
        airborne[w] = 0
        landed[w] = 1
        for j in range(3):
            prev[w, j] = a0[j]
            prev[w, 3 + j] = a1[j]
        fix_pending[w] = 0
    if k < kmax:
        if k == 0:
            for j in range(3):
                prev[w, j] = a0[j]
                prev[w, 3 + j] = a1[j]
        p0 = wp.vec3d(prev[w, 0], prev[w, 1], prev[w, 2])
        p1 = wp.vec3d(prev[w, 3], prev[w, 4], prev[w, 5])
        for j in range(3):
            prev[w, j] = a0[j]
            prev[w, 3 + j] = a1[j]
        if min_flight > 0:
            l0 = has_plan[w] != 0 and plan[w, kk, 2] > plan_gate_n and k < tot
            l1 = has_plan[w] != 0 and plan[w, kk, 5] > plan_gate_n and k < tot
            if not (l0 or l1):
                airborne[w] = airborne[w] + 1
                landed[w] = 0
            else:
                if airborne[w] < min_flight:
                    airborne[w] = 0
                    landed[w] = 1
                if landed[w] == 0:
                    d0 = a0 - p0
                    d1 = a1 - p1
                    s0 = l0 and wp.sqrt(d0[0] * d0[0] + d0[1] * d0[1]) * control_hz < still_mps
                    s1 = l1 and wp.sqrt(d1[0] * d1[0] + d1[1] * d1[1]) * control_hz < still_mps
                    if s0 or s1:
                        n = f64(0.0)
                        sx = f64(0.0)
                        sy = f64(0.0)
                        if s0:
                            n = n + f64(1.0)
                            sx = sx + a0[0] - ref_pos[w, kk, 21]
                            sy = sy + a0[1] - ref_pos[w, kk, 22]
                        if s1:
                            n = n + f64(1.0)
                            sx = sx + a1[0] - ref_pos[w, kk, 24]
                            sy = sy + a1[1] - ref_pos[w, kk, 25]
                        sx = sx / n
                        sy = sy / n
                        anchor[w, 0] = sx
                        anchor[w, 1] = sy
                        max_shift[w] = wp.max(max_shift[w], wp.sqrt(sx * sx + sy * sy))
                        airborne[w] = 0
                        landed[w] = 1
    an = wp.vec3d(anchor[w, 0], anchor[w, 1], anchor[w, 2])
    err = f64(0.0)
    for j in range(24):
        r = wp.vec3d(ref_pos[w, kk, 3 * j], ref_pos[w, kk, 3 * j + 1], ref_pos[w, kk, 3 * j + 2])
        err = err + wp.length(_v3(xpos[w, body_ids[w, j]]) - r - an)
    err = err / f64(24.0)
    bad = wp.abs(f64(qpos[w, 2]) - rq[w, kk, 2]) > reset_height_m or err > reset_mpjpe_m
    for i in range(qpos.shape[1]):
        if not wp.isfinite(qpos[w, i]):
            bad = True
    do_reset[w] = 0
    if bad and k < tot:
        do_reset[w] = 1
        reset_rec[w, kk // spf] = 1


@wp.kernel
def restore_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32), mask: wp.array(dtype=wp.int32), after_step: int,
    rq: wp.array3d(dtype=f64), rv: wp.array3d(dtype=f64),
    qpos: wp.array2d(dtype=wp.float32), qvel: wp.array2d(dtype=wp.float32), warm: wp.array2d(dtype=wp.float32),
):
    """Masked worlds restart from the reference: tick ``min(k, total)`` (fall check) or, after the
    substeps (``after_step``), the next tick ``min(k, total − 1) + 1``."""
    w = wp.tid()
    if mask[w] == 0:
        return
    k = tick[0]
    kk = wp.min(k, total[w])
    if after_step != 0:
        kk = wp.min(k, total[w] - 1) + 1
    for i in range(qpos.shape[1]):
        qpos[w, i] = wp.float32(rq[w, kk, i])
    for i in range(qvel.shape[1]):
        qvel[w, i] = wp.float32(rv[w, kk, i])
        warm[w, i] = wp.float32(0.0)


@wp.kernel
def anchor_after_reset_kernel(
    do_reset: wp.array(dtype=wp.int32), xpos: wp.array2d(dtype=wp.vec3), body_ids: wp.array2d(dtype=wp.int32),
    anchor: wp.array2d(dtype=f64), airborne: wp.array(dtype=wp.int32), landed: wp.array(dtype=wp.int32),
    prev: wp.array2d(dtype=f64),
):
    """``FlightAnchor.reset`` for the worlds reset by the fall check (ankles after the reset)."""
    w = wp.tid()
    if do_reset[w] == 0:
        return
    a0 = _ankle(xpos, body_ids, w, 0)
    a1 = _ankle(xpos, body_ids, w, 1)
    for j in range(3):
        anchor[w, j] = f64(0.0)
        prev[w, j] = a0[j]
        prev[w, 3 + j] = a1[j]
    airborne[w] = 0
    landed[w] = 1


@wp.kernel
def record_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32), spf: int,
    qpos: wp.array2d(dtype=wp.float32), subtree_com: wp.array2d(dtype=wp.vec3),
    subtree_linvel: wp.array2d(dtype=wp.vec3),
    qpos_rec: wp.array3d(dtype=f64), com_rec: wp.array3d(dtype=f64), comv_rec: wp.array3d(dtype=f64),
):
    """Recording ticks (``k % spf == 0`` inside the sequence): qpos, whole-body COM and its velocity."""
    w = wp.tid()
    k = tick[0]
    tot = total[w]
    if k > tot or k % spf != 0:
        return
    i = wp.min(k, tot) // spf
    for j in range(qpos.shape[1]):
        qpos_rec[w, i, j] = f64(qpos[w, j])
    c = subtree_com[w, 0]
    v = subtree_linvel[w, 0]
    for j in range(3):
        com_rec[w, i, j] = f64(c[j])
        comv_rec[w, i, j] = f64(v[j])


# ------------------------------------------------------------------------------------------------
# controller
# ------------------------------------------------------------------------------------------------


@wp.kernel
def desired_acceleration_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32),
    qpos: wp.array2d(dtype=wp.float32), qvel: wp.array2d(dtype=wp.float32),
    rq: wp.array3d(dtype=f64), rv: wp.array3d(dtype=f64), ra: wp.array3d(dtype=f64),
    kp: wp.array2d(dtype=f64), kd: wp.array2d(dtype=f64), anchor: wp.array2d(dtype=f64),
    a_star: wp.array2d(dtype=f64), qacc: wp.array2d(dtype=wp.float32),
):
    """``a* = a_ff + kp·e + kd·(v_ref − v)`` (``control.desired_acceleration``), thread (world, joint)
    (joint 0 the free joint: 3 linear + the pelvis rotation; then the 23 ball joints)."""
    w, j = wp.tid()
    kc = wp.min(tick[0], total[w] - 1)
    if j == 0:
        for i in range(3):
            e = rq[w, kc, i] + anchor[w, i] - f64(qpos[w, i])
            a = (f64(0.5) * (ra[w, kc, i] + ra[w, kc + 1, i]) + kp[w, i] * e
                 + kd[w, i] * (rv[w, kc, i] - f64(qvel[w, i])))
            a_star[w, i] = a
            qacc[w, i] = wp.float32(a)
    qa = 3 + 4 * j
    e3 = quat_log_error(f64(qpos[w, qa]), f64(qpos[w, qa + 1]), f64(qpos[w, qa + 2]), f64(qpos[w, qa + 3]),
                        rq[w, kc, qa], rq[w, kc, qa + 1], rq[w, kc, qa + 2], rq[w, kc, qa + 3])
    for i in range(3):
        dof = 3 + 3 * j + i
        a = (f64(0.5) * (ra[w, kc, dof] + ra[w, kc + 1, dof]) + kp[w, dof] * e3[i]
             + kd[w, dof] * (rv[w, kc, dof] - f64(qvel[w, dof])))
        a_star[w, dof] = a
        qacc[w, dof] = wp.float32(a)


@wp.kernel
def gather_contacts_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32), nacon: wp.array(dtype=int),
    geom: wp.array(dtype=wp.vec2i), worldid: wp.array(dtype=int), dist: wp.array(dtype=wp.float32),
    pos: wp.array(dtype=wp.vec3), floor: int, contact_dist_m: f64, geom_body: wp.array(dtype=wp.int32),
    gate: wp.array3d(dtype=wp.int32),
    count: wp.array(dtype=wp.int32), pts: wp.array3d(dtype=f64), bodies: wp.array2d(dtype=wp.int32),
    valid: wp.array2d(dtype=wp.int32), overflow: wp.array(dtype=wp.int32),
):
    """One thread per MuJoCo Warp contact: floor contacts within ``contact_dist_m`` on a body the
    plan gates in at this tick go to the next free slot of their world's budget (``count`` and
    ``valid`` zeroed before); a contact past the budget flags the world's overflow."""
    i = wp.tid()
    if i >= nacon[0]:
        return
    g = geom[i]
    ff = g[0] == floor
    other = g[0]
    if ff:
        other = g[1]
    if not (ff or g[1] == floor):
        return
    if not (f64(dist[i]) < contact_dist_m):
        return
    w = worldid[i]
    body = geom_body[other]
    kc = wp.min(tick[0], total[w] - 1)
    if gate[w, kc, body] == 0:
        return
    slot = wp.atomic_add(count, w, 1)
    if slot >= pts.shape[1]:
        overflow[w] = 1
        return
    p = pos[i]
    for j in range(3):
        pts[w, slot, j] = f64(p[j])
    bodies[w, slot] = body
    valid[w, slot] = 1


@wp.kernel
def plan_system_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32),
    pts: wp.array3d(dtype=f64), bodies: wp.array2d(dtype=wp.int32), valid: wp.array2d(dtype=wp.int32),
    right_bodies: wp.array2d(dtype=wp.int32), qpos: wp.array2d(dtype=wp.float32), xmat: wp.array2d(dtype=wp.mat33),
    root_body: int, qfrc_bias: wp.array2d(dtype=wp.float32), a_star: wp.array2d(dtype=f64),
    armature: wp.array(dtype=f64), plan: wp.array3d(dtype=f64), has_plan: wp.array(dtype=wp.int32),
    target_weight: f64, edges: wp.array2d(dtype=f64), w6: wp.array(dtype=f64),
    A: wp.array3d(dtype=f64), b: wp.array2d(dtype=f64),
):
    """``control.force_plan_system`` for one world per thread: A (W, 9, 4C), b (W, 9) from the
    gathered contacts, the root demand ``qfrc_bias[:6] + armature·a*[:6]`` and the plan's load share."""
    w = wp.tid()
    kc = wp.min(tick[0], total[w] - 1)
    nc = pts.shape[1]
    R = xmat[w, root_body]
    root = wp.vec3d(f64(qpos[w, 0]), f64(qpos[w, 1]), f64(qpos[w, 2]))
    for i in range(6):
        b[w, i] = (f64(qfrc_bias[w, i]) + armature[i] * a_star[w, i]) * w6[i]
    for i in range(6, 9):
        b[w, i] = f64(0.0)
    # load share (rows 6-8): both feet have contacts and the plan's Σ Fz > 0
    has_r = bool(False)
    has_l = bool(False)
    for c in range(nc):
        if valid[w, c] != 0:
            if right_bodies[w, bodies[w, c]] != 0:
                has_r = True
            else:
                has_l = True
    fz0 = f64(0.0)
    fz1 = f64(0.0)
    if has_plan[w] != 0:
        fz0 = f64(0.5) * (plan[w, kc, 2] + plan[w, kc + 1, 2])
        fz1 = f64(0.5) * (plan[w, kc, 5] + plan[w, kc + 1, 5])
    fz = fz0 + fz1
    use = has_r and has_l and fz > f64(0.0) and target_weight > f64(0.0)
    share = f64(0.0)
    if use:
        share = fz0 / fz
    for c in range(nc):
        ok = valid[w, c] != 0
        r = wp.vec3d(pts[w, c, 0], pts[w, c, 1], pts[w, c, 2]) - root
        coef = f64(1.0) - share
        if ok and right_bodies[w, bodies[w, c]] != 0:
            coef = -share
        for e in range(4):
            col = 4 * c + e
            ed = wp.vec3d(edges[e, 0], edges[e, 1], edges[e, 2])
            t = wp.cross(r, ed)
            for i in range(3):
                v_f = f64(0.0)
                v_t = f64(0.0)
                v_s = f64(0.0)
                if ok:
                    v_f = ed[i] * w6[i]
                    v_t = (f64(R[0, i]) * t[0] + f64(R[1, i]) * t[1] + f64(R[2, i]) * t[2]) * w6[3 + i]
                    if use:
                        v_s = coef * ed[i] * target_weight
                A[w, i, col] = v_f
                A[w, 3 + i, col] = v_t
                A[w, 6 + i, col] = v_s


@wp.func
def _dual_value(A: wp.array3d(dtype=f64), b: wp.array2d(dtype=f64), nu: wp.array2d(dtype=f64), w: int,
                reg: f64) -> f64:
    rdim = A.shape[1]
    g = f64(0.0)
    for r in range(rdim):
        g = g - f64(0.5) * nu[w, r] * nu[w, r] + nu[w, r] * b[w, r]
    for n in range(A.shape[2]):
        z = f64(0.0)
        for r in range(rdim):
            z = z + A[w, r, n] * nu[w, r]
        if z > f64(0.0):
            g = g - f64(0.5) / reg * z * z
    return g


@wp.func
def _primal(A: wp.array3d(dtype=f64), b: wp.array2d(dtype=f64), nu: wp.array2d(dtype=f64), w: int, reg: f64,
            z: wp.array2d(dtype=f64), beta: wp.array2d(dtype=f64), grad: wp.array2d(dtype=f64)):
    """z = Aᵀν, β = max(0, z)/reg, ∇g = b − ν − Aβ."""
    rdim = A.shape[1]
    for n in range(A.shape[2]):
        s = f64(0.0)
        for r in range(rdim):
            s = s + A[w, r, n] * nu[w, r]
        z[w, n] = s
        beta[w, n] = wp.max(s, f64(0.0)) / reg
    for r in range(rdim):
        s = b[w, r] - nu[w, r]
        for n in range(A.shape[2]):
            s = s - A[w, r, n] * beta[w, n]
        grad[w, r] = s


@wp.kernel
def solve_force_plan_kernel(
    A: wp.array3d(dtype=f64), b: wp.array2d(dtype=f64), reg: f64, iterations: int, backtracks: int,
    H: wp.array3d(dtype=f64), nu: wp.array2d(dtype=f64), cand: wp.array2d(dtype=f64), grad: wp.array2d(dtype=f64),
    delta: wp.array2d(dtype=f64), z: wp.array2d(dtype=f64),
    beta: wp.array2d(dtype=f64), kkt: wp.array(dtype=f64),
):
    """``control.solve_force_plan_batched`` for one world per thread (dual semismooth Newton)."""
    w = wp.tid()
    rdim = A.shape[1]
    ncol = A.shape[2]
    # start: ν₀ = reg (AAᵀ + reg I)⁻¹ b
    for r in range(rdim):
        for s in range(r + 1):
            acc = f64(0.0)
            for n in range(ncol):
                acc = acc + A[w, r, n] * A[w, s, n]
            if r == s:
                acc = acc + reg
            H[w, r, s] = acc
    _chol_solve(H, w, rdim, b, cand)
    for r in range(rdim):
        nu[w, r] = reg * cand[w, r]
    for _it in range(iterations):
        _primal(A, b, nu, w, reg, z, beta, grad)
        for r in range(rdim):
            for s in range(r + 1):
                acc = f64(0.0)
                for n in range(ncol):
                    if z[w, n] > f64(0.0):
                        acc = acc + A[w, r, n] * A[w, s, n]
                acc = acc / reg
                if r == s:
                    acc = acc + f64(1.0)
                H[w, r, s] = acc
        _chol_solve(H, w, rdim, grad, delta)
        slope = f64(0.0)
        for r in range(rdim):
            slope = slope + grad[w, r] * delta[w, r]
        if slope > f64(0.0):
            g0 = _dual_value(A, b, nu, w, reg)
            t = f64(1.0)
            step = f64(0.0)
            for j in range(backtracks + 1):
                if step == f64(0.0):
                    for r in range(rdim):
                        cand[w, r] = nu[w, r] + t * delta[w, r]
                    gt = _dual_value(A, b, cand, w, reg)
                    if gt >= g0 + f64(1e-4) * t * slope or j == backtracks:
                        step = t
                    t = t * f64(0.5)
            for r in range(rdim):
                nu[w, r] = nu[w, r] + step * delta[w, r]
    _primal(A, b, nu, w, reg, z, beta, grad)
    s2 = f64(0.0)
    for r in range(rdim):
        s2 = s2 + grad[w, r] * grad[w, r]
    kkt[w] = wp.sqrt(s2)


@wp.kernel
def contact_force_kernel(
    cdof: wp.array2d(dtype=wp.spatial_vector), dof_body: wp.array(dtype=wp.int32), subtree: wp.array2d(dtype=wp.int32),
    subtree_com: wp.array2d(dtype=wp.vec3), root_tree: int, bodies: wp.array2d(dtype=wp.int32),
    pts: wp.array3d(dtype=f64), valid: wp.array2d(dtype=wp.int32), beta: wp.array2d(dtype=f64),
    edges: wp.array2d(dtype=f64), qfrc_c: wp.array2d(dtype=f64),
):
    """``Σ_c J_cᵀ f_c`` (``control.contact_generalized_force``), thread (world, dof); the slot
    forces are ``Σ_e β_{4c+e} edge_e``."""
    w, i = wp.tid()
    com = _v3(subtree_com[w, root_tree])
    cd = cdof[w, i]
    bi = dof_body[i]
    acc = f64(0.0)
    for c in range(pts.shape[1]):
        if valid[w, c] != 0 and subtree[bi, bodies[w, c]] != 0:
            f = wp.vec3d(f64(0.0), f64(0.0), f64(0.0))
            for e in range(4):
                f = f + beta[w, 4 * c + e] * wp.vec3d(edges[e, 0], edges[e, 1], edges[e, 2])
            t = wp.cross(wp.vec3d(pts[w, c, 0], pts[w, c, 1], pts[w, c, 2]) - com, f)
            acc = acc + (f64(cd[0]) * t[0] + f64(cd[1]) * t[1] + f64(cd[2]) * t[2]
                         + f64(cd[3]) * f[0] + f64(cd[4]) * f[1] + f64(cd[5]) * f[2])
    qfrc_c[w, i] = acc


@wp.func
def _cap3(x: wp.vec3d, limit: f64) -> wp.vec3d:
    n = wp.length(x)
    if n > limit:
        return x * (limit / n)
    return x


@wp.kernel
def residual_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32),
    qfrc_bias: wp.array2d(dtype=wp.float32), a_star: wp.array2d(dtype=f64), armature: wp.array(dtype=f64),
    qfrc_c: wp.array2d(dtype=f64), damping: wp.array2d(dtype=f64), rv: wp.array3d(dtype=f64), implicit: int,
    residual_on: int, res_f_max: wp.array(dtype=f64), res_t_max: wp.array(dtype=f64),
    joint: wp.array2d(dtype=f64), demand: wp.array2d(dtype=f64), residual: wp.array2d(dtype=f64),
    shortfall: wp.array2d(dtype=f64),
):
    """Joint torques ``τ − Σ Jᵀf`` (+ implicit damping·v_ref), root demand, capped residual, shortfall."""
    w = wp.tid()
    kc = wp.min(tick[0], total[w] - 1)
    for j in range(joint.shape[1]):
        i = 6 + j
        v = f64(qfrc_bias[w, i]) + armature[i] * a_star[w, i] - qfrc_c[w, i]
        if implicit != 0:
            v = v + damping[w, i] * rv[w, kc, i]
        joint[w, j] = v
    for i in range(6):
        demand[w, i] = f64(qfrc_bias[w, i]) + armature[i] * a_star[w, i] - qfrc_c[w, i]
    fr = wp.vec3d(f64(0.0), f64(0.0), f64(0.0))
    tr = wp.vec3d(f64(0.0), f64(0.0), f64(0.0))
    if residual_on != 0:
        fr = _cap3(wp.vec3d(demand[w, 0], demand[w, 1], demand[w, 2]), res_f_max[w])
        tr = _cap3(wp.vec3d(demand[w, 3], demand[w, 4], demand[w, 5]), res_t_max[w])
    for i in range(3):
        residual[w, i] = fr[i]
        residual[w, 3 + i] = tr[i]
        shortfall[w, i] = demand[w, i] - fr[i]
        shortfall[w, 3 + i] = demand[w, 3 + i] - tr[i]


@wp.kernel
def apply_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32), spf: int,
    mcols: wp.array3d(dtype=wp.float32), shortfall: wp.array2d(dtype=f64), M6: wp.array3d(dtype=f64),
    da: wp.array2d(dtype=f64), joint: wp.array2d(dtype=f64), residual: wp.array2d(dtype=f64),
    demand: wp.array2d(dtype=f64), qvel: wp.array2d(dtype=wp.float32), damping: wp.array2d(dtype=f64),
    implicit: int, torque_limits: int, limit: wp.array2d(dtype=f64), xmat: wp.array2d(dtype=wp.mat33),
    root_body: int, kkt: wp.array(dtype=f64),
    qfrc_applied: wp.array2d(dtype=wp.float32), tau_sum: wp.array3d(dtype=f64), res_sum: wp.array3d(dtype=f64),
    dem_sum: wp.array3d(dtype=f64), kkt_max: wp.array(dtype=f64),
):
    """Shortfall correction ``joint += M[6:, :6] Δa``, ``M[:6, :6] Δa = −shortfall`` (``mcols[j]`` =
    ``M e_j`` from ``mul_m``), net-torque limits, the interval sums, ``qfrc_applied``."""
    w = wp.tid()
    k = tick[0]
    tot = total[w]
    active = k < tot
    kc = wp.min(k, tot - 1)
    ii = kc // spf
    nj = joint.shape[1]
    short = bool(False)
    for i in range(6):
        if shortfall[w, i] != f64(0.0):
            short = True
    if short:
        for i in range(6):
            for j in range(6):
                M6[w, i, j] = f64(mcols[j, w, i])
        _chol_solve(M6, w, 6, shortfall, da)
        for r in range(nj):
            acc = f64(0.0)
            for j in range(6):
                acc = acc - f64(mcols[j, w, 6 + r]) * da[w, j]
            joint[w, r] = joint[w, r] + acc
    if torque_limits != 0:
        for g in range(nj // 3):
            p = wp.vec3d(f64(0.0), f64(0.0), f64(0.0))
            if implicit != 0:
                for i in range(3):
                    p[i] = damping[w, 6 + 3 * g + i] * f64(qvel[w, 6 + 3 * g + i])
            v = _cap3(wp.vec3d(joint[w, 3 * g], joint[w, 3 * g + 1], joint[w, 3 * g + 2]) - p, limit[w, g]) + p
            for i in range(3):
                joint[w, 3 * g + i] = v[i]
    R = xmat[w, root_body]
    if active:
        kkt_max[w] = wp.max(kkt_max[w], kkt[w])
        for r in range(nj):
            tau_sum[w, ii, r] = tau_sum[w, ii, r] + joint[w, r]
        for i in range(3):
            res_sum[w, ii, i] = res_sum[w, ii, i] + residual[w, i]
            dem_sum[w, ii, i] = dem_sum[w, ii, i] + demand[w, i]
            rr = f64(0.0)
            dd = f64(0.0)
            for j in range(3):
                rr = rr + f64(R[i, j]) * residual[w, 3 + j]
                dd = dd + f64(R[i, j]) * demand[w, 3 + j]
            res_sum[w, ii, 3 + i] = res_sum[w, ii, 3 + i] + rr
            dem_sum[w, ii, 3 + i] = dem_sum[w, ii, 3 + i] + dd
    for i in range(6):
        qfrc_applied[w, i] = wp.float32(residual[w, i])
    for r in range(nj):
        qfrc_applied[w, 6 + r] = wp.float32(joint[w, r])


@wp.kernel
def spring_margin_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32),
    rq: wp.array3d(dtype=f64), spring_mask: wp.array2d(dtype=wp.int32), spring_base: wp.array2d(dtype=wp.float32),
    swing: wp.array3d(dtype=wp.int32), swing_geom: wp.array3d(dtype=wp.int32), base_margin: wp.array(dtype=wp.float32),
    swing_margin: wp.float32, qpos_spring: wp.array2d(dtype=wp.float32), geom_margin: wp.array2d(dtype=wp.float32),
):
    """Toe springs follow the reference; the geoms of a cleared swing foot get ``swing_margin``."""
    w = wp.tid()
    kc = wp.min(tick[0], total[w] - 1)
    for i in range(qpos_spring.shape[1]):
        v = spring_base[w, i]
        if spring_mask[w, i] != 0:
            v = wp.float32(rq[w, kc, i])
        qpos_spring[w, i] = v
    for g in range(geom_margin.shape[1]):
        v = base_margin[g]
        for f in range(2):
            if swing_geom[w, f, g] != 0 and swing[w, kc, f] != 0:
                v = swing_margin
        geom_margin[w, g] = v


@wp.kernel
def substep_sums_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32), spf: int,
    sensordata: wp.array2d(dtype=wp.float32), qacc: wp.array2d(dtype=wp.float32),
    qfrc_damper: wp.array2d(dtype=wp.float32), qfrc_spring: wp.array2d(dtype=wp.float32),
    diverged: wp.array(dtype=wp.int32), f_sum: wp.array3d(dtype=f64), mo_sum: wp.array3d(dtype=f64),
    passive_sum: wp.array3d(dtype=f64),
):
    """After every physics step: divergence check, then the floor contact sensors (force; torque +
    pos × force about the world origin, 10 values per body) and passive joint torques summed into
    the interval."""
    w = wp.tid()
    k = tick[0]
    tot = total[w]
    kc = wp.min(k, tot - 1)
    ii = kc // spf
    bad = bool(False)
    for i in range(qacc.shape[1]):
        a = qacc[w, i]
        if not wp.isfinite(a) or wp.abs(f64(a)) > f64(1e10):
            bad = True
    for i in range(sensordata.shape[1]):
        if not wp.isfinite(sensordata[w, i]):
            bad = True
    if bad:
        diverged[w] = 1
    if k >= tot or diverged[w] != 0:
        return
    nb = sensordata.shape[1] // 10
    for bb in range(nb):
        o = 10 * bb
        F = wp.vec3d(f64(sensordata[w, o + 1]), f64(sensordata[w, o + 2]), f64(sensordata[w, o + 3]))
        p = wp.vec3d(f64(sensordata[w, o + 7]), f64(sensordata[w, o + 8]), f64(sensordata[w, o + 9]))
        t = wp.vec3d(f64(sensordata[w, o + 4]), f64(sensordata[w, o + 5]), f64(sensordata[w, o + 6]))
        mo = t + wp.cross(p, F)
        for i in range(3):
            f_sum[w, ii, 3 * bb + i] = f_sum[w, ii, 3 * bb + i] + F[i]
            mo_sum[w, ii, 3 * bb + i] = mo_sum[w, ii, 3 * bb + i] + mo[i]
    for j in range(passive_sum.shape[2]):
        passive_sum[w, ii, j] = passive_sum[w, ii, j] + f64(qfrc_damper[w, 6 + j]) + f64(qfrc_spring[w, 6 + j])


@wp.kernel
def end_tick_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32), spf: int,
    d_overflow: wp.array(dtype=int), diverged: wp.array(dtype=wp.int32), overflow: wp.array(dtype=wp.int32),
    fix: wp.array(dtype=wp.int32), fix_pending: wp.array(dtype=wp.int32), reset_rec: wp.array2d(dtype=wp.int32),
):
    """MuJoCo Warp's overflow flag (cleared) and diverged worlds (flagged, restarted by
    ``restore_kernel`` with ``fix``; their anchor resets at the next tick)."""
    w = wp.tid()
    k = tick[0]
    tot = total[w]
    active = k < tot
    if d_overflow[w] != 0:
        if active:
            overflow[w] = 1
        d_overflow[w] = 0
    fix[w] = 0
    if diverged[w] != 0 and active:
        fix[w] = 1
        fix_pending[w] = 1
        reset_rec[w, wp.min(k, tot - 1) // spf] = 1
    diverged[w] = 0


@wp.kernel
def advance_tick_kernel(tick: wp.array(dtype=wp.int32)):
    tick[0] = tick[0] + 1


@wp.func
def _seat_jz(cd: wp.spatial_vector, offset: wp.vec3d) -> f64:
    """Vertical component of dof ``cd``'s motion at a point ``offset`` from the com-based origin."""
    ang = wp.vec3d(f64(cd[0]), f64(cd[1]), f64(cd[2]))
    return f64(cd[5]) + wp.cross(ang, offset)[2]


@wp.kernel
def landing_seat_kernel(
    tick: wp.array(dtype=wp.int32), total: wp.array(dtype=wp.int32), seat: wp.array3d(dtype=f64),
    touched: wp.array2d(dtype=wp.int32), xpos: wp.array2d(dtype=wp.vec3), xmat: wp.array2d(dtype=wp.mat33),
    subtree_com: wp.array2d(dtype=wp.vec3), cvel: wp.array2d(dtype=wp.spatial_vector),
    cdof: wp.array2d(dtype=wp.spatial_vector), qvel: wp.array2d(dtype=wp.float32),
    sole_local: wp.array3d(dtype=f64), sole_body: wp.array2d(dtype=wp.int32), ankle: wp.array2d(dtype=wp.int32),
    root_tree: int, chain: wp.array2d(dtype=wp.int32), quat: wp.array2d(dtype=wp.int32),
    leg_pos: wp.array2d(dtype=wp.int32), dof_body: wp.array(dtype=wp.int32), kp: f64, kd: f64, margin: f64,
    a_star: wp.array2d(dtype=f64), qacc: wp.array2d(dtype=wp.float32),
):
    """``control.landing_seat`` for one world per thread (both feet): ``seat`` (W, kmax, 2) the
    reference ankle's downward velocity (NaN: not seated, clears ``touched``); corrects the leg's
    hip/knee entries of ``a*`` and ``qacc`` (float32) until the foot's lowest sole corner first
    comes within ``margin`` of the floor."""
    w = wp.tid()
    k = tick[0]
    for f in range(2):
        s = f64(0.0)
        on = k < total[w]
        if on:
            s = seat[w, k, f]
            if wp.isnan(s):
                on = False
        if not on:
            touched[w, f] = 0
        elif touched[w, f] == 0:
            h = f64(1.0e9)
            for c in range(6):
                b = sole_body[w, 6 * f + c]
                R = xmat[w, b]
                z = (f64(xpos[w, b][2]) + f64(R[2, 0]) * sole_local[w, 6 * f + c, 0]
                     + f64(R[2, 1]) * sole_local[w, 6 * f + c, 1] + f64(R[2, 2]) * sole_local[w, 6 * f + c, 2])
                h = wp.min(h, z)
            if h <= margin:
                touched[w, f] = 1
            else:
                ab = ankle[w, f]
                offset = _v3(xpos[w, ab]) - _v3(subtree_com[w, root_tree])
                cv = cvel[w, ab]
                pvel = wp.vec3d(f64(cv[3]), f64(cv[4]), f64(cv[5])) + wp.cross(
                    wp.vec3d(f64(cv[0]), f64(cv[1]), f64(cv[2])), offset)
                vz = f64(0.0)
                ja = f64(0.0)
                jdv = f64(0.0)
                for i in range(chain.shape[1]):
                    dof = chain[f, i]
                    cd = cdof[w, dof]
                    cda = wp.vec3d(f64(cd[0]), f64(cd[1]), f64(cd[2]))
                    jz = _seat_jz(cd, offset)
                    jdz = wp.cross(cda, pvel)[2]
                    if quat[f, i] != 0:
                        cb = cvel[w, dof_body[dof]]
                        cba = wp.vec3d(f64(cb[0]), f64(cb[1]), f64(cb[2]))
                        cbl = wp.vec3d(f64(cb[3]), f64(cb[4]), f64(cb[5]))
                        cdl = wp.vec3d(f64(cd[3]), f64(cd[4]), f64(cd[5]))
                        dda = wp.cross(cba, cda)
                        ddl = wp.cross(cba, cdl) + wp.cross(cbl, cda)
                        jdz = jdz + ddl[2] + wp.cross(dda, offset)[2]
                    v = f64(qvel[w, dof])
                    vz = vz + jz * v
                    jdv = jdv + jdz * v
                    ja = ja + jz * a_star[w, dof]
                delta = -kp * h + kd * (s - vz) - ja - jdv
                jj = f64(0.0)
                for j in range(6):
                    jz = _seat_jz(cdof[w, chain[f, leg_pos[f, j]]], offset)
                    jj = jj + jz * jz
                scale = delta / (jj + f64(1.0e-3))
                for j in range(6):
                    dof = chain[f, leg_pos[f, j]]
                    a = a_star[w, dof] + _seat_jz(cdof[w, dof], offset) * scale
                    a_star[w, dof] = a
                    qacc[w, dof] = wp.float32(a)
