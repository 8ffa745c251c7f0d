"""Simulated vs measured metrics (``pipeline.quality.validation``) on synthetic arrays, and their
quality providers (info only: no rule uses them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.quality.flags import Thresholds
from pipeline.quality.metrics import CATALOG, compute_metrics
from pipeline.quality.validation import (
    cop_validation,
    grf_validation,
    to_intervals,
    torque_validation,
    validation_metrics,
)

FPS = 30.0
MASS = 70.0
BW = MASS * 9.81


def _gait(n: int = 105) -> np.ndarray:
    """(n, 2, 3) per-foot GRF: alternating half-sine stances of 0.6 s peaking at 1.1 BW, swing 0
    (every stance ends ≥ 0.1 s before the last frame)."""
    t = np.arange(n) / FPS
    grf = np.zeros((n, 2, 3))
    for f, start in enumerate((0.1, 0.6)):
        for s0 in (start, start + 1.0, start + 2.0):
            u = (t - s0) / 0.6
            inside = (u >= 0) & (u <= 1)
            grf[inside, f, 2] += 1.1 * BW * np.sin(np.pi * u[inside])
            grf[inside, f, 1] += 0.2 * BW * np.sin(2 * np.pi * u[inside])
    return grf


def _cop(grf: np.ndarray) -> np.ndarray:
    """(n, 2, 3) centres of pressure rolling heel to toe (0.25 m forward) under each loaded foot
    (feet 0.2 m apart), NaN where the foot carries < 20 N."""
    n = grf.shape[0]
    t = np.arange(n) / FPS
    cop = np.zeros((n, 2, 3))
    cop[:, :, 0] = 1.2 * t[:, None] + 0.25 * np.sin(np.pi * t)[:, None] ** 2
    cop[:, 0, 1], cop[:, 1, 1] = 0.1, -0.1
    cop[grf[..., 2] < 20.0] = np.nan
    return cop


def test_to_intervals_is_the_trapezoid_mean():
    x = np.array([0.0, 2.0, 4.0, np.nan, 1.0])
    np.testing.assert_allclose(to_intervals(x), [1.0, 3.0, np.nan, np.nan, 1.0])
    y = np.arange(12.0).reshape(4, 3)
    np.testing.assert_allclose(to_intervals(y)[:-1], y[:-1] + 1.5)


def test_identical_forces_give_zero_error_and_offsets_read_back():
    plate = _gait()
    sim = to_intervals(plate)  # a perfect simulation: the interval means of the plate signal
    m = grf_validation(sim, plate, MASS, FPS)
    assert m["grf_vs_plate_err_left_n_per_kg"] == pytest.approx(0.0, abs=1e-9)
    assert m["grf_peak_err_frac"] == pytest.approx(0.0, abs=1e-9)
    assert m["grf_impulse_err_frac"] == pytest.approx(0.0, abs=1e-9)
    off = sim + np.array([0.0, 0.0, 35.0])  # 35 N too much on every frame, both feet
    m = grf_validation(off, plate, MASS, FPS)
    assert m["grf_vs_plate_err_left_n_per_kg"] == pytest.approx(35.0 / MASS)
    assert m["grf_vs_plate_err_right_n_per_kg"] == pytest.approx(35.0 / MASS)


def test_peak_and_impulse_errors():
    plate = _gait()
    sim = to_intervals(plate)
    high = sim.copy()
    high[..., 2] *= 1.2  # 20 % too much vertical force
    m = grf_validation(high, plate, MASS, FPS)
    assert m["grf_peak_err_frac"] == pytest.approx(0.2, rel=1e-6)
    assert m["grf_impulse_err_frac"] == pytest.approx(0.2, rel=1e-6)
    # a simulated stance 2 frames late keeps its impulse (the window is widened by 0.1 s)
    late = np.zeros_like(sim)
    late[2:] = sim[:-2]
    m = grf_validation(late, plate, MASS, FPS)
    assert m["grf_impulse_err_frac"] < 0.02
    assert m["grf_vs_plate_err_left_n_per_kg"] > 1.0  # but the per-frame error sees the lag


def test_unknown_plate_frames_are_skipped():
    plate = _gait()
    sim = to_intervals(plate).copy()
    plate_partial = plate.copy()
    plate_partial[40:, 0] = np.nan  # the left foot leaves the plates' area
    sim[41:, 0] += 500.0  # anything there must not count
    m = grf_validation(sim, plate_partial, MASS, FPS)
    assert m["grf_vs_plate_err_left_n_per_kg"] == pytest.approx(0.0, abs=1e-9)
    none = np.full_like(plate, np.nan)
    m = grf_validation(sim, none, MASS, FPS)
    assert all(math.isnan(v) for v in m.values())
    # only swing known (plate zero): no stance → peak/impulse not measurable
    swing = np.where(plate[..., 2:3] > 0, np.nan, plate)
    m = grf_validation(np.zeros_like(plate), swing, MASS, FPS)
    assert math.isnan(m["grf_peak_err_frac"]) and m["grf_vs_plate_err_left_n_per_kg"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        grf_validation(sim[:-1], plate, MASS, FPS)


def test_torque_rmse_sagittal_local_and_per_joint():
    rng = np.random.default_rng(1)
    n = 60
    ident = rng.normal(scale=50.0, size=(n, 23, 3))
    sim = to_intervals(ident).copy()
    m = torque_validation(sim, ident, MASS)
    assert m["torque_vs_id_rmse_nm_per_kg"] == pytest.approx(0.0, abs=1e-12)
    sim[:, 3, 0] += 14.0  # left knee (joint 4), flexion axis: +14 N·m
    sim[:, 7, 1] += 99.0  # left ankle about its long axis: not sagittal, must not count
    m = torque_validation(sim, ident, MASS)
    assert m["torque_vs_id_rmse_knee_nm_per_kg"] == pytest.approx(14.0 / np.sqrt(2) / MASS)  # both knees pooled
    assert m["torque_vs_id_rmse_nm_per_kg"] == pytest.approx(14.0 / np.sqrt(6) / MASS)
    assert m["torque_vs_id_rmse_hip_nm_per_kg"] == pytest.approx(0.0, abs=1e-12)
    assert m["torque_vs_id_rmse_ankle_nm_per_kg"] == pytest.approx(0.0, abs=1e-12)
    unknown = ident.copy()
    unknown[:30] = np.nan
    m = torque_validation(sim, unknown, MASS)
    assert np.isfinite(m["torque_vs_id_rmse_nm_per_kg"])
    assert math.isnan(torque_validation(sim, np.full_like(ident, np.nan), MASS)["torque_vs_id_rmse_nm_per_kg"])


def test_providers_fill_the_row_and_no_rule_uses_them():
    n = 105
    plate = _gait(n)
    rng = np.random.default_rng(2)
    tau = rng.normal(scale=30.0, size=(n, 23, 3))
    arrays = {"time_s": np.arange(n) / FPS, "grf_n": to_intervals(plate), "plate_grf_n": plate,
              "cop_m": to_intervals(_cop(plate)), "plate_cop_m": _cop(plate),
              "joint_torque_nm": to_intervals(tau), "id_joint_torque_nm": tau}
    meta = {"seq_id": "x#pass0", "mass_kg": MASS, "fps_hz": FPS}
    row = compute_metrics(arrays, meta)
    names = ("grf_vs_plate_err_left_n_per_kg", "grf_vs_plate_err_right_n_per_kg", "grf_peak_err_frac",
             "grf_impulse_err_frac", "torque_vs_id_rmse_nm_per_kg", "torque_vs_id_rmse_hip_nm_per_kg",
             "torque_vs_id_rmse_knee_nm_per_kg", "torque_vs_id_rmse_ankle_nm_per_kg", "cop_vs_plate_err_left_m",
             "cop_vs_plate_err_right_m")
    for name in names:
        assert CATALOG[name].stage == "validation"
        assert row[name] == pytest.approx(0.0, abs=1e-9), name
    assert validation_metrics(arrays, MASS, FPS).keys() == set(names)
    assert not any(r.metric in names for r in Thresholds.default().rules)
    # a pass without measured forces has none of them
    plain = compute_metrics({k: v for k, v in arrays.items() if not k.startswith(("plate", "id_"))}, meta)
    assert not set(names) & set(plain)


def test_cop_error_reads_back_a_shift_and_ignores_light_loads():
    plate = _gait()
    cop = _cop(plate)
    sim = to_intervals(cop)  # the perfect simulation's centres of pressure
    m = cop_validation(sim, cop, plate, MASS)
    assert m["cop_vs_plate_err_left_m"] == pytest.approx(0.0, abs=1e-12)
    assert m["cop_vs_plate_err_right_m"] == pytest.approx(0.0, abs=1e-12)
    # 3 cm forward and 4 cm sideways on the left foot: 5 cm; a vertical offset does not count
    shifted = sim.copy()
    shifted[:, 0] += [0.03, 0.04, 0.5]
    m = cop_validation(shifted, cop, plate, MASS)
    assert m["cop_vs_plate_err_left_m"] == pytest.approx(0.05, rel=1e-9)
    assert m["cop_vs_plate_err_right_m"] == pytest.approx(0.0, abs=1e-12)
    # a wild centre of pressure where the plate carries < 0.2 BW is not counted
    light = to_intervals(plate[..., 2])[:, 0] < 0.2 * BW
    assert light.any() and (~light & np.isfinite(sim[:, 0, 0])).any()
    wild = sim.copy()
    wild[light & np.isfinite(wild[:, 0, 0]), 0, :2] += 1.0
    assert cop_validation(wild, cop, plate, MASS)["cop_vs_plate_err_left_m"] == pytest.approx(0.0, abs=1e-12)
    # a foot the simulation never loads has no error, and bad shapes are refused
    none = sim.copy()
    none[:, 1] = np.nan
    assert math.isnan(cop_validation(none, cop, plate, MASS)["cop_vs_plate_err_right_m"])
    with pytest.raises(ValueError, match="centres of pressure"):
        cop_validation(sim[:, :1], cop, plate, MASS)
