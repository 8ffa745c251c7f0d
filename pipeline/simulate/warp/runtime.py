"""Warp start-up for the GPU backend: kernel cache, device choice, availability (import-guarded).

The kernel cache is persistent: ``$DYNASET_WARP_CACHE``, else ``$XDG_CACHE_HOME/dynaset/warp``
(``~/.cache/dynaset/warp``). MuJoCo Warp's kernels compile on their first launch (≈ 90–100 s on
one CPU core for Warp's CPU device, once per machine and Warp version); later processes load
them from this directory in seconds.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def kernel_cache_dir() -> Path:
    """The persistent Warp kernel cache directory (module docstring)."""
    env = os.environ.get("DYNASET_WARP_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dynaset" / "warp"


def warp_installed() -> bool:
    """``warp`` and ``mujoco_warp`` are importable (the ``gpu`` extra)."""
    return importlib.util.find_spec("warp") is not None and importlib.util.find_spec("mujoco_warp") is not None


_INIT = False


def init_warp():
    """Import and initialise Warp once per process with dynaset's kernel cache; returns ``warp``."""
    global _INIT
    import warp as wp

    if not _INIT:
        path = kernel_cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        wp.config.kernel_cache_dir = str(path)
        wp.config.quiet = True
        wp.init()
        _INIT = True
    return wp


def cuda_available() -> bool:
    """A CUDA device is visible to Warp (False when Warp is missing or fails to start)."""
    if not warp_installed():
        return False
    try:
        return init_warp().get_cuda_device_count() > 0
    except Exception:  # pragma: no cover - driver problems
        return False
