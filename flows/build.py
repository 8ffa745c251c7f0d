"""The ``build`` flow: Prefect/Dask wiring of ``pipeline.dataset.build.build_dataset``.

The driver (discover → process → simulate → assemble → record) lives in ``pipeline.dataset``; it
runs every stage function through an executor. ``PrefectExecutor`` maps each function onto its
Prefect task, so per-file batches, simulations, shard-aligned region writes, statistics and the
report run on the Dask cluster while the flow process only receives small records.

A run whose planned work is small (``pipeline.dataset.placement``) on the local default cluster runs
the same tasks in the flow's process instead (``in_process_executor``): the task runner only starts
its cluster on the first task submitted to it, so such a run never starts one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed, wait

from pipeline.dataset import assembly
from pipeline.dataset.build import build_dataset, report_task
from pipeline.dataset.executor import SerialExecutor, probed
from pipeline.dataset.files import process_files
from pipeline.dataset.simulation import finish_chunk, prepare_chunk, simulate_motions, simulate_prepared
from pipeline.process import BuildConfig
from pipeline.quality import Thresholds
from pipeline.simulate.batching import GpuBatching
from pipeline.sources.base import SourceSpec
from pipeline.store import Chunking

class Payload:
    """A task argument Prefect passes through untouched: ``visit_collection`` (Prefect's search for
    upstream futures, prefect-dask's future swap) treats an object that is neither a collection nor
    a dataclass as a leaf, where it walks every element of a list of records. Unwrapped by
    ``unwrapped`` before the stage function runs."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def unwrapped(fn: Callable) -> Callable:
    """``fn`` called with its ``Payload`` arguments unwrapped."""
    import functools

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return fn(*(a.value if isinstance(a, Payload) else a for a in args), **kwargs)

    return call


_NO_RETRY = {"cache_policy": NO_CACHE, "retries": 0}
TASKS: dict[Callable, object] = {
    process_files: task(unwrapped(probed(process_files)), name="ingest-files", **_NO_RETRY),
    simulate_motions: task(unwrapped(probed(simulate_motions)), name="simulate", **_NO_RETRY),
    prepare_chunk: task(unwrapped(probed(prepare_chunk)), name="simulate-prepare", **_NO_RETRY),
    simulate_prepared: task(unwrapped(probed(simulate_prepared)), name="simulate-batch", **_NO_RETRY),
    finish_chunk: task(unwrapped(probed(finish_chunk)), name="simulate-finish", **_NO_RETRY),
    assembly.write_regions: task(unwrapped(probed(assembly.write_regions)), name="write-regions",
                                 cache_policy=NO_CACHE, retries=1),
    assembly.create_stores: task(unwrapped(probed(assembly.create_stores)), name="create-stores", **_NO_RETRY),
    assembly.check_stores: task(unwrapped(probed(assembly.check_stores)), name="check-stores", **_NO_RETRY),
    assembly.store_stats: task(unwrapped(probed(assembly.store_stats)), name="stats", **_NO_RETRY),
    report_task: task(unwrapped(probed(report_task)), name="report", **_NO_RETRY),
}
"""Every stage function the driver submits, as its Prefect task."""


class PrefectExecutor:
    """``pipeline.dataset.executor.Executor`` on the flow's task runner (Dask)."""

    remote = True

    def submit(self, fn: Callable, *args, resources: dict | None = None, priority: int = 0):
        """``fn``'s task, submitted with Dask annotations: ``resources`` restrict it to workers that
        advertise them, ``priority`` runs it before queued tasks of lower priority. Futures in
        ``args`` (or lists of them) become the task's upstream dependencies (Prefect resolves them to
        their results; Dask runs the task once they are done). Every other argument travels as a
        ``Payload``, which Prefect and prefect-dask do not walk looking for futures (they walked every
        record of the file batches and region plans: ≈ 3 s of the flow process's time in a 1 h build)."""
        import dask

        notes = {k: v for k, v in (("resources", resources), ("priority", priority)) if v}
        with dask.annotate(**notes) if notes else contextlib.nullcontext():
            return TASKS[fn].submit(*(a if _has_future(a) else Payload(a) for a in args))

    def as_completed(self, futures: Iterable):
        return as_completed(list(futures))

    def wait(self, futures: Iterable) -> None:
        wait(list(futures))


def _has_future(arg) -> bool:
    """``arg`` is a Prefect future or a list/tuple holding one (an upstream dependency)."""
    if isinstance(arg, PrefectFuture):
        return True
    return isinstance(arg, (list, tuple)) and any(isinstance(a, PrefectFuture) for a in arg)


def _run_task(fn: Callable, *args):
    return TASKS[fn](*args)


def in_process_executor() -> SerialExecutor:
    """Each stage function's Prefect task, run in the flow's process when submitted (a task run
    of the flow like any other, without the Dask cluster)."""
    return SerialExecutor(call=_run_task)


@flow(name="build", log_prints=False, validate_parameters=False)
def build(
    sources: list[SourceSpec],
    out_dir: str,
    cfg: BuildConfig = BuildConfig(),
    chunking: Chunking | None = None,
    workers: int = 2,
    thresholds: Thresholds | None = None,
    force: bool = False,
    compact: bool = False,
    sim_batching: GpuBatching | None = None,
    local_cluster: bool = False,
    placement: str = "auto",
) -> dict:
    """Incrementally build every subset store of the dataset root ``out_dir``; returns the summary
    (``pipeline.dataset.build.build_dataset``; ``compact``: rewrite every store afresh;
    ``sim_batching``: batches of worlds of a batched simulator backend; ``local_cluster``: the task
    runner would start a local cluster, which a small run skips (``placement``: ``auto``, ``cluster``,
    ``in-process``; ``pipeline.dataset.placement``))."""
    return build_dataset(sources, out_dir, cfg, chunking, workers, thresholds, force, executor=PrefectExecutor(),
                         compact=compact, sim_batching=sim_batching,
                         small_executor=in_process_executor() if local_cluster else None, placement=placement)
