"""The CPU engine's loop against the straightforward computation it was optimised from.

``simulate_motion`` and ``TrackingController.compute`` avoid per-tick allocations and numpy/scipy
wrapper overhead (issue 11's speed target, docs/simulation.md "Speed"); they must still compute the
same floating-point operations in the same order. ``plain_simulate`` below is the loop as it was
written before (public ``np.linalg.solve``/``norm``/``isin``/``tile``, ``scipy.optimize.nnls``,
everything per tick); every recorded array and metric must be bit-identical on short motions
that exercise the dynamics pass and plan rows, swing clearance, flight re-anchoring (a jump), the
stance gates of the engine without a dynamics pass, resets and pass variation.
"""

from __future__ import annotations

import dataclasses
import math

import mujoco
import numpy as np
import pytest
from scipy.optimize import nnls

from pipeline.simulate import SimConfig, SimulationResult
from pipeline.simulate.anchor import FlightAnchor
from pipeline.simulate.controller import N_BALL, cross
from pipeline.simulate.engine import (_finish, _set_state, landing_seat_targets, motion_dynamics, prepare_sequence,
                                      simulate_motion)
from pipeline.simulate.synthetic import demo_motion


def plain_solve_force_plan(A, b, reg):
    n = A.shape[1]
    beta = A.T @ np.linalg.solve(A @ A.T + reg * np.eye(A.shape[0]), b)
    if beta.min() >= 0.0:
        return beta
    A_aug = np.vstack([A, math.sqrt(reg) * np.eye(n)])
    b_aug = np.concatenate([b, np.zeros(n)])
    return nnls(A_aug, b_aug, maxiter=20 * n)[0]


def plain_desired_acceleration(self, d, q_ref, v_ref, a_ref):
    e = self._err
    mujoco.mj_differentiatePos(self.m, e, 1.0, d.qpos, q_ref)
    return a_ref + self._kp * e + self._kd * (v_ref - d.qvel)


def plain_compute(self, d, q_ref, v_ref, a_ref, plannable=None, foot_target=None, target_weight=0.0, seat=None):
    m = self.m
    d.qacc[:] = plain_desired_acceleration(self, d, q_ref, v_ref, a_ref)
    if seat is not None:
        self.seat_landing_feet(d, d.qacc, seat)
    tau = self._tau
    mujoco.mj_rne(m, d, 1, tau)
    tau += m.dof_armature * d.qacc  # mj_rne leaves out the armature that mj_crb adds to M
    demand = tau[:6]
    mujoco.mj_collision(m, d)
    ncon = d.ncon
    if ncon:
        con = d.contact
        geom = con.geom
        floor_first = geom[:, 0] == self._floor
        other = np.where(floor_first, geom[:, 1], geom[:, 0])
        keep = (floor_first | (geom[:, 1] == self._floor)) & (con.dist < self.qp.contact_dist_m)
        keep &= (self._plannable if plannable is None else plannable)[m.geom_bodyid[other]]
        pts = con.pos[keep]
        bodies = m.geom_bodyid[other[keep]]
    else:
        pts = np.zeros((0, 3))
        bodies = np.zeros(0, dtype=int)
    active = np.arange(pts.shape[0])
    qfrc_c = self._qfrc_c
    qfrc_c[:] = 0.0
    forces = np.zeros((active.size, 3))
    if active.size:
        root = d.qpos[:3]
        R = d.xmat[self.h.body_ids[0]].reshape(3, 3)
        r = pts[active] - root  # (k, 3)
        k4 = 4 * active.size
        # columns: for each active corner and each pyramid edge: [edge; Rᵀ (r × edge)];
        # (r × e)ᵀ R = rᵀ [e]ₓ R with [e]ₓ the (fixed) skew matrices of the 4 edges
        Aw = np.empty((6, k4))
        Aw[:3] = np.tile(self._edges.T, active.size)
        Aw[3:] = np.einsum("kb,jbc->ckj", r, self._edge_skew @ R).reshape(3, k4)
        Aw *= self._w[:, None]
        bw = demand * self._w
        right = np.isin(bodies[active], self._right_bodies)
        ft = None if foot_target is None else np.asarray(foot_target, float)
        if ft is not None and target_weight > 0.0 and right.any() and (~right).any() \
                and ft[:, 2].sum() > 0.0:
            # the plan sets how the load is shared between the feet, the demand sets the total:
            # Σ_left f − s Σ_all f = 0 with s the plan's left share of the vertical force
            share = ft[0, 2] / ft[:, 2].sum()
            coef = np.where(right, -share, 1.0 - share)  # per contact
            rows = (np.repeat(coef, 4)[None, :] * np.tile(self._edges.T, active.size)) * target_weight
            Aw = np.vstack([Aw, rows])
            bw = np.concatenate([bw, np.zeros(3)])
        beta = plain_solve_force_plan(Aw, bw, self.qp.regularization)
        beta = beta.reshape(active.size, 4)
        f = beta @ self._edges  # (k, 3) world
        forces[active] = f
        for i, c in enumerate(active):
            mujoco.mj_applyFT(m, d, f[i], self._zero3, pts[c], int(bodies[c]), qfrc_c)
    self.last_contact_force = forces
    self.last_contact_pos = pts
    joint = tau[6:] - qfrc_c[6:]
    if self.implicit_damping:
        joint = joint + self.damping[6:] * v_ref[6:]  # damper adds b (v_ref − v) in total
    demand = tau[:6] - qfrc_c[:6]
    self.last_residual_demand = demand.copy()
    residual = np.zeros(6)
    if self.residual:
        residual = demand.copy()
        fn = math.sqrt(residual[0] ** 2 + residual[1] ** 2 + residual[2] ** 2)
        if fn > self.residual_force_max:
            residual[:3] *= self.residual_force_max / fn
        tn = math.sqrt(residual[3] ** 2 + residual[4] ** 2 + residual[5] ** 2)
        if tn > self.residual_torque_max:
            residual[3:] *= self.residual_torque_max / tn
    shortfall = demand - residual
    if np.any(shortfall != 0.0):
        # The root cannot get the wrench a* needs: keep the joint accelerations a*_j and let the
        # root accelerate as the available wrench allows, Δa_r = −M_rr⁻¹ s; the joint torques
        # then change by M_jr Δa_r (consistent floating-base inverse dynamics).
        mujoco.mj_crb(m, d)
        M = self._M
        mujoco.mj_fullM(m, d, M)
        da = -np.linalg.solve(M[:6, :6], shortfall)
        joint = joint + M[6:, :6] @ da
    if self.torque_limits:
        # the limit applies to the net joint torque the actuator and damper produce together
        # (what is recorded): the command's feed-forward b·v_ref is mostly cancelled by the
        # damper's −b·v, so clipping the command itself would cut fast joints (a running
        # hip's b·v_ref alone reaches the limit) while their net torque is moderate
        passive = self.damping[6:] * d.qvel[6:] if self.implicit_damping else 0.0
        jt = (joint - passive).reshape(N_BALL, 3)
        norm = np.linalg.norm(jt, axis=1)
        over = norm > self._limit
        if over.any():
            jt[over] *= (self._limit[over] / norm[over])[:, None]
        joint = jt.reshape(-1) + passive
    return joint.copy(), residual


def plain_simulate(motion, cfg, pass_index=0, humanoid=None, dynamics=None):
    p = prepare_sequence(motion, cfg, pass_index, humanoid, dynamics=dynamics)
    skel, hum, m, d, ctrl, dyn = p.skel, p.hum, p.model, p.data, p.ctrl, p.dyn
    rq, rv, ra, ref_pos, gate, plan, swing, swing_geoms, spring_q = (
        p.rq, p.rv, p.ra, p.ref_pos, p.gate, p.plan, p.swing, p.swing_geoms, p.spring_q)
    spf, nsub = p.steps_per_frame, cfg.substeps
    n = motion.n_frames
    root_body = int(hum.body_ids[0])
    body_ids = hum.body_ids
    nsens = m.nsensordata
    qpos_rec = np.empty((n + 1, m.nq))
    com_rec = np.empty((n + 1, 3))
    comv_rec = np.empty((n + 1, 3))
    tau_sum = np.zeros((n, 69))
    res_sum = np.zeros((n, 6))
    dem_sum = np.zeros((n, 6))
    f_sum = np.zeros((n, 24, 3))
    mo_sum = np.zeros((n, 24, 3))  # moment about the world origin of each body's floor forces
    reset = np.zeros(n, dtype=bool)
    # per physics step: floor contact sensors and passive joint torques (damper + toe spring);
    # reduced to interval means after the loop (cheaper than per tick)
    buf = np.zeros((n, spf * nsub, nsens))
    damp = np.zeros((n, spf * nsub, m.nv - 6))
    total_steps = n * spf
    anchor = np.zeros(3)  # horizontal shift of the tracked reference after flights, world, m
    flight_anchor = None if plan is None else FlightAnchor(
        1, int(round(cfg.reanchor_after_flight_s * cfg.control_hz)), cfg.control_hz)
    ankle_bodies = body_ids[[7, 8]]
    q_ref = np.empty(m.nq)
    seat = None
    if cfg.landing_seat and plan is not None:
        seat = landing_seat_targets(plan[:, :, 2] > cfg.plan_gate_n, ref_pos[:, [7, 8], 2], cfg.control_hz,
                                    cfg.landing_seat_support_s)
    for k in range(total_steps + 1):
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_comVel(m, d)
        # fall / divergence check against the reference at t_k
        if flight_anchor is not None and k < total_steps:
            anchor = flight_anchor.update((plan[k, :, 2] > cfg.plan_gate_n)[None], d.xpos[ankle_bodies][None],
                                          ref_pos[k, [7, 8]][None])[0]
        err = np.linalg.norm(d.xpos[body_ids] - ref_pos[k] - anchor, axis=-1).mean()
        if k < total_steps and (abs(d.qpos[2] - rq[k, 2]) > cfg.reset_root_height_err_m
                                or err > cfg.reset_mpjpe_m or not np.isfinite(d.qpos[2])):
            _set_state(m, d, rq[k], rv[k])
            reset[k // spf] = True
            if flight_anchor is not None:
                flight_anchor.reset(np.array([0]), d.xpos[ankle_bodies][None])
                anchor = flight_anchor.anchor[0]
        if k % spf == 0:
            i = k // spf
            qpos_rec[i] = d.qpos
            com_rec[i] = d.subtree_com[0]
            mujoco.mj_subtreeVel(m, d)
            comv_rec[i] = d.subtree_linvel[0]
        if k == total_steps:
            break
        a_ff = 0.5 * (ra[k] + ra[k + 1])
        q_ref[:] = rq[k]
        q_ref[:3] += anchor
        tau, residual = plain_compute(ctrl, d, q_ref, rv[k], a_ff, None if gate is None else gate[k],
                                     None if plan is None else 0.5 * (plan[k] + plan[k + 1]), cfg.plan_target_weight,
                                     None if seat is None else seat[k])
        i = k // spf
        tau_sum[i] += tau
        res_sum[i, :3] += residual[:3]
        # pelvis-frame generalized torque → world (orientation at the tick; held over the tick)
        Rr = d.xmat[root_body].reshape(3, 3)
        res_sum[i, 3:] += Rr @ residual[3:]
        dem = ctrl.last_residual_demand
        dem_sum[i, :3] += dem[:3]
        dem_sum[i, 3:] += Rr @ dem[3:]
        d.qfrc_applied[6:] = tau
        if spring_q.size:
            m.qpos_spring[spring_q] = rq[k, spring_q]
        d.qfrc_applied[:6] = residual
        if swing_geoms is not None:
            for f in range(2):
                on = 0 if swing[k, f] else 1
                m.geom_contype[swing_geoms[f]] = 2 * on
                m.geom_conaffinity[swing_geoms[f]] = on
        t_before = d.time
        s0 = (k % spf) * nsub
        for s in range(s0, s0 + nsub):
            mujoco.mj_step(m, d)
            buf[i, s] = d.sensordata
            damp[i, s] = d.qfrc_damper[6:]
            damp[i, s] += d.qfrc_spring[6:]
        if d.time < t_before + 0.5 * nsub * cfg.physics_dt_s:
            # MuJoCo detected a diverging acceleration and reset the data itself (time → 0): flag
            # the interval and restart from the reference at the next tick
            reset[i] = True
            _set_state(m, d, rq[k + 1], rv[k + 1])
            d.time = t_before + nsub * cfg.physics_dt_s
            if flight_anchor is not None:
                flight_anchor.reset(np.array([0]), d.xpos[ankle_bodies][None])
                anchor = flight_anchor.anchor[0]

    tau_sum += damp.sum(axis=1) / nsub
    sd = buf.reshape(n, spf * nsub, 24, 10)
    F = sd[..., 1:4]
    f_sum += F.sum(axis=1) / nsub
    mo_sum += (sd[..., 4:7] + cross(sd[..., 7:10], F)).sum(axis=1) / nsub
    result = _finish(motion, cfg, pass_index, hum, skel, qpos_rec, com_rec, comv_rec, tau_sum / spf,
                     res_sum / spf, dem_sum / spf, f_sum / spf, mo_sum / spf, reset, dyn,
                     None if swing_geoms is None else swing.reshape(n, spf, 2).any(axis=1))
    if flight_anchor is not None:
        result.metrics["reanchor_max_m"] = float(flight_anchor.max_shift[0])
    return result


BEFORE = SimConfig(dynamics=None, residual_torque_limit_nm_per_kg=float("inf"), passes=2)
AFTER = SimConfig(passes=2)


def _assert_identical(a: SimulationResult, b: SimulationResult) -> None:
    for f in dataclasses.fields(SimulationResult):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            # bit for bit: equal values, NaN where NaN, and the same sign of every zero
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name
            if x.dtype.kind == "f":
                assert np.array_equal(np.signbit(x), np.signbit(y)), f.name
        elif f.name == "metrics":
            assert x.keys() == y.keys()
            for k in x:
                assert x[k] == y[k] or (x[k] != x[k] and y[k] != y[k]), k
        else:
            assert x == y, f.name


@pytest.mark.parametrize("kind,speed,seconds,cfg,pass_index", [
    ("walk", 1.2, 1.5, AFTER, 0),   # dynamics pass, plan rows, swing clearance
    ("walk", 1.2, 1.5, AFTER, 1),   # pass variation (gains, initial noise)
    ("walk", 1.6, 1.5, BEFORE, 0),  # no dynamics pass: stance gates, uncapped root torque
    ("jump", 0.0, 3.5, AFTER, 0),   # flights long enough to re-anchor the reference
])
def test_simulate_motion_is_bit_identical_to_the_straightforward_loop(kind, speed, seconds, cfg, pass_index):
    mo = demo_motion(kind, speed, duration_s=seconds, subject=1)
    dyn = motion_dynamics(mo, cfg)
    fast = simulate_motion(mo, cfg, pass_index, dynamics=dyn)
    plain = plain_simulate(mo, cfg, pass_index, dynamics=dyn)
    _assert_identical(fast, plain)
    if kind == "jump":
        assert fast.metrics["reanchor_max_m"] > 0.0  # the re-anchoring path ran
    if kind == "walk" and cfg.dynamics is not None:  # the landing seat's path runs on walking touch-downs
        p = prepare_sequence(mo, cfg, pass_index, dynamics=dyn)
        seat = landing_seat_targets(p.plan[:, :, 2] > cfg.plan_gate_n, p.ref_pos[:, [7, 8], 2], cfg.control_hz,
                                    cfg.landing_seat_support_s)
        assert np.isfinite(seat).any()


def test_resets_are_bit_identical_to_the_straightforward_loop():
    """A reset threshold every pass crosses: the reset path (state set to the reference, anchor reset)."""
    cfg = dataclasses.replace(AFTER, reset_mpjpe_m=0.004)
    mo = demo_motion("walk", 1.2, duration_s=1.0, subject=1)
    dyn = motion_dynamics(mo, cfg)
    fast = simulate_motion(mo, cfg, 1, dynamics=dyn)
    assert fast.reset.any()
    _assert_identical(fast, plain_simulate(mo, cfg, 1, dynamics=dyn))
