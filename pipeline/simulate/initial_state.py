"""The initial state's height on the soft contacts (``SimConfig.initial_contact_seat``).

A simulation starts at the reference's first pose. MuJoCo's contacts are soft: under a load
they settle at a penetration that depends on the pose and the load, so a reference whose soles
sit at the floor starts a few millimetres off that equilibrium. The first interval then reads
the spring-back (≈ 1.2 BW in total on the demo stand and walks, then 0.86 BW while the body
bounces) although the motion asks for 1 BW.

``contact_equilibrium_offset`` moves the initial state vertically, by the offset at which the
floor contacts, at rest, carry the vertical force the reference's first acceleration needs
(``vertical_load_n``: ``(M a + c)_z`` of the free joint, i.e. ``m (g + a_com,z)``). The contact
force at an offset comes from MuJoCo's inverse dynamics (``mj_inverse`` inverts the soft contact
model) at zero velocity and acceleration, so only the penetration counts: the reference's joint
accelerations at a sequence's first sample (spline end effects) do not enter. The contact force
decreases monotonically as the body is raised, so a bisection finds the offset. Both backends
start from ``PreparedSequence.data`` and get the same seat.
"""

from __future__ import annotations

import mujoco
import numpy as np

SEAT_RANGE_M = (-0.005, 0.010)
"""Vertical offsets searched, m: at most 5 mm down (a reference foot hovering above the floor)
and 10 mm up (the soft contacts settle 4–6 mm above a reference at the floor)."""


def vertical_load_n(m: mujoco.MjModel, d: mujoco.MjData, qacc: np.ndarray) -> float:
    """Vertical force (N, world z) the floor must supply for the generalized acceleration ``qacc``
    (nv,) at the state in ``d``: the free joint's z row of ``M qacc + c`` (``mj_rne``), which is
    the whole body's ``m (g + a_com,z)``. ``d`` is not changed."""
    w = mujoco.MjData(m)
    w.qpos[:] = d.qpos
    w.qvel[:] = d.qvel
    mujoco.mj_forward(m, w)
    w.qacc[:] = qacc
    out = np.zeros(m.nv)
    mujoco.mj_rne(m, w, 1, out)
    return float(out[2])


def _contact_force_z(m: mujoco.MjModel, w: mujoco.MjData, qpos: np.ndarray, dz: float) -> float:
    """Vertical force (N) the soft floor contacts exert on the body at rest (zero velocity and
    acceleration) moved up by ``dz`` m: ``qfrc_bias − qfrc_inverse`` of the free joint's z row."""
    w.qpos[:] = qpos
    w.qpos[2] += dz
    w.qvel[:] = 0.0
    w.qacc[:] = 0.0
    mujoco.mj_inverse(m, w)
    return float(w.qfrc_bias[2] - w.qfrc_inverse[2])


def contact_equilibrium_offset(m: mujoco.MjModel, d: mujoco.MjData, load_n: float,
                               search_m: tuple[float, float] = SEAT_RANGE_M, tol_m: float = 1e-5,
                               exclude_geoms: np.ndarray | None = None) -> float:
    """Vertical offset (m, + = up) of the pose in ``d`` at which the floor contacts at rest carry
    ``load_n`` (N, upward). ``d`` is not changed (the search runs on a scratch ``MjData``).
    ``exclude_geoms``: geoms that do not collide at the start (a foot the swing clearance lifts
    clear of the floor: a reference toe that pushes off 8 mm below the floor must not count);
    their ``geom_contype``/``geom_conaffinity`` are zeroed during the search and restored.

    Returns 0 when ``load_n`` ≤ 0 or when even the lowest offset of ``search_m`` gives the contacts
    less than ``load_n`` (no foot near the floor: a flight, a reference above the floor), and the
    highest offset when even there they carry more (the range bounds how far a reference moves).
    """
    lo, hi = float(search_m[0]), float(search_m[1])
    if not lo < 0.0 < hi:
        raise ValueError(f"search_m must bracket 0, got {search_m}")
    if not load_n > 0.0:
        return 0.0
    q0 = np.array(d.qpos, dtype=float)
    w = mujoco.MjData(m)
    geoms = np.zeros(0, dtype=int) if exclude_geoms is None else np.asarray(exclude_geoms, dtype=int)
    saved = m.geom_contype[geoms].copy(), m.geom_conaffinity[geoms].copy()
    m.geom_contype[geoms] = 0
    m.geom_conaffinity[geoms] = 0
    try:
        if _contact_force_z(m, w, q0, lo) <= load_n:
            return 0.0
        if _contact_force_z(m, w, q0, hi) >= load_n:
            return hi
        while hi - lo > tol_m:
            mid = 0.5 * (lo + hi)
            if _contact_force_z(m, w, q0, mid) > load_n:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
    finally:
        m.geom_contype[geoms], m.geom_conaffinity[geoms] = saved
