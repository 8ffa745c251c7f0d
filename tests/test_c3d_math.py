"""Pure C3D math (no files): plate wrench/COP/free moment, type equivalences, baseline, gaps, up axis."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.lab import forceplate as fp
from pipeline.lab import markers as ml

CORNERS = np.array([[600.0, 0, 0], [0, 0, 0], [0, 400, 0], [600, 400, 0]])  # plate z down, mm


def _point_load(n=200, cop=(0.05, -0.08), tz=3.0):
    """A GRF F applied at COP (plate frame, relative to the surface centre) with free moment tz about up."""
    rng = np.random.default_rng(0)
    f = np.stack([rng.normal(0, 30, n), rng.normal(0, 30, n), -np.linspace(100, 800, n)], axis=1)  # raw Fz < 0 loaded
    p = np.array([cop[0], cop[1], 0.0])
    m_c = np.cross(p, f) + np.array([0, 0, -tz])  # plate z is down: +tz about up = −tz about plate z
    return f, m_c


def test_cop_and_free_moment_recover_point_load():
    geom = fp.plate_geometry(CORNERS, np.array([0, 0, -40.0]), 2, 1e-3)
    np.testing.assert_allclose(geom.up, [0, 0, 1], atol=1e-12)
    f_loc, m_loc = _point_load()
    R = geom.rotation
    cop, free = fp.cop_and_free_moment(f_loc @ R.T, m_loc @ R.T, geom.centre_m, geom.up, threshold_n=20)
    np.testing.assert_allclose(cop, np.repeat((geom.centre_m + R @ [0.05, -0.08, 0])[None], len(cop), 0), atol=1e-9)
    np.testing.assert_allclose(free, 3.0, atol=1e-9)
    small = fp.cop_and_free_moment(np.array([[0, 0, 10.0]]), np.zeros((1, 3)), geom.centre_m, geom.up, 20)
    assert np.isnan(small[0]).all() and np.isnan(small[1]).all()


def test_type2_type3_type4_type1_agree():
    f_loc, m_c = _point_load()
    r = np.array([1.0, -2.0, -40.0])  # ORIGIN, mm: C − O in the plate frame
    m_o = m_c - np.cross(f_loc, r * 1e-3)
    ch2 = np.concatenate([f_loc.T, m_o.T * 1e3])  # N and N·mm
    _, _, m2 = fp.local_wrench(ch2, 2, r * 1e-3, None, 1.0, 1e-3, 1e-3)
    np.testing.assert_allclose(m2, m_c, atol=1e-9)
    # Vicon-convention ORIGIN (z > 0) is negated like ezc3d does.
    assert fp.plate_geometry(CORNERS, -r, 2, 1e-3).r_plate_m[2] < 0
    cal = np.eye(6) * 2.0
    _, _, m4 = fp.local_wrench(ch2 / 2.0, 4, r * 1e-3, cal, 1.0, 1e-3, 1e-3)
    np.testing.assert_allclose(m4, m_c, atol=1e-9)
    # TYPE-1: Fx Fy Fz Px Py Tz with COP in mm.
    cop = np.array([50.0, -80.0])
    ch1 = np.concatenate([f_loc.T, np.repeat(cop[:, None], len(f_loc), 1), -3.0e3 * np.ones((1, len(f_loc)))])
    _, _, m1 = fp.local_wrench(ch1, 1, np.zeros(3), None, 1.0, 1e-3, 1e-3)
    np.testing.assert_allclose(m1, m_c, atol=1e-9)
    # TYPE-3 (Kistler): four corner sensors at (±a, ±b, az0); build the 8 channels from a load.
    a, b, az0 = 0.12, 0.2, -0.04
    fz = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)  # sensor 1..4 positions (x, y) signs
    # Solve for fz1..fz4 matching Fz, Mx, My of the load about the sensor plane (least squares, exact here).
    m_s = m_c - np.cross(f_loc, np.array([0, 0, az0]))
    A = np.stack([np.ones(4), b * np.array([1, 1, -1, -1]), a * np.array([-1, 1, 1, -1])])
    fzs = np.linalg.lstsq(A, np.stack([f_loc[:, 2], m_s[:, 0], m_s[:, 1]]), rcond=None)[0]
    # shear: fx12 + fx34 = Fx, b(−fx12 + fx34) + a(fy14 − fy23) = Mz; choose fy14 = fy23 = Fy/2.
    fx34 = (f_loc[:, 0] + m_s[:, 2] / b) / 2
    fx12 = f_loc[:, 0] - fx34
    ch3 = np.stack([fx12, fx34, f_loc[:, 1] / 2, f_loc[:, 1] / 2, *fzs])
    f3, _, m3 = fp.local_wrench(ch3, 3, np.array([a, b, az0]), None, 1.0, 1.0, 1e-3)
    np.testing.assert_allclose(f3, f_loc, atol=1e-9)
    np.testing.assert_allclose(m3, m_c, atol=1e-9)
    assert fz.shape == (4, 2)


def test_baseline_window_finds_unloaded_part():
    rate = 1000.0
    fz = np.r_[np.full(500, 14.0), -np.hanning(1000) * 800 + 14.0, np.full(500, 14.0)]
    fz = fz + np.random.default_rng(1).normal(0, 0.5, fz.size)
    win = fp.baseline_window(fz, rate)
    assert abs(np.median(fz[win]) - 14.0) < 0.5


def test_lowpass_resample_and_times():
    t = fp.canonical_times(1249, 250.0, 30.0)
    assert t[-1] <= 1248 / 250 and len(t) == int(np.floor(1248 / 250 * 30 + 1e-9)) + 1
    rate = 1000.0
    ts = np.arange(3000) / rate
    x = np.sin(2 * np.pi * 2 * ts) + 0.5 * np.sin(2 * np.pi * 100 * ts)
    y = fp.lowpass(x, rate, 12.0)
    np.testing.assert_allclose(y[200:-200], np.sin(2 * np.pi * 2 * ts)[200:-200], atol=0.01)  # zero phase
    tq = np.arange(0, 2.99, 1 / 29.97)  # non-integer ratio
    r = fp.resample_linear(y[:, None], rate, tq)[:, 0]
    np.testing.assert_allclose(r[10:-10], np.sin(2 * np.pi * 2 * tq)[10:-10], atol=0.01)


def test_fill_gaps_reports_and_limits():
    T = 100
    t = np.arange(T) / 100
    x = np.stack([np.sin(t), np.cos(t), t], axis=1)[:, None, :].repeat(2, axis=1)
    truth = x.copy()
    x[10:15, 0] = np.nan  # short interior gap: filled
    x[40:60, 0] = np.nan  # long gap: kept
    x[:3, 1] = np.nan  # leading gap: never extrapolated
    filled, rep = ml.fill_gaps(x, max_gap=10)
    np.testing.assert_allclose(filled[10:15, 0], truth[10:15, 0], atol=1e-5)
    assert np.isnan(filled[40:60, 0]).all() and np.isnan(filled[:3, 1]).all()
    assert rep[0] == ml.GapReport(filled=1, unfilled=1, longest_unfilled=20, missing_after=20)
    assert rep[1].unfilled == 1 and rep[1].longest_unfilled == 3


@pytest.mark.parametrize("up", ["z", "y", "x", "-z", "-y", "-x"])
def test_up_rotations_are_proper_and_map_up_to_z(up):
    R = ml.UP_ROTATIONS[up]
    v = np.zeros(3)
    v["xyz".index(up[-1])] = -1.0 if up.startswith("-") else 1.0
    np.testing.assert_allclose(R @ v, [0, 0, 1])
    assert np.isclose(np.linalg.det(R), 1.0)
    if up == "y":
        np.testing.assert_allclose(ml.to_z_up(np.array([1.0, 2.0, 3.0]), "y"), [1, -3, 2])


def test_up_axis_detection_from_markers_and_plates():
    rng = np.random.default_rng(2)
    T, M = 50, 30
    body = np.stack([rng.uniform(-0.2, 0.2, M), rng.uniform(-0.15, 0.15, M), np.r_[rng.uniform(0, 0.2, 6), rng.uniform(0.8, 1.7, M - 6)]], 1)
    z_up = body[None].repeat(T, 0) + np.array([1.0, 2.0, 0.0])
    assert ml.up_axis_from_markers(z_up) == "z"
    y_up = z_up @ ml.UP_ROTATIONS["y"]  # inverse rotation: z-up -> y-up lab
    assert ml.up_axis_from_markers(y_up) == "y"
    assert ml.detect_up_axis(y_up, [np.array([0, 0.999, 0.01])]) == ("y", "force_plates")
    assert ml.detect_up_axis(y_up, [np.array([0, 1.0, 0]), np.array([0, 0, 1.0])]) == ("y", "markers")
