"""The batched controller math (pipeline.simulate.warp.control) against MuJoCo's and the CPU
controller's own functions; pure numpy, no Warp needed."""

import mujoco
import numpy as np
import pytest
from scipy.optimize import nnls

from pipeline import rotations as rot
from pipeline.simulate.controller import solve_force_plan
from pipeline.simulate.humanoid import build_humanoid, skeleton_from_motion
from pipeline.simulate.synthetic import demo_motion
from pipeline.simulate.warp import control as bc


@pytest.fixture(scope="module")
def hum():
    mo = demo_motion("walk", 1.2, duration_s=0.5, subject=0)
    return build_humanoid(skeleton_from_motion(mo), mo.mass_kg, mo.gender)


def _random_state(hum, rng):
    m = hum.model
    q = np.zeros(m.nq)
    q[:3] = rng.normal(size=3)
    q[3:] = rot.aa_to_quat(rng.normal(scale=0.8, size=(24, 3))).reshape(-1)
    return q


def test_differentiate_pos_matches_mujoco(hum):
    rng = np.random.default_rng(0)
    m = hum.model
    q1 = np.stack([_random_state(hum, rng) for _ in range(3)])
    q2 = np.stack([_random_state(hum, rng) for _ in range(3)])
    q2[0, 3:7] *= -1.0  # the sign of a quaternion must not matter
    got = bc.differentiate_pos(q1, q2)
    for w in range(3):
        ref = np.zeros(m.nv)
        mujoco.mj_differentiatePos(m, ref, 1.0, q1[w], q2[w])
        np.testing.assert_allclose(got[w], ref, atol=1e-9)


def test_force_plan_dual_newton_equals_nnls():
    rng = np.random.default_rng(1)
    worlds, rows, n, reg = 40, 9, 48, 1e-4
    A = rng.normal(size=(worlds, rows, n))
    A[:, 6:] *= rng.random((worlds, 1, 1)) < 0.5  # some worlds without load-share rows
    b = rng.normal(scale=50.0, size=(worlds, rows))
    beta, kkt = bc.solve_force_plan_batched(A, b, reg)
    assert kkt.max() < 1e-6 * np.abs(b).max()
    for w in range(worlds):
        ref = nnls(np.vstack([A[w], np.sqrt(reg) * np.eye(n)]), np.concatenate([b[w], np.zeros(n)]),
                   maxiter=50 * n)[0]
        assert np.all(beta[w] >= 0.0)
        np.testing.assert_allclose(beta[w], ref, atol=1e-6 * max(1.0, np.abs(ref).max()))


def test_force_plan_system_and_solution_match_cpu_controller(hum):
    """Same A/b as TrackingController.compute builds (incl. the load-share rows), same β."""
    rng = np.random.default_rng(2)
    edges = bc.pyramid_edges(0.8)
    w6 = np.array([1, 1, 1, 0.5, 0.5, 0.5])
    c = 10
    pts = rng.normal(scale=0.3, size=(2, c, 3))
    pts[..., 2] = 0.0
    valid = np.ones((2, c), bool)
    valid[1, 7:] = False
    right = np.zeros((2, c), bool)
    right[:, 4:] = True
    root = rng.normal(size=(2, 3))
    R = rot.aa_to_rotmat(rng.normal(size=(2, 3)))
    demand = np.array([[10, -20, 700, 5, -3, 2], [30, 5, 650, -10, 4, 1]], float)
    target = np.array([[[0, 0, 300], [0, 0, 400]], [[0, 0, 500], [0, 0, 100]]], float)
    A, b = bc.force_plan_system(pts, valid, right, root, R, demand, edges, w6, target, 3.0)
    beta, _ = bc.solve_force_plan_batched(A, b, 1e-4)
    for w in range(2):
        k = int(valid[w].sum())
        r = pts[w, :k] - root[w]
        Aw = np.empty((6, 4 * k))
        Aw[:3] = np.tile(edges.T, k)
        Aw[3:] = np.stack([R[w].T @ np.cross(r[i], e) for i in range(k) for e in edges], 1)
        Aw *= w6[:, None]
        share = target[w, 0, 2] / target[w, :, 2].sum()
        coef = np.where(right[w, :k], -share, 1 - share)
        rows = (np.repeat(coef, 4)[None, :] * np.tile(edges.T, k)) * 3.0
        ref = solve_force_plan(np.vstack([Aw, rows]), np.concatenate([demand[w] * w6, np.zeros(3)]), 1e-4)
        np.testing.assert_allclose(A[w, :, :4 * k], np.vstack([Aw, rows]), atol=1e-12)
        np.testing.assert_allclose(beta[w, :4 * k], ref, atol=1e-6 * np.abs(ref).max())
        assert np.all(beta[w, 4 * k:] == 0.0)


def test_contact_generalized_force_matches_mj_applyFT(hum):
    rng = np.random.default_rng(3)
    m = hum.model
    d = mujoco.MjData(m)
    d.qpos[:] = _random_state(hum, rng)
    mujoco.mj_forward(m, d)
    c = 5
    bodies = rng.integers(1, m.nbody, size=(1, c))
    pts = rng.normal(scale=0.5, size=(1, c, 3))
    f = rng.normal(scale=100.0, size=(1, c, 3))
    valid = np.array([[True, True, False, True, True]])
    ref = np.zeros(m.nv)
    for i in range(c):
        if valid[0, i]:
            mujoco.mj_applyFT(m, d, f[0, i], np.zeros(3), pts[0, i], int(bodies[0, i]), ref)
    from pipeline.simulate.warp.backend import _subtree_matrix

    sub = _subtree_matrix(np.asarray(m.body_parentid))
    got = bc.contact_generalized_force(d.cdof[None], m.dof_bodyid, sub, d.subtree_com[m.body_rootid[1]][None],
                                       bodies, pts, f, valid)
    np.testing.assert_allclose(got[0], ref, atol=1e-8 * np.abs(ref).max())


def test_cap_norm():
    x = np.array([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(bc.cap_norm(x, 1.0), [[0.6, 0.8, 0.0], [0.3, 0.4, 0.0], [0, 0, 0]])


def test_landing_seat_matches_cpu_controller(hum):
    """The batched landing seat (``control.landing_seat``, Jacobian and ``J̇ v`` from ``cdof`` and
    ``cvel``) asks for the same accelerations as ``TrackingController.seat_landing_feet``
    (``mj_jacBody`` + ``mj_jacDot``) on random airborne states, and keeps the same touched state."""
    from pipeline.simulate.controller import ContactQP, Gains, TrackingController

    m = hum.model
    rng = np.random.default_rng(3)
    ctrl = TrackingController(hum, Gains(), ContactQP())
    chain, quat, leg_pos = bc.seat_chain(m, ctrl._seat_ankle, ctrl._seat_dofs)
    assert chain.shape == (2, 15) and quat[:, 3:].all() and not quat[:, :3].any()
    d = mujoco.MjData(m)
    W = 4
    seats = np.array([[-0.3, np.nan], [-0.1, -0.5], [np.nan, -0.2], [0.0, -0.4]])
    want = np.zeros((W, m.nv))
    args = {k: [] for k in ("qacc", "qvel", "sole_z", "ankle_pos", "root_com", "cvel_ankle", "cvel_dof", "cdof")}
    for w in range(W):
        q = _random_state(hum, rng)
        q[2] = 1.6  # feet in the air: the seat acts
        d.qpos[:] = q
        d.qvel[:] = rng.normal(size=m.nv)
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_comVel(m, d)
        qacc = rng.normal(size=m.nv) * 5.0
        args["qacc"].append(qacc.copy())
        args["qvel"].append(d.qvel.copy())
        sp = ctrl.sole_points_world(d)
        args["sole_z"].append([sp[:6, 2].min(), sp[6:, 2].min()])
        args["ankle_pos"].append(d.xpos[ctrl._seat_ankle].copy())
        args["root_com"].append(d.subtree_com[m.body_rootid[ctrl._seat_ankle[0]]].copy())
        args["cvel_ankle"].append(d.cvel[ctrl._seat_ankle].copy())
        args["cvel_dof"].append(d.cvel[m.dof_bodyid[chain]].copy())
        args["cdof"].append(d.cdof[chain].copy())
        ctrl._seat_touched = [False, False]
        ctrl.seat_landing_feet(d, qacc, seats[w])
        want[w] = qacc
    a = {k: np.array(v) for k, v in args.items()}
    # the CPU seat did act: every seated foot changed its leg's accelerations
    for w in range(W):
        for f in range(2):
            moved = not np.allclose(want[w, ctrl._seat_dofs[f]], a["qacc"][w, ctrl._seat_dofs[f]])
            assert moved == (not np.isnan(seats[w, f])), (w, f)
    touched = np.zeros((W, 2), bool)
    bc.landing_seat(a["qacc"], a["qvel"], seats, touched, a["sole_z"], a["ankle_pos"], a["root_com"],
                    a["cvel_ankle"], a["cvel_dof"], a["cdof"], chain, quat, leg_pos, ctrl._seat_kp, ctrl._seat_kd,
                    ctrl._seat_margin)
    np.testing.assert_allclose(a["qacc"], want, rtol=1e-9, atol=1e-9)
    assert not touched.any()
    # a foot whose lowest corner is within the margin is touched: no change, and it stays touched
    qacc = a["qacc"].copy()
    low = a["sole_z"].copy()
    low[:, :] = 0.001
    bc.landing_seat(qacc, a["qvel"], seats, touched, low, a["ankle_pos"], a["root_com"], a["cvel_ankle"],
                    a["cvel_dof"], a["cdof"], chain, quat, leg_pos, 625.0, 50.0, 0.005)
    np.testing.assert_array_equal(qacc, a["qacc"])
    np.testing.assert_array_equal(touched, ~np.isnan(seats))
