"""Physics checks on the simulator and its recordings (issue 3, item 6)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.simulate import SimConfig, simulate
from pipeline.simulate import humanoid as hm
from pipeline.simulate.engine import newton_euler_imbalance
from pipeline.simulate.synthetic import demo_motion, static_motion

G = 9.81


def _arms_down() -> np.ndarray:
    a = np.zeros((24, 3))
    a[16] = [0.0, 0.0, -1.35]  # left shoulder: arm down along the body
    a[17] = [0.0, 0.0, 1.35]
    return a


@pytest.mark.parametrize("residual", [True, False])
def test_standing_still_grf_equals_weight(residual):
    mo = static_motion(_arms_down(), duration_s=2.0, height_m=1.75, mass_kg=72.0)
    r = simulate([mo], SimConfig(residual=residual))[0]
    bw = 72.0 * G
    settled = slice(15, None)  # after 0.5 s
    np.testing.assert_allclose(r.grf_total_n[settled, 2], bw, rtol=0.02)
    assert np.abs(r.grf_total_n[settled, :2]).max() < 0.02 * bw
    # both feet carry load, the weight is split roughly evenly, COPs under the feet
    assert r.foot_contact[settled].all()
    assert np.all(np.abs(r.grf_n[settled, 0, 2] / bw - 0.5) < 0.15)
    # near-zero joint velocities: rotation changes frame to frame
    q = rot.aa_to_quat(r.sim_joint_rot_aa_rad[settled])
    dq = rot.quat_mul(rot.quat_conj(q[:-1]), q[1:])
    omega = np.linalg.norm(rot.quat_to_aa(dq), axis=-1) * r.fps_hz
    assert omega.max() < 0.05, omega.max()
    assert np.linalg.norm(r.sim_com_vel_mps[settled], axis=-1).max() < 0.005
    assert r.metrics["success"] and r.metrics["mpjpe_median_mm"] < 10.0
    if not residual:
        assert np.all(r.residual_wrench == 0.0)
    else:
        assert np.linalg.norm(r.residual_wrench[settled, :3], axis=-1).max() < 0.01 * bw


def test_free_fall_has_zero_grf():
    mo = static_motion(duration_s=0.3, lift_m=1.0)
    r = simulate([mo], SimConfig(residual=False, reset_root_height_err_m=10.0, reset_mpjpe_m=10.0))[0]
    assert not r.reset.any()
    assert np.all(r.body_contact_force_n == 0.0) and np.all(r.grf_total_n == 0.0)
    assert not r.foot_contact.any() and np.isnan(r.cop_m).all() and np.isnan(r.free_moment_nm).all()
    # the centre of mass falls at g (Newton with zero external force but gravity)
    acc = np.diff(r.sim_com_vel_mps, axis=0) * r.fps_hz
    np.testing.assert_allclose(acc[:, 2], -G, atol=0.05)
    np.testing.assert_allclose(acc[:, :2], 0.0, atol=0.05)


def test_free_fall_raw_mujoco_sensors_zero():
    h = hm.build_humanoid(sk.anthropometric_skeleton(1.7), 65.0)
    d = mujoco.MjData(h.model)
    d.qpos[2] = 3.0
    d.qpos[3:7] = rot.aa_to_quat(np.array([np.pi / 2, 0, 0]))
    d.qpos[7::4] = 1.0
    for _ in range(200):
        mujoco.mj_step(h.model, d)
        assert d.ncon == 0 and np.all(d.sensordata == 0.0)


def _gravity_torque_hand_rolled(h: hm.Humanoid, d: mujoco.MjData, joint: int) -> np.ndarray:
    """Σ over the bodies below ``joint`` of r × (m g), negated (what the parent must apply), in
    the child body frame."""
    m = h.model
    below = [j for j in range(sk.N_JOINTS) if _is_descendant(j, joint)]
    p = d.xpos[h.body_ids[joint]]
    tau = np.zeros(3)
    for j in below:
        b = h.body_ids[j]
        tau += np.cross(d.xipos[b] - p, m.body_mass[b] * np.array([0.0, 0.0, -G]))
    R = d.xmat[h.body_ids[joint]].reshape(3, 3)
    return R.T @ (-tau)


def _is_descendant(j: int, anc: int) -> bool:
    while j != -1:
        if j == anc:
            return True
        j = sk.PARENTS[j]
    return False


@pytest.mark.parametrize("pose", ["t_pose", "arms_forward"])
def test_static_torques_match_gravity_torques(pose):
    """Held pose, root fixed, gravity only: mj_inverse (qacc = 0) == hand-rolled Σ m g × r."""
    h = hm.build_humanoid(sk.anthropometric_skeleton(1.8), 80.0, "male")
    m = h.model
    d = mujoco.MjData(m)
    aa = np.zeros((24, 3))
    aa[0] = [np.pi / 2, 0, 0]
    if pose == "arms_forward":
        aa[16] = [0.0, -1.2, 0.3]
        aa[18] = [0.0, -0.8, 0.0]
        aa[17] = [0.0, 1.0, -0.2]
    q = np.zeros(99)
    q[2] = 3.0  # root held in the air: gravity only, no contact
    q[3:] = rot.aa_to_quat(aa).reshape(-1)
    d.qpos[:] = h.qpos_to_mj(q)
    d.qvel[:] = 0.0
    d.qacc[:] = 0.0
    mujoco.mj_inverse(m, d)
    qfrc = h.dof_from_mj(d.qfrc_inverse)  # SMPL order: [root 6, joints 1..23 × 3]
    for joint in (16, 17, 18, 1, 3, 9, 15):
        tau_inv = qfrc[6 + 3 * (joint - 1): 9 + 3 * (joint - 1)]
        tau_hand = _gravity_torque_hand_rolled(h, d, joint)
        np.testing.assert_allclose(tau_inv, tau_hand, rtol=1e-6, atol=1e-6)
    # a T-pose arm needs a large torque about the horizontal axis (≈ m_arm g × lever)
    if pose == "t_pose":
        tau = qfrc[6 + 3 * 15: 9 + 3 * 15]
        arm_mass = sum(m.body_mass[h.body_ids[j]] for j in (16, 18, 20, 22))
        assert 0.15 * arm_mass * G < np.linalg.norm(tau) < 0.5 * arm_mass * G
    # root: the whole weight
    np.testing.assert_allclose(qfrc[:3], [0, 0, 80.0 * G], rtol=1e-9)


def test_recorded_static_torques_match_gravity():
    """The engine's recorded shoulder torque while standing in a T-pose ≈ the gravity torque."""
    mo = static_motion(duration_s=1.0, height_m=1.75, mass_kg=70.0)
    r = simulate([mo], SimConfig())[0]
    h = hm.build_humanoid(hm.skeleton_from_motion(mo), 70.0, "neutral")
    d = mujoco.MjData(h.model)
    q = np.concatenate([r.sim_root_pos_m[-1], rot.aa_to_quat(r.sim_joint_rot_aa_rad[-1]).reshape(-1)])
    d.qpos[:] = h.qpos_to_mj(q)
    mujoco.mj_kinematics(h.model, d)
    mujoco.mj_comPos(h.model, d)
    for joint in (16, 17, 18, 19):
        expected = _gravity_torque_hand_rolled(h, d, joint)
        got = r.joint_torque_nm[-5:, joint - 1].mean(axis=0)
        np.testing.assert_allclose(got, expected, atol=0.03 * np.linalg.norm(expected) + 0.05)


@pytest.fixture(scope="module")
def walk_result():
    mo = demo_motion("walk", 1.2, duration_s=3.0)
    return mo, simulate([mo], SimConfig())[0]


def test_newton_on_recorded_gait(walk_result):
    """Σ floor forces + residual ≈ m (a_com − g): mean forces over each interval vs the COM
    momentum change (tolerance 1 % of body weight at the 95th percentile, 3 % max)."""
    mo, r = walk_result
    bw = r.mass_kg * G
    com_v = np.vstack([r.sim_com_vel_mps, r.sim_com_vel_mps[-1:]])  # last interval not checked
    imb = newton_euler_imbalance(r.grf_total_n, r.residual_wrench[:, :3], com_v, r.mass_kg, r.fps_hz)[:-1] / bw
    ok = ~r.reset[:-1]
    assert ok.mean() > 0.9
    assert np.percentile(imb[ok], 95) < 0.01 and imb[ok].max() < 0.03
    assert r.metrics["newton_euler_imbalance_p95_bw"] < 0.01
    # the feet carry the body: mean vertical floor force over the gait ≈ body weight
    assert r.grf_total_n[:, 2].mean() == pytest.approx(bw, rel=0.1)
    # per-foot quantities are consistent with the per-body contact forces
    np.testing.assert_allclose(r.grf_n.sum(axis=1) + r.body_contact_force_n[:, [j for j in range(24)
                               if j not in (7, 8, 10, 11)]].sum(axis=1), r.grf_total_n, atol=1e-6)
