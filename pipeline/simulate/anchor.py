"""Re-anchoring the tracked reference after flight phases (pure numpy; shared by the CPU engine and
the batched GPU backend).

In flight nothing but gravity acts on the body: the simulated humanoid lands where its take-off
sent it, a few centimetres off the reference's landing spot (a slightly weaker push-off, a
different angular momentum). Tracking the reference pelvis in world coordinates after that would
ask for a pelvis outside the support the landed feet give — a moment no floor force can make —
and the humanoid leans until it is reset. So after every flight of at least
``SimConfig.reanchor_after_flight_s`` (the plan loads neither foot), at the first control tick
the plan loads a foot again *and* that simulated ankle has come to rest (horizontal speed below
``STILL_MPS``), the reference is shifted horizontally by the mean offset of those ankles from the
reference's (``anchor``, world, m), and stays shifted until the next such landing. Walking never
leaves the floor and running flights are shorter (0.07–0.13 s on the demo corpus), so both keep
``anchor = 0``. The recorded MPJPE is against the unshifted motion; the largest shift is the
metric ``reanchor_max_m``.
"""

from __future__ import annotations

import numpy as np

STILL_MPS = 0.2
"""A landed ankle is at rest below this horizontal speed, m/s."""


class FlightAnchor:
    """Per-world anchor state for ``W`` worlds (the CPU engine uses ``W = 1``).

    Args:
        n_worlds: number of worlds.
        min_flight_ticks: control ticks without a loaded foot that count as a flight (0: never
            re-anchor).
        control_hz: control rate, Hz (for the ankle speed).
    """

    def __init__(self, n_worlds: int, min_flight_ticks: int, control_hz: float) -> None:
        self.min_flight = int(min_flight_ticks)
        self.control_hz = float(control_hz)
        self.anchor = np.zeros((n_worlds, 3))
        self.max_shift = np.zeros(n_worlds)
        self._airborne = np.zeros(n_worlds, dtype=int)
        self._landed = np.ones(n_worlds, dtype=bool)
        self._prev = None

    def reset(self, worlds: np.ndarray, ankle_pos: np.ndarray) -> None:
        """Worlds reset to the (unshifted) reference: anchor 0; ``ankle_pos`` (W, 2, 3) after the reset."""
        self.anchor[worlds] = 0.0
        self._airborne[worlds] = 0
        self._landed[worlds] = True
        if self._prev is not None:
            self._prev[worlds] = ankle_pos[worlds]

    def update(self, loaded: np.ndarray, ankle_pos: np.ndarray, ref_ankle_pos: np.ndarray) -> np.ndarray:
        """One control tick: ``loaded`` (W, 2) bool, the plan loads the foot at this tick;
        ``ankle_pos`` / ``ref_ankle_pos`` (W, 2, 3) simulated / reference ankle joints, world, m.
        Returns the anchor (W, 3) to add to the reference pelvis position (and joint positions)."""
        prev = ankle_pos if self._prev is None else self._prev
        self._prev = np.array(ankle_pos, dtype=float, copy=True)
        if self.min_flight <= 0:
            return self.anchor
        if self.anchor.shape[0] == 1:
            # one world (the CPU engine, every control tick): the rules below on scalars, leaving
            # only a landing after a long flight to the general code (numpy calls on (1, 2) arrays
            # cost more than the rest of this update)
            if not (loaded[0, 0] or loaded[0, 1]):
                self._airborne[0] += 1
                self._landed[0] = False
                return self.anchor
            if self._airborne[0] < self.min_flight:
                self._airborne[0] = 0
                self._landed[0] = True
                return self.anchor
            if self._landed[0]:
                return self.anchor
        any_loaded = loaded.any(axis=1)
        air = ~any_loaded
        self._airborne[air] += 1
        self._landed[air] = False
        short = any_loaded & (self._airborne < self.min_flight)
        self._airborne[short] = 0  # a short flight (running) keeps the anchor
        self._landed[short] = True
        pending = any_loaded & ~self._landed
        if pending.any():
            still = np.linalg.norm((ankle_pos - prev)[..., :2], axis=-1) * self.control_hz < STILL_MPS
            st = loaded & still & pending[:, None]
            ok = st.any(axis=1)
            if ok.any():
                diff = (ankle_pos - ref_ankle_pos)[..., :2] * st[..., None]
                shift = diff.sum(axis=1)[ok] / st.sum(axis=1)[ok][:, None]
                self.anchor[ok, :2] = shift
                self.max_shift[ok] = np.maximum(self.max_shift[ok], np.linalg.norm(shift, axis=-1))
                self._airborne[ok] = 0
                self._landed[ok] = True
        return self.anchor


__all__ = ["STILL_MPS", "FlightAnchor"]
