"""The initial state's seat on the soft contacts (pipeline.simulate.initial_state)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from pipeline.simulate import SimConfig, simulate
from pipeline.simulate.engine import prepare_sequence
from pipeline.simulate.initial_state import (SEAT_RANGE_M, _contact_force_z, contact_equilibrium_offset,
                                             vertical_load_n)
from pipeline.simulate.synthetic import demo_motion

SEATED = SimConfig(initial_contact_seat=True)


@pytest.fixture(scope="module")
def stand():
    return demo_motion("stand", duration_s=1.0)


@pytest.fixture(scope="module")
def stand_prep(stand):
    return prepare_sequence(stand, SimConfig())


def _first_intervals_bw(motion, cfg: SimConfig, n: int = 3) -> np.ndarray:
    r = simulate([motion], cfg)[0]
    return r.grf_n[:n, :, 2].sum(1) / (r.mass_kg * 9.81)


def test_stand_starts_at_one_body_weight(stand):
    """Unseated, the contacts spring back on the first interval (≈ 1.2 BW, then a rebound below 1);
    seated, the stand reads 1 BW from the first interval on."""
    seated = _first_intervals_bw(stand, SEATED)
    unseated = _first_intervals_bw(stand, SimConfig())
    assert np.abs(seated - 1.0).max() < 0.03, seated
    assert unseated[0] > 1.1 and unseated[1] < 0.95, unseated


def test_offset_carries_the_load_and_leaves_data_alone(stand, stand_prep):
    p = stand_prep
    m, d = p.model, p.data
    qpos, qvel = d.qpos.copy(), d.qvel.copy()
    load = vertical_load_n(m, d, p.ra[0])
    assert load == pytest.approx(p.hum.weight_n, rel=0.02)  # a stand needs its weight
    dz = contact_equilibrium_offset(m, d, load)
    assert 0.002 < dz < SEAT_RANGE_M[1], dz  # the soft contacts settle a few mm above the reference
    np.testing.assert_array_equal(d.qpos, qpos)
    np.testing.assert_array_equal(d.qvel, qvel)
    w = mujoco.MjData(m)
    assert _contact_force_z(m, w, qpos, dz) == pytest.approx(load, rel=0.02)  # (the bisection stops at 10 µm)
    assert _contact_force_z(m, w, qpos, dz - 0.001) > 1.05 * load  # deeper: more force
    assert _contact_force_z(m, w, qpos, dz + 0.001) < 0.95 * load
    seated = prepare_sequence(stand, SEATED)
    assert seated.data.qpos[2] == pytest.approx(qpos[2] + dz, abs=2e-5)
    np.testing.assert_array_equal(seated.data.qpos[3:], qpos[3:])


def test_no_contact_no_load_no_offset(stand_prep):
    """A body whose feet are far above the floor (a flight), or no load, is not moved; the range is
    checked."""
    p = stand_prep
    d = mujoco.MjData(p.model)
    d.qpos[:] = p.data.qpos
    d.qpos[2] += 0.3
    assert contact_equilibrium_offset(p.model, d, p.hum.weight_n) == 0.0
    assert contact_equilibrium_offset(p.model, p.data, 0.0) == 0.0
    with pytest.raises(ValueError, match="bracket 0"):
        contact_equilibrium_offset(p.model, p.data, p.hum.weight_n, search_m=(0.001, 0.01))


def test_deep_reference_is_moved_at_most_the_range(stand_prep):
    """A reference sunk 3 cm into the floor is raised by the range's top only."""
    p = stand_prep
    d = mujoco.MjData(p.model)
    d.qpos[:] = p.data.qpos
    d.qpos[2] -= 0.03
    assert contact_equilibrium_offset(p.model, d, p.hum.weight_n) == SEAT_RANGE_M[1]


def test_excluded_geoms_do_not_count_and_are_restored(stand_prep):
    """A foot the swing clearance lifts clear of the floor does not carry load in the search: with the
    left foot's geoms excluded the right foot alone carries the weight (a little deeper: the contacts
    stiffen steeply with depth); with both feet excluded nothing does. The model is restored."""
    p = stand_prep
    m = p.model
    both = contact_equilibrium_offset(m, p.data, p.hum.weight_n)
    left = np.flatnonzero(np.isin(m.geom_bodyid, p.hum.body_ids[[7, 10]]))
    right = np.flatnonzero(np.isin(m.geom_bodyid, p.hum.body_ids[[8, 11]]))
    contype, conaff = m.geom_contype.copy(), m.geom_conaffinity.copy()
    one = contact_equilibrium_offset(m, p.data, p.hum.weight_n, exclude_geoms=left)
    assert 0.0 < one < both, (one, both)
    assert contact_equilibrium_offset(m, p.data, p.hum.weight_n, exclude_geoms=np.r_[left, right]) == 0.0
    np.testing.assert_array_equal(m.geom_contype, contype)
    np.testing.assert_array_equal(m.geom_conaffinity, conaff)


def test_cli_flag_turns_it_on():
    """``dynaset build/demo --seated-start``: the build configuration's simulator starts seated."""
    import argparse

    from pipeline.cli import _add_build_options, _build_config

    p = argparse.ArgumentParser()
    _add_build_options(p)
    assert _build_config(p.parse_args([])).simulate.initial_contact_seat is False
    assert _build_config(p.parse_args(["--seated-start"])).simulate.initial_contact_seat is True
    assert _build_config(p.parse_args(["--seated-start", "--no-simulate"])).simulate is None
