"""The device controller's Warp kernels (pipeline.simulate.warp.kernels) against the numpy reference
(pipeline.simulate.warp.control, pipeline.simulate.anchor) and scipy's NNLS, on Warp's CPU device;
and the backend's device-controller loop against its host-controller loop.

Marked ``warp``: the first run in a fresh kernel cache compiles the kernels module (≈ 30–90 s on
one core) and, for the loop test, MuJoCo Warp's kernels.
"""

import mujoco
import numpy as np
import pytest
from scipy.optimize import nnls

pytest.importorskip("mujoco_warp")

from pipeline import rotations as rot  # noqa: E402
from pipeline.simulate import SimConfig  # noqa: E402
from pipeline.simulate.anchor import STILL_MPS, FlightAnchor  # noqa: E402
from pipeline.simulate.humanoid import build_humanoid, skeleton_from_motion  # noqa: E402
from pipeline.simulate.synthetic import demo_motion  # noqa: E402
from pipeline.simulate.warp import control as bc  # noqa: E402
from pipeline.simulate.warp.runtime import init_warp  # noqa: E402

pytestmark = [pytest.mark.warp, pytest.mark.timeout(1500)]
DEV = "cpu"


@pytest.fixture(scope="module")
def wp():
    return init_warp()


@pytest.fixture(scope="module")
def kn(wp):
    from pipeline.simulate.warp import kernels

    return kernels


@pytest.fixture(scope="module")
def hum():
    mo = demo_motion("walk", 1.2, duration_s=0.5, subject=0)
    return build_humanoid(skeleton_from_motion(mo), mo.mass_kg, mo.gender)


def _a(wp, x, dtype=None):
    x = np.ascontiguousarray(x)
    if dtype is None:
        dtype = {np.dtype(np.float64): wp.float64, np.dtype(np.float32): wp.float32}.get(x.dtype, wp.int32)
        if dtype is wp.int32:
            x = x.astype(np.int32)
    return wp.array(x, dtype=dtype, device=DEV)


def _i(wp, x):
    return wp.array(np.ascontiguousarray(x, dtype=np.int32), dtype=wp.int32, device=DEV)


def _z(wp, *shape, dtype=None):
    return wp.zeros(shape, dtype=dtype or wp.float64, device=DEV)


def _random_q(rng, n):
    q = np.zeros((n, 99))
    q[:, :3] = rng.normal(size=(n, 3))
    q[:, 3:] = rot.aa_to_quat(rng.normal(scale=0.8, size=(n, 24, 3))).reshape(n, -1)
    return q


def _solve(wp, kn, A, b, reg, iterations=12):
    w, r, n = A.shape
    beta, kkt = _z(wp, w, n), _z(wp, w)
    wp.launch(kn.solve_force_plan_kernel, dim=w, device=DEV, inputs=[
        _a(wp, A), _a(wp, b), reg, iterations, 10, _z(wp, w, r, r), _z(wp, w, r), _z(wp, w, r), _z(wp, w, r),
        _z(wp, w, r), _z(wp, w, n), beta, kkt])
    return beta.numpy(), kkt.numpy()


def test_solve_force_plan_kernel_equals_numpy_and_nnls(wp, kn):
    rng = np.random.default_rng(1)
    worlds, rows, n, reg = 40, 9, 48, 1e-4
    A = rng.normal(size=(worlds, rows, n))
    A[:, 6:] *= rng.random((worlds, 1, 1)) < 0.5
    A[:5, :, 40:] = 0.0  # unused budget slots
    b = rng.normal(scale=50.0, size=(worlds, rows))
    beta, kkt = _solve(wp, kn, A, b, reg)
    ref_beta, ref_kkt = bc.solve_force_plan_batched(A, b, reg)
    assert kkt.max() < 1e-6 * np.abs(b).max()
    np.testing.assert_allclose(beta, ref_beta, atol=1e-9 * np.abs(ref_beta).max())
    for w in range(worlds):
        ref = nnls(np.vstack([A[w], np.sqrt(reg) * np.eye(n)]), np.concatenate([b[w], np.zeros(n)]),
                   maxiter=50 * n)[0]
        assert np.all(beta[w] >= 0.0)
        np.testing.assert_allclose(beta[w], ref, atol=1e-6 * max(1.0, np.abs(ref).max()))


def test_desired_acceleration_kernel(wp, kn):
    rng = np.random.default_rng(0)
    w = 3
    q = _random_q(rng, w).astype(np.float32)
    v = rng.normal(size=(w, 75)).astype(np.float32)
    rq = np.stack([_random_q(rng, w), _random_q(rng, w)], 1)  # (W, K=2, 99)
    rq[0, 0, 3:7] *= -1.0
    rv = rng.normal(size=(w, 2, 75))
    ra = rng.normal(size=(w, 2, 75))
    kp, kd = rng.uniform(10, 100, (w, 75)), rng.uniform(1, 10, (w, 75))
    anchor = rng.normal(size=(w, 3))
    a_star, qacc = _z(wp, w, 75), _z(wp, w, 75, dtype=wp.float32)
    wp.launch(kn.desired_acceleration_kernel, dim=(w, 24), device=DEV, inputs=[
        _i(wp, [0]), _i(wp, [1, 1, 1]), _a(wp, q), _a(wp, v), _a(wp, rq), _a(wp, rv), _a(wp, ra),
        _a(wp, kp), _a(wp, kd), _a(wp, anchor), a_star, qacc])
    q_ref = rq[:, 0].copy()
    q_ref[:, :3] += anchor
    ref = bc.desired_acceleration(q.astype(float), v.astype(float), q_ref, rv[:, 0], 0.5 * (ra[:, 0] + ra[:, 1]),
                                  kp, kd)
    np.testing.assert_allclose(a_star.numpy(), ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(qacc.numpy(), ref.astype(np.float32), rtol=1e-6)


def test_plan_system_and_contact_force_kernels(wp, kn, hum):
    """A/b of the plan (load-share rows included) and Σ Jᵀf (with MuJoCo's cdof) as the numpy reference."""
    rng = np.random.default_rng(2)
    m = hum.model
    nw, c, nv = 3, 10, m.nv
    dm = mujoco.MjData(m)
    qpos = _random_q(rng, nw).astype(np.float32)
    xmat = np.empty((nw, m.nbody, 9), np.float32)
    cdof = np.empty((nw, nv, 6), np.float32)
    com = np.empty((nw, m.nbody, 3), np.float32)
    for w in range(nw):
        dm.qpos[:] = qpos[w]
        mujoco.mj_forward(m, dm)
        xmat[w], cdof[w], com[w] = dm.xmat, dm.cdof, dm.subtree_com
    root_body, root_tree = int(hum.body_ids[0]), int(m.body_rootid[hum.body_ids[0]])
    pts = rng.normal(scale=0.3, size=(nw, c, 3))
    pts[..., 2] = 0.0
    valid = np.ones((nw, c), bool)
    valid[1, 7:] = False
    valid[2, :] = False
    valid[2, :3] = True  # one foot only: no load-share rows
    right_b = np.zeros((nw, m.nbody), bool)
    right_b[:, hum.body_ids[[8, 11]]] = True
    bodies = np.where(np.arange(c) < 4, hum.body_ids[7], hum.body_ids[8])[None].repeat(nw, 0)
    bodies[:, 2] = hum.body_ids[10]
    bias = rng.normal(scale=100.0, size=(nw, nv)).astype(np.float32)
    a_star = rng.normal(size=(nw, nv))
    arm = rng.uniform(0, 0.1, nv)
    plan = rng.uniform(0, 500, size=(nw, 2, 6))
    has_plan = np.array([1, 1, 0])
    edges = bc.pyramid_edges(0.8)
    w6 = np.array([1, 1, 1, 0.5, 0.5, 0.5])
    A, b = _z(wp, nw, 9, 4 * c), _z(wp, nw, 9)
    wp.launch(kn.plan_system_kernel, dim=nw, device=DEV, inputs=[
        _i(wp, [0]), _i(wp, np.ones(nw)), _a(wp, pts), _a(wp, bodies), _a(wp, valid), _a(wp, right_b),
        _a(wp, qpos), wp.array(xmat.reshape(nw, m.nbody, 3, 3), dtype=wp.mat33, device=DEV), root_body,
        _a(wp, bias), _a(wp, a_star), _a(wp, arm), _a(wp, plan), _i(wp, has_plan), 3.0, _a(wp, edges), _a(wp, w6),
        A, b])
    right = right_b[np.arange(nw)[:, None], bodies]
    target = np.where(has_plan[:, None, None] > 0, 0.5 * (plan[:, 0] + plan[:, 1]).reshape(nw, 2, 3), 0.0)
    R = xmat[:, root_body].astype(float).reshape(nw, 3, 3)
    tau6 = bias[:, :6].astype(float) + arm[:6] * a_star[:, :6]
    A_ref, b_ref = bc.force_plan_system(pts, valid, right, qpos[:, :3].astype(float), R, tau6, edges, w6, target, 3.0)
    np.testing.assert_allclose(A.numpy(), A_ref, atol=1e-9)
    np.testing.assert_allclose(b.numpy(), b_ref, rtol=1e-12, atol=1e-9)
    assert np.abs(A_ref[:2, 6:]).max() > 0 and np.all(A_ref[2, 6:] == 0)
    # Σ Jᵀf of the plan's solution
    beta, _ = bc.solve_force_plan_batched(A_ref, b_ref, 1e-4)
    forces = beta.reshape(nw, c, 4) @ edges
    from pipeline.simulate.warp.backend import _subtree_matrix

    sub = _subtree_matrix(np.asarray(m.body_parentid))
    qfrc = _z(wp, nw, nv)
    wp.launch(kn.contact_force_kernel, dim=(nw, nv), device=DEV, inputs=[
        wp.array(cdof, dtype=wp.spatial_vector, device=DEV), _a(wp, m.dof_bodyid), _a(wp, sub),
        wp.array(com, dtype=wp.vec3, device=DEV), root_tree, _a(wp, bodies), _a(wp, pts), _a(wp, valid),
        _a(wp, beta), _a(wp, edges), qfrc])
    ref = bc.contact_generalized_force(cdof.astype(float), m.dof_bodyid, sub, com[:, root_tree].astype(float),
                                       bodies, pts, forces, valid)
    np.testing.assert_allclose(qfrc.numpy(), ref, atol=1e-9 * np.abs(ref).max())


def test_flight_anchor_and_fall_kernel(wp, kn):
    """``anchor_fall_kernel`` ticks as ``FlightAnchor.update`` (flights, short flights, landings at
    rest or still moving) and flags falls as the host loop does."""
    rng = np.random.default_rng(4)
    nw, kmax, hz, min_flight = 4, 60, 120.0, 6
    nk = kmax + 1
    body_ids = np.tile(np.arange(1, 25), (nw, 1))
    # plan: loaded patterns per world: long flight, short flight, always loaded, one foot
    fz = np.full((nw, nk, 2), 300.0)
    fz[0, 10:25] = 0.0
    fz[0, 40:50] = 0.0
    fz[1, 10:13] = 0.0
    fz[3, :, 1] = 0.0
    fz[3, 20:30, 0] = 0.0
    plan = np.zeros((nw, nk, 2, 3))
    plan[..., 2] = fz
    ref_pos = rng.normal(scale=0.5, size=(nw, nk, 24, 3))
    total = np.array([kmax, kmax, kmax - 10, kmax])
    rq = np.zeros((nw, nk, 99))
    rq[:, :, 2] = 0.9
    st = dict(tick=_i(wp, [0]), anchor=_z(wp, nw, 3), max_shift=_z(wp, nw), air=_z(wp, nw, dtype=wp.int32),
              landed=_i(wp, np.ones(nw)), prev=_z(wp, nw, 6), fixp=_z(wp, nw, dtype=wp.int32),
              do_reset=_z(wp, nw, dtype=wp.int32), reset_rec=_z(wp, nw, kmax, dtype=wp.int32))
    fa = FlightAnchor(nw, min_flight, hz)
    const = [_i(wp, total), kmax, 1]
    ankles = rng.normal(size=(nw, 2, 3))
    for k in range(kmax + 1):
        # ankles move fast in flight, settle (or not, world 0's second landing) after landing
        moving = (fz[:, k] == 0).all(1) | ((np.arange(nw) == 0) & (k >= 50) & (k < 55))
        ankles = ankles + np.where(moving[:, None, None], 0.01, 1e-4) * rng.normal(size=(nw, 2, 3))
        xpos = np.zeros((nw, 25, 3), np.float32)
        xpos[:, 1:] = ref_pos[:, min(k, kmax)] + 0.01
        xpos[:, 8:10] = ankles
        if k == 30:
            xpos[1, 1:] += 1.0  # a fall
        qpos = np.zeros((nw, 99), np.float32)
        qpos[:, 2] = 0.9
        wp.launch(kn.anchor_fall_kernel, dim=nw, device=DEV, inputs=[
            st["tick"], *const[:2], 1, _a(wp, qpos), wp.array(xpos, dtype=wp.vec3, device=DEV), _a(wp, rq),
            _a(wp, ref_pos.reshape(nw, nk, 72)), _a(wp, body_ids), _a(wp, plan.reshape(nw, nk, 6)),
            _i(wp, np.ones(nw)), 20.0, min_flight, hz, STILL_MPS, 0.25, 0.15, st["anchor"], st["max_shift"],
            st["air"], st["landed"], st["prev"], st["fixp"], st["do_reset"], st["reset_rec"]])
        xk = xpos.astype(float)
        kk = np.minimum(k, total)
        if k < kmax:
            loaded = (plan[np.arange(nw), kk, :, 2] > 20.0) & (k < total)[:, None]
            ref_anchor = fa.update(loaded, xk[:, [8, 9]], ref_pos[np.arange(nw), kk][:, [7, 8]]).copy()
        np.testing.assert_allclose(st["anchor"].numpy(), ref_anchor, atol=1e-12, err_msg=f"tick {k}")
        err = np.linalg.norm(xk[np.arange(nw)[:, None], body_ids] - ref_pos[np.arange(nw), kk] - ref_anchor[:, None],
                             axis=-1).mean(1)
        expect = (err > 0.15) & (k < total)
        np.testing.assert_array_equal(st["do_reset"].numpy() != 0, expect, err_msg=f"tick {k}")
        wp.launch(kn.advance_tick_kernel, dim=1, device=DEV, inputs=[st["tick"]])
    np.testing.assert_allclose(st["max_shift"].numpy(), fa.max_shift, atol=1e-12)
    assert fa.max_shift[0] > 0 and fa.max_shift[2] == 0  # the long flight re-anchored, no flight did not
    assert st["reset_rec"].numpy()[1, 30] == 1


@pytest.mark.parametrize("reset_mpjpe_m", [None, 0.012])
def test_device_controller_matches_host_controller(reset_mpjpe_m):
    """The whole batch loop: kernels on Warp's CPU device vs the numpy controller on the host (two
    subjects, padded lengths; with a low fall threshold the run resets). Both compute in float64
    on MuJoCo Warp's float32 state; only float64 rounding differs (a float32 ``qfrc_applied`` may
    round the other way)."""
    import dataclasses

    from pipeline.simulate.engine import prepare_sequence
    from pipeline.simulate.packed import finish_world, pack_prepared
    from pipeline.simulate.warp.backend import WarpBatchSettings, simulate_batch

    cfg = SimConfig()
    if reset_mpjpe_m is not None:
        cfg = dataclasses.replace(cfg, reset_mpjpe_m=reset_mpjpe_m)
    mos = [demo_motion("walk", 1.2, duration_s=0.5, subject=0), demo_motion("run", 3.0, duration_s=0.4, subject=1)]
    out = {}
    for flag in (False, True):
        preps = [prepare_sequence(mo, cfg) for mo in mos]
        pk = pack_prepared(preps)
        rec, st = simulate_batch(pk, cfg, WarpBatchSettings(device_controller=flag), "cpu")
        out[flag] = [finish_world(rec, w, p.motion, cfg, p.hum, p.skel, p.dyn) for w, p in enumerate(preps)], st
    (host, hs), (dev, ds) = out[False], out[True]
    assert ds.overflow_worlds == hs.overflow_worlds == ()
    assert ds.force_plan_kkt_max < 1e-6 and ds.device_controller and not hs.device_controller
    assert (sum(int(r.reset.sum()) for r in dev) > 0) == (reset_mpjpe_m is not None)
    for a, b in zip(host, dev):
        np.testing.assert_array_equal(a.reset, b.reset)
        assert np.abs(a.sim_joint_pos_m - b.sim_joint_pos_m).max() < 1e-4
        assert np.abs(a.grf_n - b.grf_n).max() / a.mass_kg < 0.05
        assert np.sqrt(np.mean((a.joint_torque_nm - b.joint_torque_nm) ** 2)) / a.mass_kg < 0.01
        for key, v in a.metrics.items():
            if isinstance(v, float) and np.isfinite(v):
                assert b.metrics[key] == pytest.approx(v, rel=1e-3, abs=1e-3), key
