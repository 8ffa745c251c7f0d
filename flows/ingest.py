"""The ``dynaset-ingest`` flow: one incremental run over a dataset root's recorded sources.

Scheduled deployments run this flow (``dynaset schedule``); its parameters are JSON-plain (the root
path), and everything else — sources, build config, quality thresholds — comes from the root's
``dataset.json``. It wires the ``build`` flow as a subflow on a Dask task runner; the Dask workers
use the same Prefect API as this flow (``PREFECT_API_URL`` is inherited).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.build import build
from flows.runtime import dask_task_runner, default_workers
from pipeline.dataset import DatasetConfig


@flow(name="dynaset-ingest", retries=2, retry_delay_seconds=30, validate_parameters=False, log_prints=False)
def ingest(root: str, workers: int | None = None, force: bool = False) -> dict:
    """Ingest whatever is new or changed under the sources recorded in ``root/dataset.json``.

    Retried twice (30 s apart) on failure: a transient error (a worker lost, a full disk freed)
    does not cost a week's ingestion; a crashed attempt leaves the stores and the ledger as they were.
    """
    config = DatasetConfig.read(Path(root))
    n = workers or default_workers()
    return build.with_options(task_runner=dask_task_runner(workers=n))(
        sources=list(config.sources), out_dir=str(root), cfg=config.build, workers=n,
        thresholds=config.thresholds, force=force,
    )
