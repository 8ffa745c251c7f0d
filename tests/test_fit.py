"""Tests for pipeline.fit: sliding windows and vectorized polynomial least squares."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from pipeline.fit import (
    GRF_DEGREE,
    KINEMATICS_DEGREE,
    TORQUE_DEGREE,
    FitResult,
    WindowConfig,
    evaluate_windows,
    fit_windows,
    normalized_time,
    window_starts,
)


def _coef_in_u(a: np.ndarray, start: int, length: int) -> np.ndarray:
    """Analytic coefficients in u of p(t) = sum_k a_k t**k with t = start + (length - 1) u."""
    d = len(a) - 1
    h = length - 1
    return np.array(
        [sum(a[k] * comb(k, j) * start ** (k - j) * h**j for k in range(j, d + 1)) for j in range(d + 1)]
    )


# --- windows -------------------------------------------------------------------------------------


def test_degree_constants():
    assert (KINEMATICS_DEGREE, GRF_DEGREE, TORQUE_DEGREE) == (3, 3, 1)


def test_window_config_defaults_and_validation():
    cfg = WindowConfig()
    assert (cfg.length, cfg.stride) == (15, 5)
    with pytest.raises(ValueError, match="length"):
        WindowConfig(length=3)  # cubic needs ≥ 4 frames
    with pytest.raises(ValueError, match="stride"):
        WindowConfig(stride=0)
    WindowConfig(length=4, stride=1)  # smallest valid


def test_window_starts_regular_grid_when_it_ends_exactly():
    # 15 + 5 * 3 = 30 frames: last regular window ends on the last frame, nothing appended
    np.testing.assert_array_equal(window_starts(30, 15, 5), [0, 5, 10, 15])
    assert window_starts(30, 15, 5).dtype == np.int64


def test_window_starts_appends_end_aligned_window():
    s = window_starts(33, 15, 5)
    np.testing.assert_array_equal(s, [0, 5, 10, 15, 18])
    covered = np.zeros(33, bool)
    for st in s:
        covered[st : st + 15] = True
    assert covered.all()
    assert np.all(np.diff(s) > 0)


@pytest.mark.parametrize("n", [15, 16, 19, 20, 21, 100, 107999, 108000])
def test_window_starts_cover_every_frame(n):
    s = window_starts(n, 15, 5)
    assert s[0] == 0 and s[-1] == n - 15
    assert np.all(np.diff(s) > 0) and np.all(np.diff(s) <= 5)


def test_window_starts_short_input_gives_zero_windows():
    assert window_starts(14, 15, 5).shape == (0,)
    assert window_starts(0, 15, 5).shape == (0,)
    np.testing.assert_array_equal(window_starts(15, 15, 5), [0])
    res = fit_windows(np.zeros((14, 24, 3)), window_starts(14, 15, 5), 15, 3)
    assert res.coef.shape == (0, 4, 24, 3) and res.rmse.shape == (0,)
    assert evaluate_windows(res.coef, 15).shape == (0, 15, 24, 3)


def test_normalized_time():
    u = normalized_time(15)
    assert u.shape == (15,) and u[0] == 0.0 and u[-1] == 1.0
    np.testing.assert_allclose(np.diff(u), 1 / 14)


# --- fitting -------------------------------------------------------------------------------------


def test_cubic_reproduced_exactly():
    a = np.array([0.3, -0.02, 1.5e-3, -4e-6])  # p(t), t in frames
    t = np.arange(200, dtype=np.float64)
    x = np.polynomial.polynomial.polyval(t, a)
    starts = window_starts(200, 15, 5)
    res = fit_windows(x, starts, 15, KINEMATICS_DEGREE)
    assert isinstance(res, FitResult) and res.degree == 3
    assert res.coef.shape == (len(starts), 4)
    expected = np.stack([_coef_in_u(a, int(s), 15) for s in starts])
    np.testing.assert_allclose(res.coef, expected, rtol=1e-9, atol=1e-9)
    assert np.all(res.rmse < 1e-9)
    recon = evaluate_windows(res.coef, 15)
    idx = starts[:, None] + np.arange(15)
    np.testing.assert_allclose(recon, x[idx], atol=1e-9)


def test_linear_fit_of_linear_signal_exact():
    t = np.arange(60, dtype=np.float64)
    x = np.stack([2.0 - 0.5 * t, 10.0 + 3.0 * t], axis=1)  # (60, 2)
    starts = window_starts(60, 15, 5)
    res = fit_windows(x, starts, 15, TORQUE_DEGREE)
    assert res.coef.shape == (len(starts), 2, 2)
    np.testing.assert_allclose(res.coef[:, 0, 0], 2.0 - 0.5 * starts, atol=1e-12)
    np.testing.assert_allclose(res.coef[:, 1, 0], -0.5 * 14, atol=1e-12)
    np.testing.assert_allclose(res.coef[:, 0, 1], 10.0 + 3.0 * starts, atol=1e-12)
    np.testing.assert_allclose(res.coef[:, 1, 1], 3.0 * 14, atol=1e-12)
    assert np.all(res.rmse < 1e-9)


def test_linear_fit_of_cubic_has_residual():
    t = np.linspace(0, 1, 15)
    res = fit_windows(t**3, np.array([0]), 15, 1)
    assert res.rmse[0] > 1e-2  # a line cannot follow a cubic: rmse must be noticeably > 0


def test_rmse_of_known_noise():
    # Pure noise, degree 0 fit over one long window: rmse = population std of the samples.
    rng = np.random.default_rng(0)
    e = rng.normal(0.0, 0.01, size=(400, 3))
    res = fit_windows(e, np.array([0]), 400, 0)
    np.testing.assert_allclose(res.rmse[0], np.sqrt(np.mean((e - e.mean(axis=0)) ** 2)), rtol=1e-12)
    # Cubic fit of noise over 15-frame windows: E[rmse^2] = sigma^2 (L - d - 1) / L.
    sigma = 0.02
    x = rng.normal(0.0, sigma, size=(30_000, 24, 3))
    res = fit_windows(x, window_starts(30_000, 15, 5), 15, 3)
    np.testing.assert_allclose(np.mean(res.rmse**2), sigma**2 * (15 - 4) / 15, rtol=0.01)
    # ...and the rmse equals the directly computed residual of the reconstruction.
    recon = evaluate_windows(res.coef[:10], 15)
    idx = window_starts(30_000, 15, 5)[:10, None] + np.arange(15)
    np.testing.assert_allclose(res.rmse[:10], np.sqrt(np.mean((x[idx] - recon) ** 2, axis=(1, 2, 3))))


def test_nan_isolated_to_windows_containing_it():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 24, 3))
    x[47, 5, 2] = np.nan
    starts = window_starts(100, 15, 5)
    res = fit_windows(x, starts, 15, 3)
    contains = (starts <= 47) & (47 < starts + 15)
    assert contains.sum() == 3
    assert np.all(np.isnan(res.rmse[contains]))
    assert np.all(np.isnan(res.coef[contains]))  # whole window, all channels
    assert np.all(np.isfinite(res.rmse[~contains]))
    assert np.all(np.isfinite(res.coef[~contains]))
    clean = fit_windows(np.nan_to_num(x), starts, 15, 3)
    np.testing.assert_array_equal(res.coef[~contains], clean.coef[~contains])


def test_shapes_with_trailing_dims_and_dtype():
    x = np.random.default_rng(2).normal(size=(64, 24, 3)).astype(np.float32)
    starts = window_starts(64, 15, 5)
    res = fit_windows(x, starts, 15, 3)
    assert res.coef.shape == (len(starts), 4, 24, 3) and res.coef.dtype == np.float64
    assert res.rmse.shape == (len(starts),)
    assert evaluate_windows(res.coef, 15).shape == (len(starts), 15, 24, 3)
    # per-channel fit equals fitting the channel alone
    one = fit_windows(x[:, 7, 1], starts, 15, 3)
    np.testing.assert_allclose(res.coef[:, :, 7, 1], one.coef, atol=1e-10)


def test_block_boundaries_do_not_change_result(monkeypatch):
    import pipeline.fit as fit

    x = np.random.default_rng(3).normal(size=(500, 24, 3))
    starts = window_starts(500, 15, 5)
    ref = fit_windows(x, starts, 15, 3)
    monkeypatch.setattr(fit, "_BLOCK_ELEMENTS", 24 * 3 * 15 * 7)  # 7 windows per block
    x[250, 0, 0] = np.nan
    got = fit.fit_windows(x, starts, 15, 3)
    contains = (starts <= 250) & (250 < starts + 15)
    np.testing.assert_allclose(got.coef[~contains], ref.coef[~contains], atol=1e-12)
    assert np.isnan(got.rmse[contains]).all() and np.isfinite(got.rmse[~contains]).all()


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 5])
def test_matches_numpy_polyfit_per_window(degree):
    rng = np.random.default_rng(10 + degree)
    n, length = 173, 17
    x = np.cumsum(rng.normal(size=(n, 4, 3)), axis=0) + rng.normal(scale=5, size=(1, 4, 3))
    starts = np.sort(rng.choice(n - length + 1, size=25, replace=False))
    res = fit_windows(x, starts, length, degree)
    u = normalized_time(length)
    for w, s in enumerate(starts):
        seg = x[s : s + length].reshape(length, -1)
        ref = np.polynomial.polynomial.polyfit(u, seg, degree)  # (d+1, 12), increasing powers
        np.testing.assert_allclose(res.coef[w].reshape(degree + 1, -1), ref, rtol=1e-8, atol=1e-8)
        fitted = np.polynomial.polynomial.polyval(u, ref).T
        np.testing.assert_allclose(res.rmse[w], np.sqrt(np.mean((seg - fitted) ** 2)), rtol=1e-8)


def test_invalid_arguments():
    x = np.zeros((30, 3))
    with pytest.raises(ValueError, match="too short"):
        fit_windows(x, np.array([0]), 3, 3)
    with pytest.raises(ValueError, match="starts"):
        fit_windows(x, np.array([16]), 15, 3)
    with pytest.raises(ValueError, match="starts"):
        fit_windows(x, np.array([-1]), 15, 3)
    with pytest.raises(ValueError, match="starts"):
        fit_windows(x, np.array([0.0]), 15, 3)
    with pytest.raises(ValueError):
        window_starts(30, 15, 0)


def test_inf_isolated_like_nan():
    x = np.random.default_rng(4).normal(size=(60, 5))
    x[0, 2] = np.inf
    x[59, 4] = -np.inf
    starts = window_starts(60, 15, 5)
    res = fit_windows(x, starts, 15, 3)
    bad = (starts == 0) | (starts + 15 == 60)
    assert np.isnan(res.rmse[bad]).all() and np.isnan(res.coef[bad]).all()
    assert np.isfinite(res.rmse[~bad]).all() and np.isfinite(res.coef[~bad]).all()
