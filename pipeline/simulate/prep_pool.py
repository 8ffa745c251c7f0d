"""A local process pool for the batched backend's host preparation (issue 13: the GPU worker's
host must keep up with the GPU).

Before a batch runs, its host prepares every world (``engine.prepare_sequence``). The bulk of the
pass-independent part is pure numpy on small inputs: the reference splines at the control rate and
their forward kinematics (``engine.reference_kinematics``, ≈ 70 % of it once the dynamics pass is
staged). For a large batch (at least ``POOL_MIN_MOTIONS`` distinct motions) this module computes it
for every motion in a pool of ``pool_workers()`` processes (the machine's cores), and the batch
task finishes each world's preparation in its own process (MuJoCo model copy, ``MjData``,
controller, plan and gates: MuJoCo objects do not travel between processes). Results are
bit-identical: the same functions on the same inputs.

The pool is created on first use (``spawn``: never a fork of a process with CUDA or Dask threads)
and kept for the process's life. Where child processes cannot be started (a daemonic Dask worker
process: ``flows.worker`` starts GPU workers with ``DASK_DISTRIBUTED__WORKER__DAEMON=False``) the
preparation stays serial.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

POOL_MIN_MOTIONS = 64
"""Distinct motions in a batch from which their reference kinematics are computed in the pool:
below it the serial preparation takes < 0.5 s (≈ 7 ms per motion), about what the pool's transfers
and hand-off cost."""

_POOL: ProcessPoolExecutor | None = None
_POOL_FAILED = False


def pool_workers() -> int:
    """Processes of the pool: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _pool() -> ProcessPoolExecutor | None:
    global _POOL, _POOL_FAILED
    if _POOL is None and not _POOL_FAILED:
        import multiprocessing

        if multiprocessing.current_process().daemon:  # a daemonic process may not have children
            _POOL_FAILED = True
            print("[simulate] host preparation stays serial: this process is daemonic", file=sys.stderr)
            return None
        _POOL = ProcessPoolExecutor(pool_workers(), mp_context=multiprocessing.get_context("spawn"))
    return _POOL


def _kinematics(args):
    from pipeline.simulate.engine import reference_kinematics

    motion, cfg, dyn_motion = args
    return reference_kinematics(motion, cfg, dyn_motion)


def reference_kinematics_many(items: Sequence[tuple], cfg, min_motions: int | None = None) -> Iterator | None:
    """``engine.reference_kinematics(motion, cfg, dyn_motion)`` of each (motion, dyn_motion) in
    ``items``, computed in the pool: an iterator over them in order, yielding each as soon as its
    chunk is done (the caller finishes the first worlds' preparation while the pool computes the
    next); ``None`` when there are fewer than ``min_motions`` items (default
    ``POOL_MIN_MOTIONS``), a single core, or no pool (the caller then prepares serially, with the
    same result)."""
    if len(items) < max(1, POOL_MIN_MOTIONS if min_motions is None else min_motions) or pool_workers() < 2:
        return None
    pool = _pool()
    if pool is None:
        return None
    chunk = max(1, len(items) // (4 * pool_workers()))
    return pool.map(_kinematics, [(m, cfg, d) for m, d in items], chunksize=chunk)


def shutdown() -> None:
    """Stop the pool (tests); the next large batch starts a new one."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown()
        _POOL = None
