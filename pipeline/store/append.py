"""Appending sequences to an existing store, and tombstoning some of its sequences, atomically.

Incremental ingestion (storage_layout.md, "Incremental ingestion") adds the sequences of new and
changed files at the end of every dim and marks superseded or removed ones in ``seq_tombstone``,
instead of rewriting the store. Steps (``pipeline.dataset.assembly`` runs them)::

    plan = plan_append(final, plan_store(subset, new_sequences, ...))   # pure after one metadata read
    prepare_append(final, plan, tombstones, tmp)     # clone (hard links), grow dims, per-sequence arrays
    write_frame_region(plan, tmp, i) / write_window_region(plan, tmp, j)   # any order / process
    finalize_store(plan, tmp, final)                 # validate, consolidate, swap in

The clone is made of hard links to the existing store's objects; zarr and the shard writer only
ever write new files renamed into place, so the existing store — and every release hard-linked to
it — keeps its bytes. Only the shards from the one holding the old last record onwards, the
per-sequence arrays and the metadata are new files: the cost is proportional to what is appended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .schema import SchemaError
from .writer import StorePlan, _cast, _compressors, sequence_columns


def store_sizes(path: Path) -> tuple[int, int, int]:
    """(sequences, frames, windows) of the store at ``path``, from its arrays' metadata."""
    def length(name: str) -> int:
        return int(json.loads((Path(path) / name / "zarr.json").read_text())["shape"][0])

    return length("seq_frame_count"), length("frame_sequence"), length("window_sequence")


def _aligned_regions(start: int, end: int, shard: int, per_region: int) -> tuple[tuple[int, int], ...]:
    a0 = (start // shard) * shard
    size = shard * per_region
    return tuple((a, min(end, a + size)) for a in range(a0, end, size)) if end > start else ()


def plan_append(existing: Path, plan: StorePlan) -> StorePlan:
    """``plan`` (a ``plan_store`` of the sequences to append) moved after the existing store's
    records: global offsets, sequence indices from the store's sequence count, shard-aligned regions
    from the shard holding the first appended record (its earlier rows are kept)."""
    n_s, n_f, n_w = store_sizes(existing)
    ch = plan.chunking
    n_f1, n_w1 = n_f + plan.n_frames, n_w + plan.n_windows
    return replace(
        plan,
        frame_offsets=tuple(o + n_f for o in plan.frame_offsets),
        window_offsets=tuple(o + n_w for o in plan.window_offsets),
        n_frames=n_f1, n_windows=n_w1,
        frame_regions=_aligned_regions(n_f, n_f1, ch.frame_shard, ch.shards_per_region),
        window_regions=_aligned_regions(n_w, n_w1, ch.window_shard, ch.shards_per_region),
        sequence_base=n_s, kept_frames=n_f, kept_windows=n_w,
    )


def clone_tree(src: Path, dst: Path, skip: Collection[str] = ()) -> int:
    """``dst`` (must not exist) as a copy of folder ``src`` made of hard links, without its top-level
    entries named in ``skip`` (rewritten next); returns files linked."""
    n = 0
    for dirpath, dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
        (dst / rel).mkdir(parents=True, exist_ok=rel == Path("."))
        for name in files:
            os.link(Path(dirpath) / name, dst / rel / name)
            n += 1
    return n


def prepare_append(existing: Path, plan: StorePlan, tombstones: Sequence[int], tmp: Path) -> None:
    """Make ``tmp`` the existing store with ``plan``'s sequences appended to the per-sequence
    arrays, the sequences at store indices ``tombstones`` marked, and the frame/window dims grown
    to ``plan.n_frames``/``plan.n_windows`` (their new regions are written next, by the region
    writers). The existing store must have ``plan``'s schema version, attributes and coordinates
    (a labelled dim's coordinate included: the caller plans a full rewrite when it would change)."""
    import zarr

    from .writer import _validate_staged

    existing, tmp = Path(existing), Path(tmp)
    schema = plan.schema
    old = zarr.open_group(str(existing), mode="r", zarr_format=3)
    if (old.attrs.get("schema_name"), old.attrs.get("schema_version")) != (schema.name, schema.version):
        raise SchemaError(f"{existing} is {old.attrs.get('schema_name')} {old.attrs.get('schema_version')}, "
                          f"cannot append {schema.name} {schema.version}")
    if "seq_tombstone" not in schema.arrays:
        raise SchemaError(f"schema {schema.name} {schema.version} has no seq_tombstone")
    _validate_staged(plan, schema)
    n_s = plan.sequence_base
    # per-sequence arrays: all grow when sequences are appended; a run that only tombstones rewrites
    # seq_tombstone alone (the others keep their hard-linked objects)
    rewrite = [n for n in schema.sequence_arrays if n not in plan.absent
               and (plan.n_sequences or n == "seq_tombstone" or n not in old)]
    clone_tree(existing, tmp, skip=rewrite)
    group = zarr.open_group(str(tmp), mode="r+", zarr_format=3)
    absent = plan.absent
    for dim, size in (("frame", plan.n_frames), ("window", plan.n_windows)):
        for name in schema.arrays_along(dim):
            if name in absent:
                continue
            arr = group[name]
            arr.resize((size, *arr.shape[1:]))
    new = sequence_columns(plan, schema) if plan.n_sequences else {}
    total = n_s + plan.n_sequences
    chunk = min(max(total, 1), plan.chunking.sequence_chunk_max)
    for name in rewrite:
        spec = schema.arrays[name]
        before = np.asarray(old[name][...]) if name in old else None
        if spec.is_str and before is not None:
            before = before.astype(object)
        if name == "seq_tombstone":
            before = np.zeros(n_s, np.uint8) if before is None else before.copy()
            before[np.asarray(list(tombstones), dtype=np.int64)] = 1
        if before is None:
            raise SchemaError(f"{existing} lacks {name}")
        value = np.concatenate([before, new[name]]) if plan.n_sequences else before
        inner = value.shape[1:]
        meta = _grown_metadata(existing / name, value.shape, (chunk, *inner))
        if meta is not None:  # the existing array's metadata with the new shape: no zarr array creation
            (tmp / name).mkdir()
            (tmp / name / "zarr.json").write_text(meta, encoding="utf-8")
            arr = zarr.open_array(str(tmp / name), mode="r+", zarr_format=3)
        else:
            arr = group.create_array(
                name, shape=value.shape, chunks=(chunk, *inner), dtype=str if spec.is_str else spec.np_dtype,
                dimension_names=list(spec.dims), compressors=_compressors(spec, plan.chunking),
                fill_value=spec.fill_value, attributes=spec.store_attrs(), overwrite=True,
            )
        if total:
            arr[...] = _cast(name, value, spec)


def _grown_metadata(array_path: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> str | None:
    """The ``zarr.json`` of the unsharded array at ``array_path`` with a new shape and chunk shape,
    serialized as zarr writes it (None if it cannot be read): what ``create_array`` with the same
    schema writes, without its cost (≈ 8 ms an array, ~25 per store and run)."""
    import zarr

    try:
        meta = json.loads((Path(array_path) / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("node_type") != "array" or meta.get("chunk_grid", {}).get("name") != "regular":
        return None
    meta["shape"] = [int(x) for x in shape]
    meta["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": [int(x) for x in chunks]}}
    return json.dumps(meta, allow_nan=True, indent=zarr.config.get("json_indent"))
