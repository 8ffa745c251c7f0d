"""Store schemas (``schemas/<subset>/<version>.json``) and store validation.

A schema lists a subset's dims (fixed size or ``None``), coordinates, arrays (dtype, dims, units,
description) and required group attributes. Array dims start with ``frame``, ``window`` or
``sequence`` for data, or are a single coordinate dim for coordinate arrays.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED_MAJOR: dict[str, int] = {"motion": 2, "contact": 2, "ground_reaction": 2, "torque": 2}
"""Schema major version each subset's reader/writer understands (older majors: schemas/README.md,
``pipeline.store.migrations``)."""

SUBSETS: tuple[str, ...] = tuple(SUPPORTED_MAJOR)

RECORD_DIMS: tuple[str, ...] = ("frame", "window", "sequence")
"""Dims along which records are concatenated; every data array starts with one of them."""

_BLOCK = 1 << 20  # elements per block when scanning long frame/window arrays


class SchemaError(ValueError):
    """Data or a store does not match its schema, or the schema is unknown/unsupported."""


@dataclass(frozen=True)
class DimSpec:
    """A dimension: ``size`` fixed by the schema or ``None`` (set per store); ``padded`` vectors
    shorter than ``size`` are NaN-padded by the writer."""

    name: str
    size: int | None
    description: str
    padded: bool = False


@dataclass(frozen=True)
class ArraySpec:
    """One array or coordinate: numpy dtype name (``"str"`` for variable-length UTF-8), dims,
    units (``"1"`` for dimensionless), extra attrs written verbatim, allowed values (strings)."""

    name: str
    dtype: str
    dims: tuple[str, ...]
    units: str
    description: str
    required: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)
    allowed_values: tuple[Any, ...] | None = None
    values: tuple[Any, ...] | None = None  # coordinates only: fixed values, None if set per store

    @property
    def is_str(self) -> bool:
        return self.dtype == "str"

    @property
    def np_dtype(self) -> np.dtype:
        """Numpy dtype used in memory (``StringDType`` for strings)."""
        return np.dtypes.StringDType() if self.is_str else np.dtype(self.dtype)

    @property
    def fill_value(self) -> Any:
        """Zarr fill value: NaN for floats, -1 for signed and the max for unsigned integers (so
        unwritten regions are detectable), ``""`` for strings."""
        if self.is_str:
            return ""
        dt = np.dtype(self.dtype)
        if dt.kind == "f":
            return float("nan")
        if dt.kind == "i":
            return -1
        if dt.kind == "u":
            return int(np.iinfo(dt).max)
        raise SchemaError(f"array {self.name}: unsupported dtype {self.dtype}")

    def store_attrs(self) -> dict[str, Any]:
        """Attributes written on the zarr array."""
        return {"units": self.units, "description": self.description, **self.attrs}


@dataclass(frozen=True)
class Schema:
    """A parsed schema. ``arrays`` holds data arrays, ``coords`` coordinate arrays (name == dim)."""

    name: str
    version: str
    description: str
    dims: dict[str, DimSpec]
    coords: dict[str, ArraySpec]
    arrays: dict[str, ArraySpec]
    required_attrs: tuple[str, ...]

    @property
    def major(self) -> int:
        return _parse_version(self.version)[0]

    def arrays_along(self, dim: str) -> tuple[str, ...]:
        """Names of data arrays whose first dim is ``dim`` (``frame``/``window``/``sequence``)."""
        return tuple(n for n, a in self.arrays.items() if a.dims[0] == dim)

    @property
    def frame_arrays(self) -> tuple[str, ...]:
        return self.arrays_along("frame")

    @property
    def window_arrays(self) -> tuple[str, ...]:
        return self.arrays_along("window")

    @property
    def sequence_arrays(self) -> tuple[str, ...]:
        return self.arrays_along("sequence")

    def spec(self, name: str) -> ArraySpec:
        """Spec of a data or coordinate array."""
        if name in self.arrays:
            return self.arrays[name]
        if name in self.coords:
            return self.coords[name]
        raise SchemaError(f"schema {self.name} {self.version} has no array {name!r}")


def _parse_version(version: str) -> tuple[int, int, int]:
    try:
        major, minor, patch = (int(p) for p in version.split("."))
    except ValueError as exc:
        raise SchemaError(f"bad schema version {version!r} (expected MAJOR.MINOR.PATCH)") from exc
    return major, minor, patch


def _schemas_root() -> Traversable:
    """The ``schemas`` namespace package's directory.

    Python 3.11's ``importlib.resources.files`` raises ``NotADirectoryError`` for a namespace
    package whose ``__path__`` holds a setuptools editable-install hook entry; fall back to the
    first real directory on ``__path__`` then.
    """
    try:
        return files("schemas")
    except NotADirectoryError:
        import schemas

        for entry in schemas.__path__:
            if Path(entry).is_dir():
                return Path(entry)
        raise SchemaError("the schemas package has no directory on its __path__") from None


def available_versions(name: str) -> list[str]:
    """Versions of schema ``name`` shipped in the ``schemas`` package, oldest first."""
    folder = _schemas_root() / name
    if not folder.is_dir():
        raise SchemaError(f"unknown schema {name!r}; known: {', '.join(SUBSETS)}")
    versions = [p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json")]
    return sorted(versions, key=_parse_version)


def _array_spec(name: str, d: Mapping[str, Any]) -> ArraySpec:
    allowed = d.get("allowed_values")
    values = d.get("values")
    return ArraySpec(
        name=name,
        dtype=str(d["dtype"]),
        dims=tuple(d["dims"]),
        units=str(d["units"]),
        description=str(d["description"]),
        required=bool(d.get("required", True)),
        attrs=dict(d.get("attrs", {})),
        allowed_values=None if allowed is None else tuple(allowed),
        values=None if values is None else tuple(values),
    )


def load_schema(name: str, version: str | None = None) -> Schema:
    """Load schema ``name`` at ``version`` (latest shipped version when ``None``).

    Parsed once per process (the schema files are package data): every staged sequence, region
    writer and validator asks for its schema, and parsing costs about a millisecond. The result is
    shared; do not modify it."""
    return _load_schema_cached(name, version)


@functools.lru_cache(maxsize=None)
def _load_schema_cached(name: str, version: str | None) -> Schema:
    if version is None:
        versions = available_versions(name)
        if not versions:
            raise SchemaError(f"no versions of schema {name!r} found")
        return _load_schema_cached(name, versions[-1])
    return _parse_schema(name, version)


def _parse_schema(name: str, version: str) -> Schema:
    versions = available_versions(name)
    if version not in versions:
        raise SchemaError(f"schema {name!r} has no version {version!r}; available: {versions}")
    raw = json.loads((_schemas_root() / name / f"{version}.json").read_text(encoding="utf-8"))
    if raw.get("name") != name or raw.get("version") != version:
        raise SchemaError(f"schema file {name}/{version}.json declares {raw.get('name')} {raw.get('version')}")
    dims = {
        k: DimSpec(k, v["size"], v["description"], bool(v.get("padded", False)))
        for k, v in raw["dims"].items()
    }
    schema = Schema(
        name=name,
        version=version,
        description=raw["description"],
        dims=dims,
        coords={k: _array_spec(k, v) for k, v in raw["coords"].items()},
        arrays={k: _array_spec(k, v) for k, v in raw["arrays"].items()},
        required_attrs=tuple(raw["attrs"]["required"]),
    )
    _check_schema(schema)
    return schema


def _check_schema(schema: Schema) -> None:
    """Internal consistency of a schema file (dims declared, data arrays record-major)."""
    for spec in (*schema.arrays.values(), *schema.coords.values()):
        unknown = [d for d in spec.dims if d not in schema.dims]
        if unknown:
            raise SchemaError(f"schema {schema.name}: array {spec.name} uses undeclared dims {unknown}")
        spec.fill_value  # noqa: B018 - raises on unsupported dtypes
    for spec in schema.arrays.values():
        if spec.dims[0] not in RECORD_DIMS:
            raise SchemaError(f"schema {schema.name}: array {spec.name} does not start with {RECORD_DIMS}")
    for spec in schema.coords.values():
        if spec.dims != (spec.name,):
            raise SchemaError(f"schema {schema.name}: coordinate {spec.name} must have dims ({spec.name},)")


# ---------------------------------------------------------------------------------------------
# In-memory validation


def _kind_ok(target: ArraySpec, arr: np.ndarray) -> bool:
    """True when ``arr``'s dtype can be cast to the target without changing kind (ints → floats and
    narrowing within a kind are fine; floats → ints, strings ↔ numbers are not)."""
    kind = arr.dtype.kind
    if target.is_str:
        if kind in "UT":
            return True
        if kind == "O":
            return all(isinstance(v, str) for v in arr.ravel().tolist())
        return False
    tkind = np.dtype(target.dtype).kind
    if tkind == "f":
        return kind in "biuf"
    if tkind in "iu":
        return kind in "biu"
    return False


def validate_arrays(
    schema: Schema,
    arrays: Mapping[str, np.ndarray],
    dim_sizes: Mapping[str, int] | None = None,
    *,
    required: Iterable[str] = (),
    allow_extra: bool = True,
) -> list[str]:
    """Problems of in-memory ``arrays`` against ``schema`` (empty list when they conform).

    Checks dtype kind (see ``_kind_ok``), rank and every axis size: a dim fixed by the schema must
    match it, a dim in ``dim_sizes`` must match that, and any other dim must agree across arrays.
    Names in ``required`` must be present; unknown names are problems unless ``allow_extra``.
    """
    problems: list[str] = []
    sizes: dict[str, int] = dict(dim_sizes or {})
    seen_from: dict[str, str] = {d: "dim_sizes" for d in sizes}
    for name in required:
        if name not in arrays:
            problems.append(f"missing array {name}")
    for name, value in arrays.items():
        if name in schema.arrays or name in schema.coords:
            spec = schema.spec(name)
        else:
            if not allow_extra:
                problems.append(f"unknown array {name} (not in schema {schema.name} {schema.version})")
            continue
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if not _kind_ok(spec, arr):
            problems.append(f"{name}: dtype {arr.dtype} cannot be stored as {spec.dtype}")
        if arr.ndim != len(spec.dims):
            problems.append(f"{name}: rank {arr.ndim} (shape {arr.shape}), expected dims {spec.dims}")
            continue
        for axis, dim in enumerate(spec.dims):
            n = int(arr.shape[axis])
            fixed = schema.dims[dim].size
            if fixed is not None and n != fixed:
                problems.append(f"{name}: dim {dim} has size {n}, schema fixes {fixed}")
            elif dim in sizes and n != sizes[dim]:
                problems.append(f"{name}: dim {dim} has size {n}, expected {sizes[dim]} (from {seen_from[dim]})")
            elif fixed is None and dim not in sizes:
                sizes[dim] = n
                seen_from[dim] = name
    return problems


# ---------------------------------------------------------------------------------------------
# Store validation


def _open_group(path: str | Path, storage_options: dict | None = None):  # -> zarr.Group
    import zarr

    extra = {"storage_options": storage_options} if storage_options else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated-metadata notices
        return zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=False, **extra)


def _dtype_matches(spec: ArraySpec, dtype: Any) -> bool:
    dt = np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype
    if spec.is_str:
        return dt.kind in "TO"
    return dt == np.dtype(spec.dtype)


def _blocks(n: int, row_elems: int, start: int = 0) -> Iterable[tuple[int, int]]:
    step = max(1, _BLOCK // max(1, row_elems))
    for a in range(max(0, start), n, step):
        yield a, min(n, a + step)


def validate_store(path: str | Path, storage_options: dict | None = None, *, index: bool = True,
                   scan_from: Mapping[str, int] | None = None) -> list[str]:
    """Problems of the store at ``path`` (empty list when valid).

    Checks required group attrs and the schema they name, every required array and coordinate
    (presence, dims, dtype, ``units`` attr, dim sizes consistent across arrays, fixed coordinate
    values), the sequence index (offsets are the cumulative sums of counts and cover the frame and
    window dims exactly; ``frame_sequence``/``window_sequence`` agree with them; ``window_start``
    lies inside its sequence), allowed string values (``seq_split``) and flag values (``contact``).
    Long frame/window arrays are scanned block by block; ``index=False`` skips that scan (the
    sequence index, allowed values and flags: the data checks) and checks the structure only.
    ``scan_from`` (``{"frame": a, "window": b}``) scans the frame/window arrays from those records
    on only: an appended store (``pipeline.store.append``) whose earlier records are the hard-linked,
    already validated objects of the store it grew from. The per-sequence checks stay complete.
    """
    path = path if storage_options else Path(path)
    try:
        group = _open_group(path, storage_options)
    except Exception as exc:  # noqa: BLE001 - report, don't raise
        return [f"cannot open {path} as a zarr v3 group: {exc}"]
    attrs = dict(group.attrs)
    name, version = attrs.get("schema_name"), attrs.get("schema_version")
    if name is None or version is None:
        return [f"{path}: group attrs lack schema_name/schema_version (not a dynaset store?)"]
    try:
        schema = load_schema(str(name), str(version))
    except SchemaError as exc:
        return [f"{path}: {exc}"]
    problems = [f"missing group attr {a}" for a in schema.required_attrs if a not in attrs]

    members = set(group.array_keys())
    sizes: dict[str, int] = {}
    present: dict[str, Any] = {}
    for spec in (*schema.coords.values(), *schema.arrays.values()):
        if spec.name not in members:
            if spec.required:
                problems.append(f"missing array {spec.name}")
            continue
        arr = group[spec.name]
        present[spec.name] = arr
        dims = tuple(arr.metadata.dimension_names or ())
        if dims != spec.dims:
            problems.append(f"{spec.name}: dimension_names {dims}, expected {spec.dims}")
            continue
        if not _dtype_matches(spec, arr.dtype):
            problems.append(f"{spec.name}: dtype {arr.dtype}, expected {spec.dtype}")
        units = arr.attrs.get("units")
        if units != spec.units:
            problems.append(f"{spec.name}: units attr {units!r}, expected {spec.units!r}")
        for dim, n in zip(spec.dims, arr.shape):
            fixed = schema.dims[dim].size
            if fixed is not None and n != fixed:
                problems.append(f"{spec.name}: dim {dim} has size {n}, schema fixes {fixed}")
            elif sizes.setdefault(dim, n) != n:
                problems.append(f"{spec.name}: dim {dim} has size {n}, other arrays have {sizes[dim]}")
    for spec in schema.coords.values():
        if spec.name in present and spec.values is not None:
            got = [v.item() if hasattr(v, "item") else v for v in present[spec.name][...].tolist()]
            if got != list(spec.values):
                problems.append(f"coordinate {spec.name} values {got} differ from the schema's")
    if problems or not index:
        return problems  # index checks below assume a structurally sound store
    problems += _check_index(group, schema, sizes, scan_from or {})
    return problems


def _check_index(group: Any, schema: Schema, sizes: Mapping[str, int], scan_from: Mapping[str, int]) -> list[str]:
    problems: list[str] = []
    n_frame, n_window = sizes.get("frame", 0), sizes.get("window", 0)
    f_off = np.asarray(group["seq_frame_offset"][...], dtype=np.int64)
    f_cnt = np.asarray(group["seq_frame_count"][...], dtype=np.int64)
    w_off = np.asarray(group["seq_window_offset"][...], dtype=np.int64)
    w_cnt = np.asarray(group["seq_window_count"][...], dtype=np.int64)
    for label, off, cnt, total in (("frame", f_off, f_cnt, n_frame), ("window", w_off, w_cnt, n_window)):
        if (cnt < 0).any():
            problems.append(f"seq_{label}_count has negative entries")
        expected = np.concatenate([[0], np.cumsum(cnt)[:-1]]) if cnt.size else cnt
        bad = np.flatnonzero(off != expected)
        if bad.size:
            problems.append(
                f"seq_{label}_offset is not the cumulative sum of seq_{label}_count "
                f"(first mismatch at sequence {bad[0]}: {off[bad[0]]} != {expected[bad[0]]})"
            )
        if int(cnt.sum()) != total:
            problems.append(f"seq_{label}_count sums to {int(cnt.sum())}, but the {label} dim has {total}")
    if problems:
        return problems

    # the sequence of each record, block by block (memory stays flat in the store's length): the
    # first sequence whose end lies past the record (zero-length sequences own no record)
    f_end, w_end = f_off + f_cnt, w_off + w_cnt

    def seq_of(ends: np.ndarray, a: int, b: int) -> np.ndarray:
        return np.searchsorted(ends, np.arange(a, b, dtype=np.int64), side="right")

    fs, ws, wst = group["frame_sequence"], group["window_sequence"], group["window_start"]
    for a, b in _blocks(n_frame, 16, scan_from.get("frame", 0)):
        got = np.asarray(fs[a:b])
        want = seq_of(f_end, a, b)
        bad = np.flatnonzero(got != want)
        if bad.size:
            i = a + int(bad[0])
            problems.append(f"frame_sequence[{i}] = {got[bad[0]]}, offsets say {want[bad[0]]}")
            break
    for a, b in _blocks(n_window, 16, scan_from.get("window", 0)):
        got = np.asarray(ws[a:b])
        s = seq_of(w_end, a, b)
        bad = np.flatnonzero(got != s)
        if bad.size:
            i = a + int(bad[0])
            problems.append(f"window_sequence[{i}] = {got[bad[0]]}, offsets say {s[bad[0]]}")
            break
        start = np.asarray(wst[a:b])
        outside = np.flatnonzero((start < f_off[s]) | (start >= f_off[s] + f_cnt[s]))
        if outside.size:
            i = a + int(outside[0])
            problems.append(f"window_start[{i}] = {start[outside[0]]} lies outside sequence {s[outside[0]]}")
            break
    for spec in schema.arrays.values():
        if spec.allowed_values is not None and spec.name in group:
            vals = set(np.asarray(group[spec.name][...]).tolist())
            extra = sorted(vals - set(spec.allowed_values))
            if extra:
                problems.append(f"{spec.name} has values {extra} outside {list(spec.allowed_values)}")
        flags = spec.attrs.get("flag_values")
        if flags is not None and spec.name in group:
            arr = group[spec.name]
            row = int(np.prod(arr.shape[1:], dtype=np.int64))
            # an optional array keeps its fill value where a sequence does not provide it
            allowed = list(flags) if spec.required else [*flags, spec.fill_value]
            for a, b in _blocks(arr.shape[0], row, scan_from.get(spec.dims[0], 0)):
                got = np.asarray(arr[a:b])
                bad = ~np.isin(got, allowed)
                if bad.any():
                    i = a + int(np.argwhere(bad)[0][0])
                    problems.append(f"{spec.name} frame {i} has values outside flag_values {flags}")
                    break
    return problems
