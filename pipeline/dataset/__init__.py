"""The build's logic, tested without Prefect: a dataset root's configuration, discovery of its
source files, the per-file and simulate stages' records, ledger bookkeeping, store assembly and the
build summary. ``flows/`` only wires these onto Prefect tasks (``pipeline.dataset.build``).

Modules::

    config      dataset.json, processing key (what makes a file's cached output valid)
    records     FileJob, FileOutcome, SimOutcome: the small values passed between stages
    files       per-file stage: read → process → quality metrics → stage (never raises for bad data)
    simulation  simulate stage for a batch of canonical motions
    discovery   source files → jobs; what to process, what is cached, what was removed
    bookkeeping ledger rows of a run, inputs fingerprint
    assembly    dedupe → quality flags → store plans → region writes → stats
    summary     build.json
    executor    how the driver runs stage functions (serially, or on Prefect/Dask via flows/)
    build       the driver: one path shared by the flow, the tests and ``build_in_process``
"""

from .config import DATASET_FILE, DATASET_FORMAT, DatasetConfig, from_jsonable, processing_key, to_jsonable

__all__ = ["DATASET_FILE", "DATASET_FORMAT", "DatasetConfig", "from_jsonable", "processing_key", "to_jsonable"]
