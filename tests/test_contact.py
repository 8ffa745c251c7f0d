"""Tests for pipeline.contact: hysteresis contact labels on an analytic gait."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.contact import (
    ContactConfig,
    _flip_short_runs,
    contact_labels,
    foot_contact,
    horizontal_speed,
    hysteresis,
)
from pipeline.skeleton import FOOT_POINT_NAMES

FPS = 30.0


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of True in a 1-D bool array."""
    e = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(e == 1).tolist(), np.flatnonzero(e == -1).tolist()))


def _point_track(
    stances: list[tuple[int, int]], n: int, x0: float, y: float, step_m: float, lift_m: float, profile: str
):
    """(n, 3) track of one sole point and its (n,) true contact mask.

    On the ground (z = 0) and fixed during each stance [a, b); between two stances it moves
    forward by ``step_m`` with a parabolic lift of peak ``lift_m``. Horizontally the swing is
    either ``"constant"`` speed (abrupt start/stop: the hardest case for central differences)
    or ``"smooth"`` (cycloid s - sin(2πs)/2π: zero speed at lift-off and strike, as real feet).
    Before the first stance / after the last one the point is in the middle of a swing.
    """
    t = np.arange(n, dtype=np.float64)
    truth = np.zeros(n, bool)
    pos = np.zeros((n, 3))
    pos[:, 1] = y
    x = x0 - step_m
    pos[:, 0] = np.nan
    for k, (a, b) in enumerate(stances):
        x += step_m
        truth[min(max(a, 0), n) : max(min(b, n), 0)] = True
        pos[min(max(a, 0), n) : max(min(b, n), 0), 0] = x
        if k + 1 == len(stances):
            break
        e, nb = b - 1, stances[k + 1][0]  # last stance frame, first frame of the next stance
        sel = (t > e) & (t < nb)
        s = (t[sel] - e) / (nb - e)
        shape = s if profile == "constant" else s - np.sin(2 * np.pi * s) / (2 * np.pi)
        pos[sel, 0] = x + step_m * shape
        pos[sel, 2] = 4.0 * lift_m * s * (1.0 - s)
    assert np.isfinite(pos).all()
    return pos, truth


def _gait(profile: str = "smooth", n_cycles: int = 8, period: int = 44, step_m: float = 1.4):
    """Slow walk at 30 FPS: (T, 4, 3) sole points and (T, 4) true contact.

    Per foot and cycle of ``period`` frames (1.47 s, stride 1.4 m): heel stance frames [0, 28)
    (heel strike at 0, heel-off at 28), toe stance [3, 31) (toe-on after heel strike, toe-off
    after heel-off). Swings span 17 frame intervals: 1.4 m / 0.567 s ≈ 2.5 m/s mean forward
    speed; lifts 10 cm (heel) and 8 cm (toe). The right foot lags the left by half a cycle, so
    there is double support. Stances of the cycles before/after the sequence pad both ends.
    """
    n = n_cycles * period
    phases = {"heel": (0, 28, 0.10, 0.0), "toe": (3, 31, 0.08, 0.2)}
    pts, truth = np.zeros((n, 4, 3)), np.zeros((n, 4), bool)
    for j, name in enumerate(FOOT_POINT_NAMES):
        side, part = name.split("_")
        on, off, lift, dx = phases[part]
        shift = 0 if side == "left" else period // 2
        stances = [(c * period + on + shift, c * period + off + shift) for c in range(-1, n_cycles + 1)]
        y = 0.1 if side == "left" else -0.1
        x0 = dx + (0.7 if side == "right" else 0.0) - step_m
        pts[:, j], truth[:, j] = _point_track(stances, n, x0, y, step_m, lift, profile)
    return pts, truth


@pytest.mark.parametrize("profile", ["smooth", "constant"])
def test_generator_is_what_it_claims(profile):
    pts, truth = _gait(profile)
    assert pts.shape == (352, 4, 3) and truth.shape == (352, 4)
    assert np.all(pts[truth][:, 2] == 0.0)
    assert np.all(pts[~truth][:, 2] > 0.0)
    for j in range(4):  # stance: fixed horizontally
        for a, b in _runs(truth[:, j]):
            assert np.ptp(pts[a:b, j, 0]) == 0.0
    swing = ~truth[1:] & ~truth[:-1]
    mean_swing_speed = np.linalg.norm(np.diff(pts[..., :2], axis=0), axis=-1)[swing].mean() * FPS
    assert 2.3 < mean_swing_speed < 2.8
    assert pts[..., 2].max() >= 0.08


@pytest.mark.parametrize("profile", ["smooth", "constant"])
def test_gait_contacts_recovered(profile):
    pts, truth = _gait(profile)
    labels = contact_labels(pts, FPS)
    assert labels.shape == truth.shape and labels.dtype == bool
    agreement = (labels == truth).mean(axis=0)
    assert np.all(agreement >= 0.95), agreement
    for j in range(4):
        found = _runs(labels[:, j])
        true_runs = [(a, b) for a, b in _runs(truth[:, j]) if 0 < a and b < len(truth)]
        assert len(true_runs) >= 7
        assert len(found) == len(_runs(truth[:, j]))  # no spurious or merged stances
        for a, b in true_runs:
            assert any(abs(fa - a) <= 2 and abs(fb - b) <= 2 for fa, fb in found), (j, a, b, found)


@pytest.mark.parametrize("profile", ["smooth", "constant"])
def test_gait_event_order_and_feet(profile):
    pts, truth = _gait(profile)
    labels = contact_labels(pts, FPS)
    for heel, toe in ((0, 1), (2, 3)):
        for (ha, hb), (ta, tb) in zip(_runs(labels[:, heel])[1:-1], _runs(labels[:, toe])[1:-1]):
            assert ha < ta and hb < tb  # heel strike before toe-on, heel-off before toe-off
    feet = foot_contact(labels)
    np.testing.assert_array_equal(feet, labels[:, [0, 2]] | labels[:, [1, 3]])
    np.testing.assert_array_equal(foot_contact(truth)[:, 0], truth[:, 0] | truth[:, 1])
    assert (feet == foot_contact(truth)).mean() >= 0.95


def test_standing_is_all_contact():
    rng = np.random.default_rng(0)
    pts = np.zeros((90, 4, 3))
    pts[:, :, 0] = [0.0, 0.25, 0.0, 0.25]
    pts[:, :, 1] = [0.1, 0.1, -0.1, -0.1]
    pts += rng.normal(scale=0.002, size=pts.shape)  # 2 mm jitter
    pts[..., 2] = np.abs(pts[..., 2])
    assert contact_labels(pts, FPS).all()


def test_flight_phase_is_no_contact():
    # running: both feet in the air during [30, 45), moving forward at 4 m/s
    pts = np.zeros((75, 4, 3))
    t = np.arange(75)
    air = (t >= 30) & (t < 45)
    s = (t[air] - 29) / 16
    pts[air, :, 2] = (4 * 0.12 * s * (1 - s))[:, None]
    pts[:, :, 0] = (np.clip(t - 29, 0, 16) * 4.0 / FPS)[:, None]
    labels = contact_labels(pts, FPS)
    assert not labels[32:43].any()
    assert labels[:28].all() and labels[47:].all()
    assert not foot_contact(labels)[32:43].any()


def test_hysteresis_does_not_chatter():
    # A stationary point first on the floor, then hovering around 4 cm ± 0.9 cm: it never rises
    # above height_off (5 cm), so it stays in contact although it crosses 4 cm on most frames.
    rng = np.random.default_rng(1)
    n = 120
    z = np.zeros(n)
    z[10:] = 0.04 + rng.uniform(-0.009, 0.009, size=n - 10)
    pts = np.zeros((n, 4, 3))
    pts[:, :, 2] = z[:, None]
    labels = contact_labels(pts, FPS)
    assert labels.all()
    # the same signal with a single threshold at 4 cm (no hysteresis band) does chatter
    single = ContactConfig(height_on_m=0.04, height_off_m=0.04, min_duration_frames=1)
    chatter = contact_labels(pts, FPS, single)[:, 0]
    assert len(_runs(chatter)) > 10
    # and, lifted above 5 cm, the point leaves contact and re-enters only below 3 cm
    z2 = np.concatenate([np.zeros(20), np.full(20, 0.06), np.full(20, 0.04), np.zeros(20)])
    pts2 = np.zeros((80, 4, 3))
    pts2[:, :, 2] = z2[:, None]
    l2 = contact_labels(pts2, FPS)[:, 0]
    np.testing.assert_array_equal(l2, np.r_[np.ones(20), np.zeros(40), np.ones(20)].astype(bool))


def test_speed_hysteresis():
    # on the floor, sliding at 0.35 m/s (between speed_on and speed_off): stays as it was
    pts = np.zeros((60, 4, 3))
    pts[:, :, 0] = (np.arange(60) * 0.35 / FPS)[:, None]
    assert not contact_labels(pts, FPS).any()           # never slow enough to enter
    pts[:20, :, 0] = 0.0                                # standing still first, then sliding
    pts[20:, :, 0] = ((np.arange(20, 60) - 19) * 0.35 / FPS)[:, None]
    assert contact_labels(pts, FPS).all()               # never fast enough to leave
    pts[20:, :, 0] = ((np.arange(20, 60) - 19) * 0.6 / FPS)[:, None]
    assert not contact_labels(pts, FPS)[22:].any()      # 0.6 m/s > speed_off: leaves


def test_min_duration_fills_gaps_and_drops_blips():
    lab = np.array([1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1], bool)[:, None]
    filled = _flip_short_runs(lab, False, 2)[:, 0]
    np.testing.assert_array_equal(filled, [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1])
    dropped = _flip_short_runs(filled[:, None], True, 2)[:, 0]
    np.testing.assert_array_equal(dropped, [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1])  # edge run kept
    multi = np.stack([lab[:, 0], ~lab[:, 0]], axis=1)
    out = _flip_short_runs(multi, True, 2)
    np.testing.assert_array_equal(out[:, 0], _flip_short_runs(lab, True, 2)[:, 0])
    np.testing.assert_array_equal(out[:, 1], _flip_short_runs((~lab[:, 0])[:, None], True, 2)[:, 0])
    # end to end: a one-frame 10 cm hop of a standing foot is filled back to contact
    pts = np.zeros((30, 4, 3))
    pts[15, 0, 2] = 0.1
    assert contact_labels(pts, FPS)[:, 0].all()
    assert not contact_labels(pts, FPS, ContactConfig(min_duration_frames=1))[15, 0]


def test_hysteresis_function():
    enter = np.array([0, 1, 0, 0, 0, 1, 0], bool)
    leave = np.array([0, 0, 0, 1, 0, 0, 1], bool)
    np.testing.assert_array_equal(hysteresis(enter, leave), [0, 1, 1, 0, 0, 1, 0])
    with pytest.raises(ValueError):
        hysteresis(enter, enter)


def test_single_frame_and_edge_cases():
    one = np.zeros((1, 4, 3))
    assert contact_labels(one, FPS).tolist() == [[True] * 4]
    one[0, :, 2] = 0.2
    assert contact_labels(one, FPS).tolist() == [[False] * 4]
    assert contact_labels(np.zeros((0, 4, 3)), FPS).shape == (0, 4)
    nan = np.zeros((10, 4, 3))
    nan[5, 1] = np.nan
    lab = contact_labels(nan, FPS, ContactConfig(min_duration_frames=1))
    assert not lab[5, 1] and lab[:4, 1].all() and lab[:, 0].all()
    with pytest.raises(ValueError):
        contact_labels(np.zeros((10, 3, 3)), FPS)
    with pytest.raises(ValueError):
        ContactConfig(height_on_m=0.06)  # above height_off
    with pytest.raises(ValueError):
        ContactConfig(speed_on_m_s=0.5)
    with pytest.raises(ValueError):
        ContactConfig(min_duration_frames=0)
    with pytest.raises(ValueError):
        ContactConfig(speed_smooth_frames=2)


def test_speed_smoothing_option():
    pts, truth = _gait()
    lab = contact_labels(pts, FPS, ContactConfig(speed_smooth_frames=3))
    assert np.all((lab == truth).mean(axis=0) >= 0.93)
    raw = horizontal_speed(pts, FPS)
    sm = horizontal_speed(pts, FPS, 3)
    np.testing.assert_allclose(sm[1:-1], (raw[:-2] + raw[1:-1] + raw[2:]) / 3, atol=1e-12)
    assert not np.allclose(sm, raw)
