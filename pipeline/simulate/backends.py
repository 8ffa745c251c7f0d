"""Simulation backends: how a batch of motions is simulated.

* ``CpuMujocoBackend`` (implemented): one ``MjModel``/``MjData`` per motion, sequences simulated
  one after another in the calling process (a Dask task = one batch). The controller math is
  vectorised numpy per control tick; the physics substeps run in MuJoCo's C code.
* ``MjWarpBackend`` (``gpu``/``warp``; ``pipeline.simulate.warp``): batches sequences as worlds
  of one MuJoCo Warp model (per-world subject fields, padded by length), the controller's per-tick
  math batched over worlds, the physics on a CUDA device. ``warp-cpu`` runs the same code on Warp's
  CPU device (correctness tests and benchmarks without a GPU). Needs the ``gpu`` extra
  (``mujoco-warp``, ``warp-lang``); docs/simulation.md, "GPU backend".
* ``IsaacGymBackend``: an adapter typed against isaacgym's ``gymapi`` names; IsaacGym ships only
  type stubs here, so it raises ``NotImplementedError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.records import CanonicalMotion

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.dynamics import DynamicsResult
    from pipeline.simulate.engine import SimConfig, SimulationResult


class Backend:
    """A way to simulate a batch of motions (one pass)."""

    name = "abstract"

    def simulate(self, motions: Sequence[CanonicalMotion], cfg: SimConfig, pass_index: int = 0,
                 dynamics: Sequence[DynamicsResult | None] | None = None
                 ) -> list[SimulationResult]:  # pragma: no cover - interface
        """One pass of ``motions``; ``dynamics``: per motion its dynamics pass computed beforehand
        (``engine.motion_dynamics``) or ``None`` (computed here)."""
        raise NotImplementedError

    def simulate_jobs(self, jobs: Sequence[tuple[CanonicalMotion, int]], cfg: SimConfig,
                      dynamics: Sequence[DynamicsResult | None] | None = None) -> list[SimulationResult]:
        """(motion, pass index) sequences of any passes; one result per job, in order. Batched
        backends run them together (``MjWarpBackend``); here: one ``simulate`` call per pass.
        ``dynamics``: per job, its motion's precomputed dynamics pass or ``None``."""
        dyns = list(dynamics) if dynamics is not None else [None] * len(jobs)
        if len(dyns) != len(jobs):
            raise ValueError(f"{len(dyns)} dynamics passes for {len(jobs)} jobs")
        results: list = [None] * len(jobs)
        for p in sorted({int(k) for _, k in jobs}):
            idx = [i for i, (_, k) in enumerate(jobs) if int(k) == p]
            for i, r in zip(idx, self.simulate([jobs[i][0] for i in idx], cfg, p, [dyns[i] for i in idx])):
                results[i] = r
        return results

    @property
    def needs_gpu(self) -> bool:
        return False


class CpuMujocoBackend(Backend):
    """MuJoCo on the CPU, one sequence after another (deterministic)."""

    name = "cpu"

    def simulate(self, motions, cfg, pass_index=0, dynamics=None):
        from pipeline.simulate.engine import simulate_motion

        dyns = list(dynamics) if dynamics is not None else [None] * len(motions)
        return [simulate_motion(m, cfg, pass_index, dynamics=dyn) for m, dyn in zip(motions, dyns, strict=True)]


def MjWarpBackend(device: str | None = None, settings=None, max_worlds: int | None = None) -> Backend:
    """The MuJoCo Warp backend (``pipeline.simulate.warp.backend.MjWarpBackend``), imported lazily
    so that the CPU path never imports Warp. ``device=None`` needs a CUDA device; ``max_worlds``
    overrides ``settings.max_worlds`` (worlds per batch)."""
    import dataclasses

    from pipeline.simulate.warp.backend import MjWarpBackend as _Impl, WarpBatchSettings

    if max_worlds is not None:
        settings = dataclasses.replace(settings or WarpBatchSettings(), max_worlds=int(max_worlds))
    return _Impl(device=device, settings=settings)


def MjWarpCpuBackend(max_worlds: int | None = None) -> Backend:
    """MuJoCo Warp on Warp's CPU device: the GPU code path without a GPU (tests, benchmarks)."""
    return MjWarpBackend(device="cpu", max_worlds=max_worlds)


class IsaacGymBackend(Backend):
    """Adapter for NVIDIA IsaacGym (``isaacgym.gymapi``): the humanoid would be exported as MJCF
    (``humanoid.build_mjcf``) and loaded with ``gym.load_asset``, one env per sequence, torques
    via ``gym.set_dof_actuation_force_tensor`` and contact forces from
    ``gym.acquire_net_contact_force_tensor``. Only type stubs are installed here."""

    name = "isaacgym"

    def __init__(self) -> None:
        raise NotImplementedError(
            "IsaacGymBackend is not available: isaacgym is not installed (only isaacgym-stubs type hints); "
            "use backend='cpu'"
        )


BACKENDS = {"cpu": CpuMujocoBackend, "gpu": MjWarpBackend, "warp": MjWarpBackend, "warp-cpu": MjWarpCpuBackend,
            "isaacgym": IsaacGymBackend}

BATCHED_BACKENDS = frozenset({"gpu", "warp", "warp-cpu"})
"""Backends that simulate many sequences as one batch of worlds: the build accumulates their
simulations into large batches (``pipeline.simulate.batching``)."""

GPU_BACKENDS = frozenset({"gpu", "warp"})
"""Backends that need a CUDA device: the build sends their GPU tasks to ``GPU=1`` workers and every
other task to ``CPU=1`` workers (``pipeline.dataset.build.CPU_RESOURCES``)."""


def get_backend(name: str, max_worlds: int | None = None) -> Backend:
    """Backend instance by name (``cpu``, ``gpu``/``warp`` (CUDA), ``warp-cpu``, ``isaacgym``);
    ``max_worlds``: worlds per batch of a batched backend (ignored by the others)."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown simulation backend {name!r} (expected one of {sorted(BACKENDS)})") from None
    if name in BATCHED_BACKENDS and max_worlds is not None:
        return cls(max_worlds=max_worlds)
    return cls()
