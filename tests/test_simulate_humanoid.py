"""The MJCF humanoid: mass, tree, frames, contacts, cache."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.simulate import humanoid as hm
from pipeline.simulate.reference import build_reference
from pipeline.simulate.synthetic import demo_motion


@pytest.mark.parametrize("gender,mass,height", [("male", 82.0, 1.85), ("female", 55.0, 1.60), ("neutral", 70.0, 1.70)])
def test_weight_equals_mass_times_g(gender, mass, height):
    h = hm.build_humanoid(sk.anthropometric_skeleton(height), mass, gender)
    m = h.model
    total = float(m.body_mass.sum())
    weight = total * float(np.linalg.norm(m.opt.gravity))
    assert weight == pytest.approx(mass * 9.81, rel=1e-3)
    assert mujoco.mj_getTotalmass(m) == pytest.approx(mass, rel=1e-3)
    # all inertias positive and satisfying the triangle inequality
    I = m.body_inertia[1:]
    assert np.all(I > 0)
    assert np.all(I.sum(1) - 2 * I.max(1) >= -1e-12)


def test_tree_joints_and_names():
    h = hm.build_humanoid(sk.anthropometric_skeleton(1.75), 75.0, "male")
    m = h.model
    assert m.nbody == 25 and m.nq == 7 + 23 * 4 and m.nv == 6 + 23 * 3
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(1, m.nbody)]
    assert sorted(names) == sorted(sk.JOINT_NAMES)
    assert m.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
    assert np.all(m.jnt_type[1:] == mujoco.mjtJoint.mjJNT_BALL) and m.njnt == 24
    for j, name in enumerate(sk.JOINT_NAMES[1:], start=1):
        b = h.body_ids[j]
        assert m.body_parentid[b] == h.body_ids[sk.PARENTS[j]]
        np.testing.assert_allclose(m.body_pos[b], h.skeleton.offsets_m[j], atol=1e-9)
        jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
        assert m.jnt_limited[jid] and 0 < m.jnt_range[jid, 1] <= np.pi


def test_no_self_collision_only_floor():
    h = hm.build_humanoid(sk.anthropometric_skeleton(1.75), 75.0)
    m = h.model
    floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    body_geoms = [g for g in range(m.ngeom) if g != floor]
    for g1 in body_geoms:
        for g2 in body_geoms:
            assert not (m.geom_contype[g1] & m.geom_conaffinity[g2])
        assert (m.geom_contype[g1] & m.geom_conaffinity[floor]) or (m.geom_contype[floor] & m.geom_conaffinity[g1])


def test_mujoco_kinematics_equal_canonical_fk():
    """Body quaternions = canonical rotations: MuJoCo FK reproduces the canonical joints exactly."""
    mo = demo_motion("walk", 1.2, duration_s=1.0)
    skel = hm.skeleton_from_motion(mo)
    np.testing.assert_allclose(skel.bone_lengths_m, mo.bone_length_m, atol=1e-9)
    h = hm.build_humanoid(skel, mo.mass_kg, mo.gender)
    ref = build_reference(mo, 60.0)
    d = mujoco.MjData(h.model)
    for i in (0, 7, 20):
        d.qpos[:] = h.qpos_to_mj(ref.qpos[2 * i])
        mujoco.mj_kinematics(h.model, d)
        np.testing.assert_allclose(d.xpos[h.body_ids], mo.joint_pos_m[i], atol=1e-9)
        R = rot.aa_to_rotmat(mo.joint_rot_aa_rad[i])
        glob, _ = sk.forward_kinematics(R[None], mo.root_pos_m[i][None], skel.offsets_m)
        np.testing.assert_allclose(d.xmat[h.body_ids].reshape(-1, 3, 3), glob[0], atol=1e-9)
    np.testing.assert_allclose(h.qpos_from_mj(h.qpos_to_mj(ref.qpos)), ref.qpos)


def test_feet_rest_on_floor_in_t_pose_and_cache():
    skel = sk.anthropometric_skeleton(1.70)
    h = hm.build_humanoid(skel, 66.0)
    assert hm.build_humanoid(skel, 66.0) is h  # cached by skeleton hash + mass + params
    assert hm.build_humanoid(skel, 67.0) is not h
    d = mujoco.MjData(h.model)
    d.qpos[3:7] = rot.aa_to_quat(np.array([np.pi / 2, 0, 0]))
    d.qpos[7::4] = 1.0
    d.qpos[2] = skel.rest_joints_m[0, 1] - (skel.rest_joints_m[7, 1] + sk.foot_point_offsets(skel)[0, 1])
    mujoco.mj_forward(h.model, d)
    # the 8 sole-box contacts engage within the margin; no other body touches
    touching = {h.model.geom_bodyid[d.contact.geom[i, 1]] for i in range(d.ncon)}
    assert touching == {h.body_ids[j] for j in (7, 8, 10, 11)}
    assert np.all(d.contact.dist > 0) and np.all(d.contact.dist <= h.model.geom_margin.max() + 1e-9)
