"""Per-sequence staging area: parallel per-file tasks each stage one sequence; store writers read it.

Layout of one staged sequence (``root/<safe key>/``, staging format 2)::

    meta.json   key, counts, subsets, array names, scalar/string sequence values, and for every
                array ``<kind>/<name>`` its dtype, shape and byte offset in data.bin
    data.bin    every array's C-ordered bytes, 64-byte aligned: per-frame (n_frames, ...) arrays,
                per-window (n_windows, ...) arrays (``window_start`` LOCAL to the sequence), small
                per-sequence vectors (e.g. seq_betas, seq_bone_length_m)

Two files per sequence, not one per array: staging and the region writers' reads cost a couple of
file operations per sequence (format 1, one ``.npy`` per array, is still read).

The store writer derives ``frame_sequence``, ``window_sequence``, the ``seq_*_offset``/``count``
arrays and the global ``window_start``; those must not be staged (except local ``window_start``).
Everything is written with ``allow_pickle=False`` into a temporary sibling directory that is
renamed into place, so a reader never sees a half-staged sequence.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .schema import SUBSETS, SchemaError, load_schema

STAGING_FORMAT = 2
_READABLE_FORMATS = (1, 2)
_ALIGN = 64

WRITER_DERIVED: frozenset[str] = frozenset(
    {
        "frame_sequence",
        "window_sequence",
        "seq_frame_offset",
        "seq_frame_count",
        "seq_window_offset",
        "seq_window_count",
        "seq_tombstone",
    }
)
"""Arrays the store writer computes from the sequence order; staging them is an error."""


@dataclass(frozen=True)
class StagedSequence:
    """Handle to one staged sequence (cheap to pickle).

    Attributes:
        key: caller's unique key (e.g. the sequence id).
        path: directory holding the staged files.
        n_frames: number of frames.
        n_windows: number of polynomial windows.
        subsets: subset names whose frame/window/sequence arrays are all staged.
    """

    key: str
    path: Path
    n_frames: int
    n_windows: int
    subsets: tuple[str, ...]

    def _meta(self) -> dict[str, Any]:
        """meta.json, parsed once per process and file version (shared: do not modify)."""
        path = self.path / "meta.json"
        st = os.stat(path)
        return _read_meta(str(path), st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)

    def _array(self, kind: str, name: str, meta: dict | None = None) -> np.ndarray:
        meta = meta or self._meta()
        if meta.get("format", 1) == 1:
            return _load(self.path / kind / f"{name}.npy")
        dtype, shape, offset = meta["arrays"][f"{kind}/{name}"]
        if kind == "sequence" or not int(np.prod(shape)):  # small: one read is cheaper than a memory map
            with open(self.path / "data.bin", "rb") as f:
                f.seek(offset)
                return np.fromfile(f, dtype=np.dtype(dtype), count=int(np.prod(shape))).reshape(shape)
        return np.memmap(self.path / "data.bin", dtype=np.dtype(dtype), mode="r", offset=offset, shape=tuple(shape))

    def frame_array(self, name: str) -> np.ndarray:
        """Memory-mapped (n_frames, ...) array ``name`` (read-only)."""
        return self._array("frame", name)

    def window_array(self, name: str) -> np.ndarray:
        """Memory-mapped (n_windows, ...) array ``name``; ``window_start`` is sequence-local."""
        return self._array("window", name)

    def read_rows(self, kind: str, names: Sequence[str], lo: int, hi: int) -> dict[str, np.ndarray]:
        """Rows [lo, hi) (clipped) of the ``kind`` (``frame``/``window``) arrays ``names`` that are
        staged, read straight from the file: one open, one seek and one read per array."""
        meta = self._meta()
        if meta.get("format", 1) == 1:
            have = set(meta[f"{kind}_arrays"])
            return {n: np.asarray(self._array(kind, n, meta)[lo:hi]) for n in names if n in have}
        out = {}
        with open(self.path / "data.bin", "rb") as f:
            for n in names:
                entry = meta["arrays"].get(f"{kind}/{n}")
                if entry is None:
                    continue
                dtype, shape, offset = np.dtype(entry[0]), entry[1], entry[2]
                a, b = max(0, min(lo, shape[0])), max(0, min(hi, shape[0]))
                row = int(np.prod(shape[1:], dtype=np.int64))
                f.seek(offset + a * row * dtype.itemsize)
                out[n] = np.fromfile(f, dtype=dtype, count=(b - a) * row).reshape((b - a, *shape[1:]))
        return out

    def placeholders(self, kind: str) -> dict[str, np.ndarray]:
        """Every staged ``kind`` array as a zero-memory array of its dtype and shape (no data read):
        what validating shapes and dtypes needs."""
        meta = self._meta()
        if meta.get("format", 1) == 1:
            return {n: self._array(kind, n, meta) for n in meta[f"{kind}_arrays"]}
        out = {}
        for key, (dtype, shape, _) in meta["arrays"].items():
            k, _, name = key.partition("/")
            if k == kind:
                out[name] = np.broadcast_to(np.zeros((), dtype=np.dtype(dtype)), tuple(shape))
        return out

    def frame_names(self) -> tuple[str, ...]:
        return tuple(self._meta()["frame_arrays"])

    def window_names(self) -> tuple[str, ...]:
        return tuple(self._meta()["window_arrays"])

    def sequence_values(self) -> dict[str, Any]:
        """Per-sequence values: scalars/strings from meta.json, vectors memory-mapped."""
        meta = self._meta()
        values: dict[str, Any] = dict(meta["sequence_values"])
        for name in meta["sequence_arrays"]:
            values[name] = self._array("sequence", name, meta)
        return values


@functools.lru_cache(maxsize=64)  # a sequence's reads come one after the other; a meta is ~9 KiB parsed
def _read_meta(path: str, ino: int, mtime_ns: int, ctime_ns: int, size: int) -> dict[str, Any]:
    """A staged sequence's meta.json; the key includes the file's inode, times and size, so a
    sequence staged again (a new file renamed into place) is read again. Validating, planning and
    writing a store ask for each sequence's meta.json about ten times."""
    with open(path, encoding="utf-8") as f:
        return json.loads(f.read())


def _load(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def safe_key(key: str) -> str:
    """Directory name for ``key``: a readable slug plus a hash (distinct keys never collide)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:80] or "seq"
    return f"{slug}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:12]}"


def _scalar(name: str, value: Any) -> Any:
    """JSON-ready scalar, or raise."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    raise SchemaError(f"sequence value {name}: unsupported type {type(value).__name__}")


def _n_rows(arrays: Mapping[str, np.ndarray], what: str, key: str) -> int:
    counts = {name: int(np.shape(a)[0]) if np.ndim(a) else -1 for name, a in arrays.items()}
    if any(c < 0 for c in counts.values()):
        raise SchemaError(f"sequence {key}: {what} arrays must have a leading {what} axis: {counts}")
    distinct = set(counts.values())
    if len(distinct) > 1:
        raise SchemaError(f"sequence {key}: {what} arrays disagree on the number of {what}s: {counts}")
    return distinct.pop() if distinct else 0


def _belongs_to(
    subset: str, frame: Sequence[str], window: Sequence[str], seq: Sequence[str]
) -> bool:
    schema = load_schema(subset)
    have = set(frame) | set(window) | set(seq) | WRITER_DERIVED
    return all(n in have for n, a in schema.arrays.items() if a.required)


def stage_sequence(
    root: Path,
    key: str,
    frame_arrays: Mapping[str, np.ndarray],
    window_arrays: Mapping[str, np.ndarray],
    sequence_values: Mapping[str, Any],
    subsets: Sequence[str] | None = None,
) -> StagedSequence:
    """Stage one sequence under ``root/<safe_key(key)>/`` atomically (replacing a previous staging).

    Args:
        root: staging root directory (created if needed).
        key: unique key of the sequence (e.g. its sequence id).
        frame_arrays: name → (n_frames, ...) arrays (schema names, e.g. ``joint_pos_m``).
        window_arrays: name → (n_windows, ...) arrays; ``window_start`` local frame indices.
        sequence_values: name → scalar/string (kept in meta.json) or vector (``.npy``), e.g.
            ``seq_id``, ``seq_betas`` (≤ 16, NaN-padded by the writer).
        subsets: subsets the sequence is staged for; derived from the staged names when ``None``
            (every subset whose required arrays are all present), verified otherwise.

    Returns:
        Handle to the staged sequence.
    """
    derived = WRITER_DERIVED & (set(frame_arrays) | set(window_arrays) | set(sequence_values))
    if derived:
        raise SchemaError(f"sequence {key}: {sorted(derived)} are computed by the writer; do not stage them")
    n_frames = _n_rows(frame_arrays, "frame", key)
    n_windows = _n_rows(window_arrays, "window", key)
    vectors = {k: np.asarray(v) for k, v in sequence_values.items() if isinstance(v, np.ndarray) and v.ndim > 0}
    scalars = {k: _scalar(k, v) for k, v in sequence_values.items() if k not in vectors}

    possible = tuple(
        s for s in SUBSETS if _belongs_to(s, list(frame_arrays), list(window_arrays), list(sequence_values))
    )
    if subsets is None:
        subsets = possible
    else:
        missing = [s for s in subsets if s not in possible]
        if missing:
            raise SchemaError(f"sequence {key}: lacks required arrays of subsets {missing}")
        subsets = tuple(subsets)

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = safe_key(key)
    final = root / name
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        layout: dict[str, list] = {}
        offset = 0
        with open(tmp / "data.bin", "wb") as f:
            for sub, arrays in (("frame", frame_arrays), ("window", window_arrays), ("sequence", vectors)):
                for arr_name in sorted(arrays):
                    value = np.ascontiguousarray(arrays[arr_name])
                    if value.dtype.hasobject:
                        raise SchemaError(f"sequence {key}: array {arr_name} has dtype object")
                    pad = -offset % _ALIGN
                    f.write(b"\0" * pad)
                    offset += pad
                    layout[f"{sub}/{arr_name}"] = [value.dtype.str, list(value.shape), offset]
                    f.write(value.tobytes())
                    offset += value.nbytes
        meta = {
            "arrays": layout,
            "format": STAGING_FORMAT,
            "key": key,
            "n_frames": n_frames,
            "n_windows": n_windows,
            "subsets": list(subsets),
            "frame_arrays": sorted(frame_arrays),
            "window_arrays": sorted(window_arrays),
            "sequence_arrays": sorted(vectors),
            "sequence_values": scalars,
        }
        # compact JSON: the C encoder (``indent`` falls back to the pure-Python one, ~0.5 ms a sequence)
        (tmp / "meta.json").write_text(json.dumps(meta, separators=(",", ":"), sort_keys=True), encoding="utf-8")
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StagedSequence(key, final, n_frames, n_windows, tuple(subsets))


TRASH_MARK = ".trash-"
"""``replace_dir`` moves a replaced directory aside as ``.{name}.trash-<uuid>`` before deleting it."""


def replace_dir(src: Path, dst: Path, discard: Callable[[Path], None] | None = None) -> None:
    """Rename directory ``src`` to ``dst``; an existing ``dst`` is moved aside then deleted
    (``discard(path)`` deletes it, e.g. ``Trash.add`` in the background; default: now)."""
    trash = None
    if dst.exists():
        trash = dst.with_name(f".{dst.name}{TRASH_MARK}{uuid.uuid4().hex}")
        os.rename(dst, trash)
    try:
        os.rename(src, dst)
    except BaseException:
        if trash is not None:
            os.rename(trash, dst)
        raise
    if trash is not None:
        (discard or _delete)(trash)


def _delete(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Trash:
    """Directories deleted off the critical path: ``add(path)`` deletes it in a background thread
    (``unlink``/``rmdir`` release the GIL), ``wait()`` joins them. A replaced store's thousands of
    objects take 0.1–0.9 s to delete at 4 h (docs/scaling.md, "Fifth round"), time an incremental
    run now spends on its statistics and report instead. ``sweep(folder)`` also deletes what an
    interrupted run left (``.*.trash-*``)."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    def add(self, path: Path) -> None:
        t = threading.Thread(target=_delete, args=(Path(path),), name=f"delete {Path(path).name}", daemon=True)
        t.start()
        self._threads.append(t)

    def sweep(self, folder: Path) -> int:
        """Delete (in the background) every ``.*.trash-*`` directory directly under ``folder``."""
        found = [p for p in Path(folder).glob(f".*{TRASH_MARK}*") if p.is_dir()]
        for p in found:
            self.add(p)
        return len(found)

    def wait(self) -> None:
        for t in self._threads:
            t.join()
        self._threads.clear()


def load_staged(path: Path) -> StagedSequence:
    """Handle to a sequence staged at ``path`` (reads meta.json only)."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise SchemaError(f"{path} is not a staged sequence (no meta.json)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") not in _READABLE_FORMATS:
        raise SchemaError(f"{path}: staging format {meta.get('format')!r}, expected one of {_READABLE_FORMATS}")
    return StagedSequence(
        key=meta["key"],
        path=path,
        n_frames=int(meta["n_frames"]),
        n_windows=int(meta["n_windows"]),
        subsets=tuple(meta["subsets"]),
    )


def list_staged(root: Path) -> list[StagedSequence]:
    """All sequences staged under ``root`` (temporary/trash directories skipped), sorted by key."""
    root = Path(root)
    if not root.is_dir():
        return []
    staged = [load_staged(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(staged, key=lambda s: s.key)
