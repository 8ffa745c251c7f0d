"""Read per-sequence arrays back from a build's subset stores (for metrics and per-sequence plots).

A sequence's arrays are the union over the subset stores that hold it (``motion`` first, then
``contact``, ``ground_reaction``, ``torque``, then any other ``*.zarr``), so arrays that a later
stage adds to some store (simulation outputs, force plates) are picked up without code changes.
Sequences are keyed as the build keys them (``sequence_key``): a simulated pass, which shares its
motion's ``seq_id`` and has ``seq_pass`` k ≥ 0, is ``<seq_id>#pass<k>``, separate from the motion.
Stores are opened with plain ``zarr`` (schema major version checked as ``open_store`` does; an
older major whose migrations are pure renames is read under the current names, with a warning) and
read in blocks of whole shards, so recomputing metrics of a large build streams through it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.split import SUBSETS
from pipeline.store.reader import SchemaUpgradeWarning, check_store_schema

from .metrics import metrics_row

_BLOCK_FRAMES = 16384


def store_paths(out_dir: str | Path) -> dict[str, Path]:
    """``{subset: path}`` of the stores in a build/release folder, ``motion`` first."""
    out = Path(out_dir)
    found = {p.name[: -len(".zarr")]: p for p in sorted(out.glob("*.zarr")) if p.is_dir() and not p.name.startswith(".")}
    order = [s for s in SUBSETS if s in found] + [s for s in found if s not in SUBSETS]
    return {s: found[s] for s in order}


def _open_group(path: Path) -> tuple[Any, dict[str, str]]:
    """(zarr group, {current name: stored name}) of a readable store."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_group(str(path), mode="r")
    schema = check_store_schema(dict(g.attrs), str(path))
    if schema.upgraded:
        warnings.warn(schema.message(str(path)), SchemaUpgradeWarning, stacklevel=3)
    return g, {new: old for old, new in schema.renames}


def sequence_key(seq_id: str, seq_pass: int = -1) -> str:
    """The build's key of a sequence (metrics rows, staging): ``seq_id`` for recorded/measured
    sequences (``seq_pass`` < 0 or absent), ``<seq_id>#pass<k>`` for simulated pass ``k``
    (``pipeline.process.simulated_key``)."""
    return seq_id if seq_pass < 0 else f"{seq_id}#pass{int(seq_pass)}"


def _strings(a: Any) -> list[str]:
    return [str(x) for x in np.asarray(a[...]).tolist()]


@dataclass
class _Store:
    subset: str
    group: Any
    fps_hz: float
    ids: list[str]
    row: dict[str, int]
    frame_names: tuple[str, ...]
    window_names: tuple[str, ...]
    seq_names: tuple[str, ...]
    f_off: np.ndarray
    f_cnt: np.ndarray
    w_off: np.ndarray
    w_cnt: np.ndarray
    stored: dict[str, str] = field(default_factory=dict)
    """Current array name → name in the store, for names an older major stores differently."""
    cache: dict[str, tuple[int, int, np.ndarray]] = field(default_factory=dict)

    def array(self, name: str) -> Any:
        """The zarr array holding current-name ``name``."""
        return self.group[self.stored.get(name, name)]

    def read(self, name: str, a: int, b: int, block: int = _BLOCK_FRAMES) -> np.ndarray:
        """Rows [a, b) of a frame/window array through a forward block cache."""
        hit = self.cache.get(name)
        if hit is not None and hit[0] <= a and b <= hit[1]:
            return hit[2][a - hit[0]: b - hit[0]]
        arr = self.array(name)
        end = min(arr.shape[0], max(b, a + block))
        data = np.asarray(arr[a:end])
        self.cache[name] = (a, end, data)
        return data[: b - a]


def _load_store(subset: str, path: Path) -> _Store:
    g, stored = _open_group(path)
    current = {old: new for new, old in stored.items()}
    names = [current.get(n, n) for n in g.array_keys()]
    dims = {n: tuple(g[stored.get(n, n)].metadata.dimension_names or ()) for n in names}
    ids = _strings(g["seq_id"]) if "seq_id" in names else []
    if ids and "seq_pass" in names:
        # a simulated pass shares its motion's seq_id (seq_pass k ≥ 0): key it as the build does
        passes = np.asarray(g[stored.get("seq_pass", "seq_pass")][...])
        ids = [sequence_key(s, int(k)) for s, k in zip(ids, passes)]
    derived = {"frame_sequence", "window_sequence", "window_start"}
    live = list(range(len(ids)))
    if ids and "seq_tombstone" in names:  # sequences tombstoned by an incremental ingestion are skipped
        dead = np.asarray(g["seq_tombstone"][...]) == 1
        live = [i for i in live if not dead[i]]
    return _Store(
        subset=subset, group=g, fps_hz=float(g.attrs.get("fps_hz", 30.0)), ids=[ids[i] for i in live],
        row={ids[i]: i for i in live},
        frame_names=tuple(n for n in names if dims[n][:1] == ("frame",) and n not in derived),
        window_names=tuple(n for n in names if dims[n][:1] == ("window",) and n not in derived),
        seq_names=tuple(n for n in names if dims[n] == ("sequence",)),
        f_off=np.asarray(g["seq_frame_offset"][...]) if ids else np.zeros(0, np.int64),
        f_cnt=np.asarray(g["seq_frame_count"][...]) if ids else np.zeros(0, np.int64),
        w_off=np.asarray(g["seq_window_offset"][...]) if ids else np.zeros(0, np.int64),
        w_cnt=np.asarray(g["seq_window_count"][...]) if ids else np.zeros(0, np.int64),
        stored=stored,
    )


def store_members(out_dir: str | Path) -> dict[str, set[str]]:
    """``{subset: live sequence keys}`` of every store in a build/release folder: only ``seq_id``,
    ``seq_pass`` and ``seq_tombstone`` are read (``BuildReader`` opens every array). What the
    report's per-subset tables need."""
    out = {}
    for subset, path in store_paths(out_dir).items():
        g, stored = _open_group(path)
        names = set(g.array_keys())

        def arr(name: str):
            return g[stored.get(name, name)]

        if stored.get("seq_id", "seq_id") not in names:
            out[subset] = set()
            continue
        ids = _strings(arr("seq_id"))
        if stored.get("seq_pass", "seq_pass") in names:
            ids = [sequence_key(s, int(k)) for s, k in zip(ids, np.asarray(arr("seq_pass")[...]))]
        if stored.get("seq_tombstone", "seq_tombstone") in names:
            dead = np.asarray(arr("seq_tombstone")[...]) == 1
            ids = [s for s, d in zip(ids, dead) if not d]
        out[subset] = set(ids)
    return out


def _unset(x: np.ndarray, fill: Any) -> bool:
    """True when a sequence's slice of an (optional) array holds only the fill value: the
    sequence does not have that array (e.g. simulation arrays of a measured sequence)."""
    if x.size == 0:
        return False
    if isinstance(fill, float) and np.isnan(fill):
        return bool(np.isnan(x).all())
    return bool(np.all(x == fill))


class BuildReader:
    """Per-sequence access to every store of a build folder."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.stores = [_load_store(s, p) for s, p in store_paths(self.out_dir).items()]
        self._seq_values: dict[str, dict[str, Any]] = {}

    @property
    def seq_ids(self) -> list[str]:
        """All sequence ids, in the order of the first store holding them (``motion`` first)."""
        seen: dict[str, None] = {}
        for st in self.stores:
            for s in st.ids:
                seen.setdefault(s, None)
        return list(seen)

    def _values(self, st: _Store) -> dict[str, Any]:
        if st.subset not in self._seq_values:
            vals = {}
            for n in st.seq_names:
                a = st.array(n)
                vals[n] = _strings(a) if a.dtype.kind in "OTUS" or str(a.dtype).startswith("str") else np.asarray(a[...])
            self._seq_values[st.subset] = vals
        return self._seq_values[st.subset]

    def sequence(self, seq_id: str, names: Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, seq values) of one sequence; ``names`` limits the arrays read."""
        want = None if names is None else set(names)
        arrays: dict[str, np.ndarray] = {}
        values: dict[str, Any] = {}
        fps = None
        for st in self.stores:
            i = st.row.get(seq_id)
            if i is None:
                continue
            fps = fps or st.fps_hz
            for n, col in self._values(st).items():
                if n not in values:
                    v = col[i]
                    values[n] = v.item() if isinstance(v, np.generic) else v
            fa, fn = int(st.f_off[i]), int(st.f_cnt[i])
            wa, wn = int(st.w_off[i]), int(st.w_cnt[i])
            for names, a, n_rows in ((st.frame_names, fa, fn), (st.window_names, wa, wn)):
                for n in names:
                    if n not in arrays and (want is None or n in want):
                        x = st.read(n, a, a + n_rows)
                        if not _unset(x, st.array(n).fill_value):
                            arrays[n] = x
        if fps is None:
            raise KeyError(f"sequence {seq_id!r} is in none of the stores under {self.out_dir}")
        values["fps_hz"] = fps
        return arrays, values

    def subsets_of(self, seq_id: str) -> list[str]:
        return [st.subset for st in self.stores if seq_id in st.row]

    def iter_sequences(self) -> Iterator[tuple[str, dict[str, np.ndarray], dict[str, Any]]]:
        for sid in self.seq_ids:
            arrays, values = self.sequence(sid)
            yield sid, arrays, values


def metrics_from_stores(out_dir: str | Path) -> list[dict[str, Any]]:
    """Metrics rows of every sequence in a build's stores (for builds without ``metrics.parquet``).

    Sole points are derived from the stored rotations (``metrics.derived_array``); excluded
    sequences are not in the stores, so they are not in these rows either.
    """
    from .metrics import meta_from_sequence_values

    reader = BuildReader(out_dir)
    rows = []
    for sid, arrays, values in reader.iter_sequences():
        meta = meta_from_sequence_values(values, values["fps_hz"], seq_id=sid)
        rows.append(metrics_row(arrays, meta))
    return rows
