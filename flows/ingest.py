"""The ``dynaset-ingest`` flow: one incremental run over a dataset root's recorded sources.

Scheduled deployments run this flow (``dynaset schedule``); its parameters are JSON-plain (the root
path or ``s3://`` URL), and everything else — sources, build config, quality thresholds — comes from
the root's ``dataset.json``. It wires the ``build`` flow as a subflow on a Dask task runner; the Dask
workers use the same Prefect API as this flow (``PREFECT_API_URL`` is inherited). A remote root is
built in a local mirror under the remote root's lock (``pipeline.store.remote_root``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.build import build
from flows.runtime import dask_task_runner, default_workers
from pipeline.dataset.placement import mode_from_env
from pipeline.dataset import DatasetConfig
from pipeline.store.location import open_location
from pipeline.store.remote_root import is_remote, mirror_dir, pull_state, push_state, remote_has_stores


@flow(name="dynaset-ingest", retries=2, retry_delay_seconds=30, validate_parameters=False, log_prints=False)
def ingest(root: str, workers: int | None = None, force: bool = False, compact: bool = False) -> dict:
    """Ingest whatever is new or changed under the sources recorded in ``root/dataset.json``.

    Retried twice (30 s apart) on failure: a transient error (a worker lost, a full disk freed)
    does not cost a week's ingestion; a crashed attempt leaves the stores and the ledger as they were.
    """
    n = workers or default_workers()
    if not is_remote(root):
        return _build_into(Path(root), DatasetConfig.read(Path(root)), n, force, compact)
    loc = open_location(root)
    mirror = mirror_dir(root)
    with loc.lock("build"):
        pull_state(loc, mirror)
        summary = _build_into(mirror, DatasetConfig.read(mirror), n, force, compact)
        push_state(loc, mirror, stores=not summary.get("up_to_date") or not remote_has_stores(loc))
    return summary


def _build_into(root: Path, config: DatasetConfig, workers: int, force: bool, compact: bool = False) -> dict:
    return build.with_options(task_runner=dask_task_runner(workers=workers))(
        sources=list(config.sources), out_dir=str(root), cfg=config.build, workers=workers,
        thresholds=config.thresholds, force=force, compact=compact, local_cluster=True, placement=mode_from_env(),
    )
