"""Physics imitation engine: a MuJoCo humanoid tracks canonical motions and records dynamics.

Public entry point::

    from pipeline.simulate import SimConfig, simulate
    results = simulate(motions, SimConfig(), pass_index=0, backend="cpu")

See docs/simulation.md for the humanoid, the controller and every recorded convention.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.records import CanonicalMotion
from pipeline.simulate.backends import get_backend  # light: the backends load their engines when used

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.dynamics import DynamicsResult
    from pipeline.simulate.controller import ContactQP, Gains
    from pipeline.simulate.engine import SimConfig, SimulationResult, motion_dynamics, simulate_motion
    from pipeline.simulate.humanoid import HumanoidParams, build_humanoid, skeleton_from_motion

__all__ = [
    "ContactQP", "Gains", "HumanoidParams", "SimConfig", "SimulationResult", "build_humanoid", "motion_dynamics",
    "simulate", "simulate_jobs", "simulate_motion", "skeleton_from_motion",
]

_LAZY = {"ContactQP": "controller", "Gains": "controller", "SimConfig": "engine", "SimulationResult": "engine",
         "motion_dynamics": "engine", "simulate_motion": "engine", "HumanoidParams": "humanoid",
         "build_humanoid": "humanoid", "skeleton_from_motion": "humanoid"}
"""Names imported from their module on first use: importing the package (or its light
``backends`` module, as the CLI parser does) does not load MuJoCo, SciPy's signal
package and the dynamics pass (1.2 s of every ``dynaset`` command before)."""


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def simulate(motions: Sequence[CanonicalMotion], cfg: SimConfig, pass_index: int = 0, backend: str = "cpu"
             ) -> list[SimulationResult]:
    """Imitate a batch of motions once (pass ``pass_index``); one result per motion, in order.

    ``pass_index`` ∈ [0, cfg.passes) selects the deterministic variation (engine.pass_variation);
    ``backend``: ``"cpu"`` (MuJoCo, the default), ``"gpu"`` (MuJoCo Warp batched over worlds, needs
    a CUDA device and the ``gpu`` extra), ``"warp-cpu"`` (the same on Warp's CPU device),
    ``"isaacgym"`` (not available).
    """
    if not 0 <= int(pass_index) < cfg.passes:
        raise ValueError(f"pass_index {pass_index} outside [0, {cfg.passes})")
    return get_backend(backend).simulate(list(motions), cfg, int(pass_index))


def simulate_jobs(jobs: Sequence[tuple[CanonicalMotion, int]], cfg: SimConfig, backend: str = "cpu",
                  max_worlds: int | None = None, dynamics: Sequence[DynamicsResult | None] | None = None
                  ) -> list[SimulationResult]:
    """Imitate (motion, pass index) sequences of any passes; one result per job, in order.

    A batched backend (``gpu``, ``warp-cpu``) runs them as one batch of worlds where they fit in
    ``max_worlds`` (its default otherwise), the others pass by pass (``Backend.simulate_jobs``).
    ``dynamics``: per job, its motion's dynamics pass computed beforehand (``motion_dynamics``; the
    build's per-file task stages it) or ``None`` (computed by the backend); results are the same.
    """
    for _, p in jobs:
        if not 0 <= int(p) < cfg.passes:
            raise ValueError(f"pass_index {p} outside [0, {cfg.passes})")
    return get_backend(backend, max_worlds=max_worlds).simulate_jobs([(m, int(p)) for m, p in jobs], cfg,
                                                                     dynamics=dynamics)
