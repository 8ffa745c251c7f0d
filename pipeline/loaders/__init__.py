"""Downstream loaders: open a dynaset release with xarray, train from it with windowed datasets.

Public API (see docs/loading.md)::

    from pipeline.loaders import open_release, ImDySWindows, ZellWindows, make_loader
    ds, index = open_release("release/", "motion", split="train")        # lazy xarray + index
    data = ImDySWindows("release/", "torque", split="train", w=2)         # torch-style dataset
    loader = make_loader(data, batch_size=256, num_workers=2, seed=0)      # batched DataLoader

Importing this package needs neither torch nor any store: torch is imported only when tensors or
a ``DataLoader`` are made (``ImDySWindows(..., as_tensors=False)`` works without it).
"""

from __future__ import annotations

from .sampling import BatchSampler, ChunkShuffleSampler, ShuffleSampler
from .stats import Normalizer, compute_stats, load_stats, write_stats
from .windows import (
    DEFAULT_TARGETS,
    REPRESENTATIONS,
    TARGET_KINDS,
    ImDySConfig,
    InMemorySource,
    assemble_imdys,
    assemble_zell,
    canonicalize_points,
    heading_from_root_aa,
    rotate_vectors,
)
from .xarray_api import open_release, read_index, resolve_store, select_sequences

_LAZY = {"ImDySWindows", "ZellWindows", "make_loader"}


def __getattr__(name: str):
    if name in _LAZY:  # the dataset module is torch-free at import too; kept lazy for import time
        from . import torch_datasets

        return getattr(torch_datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_TARGETS",
    "REPRESENTATIONS",
    "TARGET_KINDS",
    "BatchSampler",
    "ChunkShuffleSampler",
    "ImDySConfig",
    "ImDySWindows",
    "InMemorySource",
    "Normalizer",
    "ShuffleSampler",
    "ZellWindows",
    "assemble_imdys",
    "assemble_zell",
    "canonicalize_points",
    "compute_stats",
    "heading_from_root_aa",
    "load_stats",
    "make_loader",
    "open_release",
    "read_index",
    "resolve_store",
    "rotate_vectors",
    "select_sequences",
    "write_stats",
]
