"""Handing freed heap memory back to the operating system (a process's RSS).

glibc keeps freed blocks in its arenas (one per thread that allocated: zarr's codec threads, numpy
in the main thread), so a process's RSS is the high-water mark of whatever its phases left
fragmented there, not what it holds. ``release_memory`` (glibc ``malloc_trim``) returns those pages;
the build calls it after each phase and at the end of heavy tasks, and block loops over a whole
store (``pipeline.loaders.stats.compute_stats``) call it per block, so that their peak does not
grow with the number of blocks (docs/scaling.md, "Fifth round"). This module imports nothing heavy:
stage modules of any layer may use it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable


def release_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Dask's own remedy, ``MALLOC_TRIM_THRESHOLD_``, trims on every free and halved the per-file
    stages' speed (``flows.runtime.MALLOC_TRIM_ENV``). One call costs ≈ 0.1–2 ms (it walks the arenas)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once per process, or ``None``. ``libc.so.6`` first:
    ``ctypes.util.find_library`` forks the (large) calling process to run ``ldconfig -p``."""
    import ctypes
    import ctypes.util

    for name in ("libc.so.6", None):
        try:
            return ctypes.CDLL(name or ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            continue
    return None
