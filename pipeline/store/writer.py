"""Region-parallel, atomic Zarr v3 store writer.

Steps (``write_store`` runs them serially; a flow can fan the region writes out to workers)::

    plan = plan_store(subset, staged, attrs, coords)           # pure, picklable
    tmp = temporary_path(final)                                # .{name}.tmp-<uuid> next to final
    create_store(plan, tmp)                                    # metadata, coords, per-sequence arrays
    write_frame_region(plan, tmp, i)   for i in range(len(plan.frame_regions))    # any order/process
    write_window_region(plan, tmp, j)  for j in range(len(plan.window_regions))
    finalize_store(plan, tmp, final)                           # validate, consolidate, swap in

Regions are whole shards, so concurrent region writers never touch the same file.
"""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .schema import ArraySpec, Schema, SchemaError, load_schema, validate_arrays, validate_store
from .staging import WRITER_DERIVED, StagedSequence, replace_dir

LABELLED_DIMS: dict[str, str] = {"source_dof": "seq_source_dofs"}
"""Dims labelled per sequence: ``dim`` → the per-sequence string array naming, space-separated and in the
sequence's own order, the columns its staged arrays along ``dim`` hold. The store's coordinate of ``dim``
is the sorted union of those names over the store's sequences (``plan_store`` derives it unless given);
the writer scatters each sequence's columns to their names and leaves the other columns at the fill
value. An optional coordinate left empty makes every array using ``dim`` (and the name array) absent."""


def labels_of(staged: StagedSequence, dim: str) -> tuple[str, ...]:
    """The names a staged sequence gives its columns along labelled ``dim`` (``()`` when none)."""
    value = staged.sequence_values().get(LABELLED_DIMS[dim], "")
    return tuple(str(value).split())


def union_labels(staged: Sequence[StagedSequence], dim: str) -> tuple[str, ...]:
    """Sorted union of the sequences' names along labelled ``dim``: the store coordinate's values."""
    return tuple(sorted({n for s in staged for n in labels_of(s, dim)}))


@dataclass(frozen=True)
class Chunking:
    """Chunk and shard sizes along the record dims (other dims are whole in every chunk).

    Frames: chunks of 256 frames (4.3 s at 60 Hz, 2.6 s at 100 Hz), so any read of ≤ 1 s (≤ 257
    frames) touches at most 2 chunks; a (frame, joint, xyz) float32 chunk is 72 KiB raw. Shards
    of 4096 frames (16 chunks, 68 s at 60 Hz) keep the file count low (one file per shard and
    array: ~10k files per array for 40 M frames) and a shard moderate: measured on smooth
    synthetic 60 Hz motion (float32 from float64 FK-like signals), a Blosc-zstd-5 + bitshuffle
    shard of a (frame, 24, 3) float32 array is ~0.95 MiB of 1.125 MiB raw (ratio ~0.83: float
    mantissas barely compress; ~60 KiB per chunk), ``root_pos_m`` ~42 KiB, ``time_s`` ~4 KiB,
    ``contact`` ~1.4 KiB, ``frame_sequence`` ~1 KiB. Windows use the same 256/4096 split. The
    sequence dim is one unsharded chunk of up to 65536 sequences: per-sequence arrays are read
    whole.

    Attributes:
        frame_chunk, frame_shard: frames per chunk / per shard (shard a multiple of chunk).
        window_chunk, window_shard: windows per chunk / per shard.
        sequence_chunk_max: largest sequence chunk.
        shards_per_region: shards per parallel write region (a region is one writer task).
    """

    frame_chunk: int = 256
    frame_shard: int = 4096
    window_chunk: int = 256
    window_shard: int = 4096
    sequence_chunk_max: int = 65536
    shards_per_region: int = 4
    compression: str = "lz4"
    """Blosc compressor of numeric arrays (level 5, bit-shuffle): ``lz4`` (default) or ``zstd``."""

    def __post_init__(self) -> None:
        for chunk, shard, label in (
            (self.frame_chunk, self.frame_shard, "frame"),
            (self.window_chunk, self.window_shard, "window"),
        ):
            if chunk < 1 or shard < chunk or shard % chunk:
                raise ValueError(f"{label} shard ({shard}) must be a positive multiple of its chunk ({chunk})")
        if self.sequence_chunk_max < 1 or self.shards_per_region < 1:
            raise ValueError("sequence_chunk_max and shards_per_region must be positive")
        if self.compression not in ("lz4", "zstd"):
            raise ValueError(f"compression must be lz4 or zstd, not {self.compression!r}")


@dataclass(frozen=True)
class StorePlan:
    """Everything needed to write one store; picklable, shared by all writer tasks.

    Attributes:
        subset, schema_version: schema of the store.
        staged: sequences in store order.
        attrs: group attributes (required ones included).
        coords: coordinate name → values.
        chunking: chunk/shard sizes.
        frame_offsets, frame_counts, window_offsets, window_counts: per-sequence index.
        n_frames, n_windows: lengths of the frame and window dims.
        frame_regions, window_regions: half-open [a, b) ranges, shard-aligned, covering the dims.
    """

    subset: str
    schema_version: str
    staged: tuple[StagedSequence, ...]
    attrs: dict[str, Any]
    coords: dict[str, tuple[Any, ...]]
    chunking: Chunking
    frame_offsets: tuple[int, ...]
    frame_counts: tuple[int, ...]
    window_offsets: tuple[int, ...]
    window_counts: tuple[int, ...]
    n_frames: int
    n_windows: int
    frame_regions: tuple[tuple[int, int], ...] = field(default=())
    window_regions: tuple[tuple[int, int], ...] = field(default=())
    sequence_base: int = 0
    """Store index of ``staged[0]`` (non-zero in a ``region_plan`` and in an append plan)."""
    kept_frames: int = 0
    kept_windows: int = 0
    """Append plans (``pipeline.store.append``): records [0, kept) already in the store; a region
    starting below them keeps those rows (read back from the store) and appends after them."""

    @property
    def schema(self) -> Schema:
        return load_schema(self.subset, self.schema_version)

    @property
    def n_sequences(self) -> int:
        return len(self.staged)

    @property
    def absent(self) -> frozenset[str]:
        """Optional coordinates and arrays this store leaves out: those of a labelled dim
        (``LABELLED_DIMS``) whose coordinate is empty, with the dim's name array."""
        return absent_names(self.schema, self.coords)


def absent_names(schema: Schema, coords: Mapping[str, Sequence[Any]]) -> frozenset[str]:
    """``StorePlan.absent`` for ``schema`` and the store's coordinates."""
    empty = {d for d in LABELLED_DIMS if d in schema.coords and not schema.coords[d].required and not coords.get(d)}
    out = set(empty) | {LABELLED_DIMS[d] for d in empty if LABELLED_DIMS[d] in schema.arrays}
    out |= {n for n, a in schema.arrays.items() if set(a.dims) & empty}
    for n in out:
        if n in schema.arrays and schema.arrays[n].required:
            raise SchemaError(f"required array {n} uses the empty labelled dim of {schema.name} {schema.version}")
    return frozenset(out)


def region_plan(plan: StorePlan, dim: str, region_index: int) -> StorePlan:
    """The part of ``plan`` one region writer needs: only the sequences overlapping region
    ``region_index`` along ``dim`` (``frame`` or ``window``), which becomes region 0.

    Sending this instead of the whole plan keeps each writer task's payload proportional to a
    region, not to the corpus (the whole plan × every region grows quadratically).
    """
    regions = plan.frame_regions if dim == "frame" else plan.window_regions
    a, b = regions[region_index]
    offsets = plan.frame_offsets if dim == "frame" else plan.window_offsets
    counts = plan.frame_counts if dim == "frame" else plan.window_counts
    ends = np.asarray(offsets, dtype=np.int64) + np.asarray(counts, dtype=np.int64)
    first = int(np.searchsorted(ends, a, side="right"))
    last = int(np.searchsorted(np.asarray(offsets, dtype=np.int64), b, side="left"))
    sl = slice(first, max(first, last))
    return replace(
        plan,
        staged=plan.staged[sl],
        frame_offsets=plan.frame_offsets[sl], frame_counts=plan.frame_counts[sl],
        window_offsets=plan.window_offsets[sl], window_counts=plan.window_counts[sl],
        frame_regions=((a, b),) if dim == "frame" else (),
        window_regions=((a, b),) if dim == "window" else (),
        sequence_base=plan.sequence_base + first,
    )


def _offsets(counts: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(x) for x in np.concatenate([[0], np.cumsum(counts, dtype=np.int64)[:-1]])) if counts else ()


def _regions(n: int, size: int) -> tuple[tuple[int, int], ...]:
    return tuple((a, min(n, a + size)) for a in range(0, n, size))


def plan_store(
    subset: str,
    staged: Sequence[StagedSequence],
    attrs: Mapping[str, Any],
    coords: Mapping[str, Sequence[Any]],
    chunking: Chunking | None = None,
    schema_version: str | None = None,
) -> StorePlan:
    """Plan a store of ``subset`` from ``staged`` sequences (kept in the given order).

    ``attrs`` must hold ``fps_hz`` and ``frame_convention`` (``schema_name``, ``schema_version``,
    ``dynaset_version`` and ``created_by`` are filled in). ``coords`` must give every coordinate
    the schema does not fix (``marker``); fixed ones may be given but must match. A labelled dim's
    coordinate (``LABELLED_DIMS``: ``source_dof``) not given is the union of the staged sequences'
    names; an append plan must be given the whole store's.
    """
    schema = load_schema(subset, schema_version)
    chunking = chunking or Chunking()
    staged = tuple(staged)
    keys = [s.key for s in staged]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise SchemaError(f"duplicate sequence keys: {dup[:5]}")
    for s in staged:
        if subset not in s.subsets:
            raise SchemaError(f"sequence {s.key!r} is not staged for subset {subset} (has {s.subsets})")

    full_attrs: dict[str, Any] = {
        "schema_name": schema.name,
        "schema_version": schema.version,
        "dynaset_version": __version__,
        "created_by": f"dynaset {__version__} (pipeline.store.writer)",
    }
    for k, v in attrs.items():
        if k in ("schema_name", "schema_version") and v != full_attrs[k]:
            raise SchemaError(f"attr {k}={v!r} contradicts the schema ({full_attrs[k]!r})")
        full_attrs[k] = v
    missing = [a for a in schema.required_attrs if a not in full_attrs]
    if missing:
        raise SchemaError(f"store attrs lack required {missing}")
    try:
        full_attrs = json.loads(json.dumps(full_attrs, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"store attrs are not JSON-serialisable: {exc}") from exc

    unknown = sorted(set(coords) - set(schema.coords))
    if unknown:
        raise SchemaError(f"unknown coordinates {unknown} for schema {schema.name}")
    full_coords: dict[str, tuple[Any, ...]] = {}
    for name, spec in schema.coords.items():
        given = tuple(v.item() if isinstance(v, np.generic) else v for v in coords[name]) if name in coords else None
        if given is None and name in LABELLED_DIMS:
            given = union_labels(staged, name)
        if spec.values is not None and given is not None and given != spec.values:
            raise SchemaError(f"coordinate {name} {list(given)} differs from the schema's {list(spec.values)}")
        value = given if given is not None else spec.values
        if value is None:
            raise SchemaError(f"coordinate {name} must be given (the schema does not fix it)")
        if len(set(value)) != len(value):
            raise SchemaError(f"coordinate {name} has duplicate values")
        full_coords[name] = value

    f_counts = tuple(s.n_frames for s in staged)
    w_counts = tuple(s.n_windows for s in staged)
    n_frames, n_windows = sum(f_counts), sum(w_counts)
    return StorePlan(
        subset=schema.name,
        schema_version=schema.version,
        staged=staged,
        attrs=full_attrs,
        coords=full_coords,
        chunking=chunking,
        frame_offsets=_offsets(f_counts),
        frame_counts=f_counts,
        window_offsets=_offsets(w_counts),
        window_counts=w_counts,
        n_frames=n_frames,
        n_windows=n_windows,
        frame_regions=_regions(n_frames, chunking.frame_shard * chunking.shards_per_region),
        window_regions=_regions(n_windows, chunking.window_shard * chunking.shards_per_region),
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _compressors(spec: ArraySpec, chunking: Chunking | None = None) -> Any:
    import zarr.codecs

    if spec.is_str:
        return zarr.codecs.ZstdCodec(level=5)
    cname = (chunking or Chunking()).compression
    return zarr.codecs.BloscCodec(cname=cname, clevel=5, shuffle="bitshuffle")


def _dim_size(plan: StorePlan, schema: Schema, dim: str) -> int:
    if dim == "frame":
        return plan.n_frames
    if dim == "window":
        return plan.n_windows
    if dim == "sequence":
        return plan.n_sequences
    fixed = schema.dims[dim].size
    return fixed if fixed is not None else len(plan.coords[dim])


def _cast(name: str, value: Any, spec: ArraySpec) -> np.ndarray:
    """``value`` as ``spec``'s dtype; integer targets are range-checked (no silent wrap-around)."""
    if spec.is_str:
        return np.asarray(value, dtype=object)
    arr = np.asarray(value)
    target = np.dtype(spec.dtype)
    if target.kind in "iu" and arr.size and arr.dtype.kind in "iu":
        info = np.iinfo(target)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            raise SchemaError(f"{name}: values [{lo}, {hi}] do not fit {spec.dtype}")
    return arr.astype(target, copy=False)


def _sequence_row(schema: Schema, staged: StagedSequence) -> dict[str, np.ndarray]:
    """The staged per-sequence values as (1, ...) arrays, padded vectors NaN-padded."""
    row: dict[str, np.ndarray] = {}
    for name, value in staged.sequence_values().items():
        arr = np.asarray(value)
        spec = schema.arrays.get(name)
        if spec is not None and arr.ndim == 1 and len(spec.dims) == 2:
            dim = schema.dims[spec.dims[1]]
            if dim.padded and dim.size is not None and arr.shape[0] < dim.size:
                arr = np.concatenate([arr.astype(np.float64), np.full(dim.size - arr.shape[0], np.nan)])
        row[name] = arr[None]
    return row


def _optional_present(schema: Schema, s: StagedSequence, dim: str) -> list[str]:
    have = set(s.frame_names() if dim == "frame" else s.window_names())
    return [n for n in schema.arrays_along(dim) if not schema.arrays[n].required and n in have]


def _validate_staged(plan: StorePlan, schema: Schema) -> None:
    """Raise ``SchemaError`` naming the first staged sequence that does not match the schema."""
    # optional arrays (``required: false``, added by minor schema versions) may be absent from a
    # staged sequence: the store keeps their fill value there
    staged_frame = [n for n in schema.frame_arrays if n not in WRITER_DERIVED and schema.arrays[n].required]
    staged_window = [n for n in schema.window_arrays if n not in WRITER_DERIVED and schema.arrays[n].required]
    staged_seq = [n for n in schema.sequence_arrays if n not in WRITER_DERIVED and schema.arrays[n].required]
    fixed = {d: len(v) for d, v in plan.coords.items()}
    labelled = [d for d in LABELLED_DIMS if d in schema.coords]
    absent = plan.absent
    for s in plan.staged:
        where = f"staged sequence {s.key!r} ({s.path})"
        sizes = dict(fixed)
        label_problems = []
        for d in labelled:
            names = labels_of(s, d)
            sizes[d] = len(names)
            unknown = sorted(set(names) - set(plan.coords[d]))
            if len(set(names)) != len(names):
                label_problems.append(f"{LABELLED_DIMS[d]} repeats a name")
            elif unknown:
                label_problems.append(f"{LABELLED_DIMS[d]} names {unknown[:3]} are not in the {d} coordinate")
        try:
            # shapes and dtypes only (zero-memory placeholders); the values of window_start are read
            frame_all, window_all = s.placeholders("frame"), s.placeholders("window")
            frames = {n: frame_all[n] for n in (*staged_frame, *_optional_present(schema, s, "frame")) if n in frame_all}
            windows = {n: window_all[n] for n in (*staged_window, *_optional_present(schema, s, "window"))
                       if n in window_all}
            if "window_start" in windows:
                windows["window_start"] = s.read_rows("window", ["window_start"], 0, s.n_windows)["window_start"]
            row = _sequence_row(schema, s)
        except (OSError, ValueError) as exc:
            raise SchemaError(f"{where}: cannot read staged arrays: {exc}") from exc
        frames = {n: v for n, v in frames.items() if n not in absent}
        windows = {n: v for n, v in windows.items() if n not in absent}
        problems = list(label_problems)
        problems += validate_arrays(
            schema, frames, {**sizes, "frame": s.n_frames}, required=staged_frame
        )
        problems += validate_arrays(
            schema, windows, {**sizes, "window": s.n_windows}, required=staged_window
        )
        problems += validate_arrays(
            schema, {n: v for n, v in row.items() if n in schema.arrays and n not in absent}, {**fixed, "sequence": 1},
            required=staged_seq,
        )
        if not problems and s.n_windows:
            start = np.asarray(windows["window_start"])
            if start.min() < 0 or start.max() >= s.n_frames:
                problems.append(f"window_start (local) outside [0, {s.n_frames})")
        for name, spec in schema.arrays.items():
            if spec.allowed_values is not None and name in row:
                bad = set(row[name].tolist()) - set(spec.allowed_values)
                if bad:
                    problems.append(f"{name}={sorted(bad)} not in {list(spec.allowed_values)}")
        if problems:
            raise SchemaError(f"{where} does not match schema {schema.name} {schema.version}: " + "; ".join(problems))


def _open(tmp_path: Path, mode: str):  # -> zarr.Group
    import zarr

    return zarr.open_group(str(tmp_path), mode=mode, zarr_format=3)


# ---------------------------------------------------------------------------------------------
# Steps


def temporary_path(final_path: Path) -> Path:
    """A fresh temporary store path next to ``final_path``: ``.{name}.tmp-<uuid>``."""
    final_path = Path(final_path)
    return final_path.with_name(f".{final_path.name}.tmp-{uuid.uuid4().hex}")


CHUNK_KEY_ENCODING = {"name": "default", "separator": "."}
"""Chunk (shard) objects are flat files in their array's folder, ``c.<k>.0.0``, not nested folders
``c/<k>/0/0``: a store at 4 h has ~950 folders fewer, which an incremental run's hard-linked clone
had to create one by one (``mkdir`` ≈ 60 µs here, a link ≈ 16 µs) and a replaced store's deletion to
remove (storage_layout.md; stores written before keep their ``/`` keys, which every reader and
writer here follows from ``zarr.json``)."""


def create_store(plan: StorePlan, tmp_path: Path) -> None:
    """Validate every staged sequence, then create the store at ``tmp_path`` (must not exist):
    group attrs, coordinates, all schema arrays (NaN/-1/255/"" filled) and the per-sequence arrays."""
    schema = plan.schema
    _validate_staged(plan, schema)
    ch = plan.chunking
    group = _open(Path(tmp_path), "w-")
    group.attrs.update(plan.attrs)
    absent = plan.absent

    for name, spec in schema.coords.items():
        if name in absent:
            continue
        values = _cast(name, list(plan.coords[name]), spec)
        arr = group.create_array(
            name, shape=values.shape, chunks=(max(1, values.shape[0]),), dtype=spec.np_dtype if not spec.is_str else str,
            dimension_names=list(spec.dims), compressors=_compressors(spec, ch), fill_value=spec.fill_value,
            attributes=spec.store_attrs(), chunk_key_encoding=CHUNK_KEY_ENCODING,
        )
        if values.size:
            arr[:] = values

    seq_chunk = min(max(plan.n_sequences, 1), ch.sequence_chunk_max)
    for name, spec in schema.arrays.items():
        if name in absent:
            continue
        shape = tuple(_dim_size(plan, schema, d) for d in spec.dims)
        inner = shape[1:]
        lead = spec.dims[0]
        if lead == "frame":
            chunks, shards = (ch.frame_chunk, *inner), (ch.frame_shard, *inner)
        elif lead == "window":
            chunks, shards = (ch.window_chunk, *inner), (ch.window_shard, *inner)
        else:
            chunks, shards = (seq_chunk, *inner), None
        chunks = tuple(max(1, c) for c in chunks)
        shards = None if shards is None else tuple(max(1, c) for c in shards)
        group.create_array(
            name, shape=shape, chunks=chunks, shards=shards, dtype=str if spec.is_str else spec.np_dtype,
            dimension_names=list(spec.dims), compressors=_compressors(spec, ch), fill_value=spec.fill_value,
            attributes=spec.store_attrs(), chunk_key_encoding=CHUNK_KEY_ENCODING,
        )

    if plan.n_sequences == 0:
        return
    for name, value in sequence_columns(plan, schema).items():
        group[name][...] = value


_COLUMN_CHUNK = 1024


def sequence_columns(plan: StorePlan, schema: Schema) -> dict[str, np.ndarray]:
    """Every per-sequence array of ``plan``'s sequences, cast to the schema: staged values (fill
    value where an optional one is absent) and the writer-derived offsets, counts and tombstones;
    arrays the store leaves out (``StorePlan.absent``) are not among them."""
    absent = absent_names(schema, plan.coords)
    columns: dict[str, list[np.ndarray]] = {n: [] for n in schema.sequence_arrays if n not in absent}
    pending: dict[str, list[np.ndarray]] = {n: [] for n in columns}

    def flush() -> None:  # a few thousand (1, ...) arrays at a time, not one per sequence and array
        for name, rows in pending.items():
            if rows:
                columns[name].append(np.concatenate(rows))
                pending[name] = []

    for k, s in enumerate(plan.staged):
        row = _sequence_row(schema, s)
        for name in columns:
            if name in WRITER_DERIVED:
                continue
            if name not in row and not schema.arrays[name].required:
                spec = schema.arrays[name]
                shape = (1, *[len(plan.coords[d]) if d in plan.coords else schema.dims[d].size for d in spec.dims[1:]])
                row[name] = np.full(shape, spec.fill_value, dtype=object if spec.is_str else spec.np_dtype)
            pending[name].append(row[name])
        if k % _COLUMN_CHUNK == _COLUMN_CHUNK - 1:
            flush()
    flush()
    derived = {
        "seq_frame_offset": plan.frame_offsets,
        "seq_frame_count": plan.frame_counts,
        "seq_window_offset": plan.window_offsets,
        "seq_window_count": plan.window_counts,
        "seq_tombstone": (0,) * plan.n_sequences,
    }
    out = {}
    for name in columns:
        spec = schema.arrays[name]
        value = np.asarray(derived[name], dtype=np.int64) if name in derived else np.concatenate(columns[name])
        out[name] = _cast(name, value, spec)
    return out


def _region_blocks(plan: StorePlan, schema: Schema, dim: str, a: int, b: int, shape_of):
    """Yield (array name, (b - a, ...) block) for every array along ``dim`` over [a, b): the staged
    sequences' rows (memory-mapped) cast to the schema dtype, the fill value where none is."""
    offsets = np.asarray(plan.frame_offsets if dim == "frame" else plan.window_offsets, dtype=np.int64)
    counts = np.asarray(plan.frame_counts if dim == "frame" else plan.window_counts, dtype=np.int64)
    ends = offsets + counts
    first = int(np.searchsorted(ends, a, side="right"))
    overlaps: list[tuple[int, int, int]] = []  # (sequence index, lo, hi) global, clipped to [a, b)
    for i in range(first, len(offsets)):
        if offsets[i] >= b:
            break
        lo, hi = max(a, int(offsets[i])), min(b, int(ends[i]))
        if hi > lo:
            overlaps.append((i, lo, hi))
    absent = absent_names(schema, plan.coords)
    present = [n for n in schema.arrays_along(dim) if n not in absent]
    names = [n for n in present if n not in ("frame_sequence", "window_sequence")]
    # one read per sequence: every array's rows of the region (optional arrays it lacks are absent)
    rows = {i: plan.staged[i].read_rows(dim, names, lo - int(offsets[i]), hi - int(offsets[i]))
            for i, lo, hi in overlaps}
    # arrays along a labelled dim: each sequence's columns go to their names' places in the coordinate
    labelled = {n: d for n in present for d in schema.arrays[n].dims[1:] if d in LABELLED_DIMS}
    columns: dict[tuple[int, str], np.ndarray] = {}
    for i, _, _ in overlaps:
        for d in {labelled[n] for n in labelled if n in rows[i]}:
            where = {v: k for k, v in enumerate(plan.coords[d])}
            columns[i, d] = np.asarray([where[v] for v in labels_of(plan.staged[i], d)], dtype=np.int64)
    for name in present:
        spec = schema.arrays[name]
        block = np.full((b - a, *shape_of(name)[1:]), spec.fill_value, dtype=spec.np_dtype)
        for i, lo, hi in overlaps:
            if name in ("frame_sequence", "window_sequence"):
                block[lo - a : hi - a] = i + plan.sequence_base
                continue
            part = rows[i].get(name)
            if part is None:
                if spec.required:
                    raise SchemaError(f"{name} of {plan.staged[i].key!r} is not staged")
                continue  # optional array this sequence does not have: keep the fill value
            if name == "window_start":
                part = np.asarray(part, dtype=np.int64) + plan.frame_offsets[i]
            if name in labelled:  # (rows, the sequence's own columns) → their columns of the coordinate
                axis = spec.dims.index(labelled[name])
                cols = columns[i, labelled[name]]
                if part.shape[axis] != cols.size:
                    raise SchemaError(f"{name} of {plan.staged[i].key!r} has {part.shape[axis]} columns, "
                                      f"{LABELLED_DIMS[labelled[name]]} names {cols.size}")
                index = (slice(lo - a, hi - a),) + (slice(None),) * (axis - 1) + (cols,)
                block[index] = _cast(f"{name} of {plan.staged[i].key!r}", part, spec)
                continue
            block[lo - a : hi - a] = _cast(f"{name} of {plan.staged[i].key!r}", part, spec)
        yield name, block


def _write_region(plan: StorePlan, tmp_path: Path, dim: str, a: int, b: int, method: str = "shards") -> int:
    """Write every array along ``dim`` over the shard-aligned region [a, b); returns bytes written
    (``shards``: whole shards encoded per call, ``pipeline.store.shards``) or 0 (``zarr``: the
    reference path through zarr's array assignment, kept for tests and the write benchmark)."""
    from .shards import ShardLayout

    schema = plan.schema
    tmp_path = Path(tmp_path)
    if method == "zarr":
        if plan.kept_frames or plan.kept_windows:
            raise ValueError("append plans are written by the shard writer only")
        group = _open(tmp_path, "r+")
        for name, block in _region_blocks(plan, schema, dim, a, b, lambda n: group[n].shape):
            group[name][a:b] = block
        return 0
    absent = plan.absent
    layouts = {name: ShardLayout.read(tmp_path / name) for name in schema.arrays_along(dim) if name not in absent}
    kept = plan.kept_frames if dim == "frame" else plan.kept_windows
    old = None
    if a < kept:  # an append plan's first region: its first shard holds records already in the store
        import zarr

        old = zarr.open_group(str(tmp_path), mode="r", zarr_format=3)
    written = 0
    for name, block in _region_blocks(plan, schema, dim, a, b, lambda n: layouts[n].shape):
        lay = layouts[name]
        if old is not None:
            block[: kept - a] = old[name][a:kept]
        n = lay.shard[0]
        if a % n:
            raise ValueError(f"region [{a}, {b}) of {name} does not start on a shard boundary ({n})")
        for k in range(a // n, -(-b // n)):
            lo, hi = k * n - a, min(b, (k + 1) * n) - a
            written += lay.write(k, block[lo:hi])
    return written


def write_frame_region(plan: StorePlan, tmp_path: Path, region_index: int, method: str = "shards") -> int:
    """Write every per-frame array over ``plan.frame_regions[region_index]`` from the staged
    sequences (memory-mapped); returns bytes written. Regions are shard-aligned: safe to run
    concurrently in processes."""
    a, b = plan.frame_regions[region_index]
    return _write_region(plan, tmp_path, "frame", a, b, method)


def write_window_region(plan: StorePlan, tmp_path: Path, region_index: int, method: str = "shards") -> int:
    """Write every per-window array over ``plan.window_regions[region_index]``; ``window_start``
    becomes a global frame index; returns bytes written. Safe to run concurrently with other regions."""
    a, b = plan.window_regions[region_index]
    return _write_region(plan, tmp_path, "window", a, b, method)


def scan_start(plan: StorePlan) -> dict[str, int] | None:
    """Where ``finalize_store`` starts scanning the frame and window records: the first record an
    append plan writes (its first region's start, shard-aligned), or None (a whole store: all)."""
    if not (plan.kept_frames or plan.kept_windows):
        return None
    return {"frame": plan.frame_regions[0][0] if plan.frame_regions else plan.n_frames,
            "window": plan.window_regions[0][0] if plan.window_regions else plan.n_windows}


def finalize_store(plan: StorePlan, tmp_path: Path, final_path: Path,
                   discard: Callable[[Path], None] | None = None) -> Path:
    """Validate the store at ``tmp_path``, consolidate its metadata and move it to ``final_path``.

    An existing store at ``final_path`` is renamed to a sibling ``.{name}.trash-<uuid>``, the new
    one renamed into place, then the old one deleted (restored if the rename fails; ``discard``:
    how, e.g. ``staging.Trash.add`` in the background). ``tmp_path`` must be on the same filesystem
    (use ``temporary_path``). Raises ``SchemaError`` if invalid.
    """
    tmp_path, final_path = Path(tmp_path), Path(final_path)
    check_store(plan, tmp_path, final_path.name)
    return swap_store(tmp_path, final_path, discard)


def check_store(plan: StorePlan, tmp_path: Path | str, name: str | None = None) -> None:
    """The first half of ``finalize_store``: validate the store at ``tmp_path`` against ``plan``
    and consolidate its metadata (``name``: the final store's name, for the error). Raises
    ``SchemaError`` if invalid. Stores can be checked in parallel (the build's ``check_stores`` tasks)."""
    import zarr

    tmp_path = Path(tmp_path)
    # an append plan's earlier records are the validated store's own (hard-linked) objects: the
    # record-by-record scan starts at the first rewritten shard (the per-sequence checks stay whole)
    problems = validate_store(tmp_path, scan_from=scan_start(plan))
    if problems:
        raise SchemaError(f"store {name or tmp_path.name} ({plan.subset}) is invalid: " + "; ".join(problems))
    got = zarr.open_group(str(tmp_path), mode="r", zarr_format=3).attrs.get("schema_name")
    if got != plan.subset:
        raise SchemaError(f"{tmp_path} holds a {got} store, plan is for {plan.subset}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # consolidated metadata is not in the v3 spec
        zarr.consolidate_metadata(str(tmp_path), zarr_format=3)


def swap_store(tmp_path: Path, final_path: Path, discard: Callable[[Path], None] | None = None) -> Path:
    """The second half of ``finalize_store``: move the checked store at ``tmp_path`` to ``final_path``
    (the rename protocol of ``finalize_store``)."""
    tmp_path, final_path = Path(tmp_path), Path(final_path)
    if tmp_path.parent.resolve() != final_path.parent.resolve():
        raise SchemaError(f"temporary store {tmp_path} must sit next to {final_path}")
    replace_dir(tmp_path, final_path, discard)
    return final_path


def write_store(plan: StorePlan, final_path: Path) -> Path:
    """All steps serially; on any error the temporary store is deleted and ``final_path`` untouched."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final_path)
    try:
        create_store(plan, tmp)
        for i in range(len(plan.frame_regions)):
            write_frame_region(plan, tmp, i)
        for i in range(len(plan.window_regions)):
            write_window_region(plan, tmp, i)
        return finalize_store(plan, tmp, final_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
