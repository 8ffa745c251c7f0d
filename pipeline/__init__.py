"""dynaset: a dataset-building pipeline for human dynamics.

Stages are pure functions over numpy/xarray (``pipeline.canonical``, ``pipeline.contact``,
``pipeline.fit``, ``pipeline.split``); I/O lives in ``pipeline.sources`` and ``pipeline.store``;
Prefect flows in ``flows`` only wire the stages.
"""

__version__ = "0.1.0"
