"""Tests for pipeline.simulate.anchor: the reference follows where the feet landed after a flight."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.simulate import SimConfig, simulate
from pipeline.simulate.anchor import FlightAnchor
from pipeline.simulate.synthetic import demo_motion

HZ = 120.0
REF = np.array([[[0.1, 0.1, 0.08], [0.1, -0.1, 0.08]]])  # (W=1, 2 feet, 3) reference ankles


def _run(anchor: FlightAnchor, loaded_seq, ankle_seq):
    out = []
    for loaded, ankle in zip(loaded_seq, ankle_seq):
        out.append(anchor.update(np.asarray(loaded)[None], np.asarray(ankle)[None], REF).copy())
    return np.array(out)[:, 0]


def test_walking_never_reanchors():
    """Always one foot loaded: the reference stays where it is, however far the feet are off."""
    a = FlightAnchor(1, min_flight_ticks=24, control_hz=HZ)
    off = REF[0] + [0.07, 0.03, 0.0]
    out = _run(a, [[True, i % 60 < 40] for i in range(300)], [off] * 300)
    assert np.all(out == 0.0)
    assert a.max_shift[0] == 0.0


def test_landing_after_a_long_flight_sets_the_anchor_until_the_next_flight():
    a = FlightAnchor(1, min_flight_ticks=24, control_hz=HZ)
    ground = [[True, True]] * 10
    air = [[False, False]] * 30
    off = REF[0] + [0.05, -0.02, 0.0]
    # still ankles (same position every tick) 5 cm forward, 2 cm to the side of the reference's
    out = _run(a, ground + air + ground, [REF[0]] * 10 + [off + [0, 0, 0.3]] * 30 + [off] * 10)
    assert np.all(out[:40] == 0.0)
    np.testing.assert_allclose(out[-1], [0.05, -0.02, 0.0], atol=1e-12)
    assert a.max_shift[0] == pytest.approx(np.hypot(0.05, 0.02))
    # kept while standing, even if the ankles drift afterwards
    out2 = _run(a, [[True, True]] * 20, [off + [0.01, 0.0, 0.0]] * 20)
    np.testing.assert_allclose(out2[-1], [0.05, -0.02, 0.0], atol=1e-12)
    # a reset (back on the unshifted reference) clears it
    a.reset(np.array([0]), REF.copy())
    assert np.all(a.anchor == 0.0)


def test_short_flights_and_moving_feet_do_not_reanchor():
    a = FlightAnchor(1, min_flight_ticks=24, control_hz=HZ)
    off = REF[0] + [0.05, 0.0, 0.0]
    # running: 16-tick flights
    stride = [[True, False]] * 20 + [[False, False]] * 16 + [[False, True]] * 20 + [[False, False]] * 16
    out = _run(a, stride * 4, [off] * len(stride) * 4)
    assert np.all(out == 0.0)
    # a long flight whose landing foot is still sliding (1 cm per tick = 1.2 m/s): wait until it rests
    b = FlightAnchor(1, min_flight_ticks=24, control_hz=HZ)
    slide = [off + [0.01 * (i + 1), 0.0, 0.0] for i in range(5)]
    out = _run(b, [[False, False]] * 30 + [[True, True]] * 7, [off] * 30 + slide + [slide[-1]] * 2)
    assert np.all(out[:35] == 0.0)
    np.testing.assert_allclose(out[-1, 0], 0.05 + 0.05, atol=1e-12)


def test_disabled_anchor_stays_zero():
    a = FlightAnchor(1, min_flight_ticks=0, control_hz=HZ)
    out = _run(a, [[False, False]] * 50 + [[True, True]] * 10, [REF[0] + 0.1] * 60)
    assert np.all(out == 0.0)


def test_the_demo_jump_reanchors_and_a_walk_does_not():
    """The demo jump's 0.42 s flights re-anchor the reference where the simulated feet landed (a few
    centimetres off); a walk never leaves the floor and keeps tracking the world reference."""
    jump = demo_motion("jump", duration_s=4.0, fps_hz=120.0)
    r = simulate([jump], SimConfig())[0]
    assert 0.0 < r.metrics["reanchor_max_m"] < 0.15
    off = simulate([jump], SimConfig(reanchor_after_flight_s=0.0))[0]
    assert off.metrics["reanchor_max_m"] == 0.0
    walk = simulate([demo_motion("walk", 1.2, duration_s=2.0, fps_hz=30.0)], SimConfig())[0]
    assert walk.metrics["reanchor_max_m"] == 0.0


def test_single_world_fast_path_equals_the_batched_rules():
    """``update`` with one world takes a scalar path; a two-world anchor (the general code) fed the
    same ticks in both worlds gives the same anchors, bit for bit, through flights, landings on
    sliding and resting feet, and resets."""
    rng = np.random.default_rng(3)
    one = FlightAnchor(1, min_flight_ticks=6, control_hz=HZ)
    two = FlightAnchor(2, min_flight_ticks=6, control_hz=HZ)
    ankle = REF[0].copy()
    phase = 0
    for t in range(3000):
        phase = (phase + 1) % 40
        loaded = np.array([phase < 12 or rng.random() < 0.1, 18 < phase < 26])  # flights of up to 14 ticks
        # feet that move, then rest (0–4 ticks still) — both sides of the 0.2 m/s rule
        if rng.random() < 0.5:
            ankle = ankle + rng.normal(0.0, 0.004, size=(2, 3))
        ref = REF[0] + rng.normal(0.0, 0.02, size=(2, 3))
        a1 = one.update(loaded[None], ankle[None], ref[None])
        a2 = two.update(np.stack([loaded, loaded]), np.stack([ankle, ankle]), np.stack([ref, ref]))
        assert np.array_equal(a1[0], a2[0]) and np.array_equal(a2[0], a2[1]), t
        if rng.random() < 0.003:
            one.reset(np.array([0]), ankle[None])
            two.reset(np.array([0, 1]), np.stack([ankle, ankle]))
    assert np.array_equal(one.max_shift[0], two.max_shift[0]) and one.max_shift[0] > 0.0
    assert np.array_equal(one._airborne[0], two._airborne[0]) and one._landed[0] == two._landed[0]
