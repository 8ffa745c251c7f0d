"""Simulation backends: how a batch of motions is simulated.

* ``CpuMujocoBackend`` (implemented): one ``MjModel``/``MjData`` per motion, sequences simulated
  one after another in the calling process (a Dask task = one batch). The controller math is
  vectorised numpy per control tick; the physics substeps run in MuJoCo's C code.
* ``MjxWarpBackend`` (design, import-guarded): batches all sequences of a task on one GPU with
  MuJoCo Warp (``mujoco_warp``) / MJX. Each subject has its own body dimensions, so the batch
  is padded to the longest sequence and the per-subject model fields (``body_pos``,
  ``body_mass``, ``body_inertia``, ``body_ipos``, ``geom_size``, ``geom_pos``) are batched along
  the world axis (all humanoids share the same topology, so they share one compiled structure).
  The controller is the same computation written with batched arrays: desired accelerations
  (``controller.quat_log_error`` is elementwise), inverse dynamics (``mjx.rne`` / warp's
  ``rne``), and the contact distribution (a fixed-iteration projected-gradient NNLS over a
  fixed maximum number of contacts per foot). Recording sums the floor contact sensor data over
  the substeps exactly as the CPU engine does. Not available in this environment (no GPU).
* ``IsaacGymBackend``: an adapter typed against isaacgym's ``gymapi`` names; IsaacGym ships only
  type stubs here, so it raises ``NotImplementedError``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.records import CanonicalMotion

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.simulate.engine import SimConfig, SimulationResult


class Backend:
    """A way to simulate a batch of motions (one pass)."""

    name = "abstract"

    def simulate(self, motions: Sequence[CanonicalMotion], cfg: SimConfig, pass_index: int = 0
                 ) -> list[SimulationResult]:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def needs_gpu(self) -> bool:
        return False


class CpuMujocoBackend(Backend):
    """MuJoCo on the CPU, one sequence after another (deterministic)."""

    name = "cpu"

    def simulate(self, motions, cfg, pass_index=0):
        from pipeline.simulate.engine import simulate_motion

        return [simulate_motion(m, cfg, pass_index) for m in motions]


class MjxWarpBackend(Backend):
    """MuJoCo Warp / MJX on a GPU (see the module docstring for the design).

    Raises ``RuntimeError`` on construction when ``mujoco_warp`` (or ``jax`` with
    ``mujoco.mjx``) or a CUDA device is missing.
    """

    name = "gpu"

    def __init__(self) -> None:
        has_warp = importlib.util.find_spec("mujoco_warp") is not None
        has_jax = importlib.util.find_spec("jax") is not None
        if not (has_warp or has_jax):
            raise RuntimeError(
                "GPU backend unavailable: neither mujoco_warp nor jax (for mujoco.mjx) is installed; "
                "install mujoco-warp (or jax[cuda] + mujoco-mjx) on a CUDA machine, or use backend='cpu'"
            )
        if not _cuda_available(has_warp, has_jax):
            raise RuntimeError("GPU backend unavailable: no CUDA device visible; use backend='cpu'")

    @property
    def needs_gpu(self) -> bool:
        return True

    def simulate(self, motions, cfg, pass_index=0):  # pragma: no cover - needs a GPU
        raise NotImplementedError(
            "MjxWarpBackend batched simulation is designed (see pipeline/simulate/backends.py) but not "
            "implemented in this release; use backend='cpu'"
        )


def _cuda_available(has_warp: bool, has_jax: bool) -> bool:  # pragma: no cover - needs a GPU
    try:
        if has_warp:
            import warp as wp

            wp.init()
            return wp.get_cuda_device_count() > 0
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    except Exception:
        return False


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


BACKENDS = {"cpu": CpuMujocoBackend, "gpu": MjxWarpBackend, "mjx": MjxWarpBackend, "warp": MjxWarpBackend,
            "isaacgym": IsaacGymBackend}


def get_backend(name: str) -> Backend:
    """Backend instance by name (``cpu``, ``gpu``/``mjx``/``warp``, ``isaacgym``)."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown simulation backend {name!r} (expected one of {sorted(BACKENDS)})") from None
    return cls()
