"""The initial state's seat on the soft contacts (pipeline.simulate.initial_state)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from pipeline.simulate import SimConfig, simulate
from pipeline.simulate.engine import prepare_sequence
from pipeline.simulate.initial_state import SEAT_RANGE_M, contact_equilibrium_offset
from pipeline.simulate.synthetic import demo_motion


@pytest.fixture(scope="module")
def stand():
    return demo_motion("stand", duration_s=1.0)


def _first_intervals_bw(motion, cfg: SimConfig, n: int = 3) -> np.ndarray:
    r = simulate([motion], cfg)[0]
    return r.grf_n[:n, :, 2].sum(1) / (r.mass_kg * 9.81)


def test_stand_starts_at_one_body_weight(stand):
    """Without the seat the contacts spring back on the first interval (≈ 1.2 BW, then a rebound below
    1); seated, the stand reads 1 BW from the first interval on."""
    seated = _first_intervals_bw(stand, SimConfig())
    unseated = _first_intervals_bw(stand, SimConfig(initial_contact_seat=False))
    assert np.abs(seated - 1.0).max() < 0.03, seated
    assert unseated[0] > 1.1 and unseated[1] < 0.95, unseated


def test_offset_carries_the_vertical_force_and_leaves_data_alone(stand):
    cfg = SimConfig(initial_contact_seat=False)
    p = prepare_sequence(stand, cfg)
    m, d = p.model, p.data
    qpos, qvel = d.qpos.copy(), d.qvel.copy()
    dz = contact_equilibrium_offset(m, d, p.ra[0])
    assert 0.002 < dz < SEAT_RANGE_M[1], dz  # the soft contacts settle a few mm above the reference
    np.testing.assert_array_equal(d.qpos, qpos)
    np.testing.assert_array_equal(d.qvel, qvel)
    # at the offset, MuJoCo's inverse dynamics leaves (almost) no vertical force to the root
    w = mujoco.MjData(m)
    for shift, sign in ((dz, 0), (dz - 0.001, -1), (dz + 0.001, 1)):
        w.qpos[:] = qpos
        w.qpos[2] += shift
        w.qvel[:] = qvel
        w.qacc[:] = p.ra[0]
        mujoco.mj_inverse(m, w)
        fz = w.qfrc_inverse[2]
        if sign == 0:
            assert abs(fz) < 0.01 * p.hum.weight_n, fz
        else:
            assert np.sign(fz) == sign, (shift, fz)
    # the default engine starts from the seated state
    seated = prepare_sequence(stand, SimConfig())
    assert seated.data.qpos[2] == pytest.approx(qpos[2] + dz, abs=2e-5)
    np.testing.assert_array_equal(seated.data.qpos[3:], qpos[3:])


def test_no_contact_no_offset(stand):
    """A body whose feet are far above the floor (a flight) is not moved; the range is checked."""
    p = prepare_sequence(stand, SimConfig(initial_contact_seat=False))
    d = mujoco.MjData(p.model)
    d.qpos[:] = p.data.qpos
    d.qpos[2] += 0.3
    assert contact_equilibrium_offset(p.model, d, p.ra[0]) == 0.0
    with pytest.raises(ValueError, match="bracket 0"):
        contact_equilibrium_offset(p.model, p.data, p.ra[0], search_m=(0.001, 0.01))


def test_deep_reference_is_moved_at_most_the_range(stand):
    """A reference sunk 3 cm into the floor is raised by the range's top only."""
    p = prepare_sequence(stand, SimConfig(initial_contact_seat=False))
    d = mujoco.MjData(p.model)
    d.qpos[:] = p.data.qpos
    d.qpos[2] -= 0.03
    assert contact_equilibrium_offset(p.model, d, p.ra[0]) == SEAT_RANGE_M[1]
