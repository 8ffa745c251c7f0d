"""The landing seat (``SimConfig.landing_seat``): which touch-downs it acts on
(``engine.landing_seat_targets``) and what it asks of the leg (``TrackingController.seat_landing_feet``)."""

from __future__ import annotations

import mujoco
import numpy as np

from pipeline import skeleton as sk
from pipeline.simulate import humanoid as hm
from pipeline.simulate.controller import ContactQP, Gains, TrackingController
from pipeline.simulate.engine import SimConfig, landing_seat_targets

HZ = 120.0


def _loaded(n: int, left: list[tuple[int, int]], right: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros((n, 2), dtype=bool)
    for f, spans in enumerate((left, right)):
        for a, b in spans:
            out[a:b, f] = True
    return out


def test_walking_touch_down_is_seated_flight_and_jump_landings_are_not():
    n = 121
    z = np.zeros((n, 2))
    z[:, 1] = 0.10 - 0.001 * np.arange(n)  # right ankle descending at 0.12 m/s
    # walking: the left foot loaded all along, the right one touches down at tick 60
    seat = landing_seat_targets(_loaded(n, [(0, n)], [(60, n)]), z, HZ, support_s=0.1)
    assert seat.shape == (n - 1, 2)
    assert np.isnan(seat[:60, 1]).all() and np.isfinite(seat[60:, 1]).all()
    np.testing.assert_allclose(seat[60:-1, 1], -0.12, atol=1e-9)  # the reference ankle's vz, m/s
    # the left foot's stance began at tick 0 with no support from the right foot: not seated
    assert np.isnan(seat[:, 0]).all()
    # a run's touch-down after a flight (no foot loaded before it): not seated
    run = landing_seat_targets(_loaded(n, [(0, 40)], [(60, 100)]), z, HZ, support_s=0.1)
    assert np.isnan(run).all()
    # a jump landing: both feet land within a few ticks, the other one not yet loaded for 0.1 s
    jump = landing_seat_targets(_loaded(n, [(58, n)], [(60, n)]), z, HZ, support_s=0.1)
    assert np.isnan(jump).all()
    # the same landing counts once the other foot has carried load long enough
    late = landing_seat_targets(_loaded(n, [(40, n)], [(60, n)]), z, HZ, support_s=0.1)
    assert np.isfinite(late[60:, 1]).all() and np.isnan(late[:, 0]).all()
    # an ascending reference ankle gives a target of 0 m/s (the seat never lifts a foot)
    up = landing_seat_targets(_loaded(n, [(0, n)], [(60, n)]), -z, HZ, support_s=0.1)
    assert (up[60:, 1] == 0.0).all()


def _standing(h: hm.Humanoid, c: TrackingController, lift_m: float) -> mujoco.MjData:
    """The humanoid upright in its rest pose, at rest, its lowest left sole corner ``lift_m``
    above the floor."""
    m = h.model
    d = mujoco.MjData(m)
    mujoco.mj_resetData(m, d)
    d.qpos[3:7] = [np.cos(np.pi / 4), np.sin(np.pi / 4), 0, 0]  # template +y up → world +z up
    d.qpos[2] = 1.0
    mujoco.mj_kinematics(m, d)
    d.qpos[2] += lift_m - c.sole_points_world(d)[:6, 2].min()
    mujoco.mj_kinematics(m, d)
    mujoco.mj_comPos(m, d)
    mujoco.mj_comVel(m, d)
    return d


def _ctrl(h: hm.Humanoid) -> TrackingController:
    return TrackingController(h, Gains(), ContactQP(), seat_omega=25.0, seat_margin_m=0.005)


def test_seat_asks_the_ankle_down_with_hip_and_knee_only():
    h = hm.build_humanoid(sk.anthropometric_skeleton(1.75), 70.0)
    m = h.model
    c = _ctrl(h)
    d = _standing(h, c, 0.03)
    hl = c.sole_points_world(d)[:6, 2].min()
    assert abs(hl - 0.03) < 1e-9  # the left foot hangs 3 cm above the floor
    qacc = np.zeros(m.nv)
    c.seat_landing_feet(d, qacc, np.array([-0.1, np.nan]))
    changed = np.flatnonzero(qacc)
    assert set(changed) <= set(c._seat_dofs[0].tolist()) and changed.size > 0  # left hip + knee only
    jac = np.zeros((3, m.nv))
    ankle = c._seat_ankle[0]
    mujoco.mj_jacBody(m, d, jac, None, ankle)
    az = jac[2] @ qacc  # at rest: J̇v = 0, vz = 0
    want = -25.0**2 * hl + 2 * 25.0 * (-0.1)
    js = jac[2][c._seat_dofs[0]]
    assert az < 0 and abs(az - want * (js @ js) / (js @ js + 1e-3)) < 1e-9
    # feet without a seated stance (NaN) are left alone; the right foot moves only its own leg
    qacc2 = np.zeros(m.nv)
    c.seat_landing_feet(d, qacc2, np.array([np.nan, np.nan]))
    assert not qacc2.any()
    c.seat_landing_feet(d, qacc2, np.array([np.nan, -0.1]))
    changed = np.flatnonzero(qacc2)
    assert set(changed) <= set(c._seat_dofs[1].tolist()) and changed.size > 0


def test_seat_stops_at_first_touch_until_the_next_seated_stance():
    h = hm.build_humanoid(sk.anthropometric_skeleton(1.75), 70.0)
    m = h.model
    c = _ctrl(h)
    d = _standing(h, c, 0.002)  # left foot 2 mm up: within the margin, touched
    seat = np.array([0.0, np.nan])
    qacc = np.zeros(m.nv)
    c.seat_landing_feet(d, qacc, seat)
    assert not qacc.any() and c._seat_touched[0]
    d.qpos[2] += 0.03  # lifted again within the same stance: the seat does not act again
    mujoco.mj_kinematics(m, d)
    mujoco.mj_comPos(m, d)
    mujoco.mj_comVel(m, d)
    c.seat_landing_feet(d, qacc, seat)
    assert not qacc.any()
    c.seat_landing_feet(d, qacc, np.array([np.nan, np.nan]))  # the stance ends
    c.seat_landing_feet(d, qacc, seat)  # a new seated stance, foot 3 cm up
    assert qacc[c._seat_dofs[0]].any()


def test_config_refuses_bad_seat_settings():
    import pytest

    for bad in ({"landing_seat_omega": 0.0}, {"landing_seat_support_s": -0.1}, {"landing_seat_margin_m": -1e-3}):
        with pytest.raises(ValueError, match="landing_seat"):
            SimConfig(**bad)


def _seat_targets_by_tick(loaded, ankle_z, control_hz, support_s):
    """``landing_seat_targets`` written as the tick-by-tick rule it implements (the oracle)."""
    stance = loaded[:-1] & loaded[1:]
    vz = np.gradient(ankle_z, 1.0 / control_hz, axis=0)[:-1]
    out = np.full(stance.shape, np.nan)
    for f in range(2):
        run, on = 0, False
        for k in range(stance.shape[0]):
            run = run + 1 if loaded[k, 1 - f] else 0
            if stance[k, f] and (k == 0 or not stance[k - 1, f]):
                on = run >= support_s * control_hz
            if stance[k, f] and on:
                out[k, f] = min(vz[k, f], 0.0)
    return out


def test_seat_targets_equal_the_tick_by_tick_rule():
    """The vectorised ``landing_seat_targets`` (the CPU engine and every GPU batch call it) equals
    the rule tick by tick on random load patterns, lengths and support times."""
    rng = np.random.default_rng(5)
    seated = 0
    for _ in range(300):
        k = int(rng.integers(2, 150))
        flips = rng.random((k + 1, 2)) > rng.uniform(0.6, 0.97)
        loaded = (np.cumsum(flips, axis=0) + rng.integers(0, 2, size=2)) % 2 == 1
        z = rng.normal(size=(k + 1, 2))
        s = float(rng.choice([0.0, 0.05, 0.1, 0.3]))
        want = _seat_targets_by_tick(loaded, z, 120.0, s)
        got = landing_seat_targets(loaded, z, 120.0, s)
        np.testing.assert_array_equal(got, want)
        seated += int(np.isfinite(want).sum())
    assert seated > 1000  # the patterns do contain seated stances
