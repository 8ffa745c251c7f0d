"""The dynamics pass (pipeline/dynamics.py): conditioning, the whole-sequence program, real lab walks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.dynamics import (GRAVITY_MPS2, DynamicsConfig, _edges, centroidal_state, condition, cutoff_for,
                               dynamics_pass, lifted_loaded_corners, program_matrix)
from pipeline.simulate import SimConfig, simulate
from pipeline.simulate.humanoid import build_humanoid, skeleton_from_motion
from pipeline.simulate.synthetic import demo_motion

C3D_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "c3d"
WALKS = ("opensim-core/walking2.c3d", "btk/PiG/PiG_Motion3_FF.c3d", "btk/others/Gait.c3d", "kineticstoolkit/walk.c3d")


def _humanoid(motion):
    return build_humanoid(skeleton_from_motion(motion), motion.mass_kg, motion.gender, SimConfig().humanoid, 1 / 480)


@pytest.fixture(scope="module")
def walk():
    return demo_motion("walk", 1.2, duration_s=3.0, fps_hz=30.0)


def test_cutoff_follows_speed():
    cfg = DynamicsConfig()
    assert cutoff_for(demo_motion("walk", 1.2, duration_s=2.0, fps_hz=30.0), cfg) == pytest.approx(6.0)
    fast = cutoff_for(demo_motion("run", 3.5, duration_s=2.0, fps_hz=30.0), cfg)
    assert 8.0 < fast <= cfg.fast_cutoff_hz
    run = demo_motion("run", 3.5, duration_s=2.0, fps_hz=30.0)
    steep = DynamicsConfig(fast_cutoff_hz=50.0, cutoff_slope_hz_per_mps=20.0)
    assert cutoff_for(run, steep) == pytest.approx(0.45 * run.fps_hz)  # always below Nyquist


def test_conditioning_is_zero_phase_and_keeps_smooth_motion(walk):
    out = condition(walk, 6.0)
    # a smooth 1 Hz gait barely changes and does not lag: the pelvis stays within a few mm
    assert np.abs(out.root_pos_m - walk.root_pos_m).max() < 0.01
    lagged = np.abs(out.root_pos_m[1:] - walk.root_pos_m[:-1]).mean()
    assert np.abs(out.root_pos_m - walk.root_pos_m).mean() < lagged
    # joint positions and sole points follow the filtered pose (forward kinematics)
    assert np.abs(out.joint_pos_m[:, 0] - out.root_pos_m).max() < 1e-5
    assert out.foot_points_m.shape == walk.foot_points_m.shape


def test_plan_explains_the_motion_with_contact_forces(walk):
    hum = _humanoid(walk)
    r = dynamics_pass(walk, hum)
    bw = hum.mass_kg * GRAVITY_MPS2
    m = r.metrics
    assert m["dyn_newton_residual_rms_bw"] < 0.03, m
    assert m["dyn_euler_residual_rms_nm"] < 25.0, m
    assert m["dyn_root_correction_max_m"] < 0.05, m
    # forces are unilateral and inside the friction pyramid (μ = 0.8) at every corner
    f = r.corner_force_n
    assert (f[..., 2] >= -1e-9).all()
    tang = np.linalg.norm(f[..., :2], axis=-1)
    assert (tang <= 0.8 * f[..., 2] + 1e-6).all()
    # impulse identity over the interior frames: Σ Fz·dt = m g T + m Δv_z (to the residual)
    fps = walk.fps_hz
    interior = slice(1, walk.n_frames - 1)
    impulse = r.foot_force_n[interior, :, 2].sum() / fps
    expected = bw * (walk.n_frames - 2) / fps
    assert impulse == pytest.approx(expected, rel=0.05)
    # a walk at 1.2 m/s: single-support peaks of a plausible size
    peak = r.foot_force_n[..., 2].max() / bw
    assert 1.0 < peak < 1.6, peak


def test_program_rows_are_the_physics_written_out():
    """Each row family of the program, evaluated at a random point, against the same physics
    computed frame by frame (Newton, Euler about the COM, floor, smoothness, plate targets)."""
    rng = np.random.default_rng(0)
    n, fps, mass = 9, 30.0, 70.0
    bw = mass * GRAVITY_MPS2
    cfg = DynamicsConfig(use_measured=True)
    com = rng.normal(size=(n, 3))
    L = rng.normal(size=(n, 3))
    corners = rng.normal(size=(n, 12, 3))
    cand = rng.random((n, 12)) < 0.4
    stance = rng.random((n, 2)) < 0.5
    low = rng.normal(size=(n, 2))
    meas = rng.normal(size=(n, 2, 3)) * 100
    meas[2, 1] = np.nan
    A, b, tc = program_matrix(fps, mass, com, L, corners, cand, stance, low, cfg, meas)
    k = len(tc)
    assert (tc == np.argwhere(cand)).all()
    assert A.shape[1] == 3 * n + 4 * k
    x = rng.normal(size=A.shape[1])
    res = A @ x - b
    dp = x[:3 * n].reshape(n, 3)
    beta = x[3 * n:].reshape(k, 4)
    f = np.zeros((n, 12, 3))
    f[tc[:, 0], tc[:, 1]] = beta @ _edges(cfg.mu)
    g = np.array([0.0, 0.0, -GRAVITY_MPS2])
    expected = []
    for t in range(n):  # Newton
        c = min(max(t, 1), n - 2)
        acc = (com[c + 1] - 2 * com[c] + com[c - 1]) * fps**2
        ddp = (dp[c + 1] - 2 * dp[c] + dp[c - 1]) * fps**2
        expected.append((f[t].sum(0) - mass * (acc + ddp) + mass * g) / (cfg.newton_tol_bw * bw))
    Ldot = np.gradient(L, axis=0) * fps
    for t in range(n):  # Euler
        expected.append((np.cross(corners[t] - com[t], f[t]).sum(0) - Ldot[t]) / cfg.euler_tol_nm)
    expected.append([(low[t, s] + dp[t, 2]) / cfg.floor_tol_m for t, s in np.argwhere(stance)])
    expected.append(dp.ravel() / cfg.correction_tol_m)
    for t in range(1, n - 1):
        tol = cfg.correction_acc_end_tol_mps2 if t in (1, n - 2) else cfg.correction_acc_tol_mps2
        expected.append((dp[t + 1] - 2 * dp[t] + dp[t - 1]) * fps**2 / tol)
    expected.append((np.diff(dp, axis=0) * fps / cfg.correction_rate_tol_mps).ravel())
    for t in range(n):  # plate targets where known
        for s in range(2):
            if np.isfinite(meas[t, s]).all():
                expected.append((f[t, 6 * s:6 * s + 6].sum(0) - meas[t, s]) / (cfg.measured_tol_bw * bw))
    i_f = tc[:, 0], tc[:, 1]
    expected.append((f[i_f][:, :2] / (cfg.tangential_tol_bw * bw)).ravel())
    expected.append(beta.ravel() / (cfg.force_ridge_bw * bw))
    expected = np.concatenate([np.ravel(e) for e in expected])
    assert res.shape == expected.shape
    np.testing.assert_allclose(res, expected, rtol=1e-9, atol=1e-9)


def test_flight_phases_carry_no_force():
    jump = demo_motion("jump", duration_s=4.0)  # 120 Hz source → 30 FPS canonical; ~11 flight frames
    hum = _humanoid(jump)
    cfg = DynamicsConfig()
    r = dynamics_pass(jump, hum, cfg)
    _, _, corners = centroidal_state(condition(jump, r.cutoff_hz), hum)
    flight = corners[..., 2].min(axis=1) > cfg.contact_height_m
    assert flight.sum() >= 3, "the demo jump has a flight phase"
    assert np.abs(r.foot_force_n[flight]).max() == 0.0
    assert r.foot_force_n[..., 2].sum(axis=1).max() / (hum.mass_kg * GRAVITY_MPS2) > 1.5  # take-off/landing, both feet


def test_a_rising_foot_carries_no_planned_force():
    """Take-off: a sole corner more than 1 cm up and rising faster than 0.3 m/s is leaving the floor;
    the plan may not push through it (before: the demo jump's plan kept 0.4–0.9 BW on feet 0–3 cm up
    for two frames after the simulated feet had left, and the humanoid jumped 12 cm too low)."""
    jump = demo_motion("jump", duration_s=4.0)
    hum = _humanoid(jump)
    cfg = DynamicsConfig()
    r = dynamics_pass(jump, hum, cfg)
    _, _, corners = centroidal_state(condition(jump, r.cutoff_hz), hum)
    vz = np.gradient(corners[..., 2], axis=0) * jump.fps_hz
    leaving = (corners[..., 2] > cfg.contact_lift_height_m) & (vz > cfg.contact_lift_speed_mps)
    assert leaving.any()
    assert np.abs(r.corner_force_n[leaving]).max() == 0.0
    # the take-off impulse still lifts the body: the plan explains the motion (Newton residual small)
    assert r.metrics["dyn_newton_residual_rms_bw"] < 0.05, r.metrics


def test_lifted_loaded_corners_needs_load_height_and_rise():
    cfg = DynamicsConfig()
    n, fps, bw = 5, 30.0, 700.0
    corners = np.zeros((n, 12, 3))
    vel = np.zeros((n, 12, 3))
    vel[:, 0, 2] = 1.0  # corner 0 rises at 1 m/s, corner 1 stays
    force = np.zeros((n, 12, 3))
    force[:, :2, 2] = 0.1 * bw
    lift = np.zeros((n, 3))
    assert not lifted_loaded_corners(corners, vel, force, lift, fps, bw, cfg).any()  # on the floor
    lift[:, 2] = 0.03  # the correction raises the body 3 cm
    off = lifted_loaded_corners(corners, vel, force, lift, fps, bw, cfg)
    assert off[:, 0].all() and not off[:, 1:].any()  # only the loaded corner that rises
    force[:, 0, 2] = 0.01 * bw  # below refine_load_bw
    assert not lifted_loaded_corners(corners, vel, force, lift, fps, bw, cfg).any()


def test_refinement_drops_loaded_corners_the_correction_lifted():
    """The correction raising a still-loaded take-off corner off the floor is a push the simulated
    foot cannot deliver: the refinement solves again without it."""
    jump = demo_motion("jump", duration_s=4.0)
    hum = _humanoid(jump)
    bw = hum.mass_kg * GRAVITY_MPS2
    raw_cfg = DynamicsConfig(contact_refinements=0)
    raw = dynamics_pass(jump, hum, raw_cfg)
    _, _, corners = centroidal_state(condition(jump, raw.cutoff_hz), hum)
    vel = np.gradient(corners, axis=0) * jump.fps_hz
    lifted = lifted_loaded_corners(corners, vel, raw.corner_force_n, raw.root_correction_m, jump.fps_hz, bw, raw_cfg)
    assert lifted.sum() >= 2, "the unrefined plan pushes through lifted take-off corners"
    refined = dynamics_pass(jump, hum, DynamicsConfig())
    assert np.abs(refined.corner_force_n[lifted]).max() == 0.0
    assert refined.metrics["dyn_newton_residual_rms_bw"] < 0.05, refined.metrics
    assert not np.allclose(refined.root_correction_m, raw.root_correction_m)


def test_simulation_with_the_dynamics_pass_records_how_far_it_moved(walk):
    cfg = SimConfig(dynamics=DynamicsConfig())
    res = simulate([walk], cfg)[0]
    assert res.dyn_root_correction_m.shape == (walk.n_frames, 3)
    assert res.metrics["dyn_root_correction_max_m"] == pytest.approx(
        np.linalg.norm(res.dyn_root_correction_m, axis=-1).max())
    assert res.metrics["dyn_cutoff_hz"] == pytest.approx(6.0)
    assert res.metrics["mpjpe_median_mm"] < 60.0
    assert simulate([walk], SimConfig(dynamics=None))[0].dyn_root_correction_m is None


def _real_walks():
    from pipeline.process import BuildConfig, process_motion
    from pipeline.sources.base import get_source

    src = get_source("c3d")
    return {rel: process_motion(src.read(C3D_ROOT / rel, C3D_ROOT)[0], BuildConfig()) for rel in WALKS}


@pytest.fixture(scope="module")
def real_walks():
    if not C3D_ROOT.is_dir():
        pytest.skip("real C3D samples absent (shared/data/MANIFEST.md)")
    return _real_walks()


def test_real_walks_plan_against_force_plates(real_walks):
    """The dynamics pass's own plan on the four shared lab walks (mean ‖F_plan − F_plate‖ / mass
    per foot, N/kg). Measured 2026-11-30 (benchmarks/physics_bench.py): blind 1.30/0.55,
    0.75/0.52, 0.50/0.51, 1.32/1.38; with the plates as targets 0.56/0.29, 0.17/0.15, 0.06/0.06,
    0.37/0.31."""
    for rel, p in real_walks.items():
        meas = p.measured
        hum = _humanoid(p.motion)
        for use, limit in ((False, 1.6), (True, 0.7)):
            r = dynamics_pass(p.motion, hum, DynamicsConfig(use_measured=use), meas.grf_n)
            for f in range(2):
                ok = np.isfinite(meas.grf_n[:, f]).all(-1)
                lam = np.linalg.norm(r.foot_force_n[ok, f] - meas.grf_n[ok, f], axis=-1).mean() / meas.mass_kg
                assert lam <= limit, (rel, "plates" if use else "blind", f, lam)


def test_real_walks_simulated_against_force_plates(real_walks):
    """Regression of the default engine on the four lab walks with the build's own validation
    metric (pipeline.quality.validation; ImDy's mean ‖F_sim − F_plate‖ / mass per foot).

    Measured 2026-12-02, fifth round (pass 0, with the landing seat): walking2 0.33/0.47 (its mass from
    its plates, 64.5 kg, and its four frames the plates saw incompletely unknown), PiG_Motion3_FF
    0.96/0.61, Gait 0.52/0.57, kineticstoolkit walk 0.46/0.66 N/kg (its stated 73.4 kg gives way to its
    plates' 81.3 kg) — mean 0.57 (fourth round 0.75; over 3 passes 0.53, benchmarks/physics_bench.py; the
    engine before the dynamics pass: 3.84); worst-foot peak vertical force error 2.6–7.5 % (the issue's
    ≤ 10 %); no resets; root residual torque capped at 1 N·m/kg, RMS 25–44 N·m (the issue's ≤ 50);
    uncapped residual force demand median ≤ 0.03 BW. The closed loop is sensitive (model changes of
    ~1 N·m move single walks by ±0.3 N/kg); the per-foot bound is the issue's target itself.
    Centre of pressure vs the plates (seventh round, pass 0): walking2 2.5 / 5.5 cm, PiG 8.9 / 8.3,
    Gait 2.6 / 5.1, kit walk 4.5 / 4.9 — bounded at 12 cm (a foot is ≈ 26 cm long).
    """
    from pipeline.quality.validation import cop_validation, grf_validation

    lams = []
    for rel, p in real_walks.items():
        r = simulate([p.motion], SimConfig())[0]
        v = grf_validation(r.grf_n, p.measured.grf_n, p.measured.mass_kg, p.motion.fps_hz)
        lam = [v["grf_vs_plate_err_left_n_per_kg"], v["grf_vs_plate_err_right_n_per_kg"]]
        lams += lam
        assert r.metrics["reset_count"] == 0, rel
        assert max(lam) <= 1.0, (rel, lam)
        # PiG_Motion3_FF's right-foot peak error depends on the pass (3 / 12 / 11 / 41 / 9 % in passes 0–4:
        # the simulated left heel lands a frame early in some; docs/simulation.md, eighth round)
        assert v["grf_peak_err_frac"] <= 0.10, (rel, v)
        assert r.metrics["residual_force_demand_median_bw"] <= 0.05, (rel, r.metrics)
        torque_rms = np.sqrt(np.mean(np.sum(r.residual_wrench[:, 3:] ** 2, axis=-1)))
        assert torque_rms <= 50.0, (rel, torque_rms)
        cop = cop_validation(r.cop_m, p.measured.cop_m, p.measured.grf_n, p.measured.mass_kg)
        assert max(cop.values()) <= 0.12, (rel, cop)
    assert np.mean(lams) <= 0.65, lams
