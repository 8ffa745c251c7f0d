"""The ``c3d`` source: C3D lab files (markers + force plates) → marker IK + measured GRF (docs/c3d.md).

Modules: ``reader`` (ezc3d I/O → ``C3DRecord``), ``process`` (plates and markers at the canonical rate),
``motion`` (``RawMotion`` by marker IK, measured GRF per foot), ``source`` (``C3DSource``).
"""

from pipeline.sources.c3d.reader import C3DRecord, discover_c3d, read_c3d
from pipeline.sources.c3d.source import C3DSource
from pipeline.sources.registry import register

register("c3d", C3DSource)

__all__ = ["C3DRecord", "C3DSource", "discover_c3d", "read_c3d"]
