"""Inverse dynamics with measured forces (``pipeline.inverse_dynamics``): a physics identity on the
simulator's own recordings, a static hand check, real walks against published joint moments, and
the measured sequence's torque-subset payload."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mujoco
import numpy as np
import pytest

from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.inverse_dynamics import (
    SAGITTAL_JOINTS,
    global_rotations,
    inverse_dynamics,
    lowpass_motion,
    measured_inverse_dynamics,
    sagittal,
)
from pipeline.simulate import SimConfig, simulate
from pipeline.simulate.humanoid import build_humanoid, skeleton_from_motion
from pipeline.simulate.synthetic import demo_motion, static_motion

G = 9.81
C3D_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "c3d"
if not C3D_ROOT.is_dir():
    C3D_ROOT = Path("/work/shared/data/c3d")
WALKS = ("opensim-core/walking2.c3d", "btk/PiG/PiG_Motion3_FF.c3d", "btk/others/Gait.c3d", "kineticstoolkit/walk.c3d")
needs_c3d = pytest.mark.skipif(not C3D_ROOT.is_dir(), reason=f"real C3D samples absent ({C3D_ROOT})")


# --- (a) physics identity on the simulator's own recording ----------------------------------------


@pytest.fixture(scope="module")
def simulated_walk():
    motion = demo_motion("walk", 1.2, duration_s=3.0)
    result = simulate([motion], SimConfig())[0]
    # the simulated states as a motion: ID on them with the simulated floor forces should give back the
    # torques the simulator applied
    states = dataclasses.replace(motion, root_pos_m=np.asarray(result.sim_root_pos_m),
                                 joint_rot_aa_rad=np.asarray(result.sim_joint_rot_aa_rad),
                                 joint_pos_m=np.asarray(result.sim_joint_pos_m))
    return motion, result, states


def test_inverse_dynamics_of_a_simulation_returns_its_torques(simulated_walk):
    """ID on the simulated states with the simulated per-foot forces vs the torques the simulator
    applied. Not an exact identity: the recorded torques and forces are means over each 1/30 s
    interval (16 physics steps, torques held per 120 Hz tick, contact impacts inside), while ID
    differentiates a cubic spline through the 30 FPS states. What holds (measured on the 1.2 m/s
    demo walk, peaks ≈ 3 N·m/kg): ankle RMSE ≈ 1 % of the peak (the ankle torque is dominated by the
    foot's own force, which is the very interval mean), knee ≈ 5 %, hip ≈ 10 % (the whole leg's
    accelerations enter), all with correlation ≥ 0.97. A wrong frame, sign or joint mapping breaks
    this by far. The root residual is what the spline accelerations disagree with the recorded
    interval-mean forces (median ≈ 0.13 BW; the simulator applied ≈ 0.02 BW), while ID without the
    forces needs about one body weight."""
    motion, result, states = simulated_walk
    mass, bw = motion.mass_kg, motion.mass_kg * G
    idr = inverse_dynamics(states, result.grf_n, result.cop_m, result.free_moment_nm, include_armature=True)
    assert idr.known.all() and idr.joint_torque_nm.shape == (motion.n_frames, 23, 3)
    got = sagittal(idr.joint_torque_nm, states.joint_rot_aa_rad)
    want = sagittal(result.joint_torque_nm, result.sim_joint_rot_aa_rad)
    inner = slice(3, -3)  # spline end conditions
    limits = {"ankle": 0.05, "knee": 0.10, "hip": 0.20}  # RMSE / peak
    for name in SAGITTAL_JOINTS:
        a, b = got[name][inner], want[name][inner]
        peak = np.abs(b).max()
        assert peak > 1.0 * mass, (name, peak / mass)  # a loaded joint, not a trivial comparison
        rmse = np.sqrt(np.mean((a - b) ** 2))
        assert rmse < limits[name.split("_")[1]] * peak, (name, rmse / peak)
        assert np.corrcoef(a, b)[0, 1] > 0.95, name
    res = np.linalg.norm(idr.residual_wrench[inner, :3], axis=-1) / bw
    assert np.median(res) < 0.25 and np.percentile(res, 95) < 0.8, (np.median(res), np.percentile(res, 95))
    # negative control: without the floor forces the root must carry the body
    free = inverse_dynamics(states, np.zeros_like(result.grf_n), result.cop_m, result.free_moment_nm)
    assert np.median(np.linalg.norm(free.residual_wrench[inner, :3], axis=-1)) / bw > 0.8


def test_armature_term_is_small_and_optional(simulated_walk):
    """mj_rne leaves joint armature out; ``include_armature`` adds armature · q̈ (0.01 kg·m² per dof)."""
    motion, result, states = simulated_walk
    args = (states, result.grf_n, result.cop_m, result.free_moment_nm)
    a, b = inverse_dynamics(*args), inverse_dynamics(*args, include_armature=True)
    diff = b.joint_torque_nm - a.joint_torque_nm
    assert 0.0 < np.abs(diff).max() < 0.05 * np.abs(a.joint_torque_nm).max()
    np.testing.assert_allclose(b.residual_wrench, a.residual_wrench)  # the free joint has no armature


# --- (b) static hand check --------------------------------------------------------------------------


def _crouch(theta: float = 0.5) -> np.ndarray:
    """Upright trunk, arms down, hips flexed by θ, knees by 2θ, ankles dorsiflexed by θ: flat feet,
    knees in front of the ankles."""
    a = np.zeros((24, 3))
    a[0] = [np.pi / 2, 0.0, 0.0]
    a[16], a[17] = [0.0, 0.0, -1.35], [0.0, 0.0, 1.35]
    for hip, knee, ankle in ((1, 4, 7), (2, 5, 8)):
        a[hip, 0], a[knee, 0], a[ankle, 0] = -theta, 2 * theta, -theta
    return a


def test_static_crouch_with_the_weight_under_the_ankles():
    """Crouched, the body weight split evenly under the two ankle joint centres: the root needs no
    force (Newton: Σ forces = m g), and the knee torque equals the static moment balance of the
    shank + foot + toes by hand: the ground reaction passes behind the knee (knees over the toes), so
    it would flex the knee, and the thigh must pull the shank the other way: an **extension**
    moment, negative in ``sagittal``'s sign convention (positive = knee flexion)."""
    mass = 70.0
    motion = static_motion(_crouch(), duration_s=1.0, height_m=1.75, mass_kg=mass)
    n, w = motion.n_frames, mass * G
    grf = np.zeros((n, 2, 3))
    grf[..., 2] = w / 2
    cop = np.zeros((n, 2, 3))
    cop[:, :, :2] = motion.joint_pos_m[:, [7, 8], :2]
    idr = inverse_dynamics(motion, grf, cop, np.zeros((n, 2)))
    np.testing.assert_allclose(idr.residual_wrench[:, :3], 0.0, atol=1e-6 * w)
    tau = sagittal(idr.joint_torque_nm, motion.joint_rot_aa_rad)

    # by hand: moment about the knee of the ground reaction and of the weights below the knee
    hum = build_humanoid(skeleton_from_motion(motion), mass, motion.gender)
    m, d = hum.model, mujoco.MjData(hum.model)
    qpos = np.concatenate([motion.root_pos_m[0], rot.aa_to_quat(motion.joint_rot_aa_rad[0]).reshape(-1)])
    d.qpos[:] = hum.qpos_to_mj(qpos)
    mujoco.mj_kinematics(m, d)
    axis = global_rotations(motion.joint_rot_aa_rad[:1])[0, 0, :, 0]  # pelvis left axis
    for side, (knee, ankle, toe) in {"left": (4, 7, 10), "right": (5, 8, 11)}.items():
        p = d.xpos[hum.body_ids[knee]]
        moment = np.cross(cop[0, ankle - 7] - p, grf[0, ankle - 7])
        for j in (knee, ankle, toe):
            b = hum.body_ids[j]
            moment += np.cross(d.xipos[b] - p, np.array([0.0, 0.0, -m.body_mass[b] * G]))
        expected = -moment @ axis  # the thigh balances the external moment on the shank subtree
        got = tau[f"{side}_knee"]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert got[0] < -0.5 * mass  # an extensor moment of ≈ 1.1 N·m/kg at 2θ = 57° of knee flexion


def test_unknown_forces_leave_torques_undefined():
    motion = static_motion(_crouch(), duration_s=0.5)
    n = motion.n_frames
    grf = np.zeros((n, 2, 3))
    grf[..., 2] = motion.mass_kg * G / 2
    grf[3:6, 1] = np.nan
    idr = inverse_dynamics(motion, grf, np.full((n, 2, 3), np.nan), np.full((n, 2), np.nan))
    assert (idr.known == ~np.isin(np.arange(n), [3, 4, 5])).all()
    assert np.isnan(idr.joint_torque_nm[3:6]).all() and np.isnan(idr.residual_wrench[3:6]).all()
    assert np.isfinite(idr.joint_torque_nm[idr.known]).all()
    with pytest.raises(ValueError, match="expected grf"):
        inverse_dynamics(motion, grf[:-1], grf[:-1], grf[:-1, :, 0])


def test_sagittal_projection_ignores_segment_twist():
    """The pelvis-axis sagittal torque does not change when a segment's pose is twisted about its
    long axis and its torque expressed in the twisted frame (marker IK leaves such twists loose);
    the joint-local x component does."""
    rng = np.random.default_rng(0)
    n = 5
    pose = np.tile(_crouch()[None], (n, 1, 1))
    tau = rng.normal(size=(n, 23, 3))
    twisted = pose.copy()
    twist = rot.aa_to_rotmat(np.array([0.0, 1.2, 0.0]))  # about the shank's long axis (template y)
    twisted[:, 4] = rot.rotmat_to_aa(rot.aa_to_rotmat(pose[:, 4]) @ twist)
    twisted[:, 7] = rot.rotmat_to_aa(twist.T @ rot.aa_to_rotmat(pose[:, 7]))  # the foot keeps its pose
    tau_t = tau.copy()
    tau_t[:, 3] = tau[:, 3] @ twist  # the same world torque in the twisted shank frame: R_twistᵀ τ
    a, b = sagittal(tau, pose), sagittal(tau_t, twisted)
    np.testing.assert_allclose(a["left_knee"], b["left_knee"], atol=1e-9)
    np.testing.assert_allclose(a["left_ankle"], b["left_ankle"], atol=1e-9)
    assert not np.allclose(sagittal(tau)["left_knee"], sagittal(tau_t)["left_knee"])
    # untwisted: pelvis axis = the joints' local x when the legs only flex
    np.testing.assert_allclose(a["right_knee"], tau[:, 4, 0], atol=1e-9)


def test_lowpass_keeps_a_slow_motion_and_short_ones():
    motion = demo_motion("walk", 1.2, duration_s=2.0)
    low = lowpass_motion(motion, 6.0)
    assert np.abs(low.root_pos_m - motion.root_pos_m)[5:-5].max() < 0.01
    d = rot.quat_mul(rot.quat_conj(rot.aa_to_quat(low.joint_rot_aa_rad)), rot.aa_to_quat(motion.joint_rot_aa_rad))
    assert np.linalg.norm(rot.quat_to_aa(d), axis=-1)[5:-5].max() < 0.1
    short = dataclasses.replace(motion, **{k: getattr(motion, k)[:6] for k in
                                           ("time_s", "root_pos_m", "joint_rot_aa_rad", "joint_pos_m")})
    assert lowpass_motion(short, 6.0) is short
    with pytest.raises(ValueError, match="Nyquist"):
        lowpass_motion(motion, 20.0)


# --- (c) real walks -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def walks():
    from pipeline.process import BuildConfig, process_motion
    from pipeline.sources.base import get_source

    out = {}
    for rel in WALKS:
        raws = get_source("c3d").read(C3D_ROOT / rel, C3D_ROOT)
        out[rel] = process_motion(raws[0], BuildConfig())
    return out


def _stance_sides(p) -> list[int]:
    fz = np.nan_to_num(p.measured.grf_n[..., 2])
    return [f for f in (0, 1) if fz[:, f].max() > 0.8 * p.motion.mass_kg * G]


@needs_c3d
@pytest.mark.parametrize("rel", WALKS)
def test_walk_inverse_dynamics_within_published_ranges(walks, rel):
    """Sagittal peaks / body mass against normal walking (Winter 2009, Biomechanics and Motor
    Control of Human Movement): ankle plantarflexion ≈ 1.2–1.8,
    knee extension ≈ 0.5–1.2 (up to 1.5 fast), hip extension/flexion ≈ 0.5–1.2 N·m/kg; wide bands
    (anthropometric skeleton 2–4 cm off the labs' joint centres, default masses for walking2 and
    Gait). Measured here (6 Hz kinematics): ankle 1.15–1.47 on every measured stance, knee
    extension 0.9–1.45 (walking2 left: 0.34, its left stance is only partly on the plate), hip
    peaks: extension 0.25–0.97, flexion 0.55–1.28."""
    p = walks[rel]
    idr = p.inverse_dynamics
    mass = p.motion.mass_kg
    assert idr is not None and "torque" in p.subsets
    assert idr.known.sum() >= 20 and np.isnan(idr.joint_torque_nm[~idr.known]).all()
    tau = sagittal(idr.joint_torque_nm, p.motion.joint_rot_aa_rad)
    sides = _stance_sides(p)
    assert sides
    for f in sides:
        side = ("left", "right")[f]
        plantar = np.nanmax(tau[f"{side}_ankle"]) / mass
        assert 0.6 <= plantar <= 2.5, (side, plantar)
        assert np.nanmin(tau[f"{side}_ankle"]) / mass > -0.6  # no large dorsiflexor moment in stance
    knee_ext = max(-np.nanmin(tau[f"{('left', 'right')[f]}_knee"]) for f in sides) / mass
    assert 0.3 <= knee_ext <= 2.0, knee_ext
    for side in ("left", "right"):
        hip = tau[f"{side}_hip"] / mass
        assert np.nanmax(np.abs(hip)) <= 2.0
    res = np.linalg.norm(idr.residual_wrench[idr.known, :3], axis=-1) / (mass * G)
    assert np.median(res) < 0.25, np.median(res)


@needs_c3d
def test_gait_c3d_hip_knee_ankle_peaks(walks):
    """btk/others/Gait.c3d (the brief's reference walk): both stances on plates."""
    p = walks["btk/others/Gait.c3d"]
    mass = p.motion.mass_kg
    tau = {k: v / mass for k, v in sagittal(p.inverse_dynamics.joint_torque_nm, p.motion.joint_rot_aa_rad).items()}
    for side in ("left", "right"):
        assert 1.0 <= np.nanmax(tau[f"{side}_ankle"]) <= 1.8
        assert 0.6 <= -np.nanmin(tau[f"{side}_knee"]) <= 1.8
        assert 0.2 <= np.nanmax(tau[f"{side}_hip"]) <= 1.5  # extension
        assert 0.4 <= -np.nanmin(tau[f"{side}_hip"]) <= 1.6  # flexion (late stance)


@needs_c3d
def test_measured_sequence_payload_joins_the_torque_subset(walks):
    from pipeline.process import stage_payload
    from pipeline.store import load_schema, validate_arrays

    p = walks["btk/others/Gait.c3d"]
    frame, window, seq = stage_payload(p)
    n, w = p.motion.n_frames, len(window["window_start"])
    fixed = {"joint": 24, "bone": 23, "marker": 45, "foot_point": 4, "foot": 2, "actuated_joint": 23, "xyz": 3,
             "cubic_power": 4, "linear_power": 2, "beta": 16}
    schema = load_schema("torque")
    assert schema.version == "2.3.0" and not schema.arrays["seq_torque_source"].required
    assert validate_arrays(schema, frame, {**fixed, "frame": n}, required=list(frame)) == []
    assert validate_arrays(schema, window, {**fixed, "window": w}) == []
    assert seq["seq_torque_source"] == "inverse_dynamics" and seq["seq_grf_source"] == "force_plate"
    assert p.subsets == ("motion", "contact", "ground_reaction", "torque")
    tau = frame["joint_torque_nm"]
    assert tau.dtype == np.float32 and np.isnan(tau[~p.inverse_dynamics.known]).all()
    assert window["torque_coef_nm"].shape == (w, 2, 23, 3)
    # a window touching an unknown frame is NaN; a fully known window reproduces the mean torque
    starts = window["window_start"]
    full = [k for k, s in enumerate(starts) if p.inverse_dynamics.known[s:s + 15].all()]
    assert full
    k = full[0]
    seg = tau[starts[k]:starts[k] + 15].astype(np.float64)
    coef = window["torque_coef_nm"][k].astype(np.float64)
    np.testing.assert_allclose(coef[0] + coef[1] / 2, seg.mean(axis=0), atol=1e-2 * np.abs(seg).max())
    residual = p.inverse_dynamics.residual_wrench[:, :3].astype(np.float32)
    np.testing.assert_array_equal(frame["residual_force_n"], residual)
    again = measured_inverse_dynamics(p.motion, p.measured)
    np.testing.assert_array_equal(again.joint_torque_nm, p.inverse_dynamics.joint_torque_nm)


def test_kinematic_gaps_leave_torques_undefined():
    """A NaN pose (a gap): the reference splines need every frame, so no frame is known (no error:
    the sequence stays out of the torque subset)."""
    motion = static_motion(_crouch(), duration_s=0.5)
    n = motion.n_frames
    rot_aa = np.array(motion.joint_rot_aa_rad)
    rot_aa[5, 4] = np.nan
    gappy = dataclasses.replace(motion, joint_rot_aa_rad=rot_aa)
    grf = np.zeros((n, 2, 3))
    grf[..., 2] = motion.mass_kg * G / 2
    idr = inverse_dynamics(gappy, grf, np.full((n, 2, 3), np.nan), np.zeros((n, 2)))
    assert not idr.known.any() and np.isnan(idr.joint_torque_nm).all()
