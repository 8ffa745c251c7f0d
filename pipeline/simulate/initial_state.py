"""The initial state's height on the soft contacts (``SimConfig.initial_contact_seat``).

A simulation starts at the reference's first pose. MuJoCo's contacts are soft: under a load
they settle at a penetration that depends on the pose and the load, so a reference whose soles
sit at the floor starts a few millimetres off that equilibrium. The first interval then reads
the spring-back (≈ 1.2 BW in total on the demo stand and walks, then 0.86 BW while the body
bounces) although the motion asks for 1 BW.

``contact_equilibrium_offset`` moves the initial state vertically, by the offset at which the
floor contacts carry exactly the vertical force the reference's first acceleration needs:
MuJoCo's inverse dynamics (``mj_inverse``) inverts the soft contact model, so the vertical root
force it leaves to the actuators, ``qfrc_inverse[2]``, is zero there. It decreases monotonically
as the body is lowered (deeper penetration, more contact force), so a bisection finds it. Both
backends start from ``PreparedSequence.data`` and get the same seat.
"""

from __future__ import annotations

import mujoco
import numpy as np

SEAT_RANGE_M = (-0.005, 0.010)
"""Vertical offsets searched, m: at most 5 mm down (a reference foot hovering above the floor)
and 10 mm up (the soft contacts settle 4–6 mm above a reference at the floor)."""


def _vertical_demand(m: mujoco.MjModel, d: mujoco.MjData, qpos: np.ndarray, qvel: np.ndarray,
                     qacc: np.ndarray, dz: float) -> float:
    """``qfrc_inverse[2]`` (N, world z) with the body moved up by ``dz`` m: the vertical force the
    root still needs once the soft contacts push as the state and acceleration imply."""
    d.qpos[:] = qpos
    d.qpos[2] += dz
    d.qvel[:] = qvel
    d.qacc[:] = qacc
    mujoco.mj_inverse(m, d)
    return float(d.qfrc_inverse[2])


def contact_equilibrium_offset(m: mujoco.MjModel, d: mujoco.MjData, qacc: np.ndarray,
                               search_m: tuple[float, float] = SEAT_RANGE_M, tol_m: float = 1e-5) -> float:
    """Vertical offset (m, + = up) of the state in ``d`` at which the floor contacts carry the
    vertical force the generalized acceleration ``qacc`` (nv,) needs. ``d`` is not changed (the
    search runs on a scratch ``MjData``).

    Returns 0 when even the lowest offset of ``search_m`` gives the contacts too little to carry
    (no foot near the floor: a flight, a reference above the floor), and the highest offset when
    even there they carry too much (the search range bounds how far a reference is moved).
    """
    lo, hi = float(search_m[0]), float(search_m[1])
    if not lo < 0.0 < hi:
        raise ValueError(f"search_m must bracket 0, got {search_m}")
    q0 = np.array(d.qpos, dtype=float)
    v0 = np.array(d.qvel, dtype=float)
    work = mujoco.MjData(m)
    if _vertical_demand(m, work, q0, v0, qacc, lo) >= 0.0:
        return 0.0
    if _vertical_demand(m, work, q0, v0, qacc, hi) <= 0.0:
        return hi
    while hi - lo > tol_m:
        mid = 0.5 * (lo + hi)
        if _vertical_demand(m, work, q0, v0, qacc, mid) < 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
