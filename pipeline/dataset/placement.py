"""Where a build's tasks run: on the local Dask cluster, or in the build's own process.

A local Dask cluster costs a fixed price before and after the first task: starting the scheduler and
the worker processes, the workers' cold imports of the stage modules, and the tear-down (measured on
the 2-core build machine: ≈ 8 s start + cold imports and 2.6–3 s tear-down; docs/scaling.md). An
incremental run that processes a few files pays that price for a few seconds of work. The driver
(``pipeline.dataset.build``) therefore decides, after discovery and planning (cheap), where the run's
tasks go:

    estimated task-seconds = files to process × task-seconds per file
    in process  ⇔  estimated task-seconds ≤ LOCAL_CLUSTER_OVERHEAD_S

i.e. when even one core doing all of the work in the build's process is expected to finish before a
local cluster would have started and stopped. Task-seconds per file are this dataset root's own
measurement: the processing and simulate task seconds of every file its builds processed so far, over
those files (``build.json``'s ``processing_rate``, ``update_rate``); a root without one (its first
build) uses ``DEFAULT_FILE_TASK_SECONDS``. The rest of a small run (appending to the stores, the
statistics of the changed stores, the report) does not grow with the files it processes and runs in
the same process. Results are the same either way (the same stage functions on the same
inputs; tested byte for byte), only where they run differs.

Only the local default cluster is skipped; builds on an existing cluster (``--scheduler-address``) always
use it. ``DYNASET_PLACEMENT`` forces a choice: ``auto`` (the rule above, default), ``cluster``,
``in-process``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PLACEMENT_ENV = "DYNASET_PLACEMENT"
MODES = ("auto", "cluster", "in-process")

LOCAL_CLUSTER_OVERHEAD_S = 10.0
"""What a local Dask cluster adds to a run before and after its tasks: start + the workers' cold
imports (≈ 8 s of an 11.2 s process phase for 104 files, 2 workers, 4 h corpus) and tear-down
(2.6–3 s), rounded down (docs/scaling.md, "Fourth round")."""

DEFAULT_FILE_TASK_SECONDS = 0.5
"""Task-seconds per file to process when the dataset root has no measurement of its own (its first
build): deliberately above the synthetic AMASS corpus's ≈ 0.06 s/file without simulation, so that a
first build only runs in process when it is small under any source kind (≤ 20 files)."""


@dataclass(frozen=True)
class Placement:
    in_process: bool
    estimate_s: float
    per_file_s: float
    basis: str

    def describe(self, n_files: int) -> str:
        where = "in this process (no local Dask cluster)" if self.in_process else "on the Dask cluster"
        return (f"{n_files} file(s) to process ≈ {self.estimate_s:.1f} task-s ({self.per_file_s:.3f} s/file, "
                f"{self.basis}): tasks run {where}")


def mode_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``DYNASET_PLACEMENT`` (default ``auto``); ``ValueError`` for anything else than ``MODES``."""
    value = (environ if environ is not None else os.environ).get(PLACEMENT_ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{PLACEMENT_ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def per_file_seconds(last_summary: Mapping[str, Any] | None) -> tuple[float, str]:
    """Task-seconds per processed file measured on this root (``build.json``'s ``processing_rate``:
    every file processed by its builds so far and their processing and simulate task seconds), else
    the default."""
    rate = (last_summary or {}).get("processing_rate") or {}
    n, seconds = int(rate.get("files", 0) or 0), float(rate.get("task_seconds", 0.0) or 0.0)
    if n > 0 and seconds > 0:
        return seconds / n, f"measured on this root over {n} processed files"
    return DEFAULT_FILE_TASK_SECONDS, "default, no measurement of this root yet"


def update_rate(last_summary: Mapping[str, Any] | None, n_files: int, task_seconds: float) -> dict[str, float]:
    """``processing_rate`` for this run's ``build.json``: the last one's plus this run's processed files
    and their per-file task seconds (processing stages and simulation; not the store writes, statistics
    or report, which do not grow with the files a small run processes). Cumulative, so that one long or
    short file does not swing the next run's estimate."""
    rate = (last_summary or {}).get("processing_rate") or {}
    return {"files": int(rate.get("files", 0) or 0) + int(n_files),
            "task_seconds": float(rate.get("task_seconds", 0.0) or 0.0) + float(task_seconds)}


def choose(n_files: int, last_summary: Mapping[str, Any] | None, mode: str = "auto",
           overhead_s: float = LOCAL_CLUSTER_OVERHEAD_S, rewrite_all: bool = False) -> Placement:
    """Where the tasks of a run that processes ``n_files`` files go (module docstring).
    ``rewrite_all``: the run rewrites every store (``compact`` of appended stores): its writes are a
    full build's, whatever the files to process, so ``auto`` keeps the cluster."""
    if mode not in MODES:
        raise ValueError(f"placement {mode!r}: expected one of {', '.join(MODES)}")
    per_file, basis = per_file_seconds(last_summary)
    estimate = n_files * per_file
    if mode != "auto":
        return Placement(mode == "in-process", estimate, per_file, f"{basis}; forced by {PLACEMENT_ENV}={mode}")
    if rewrite_all:
        return Placement(False, estimate, per_file, f"{basis}; but every store is rewritten (compact)")
    return Placement(estimate <= overhead_s, estimate, per_file, basis)
