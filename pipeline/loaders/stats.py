"""Normalization statistics of a store (``stats.json``), computed by streaming over blocks.

``compute_stats(store)`` returns, per channel (every element after the record dim), the count of
finite values, mean, population standard deviation (ddof = 0, as ``numpy.nanstd``), min and max:

* ``arrays``: every numeric frame / window / sequence array of the store, as stored (NaN-aware;
  bookkeeping arrays — ``frame_sequence``, ``window_sequence``, ``window_start``,
  ``seq_*_offset``/``count`` — are skipped). Per-sequence arrays count each sequence once.
* ``canonical``: the per-frame ImDyS features in the canonical frame *of that same frame*
  (heading and root of frame t; see ``pipeline.loaders.windows``): ``root_pos_m``,
  ``marker_pos_m``, ``joint_pos_m``, ``joint_rot6d`` and their velocities ``<name>_vel``
  (forward differences × fps, backward at a sequence's last frame), plus every world-frame
  target (``grf_n``, ``grm_nm``, ``cop_m``, ``grf_total_n``, ``body_contact_force_n``) rotated
  by −heading. Window states at offsets ≠ 0 are canonicalized with a neighbour's heading, so
  these statistics describe them approximately (exactly at offset 0); the root's canonical x/y
  are 0 by construction (std 0: such channels are only centred by the loaders).

Frames are read in shard-aligned blocks (default 4096 frames), so memory is bounded by one block
of every frame array whatever the store size (the heap is trimmed after each block: without it,
what the blocks' temporaries left in glibc's per-thread arenas grew the peak with the store,
+87 MiB at 1 h, +120 MiB at 10 h; +90 / +96 MiB with it); accumulators merge blocks with Chan et al.'s
parallel update (float64). ``write_stats(store, out_json)`` stores the result under
``subsets/<subset>`` of ``stats.json`` next to the stores (other subsets in the file are kept).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import __version__
from pipeline.memory import release_memory

from .windows import (
    ROOT_POS,
    ROOT_ROT,
    WORLD_POINT,
    WORLD_VECTOR,
    canonicalize_points,
    canonicalize_rot6d,
    heading_from_root_aa,
    rot6d_from_aa,
    rotate_vectors,
    target_kind,
)
from .xarray_api import STATS_FILE, resolve_store

STATS_FORMAT = "dynaset-stats/1"

BOOKKEEPING = frozenset(
    {
        "frame_sequence", "window_sequence", "window_start", "seq_frame_offset", "seq_frame_count", "seq_tombstone",
        "seq_window_offset", "seq_window_count",
    }
)
"""Index arrays whose statistics mean nothing; skipped."""

STATE_POSITIONS = ("marker_pos_m", "joint_pos_m")
NOT_TARGETS = frozenset({"time_s", ROOT_POS, ROOT_ROT, "contact", *STATE_POSITIONS})

DEFAULT_BLOCK = 4096


class RunningStats:
    """NaN-aware per-channel count / mean / M2 / min / max, merged block by block (float64)."""

    def __init__(self, shape: tuple[int, ...]):
        self.count = np.zeros(shape, dtype=np.int64)
        self.mean = np.zeros(shape, dtype=np.float64)
        self.m2 = np.zeros(shape, dtype=np.float64)
        self.min = np.full(shape, np.inf)
        self.max = np.full(shape, -np.inf)

    def update(self, x: np.ndarray) -> None:
        """Add records ``x`` (n, *shape); non-finite values are ignored."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] == 0:
            return
        finite = np.isfinite(x)
        if finite.all():  # no masking needed: the same numbers as the masked path, without its copies
            n_b = np.full(x.shape[1:], x.shape[0], dtype=np.int64)
            mean_b = x.sum(axis=0) / n_b
            d = x - mean_b
            self._combine(n_b, mean_b, (d * d).sum(axis=0))
            self.min = np.minimum(self.min, x.min(axis=0))
            self.max = np.maximum(self.max, x.max(axis=0))
            return
        n_b = finite.sum(axis=0)
        xs = np.where(finite, x, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(n_b > 0, xs.sum(axis=0) / np.maximum(n_b, 1), 0.0)
            d = np.where(finite, x - mean_b, 0.0)
            m2_b = (d * d).sum(axis=0)
        self._combine(n_b, mean_b, m2_b)
        self.min = np.minimum(self.min, np.where(finite, x, np.inf).min(axis=0))
        self.max = np.maximum(self.max, np.where(finite, x, -np.inf).max(axis=0))

    def _combine(self, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Chan et al.'s parallel update with a block's (count, mean, M2), element-wise."""
        with np.errstate(invalid="ignore", divide="ignore"):
            n = self.count + n_b
            delta = mean_b - self.mean
            frac = np.where(n > 0, n_b / np.maximum(n, 1), 0.0)
            self.mean = self.mean + delta * frac
            self.m2 = self.m2 + m2_b + delta * delta * self.count * frac
        self.count = n

    def merge(self, other: RunningStats) -> None:
        """Add another accumulator's records: the same arithmetic as ``update`` with the other's
        (count, mean, M2), so merging per-block accumulators in block order gives bit-identical
        results to updating block by block."""
        self._combine(other.count, other.mean, other.m2)
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)

    @classmethod
    def of(cls, x: np.ndarray) -> RunningStats:
        """The accumulator of records ``x`` (n, *shape)."""
        st = cls(tuple(np.shape(x)[1:]))
        st.update(x)
        return st

    def to_flat(self) -> np.ndarray:
        return np.concatenate([a.astype(np.float64).ravel() for a in (self.count, self.mean, self.m2, self.min, self.max)])

    @classmethod
    def from_flat(cls, flat: np.ndarray, shape: tuple[int, ...]) -> RunningStats:
        st = cls(shape)
        parts = np.split(np.asarray(flat, np.float64), 5)
        st.count = parts[0].astype(np.int64).reshape(shape)
        st.mean, st.m2, st.min, st.max = (p.reshape(shape) for p in parts[1:])
        return st

    def to_dict(self, dims: tuple[str, ...] = (), units: str | None = None) -> dict[str, Any]:
        have = self.count > 0
        std = np.sqrt(np.where(have, self.m2 / np.maximum(self.count, 1), np.nan))

        def clean(a: np.ndarray) -> Any:
            return _nan_to_none(np.where(have, a, np.nan))

        out: dict[str, Any] = {"dims": list(dims), "shape": list(self.count.shape)}
        if units is not None:
            out["units"] = units
        out.update(
            count=self.count.tolist(), mean=clean(self.mean), std=clean(std), min=clean(self.min), max=clean(self.max)
        )
        return out


def _nan_to_none(a: np.ndarray) -> Any:
    if a.ndim == 0:
        v = float(a)
        return None if not np.isfinite(v) else v
    return [_nan_to_none(x) for x in a]


def _open_group(path: str):
    import zarr

    return zarr.open_group(path, mode="r", zarr_format=3)


def _dims(arr) -> tuple[str, ...]:
    return tuple(arr.metadata.dimension_names or ())


def _numeric(arr) -> bool:
    return np.dtype(arr.dtype).kind in "biuf"


def _block_len(arrays: list, default: int, whole_shards: bool = False) -> int:
    """About ``default`` records, a multiple of every array's shard length (of its chunk length
    when ``default`` is smaller than a shard), so that blocks never split a chunk; ``whole_shards``:
    exactly one (common) shard."""
    def lcm(lengths) -> int:
        step = 1
        for n in lengths:
            step = int(np.lcm(step, int(n)))
        return step

    shard = lcm(a.shards[0] if getattr(a, "shards", None) else a.chunks[0] for a in arrays)
    if whole_shards:
        return shard
    step = shard if shard <= default else lcm(a.chunks[0] for a in arrays)
    return max(step, (default // step) * step)


def _canonical_frame_features(
    blk: Mapping[str, np.ndarray], a0: int, g: np.ndarray, gf: np.ndarray, gb: np.ndarray, fps: float,
    targets: Mapping[str, str],
) -> dict[str, np.ndarray]:
    """Own-frame canonical features of global frames ``g`` from a block starting at ``a0``;
    ``gf``/``gb`` are the forward-difference end frames (global)."""
    i, i0, i1 = g - a0, gf - a0, gb - a0
    yaw = heading_from_root_aa(blk[ROOT_ROT][i, 0])
    origin = np.asarray(blk[ROOT_POS][i, :2], dtype=np.float64)
    fps32 = np.float32(fps)
    out: dict[str, np.ndarray] = {}
    for name in (ROOT_POS, *STATE_POSITIONS):
        if name not in blk:
            continue
        x = blk[name]
        out[name] = canonicalize_points(x[i], origin, yaw)
        out[f"{name}_vel"] = rotate_vectors((x[i1].astype(np.float32) - x[i0].astype(np.float32)) * fps32, yaw)
    d6 = rot6d_from_aa(blk[ROOT_ROT])
    out["joint_rot6d"] = canonicalize_rot6d(d6[i], yaw)
    out["joint_rot6d_vel"] = canonicalize_rot6d((d6[i1] - d6[i0]) * fps32, yaw)
    for name, kind in targets.items():
        x = blk[name][i]
        out[name] = rotate_vectors(x, yaw) if kind == WORLD_VECTOR else canonicalize_points(x, origin, yaw)
    return out


CHECKPOINT_BLOCKS = 16
"""``BlockCache`` keeps the fold's accumulators (the statistics of blocks 0..k merged in order) after
every this many blocks and after the last: a later run whose first changed block is j merges from
the checkpoint before j, not from block 0 (≤ 16 extra merges, ≈ 6 % more cache)."""

Layout = tuple[tuple[str, tuple[int, ...]], ...]
"""The accumulators of one block (or checkpoint) in a flat row: (name, channel shape) in order."""


def _pack(block: Mapping[str, RunningStats]) -> tuple[Layout, np.ndarray]:
    layout = tuple((n, tuple(int(x) for x in st.count.shape)) for n, st in block.items())
    row = np.concatenate([st.to_flat() for st in block.values()]) if block else np.zeros(0)
    return layout, row


def _unpack(layout: Layout, row: np.ndarray) -> dict[str, RunningStats]:
    out, pos = {}, 0
    for name, shape in layout:
        size = 5 * int(np.prod(shape, dtype=np.int64))
        out[name] = RunningStats.from_flat(row[pos : pos + size], shape)
        pos += size
    return out


def chain_keys(keys: Iterable[str]) -> list[str]:
    """The key of each fold prefix: sha256 chained over the block keys up to and including it, so a
    checkpoint is found only when every block before it is unchanged."""
    out, h = [], b""
    for k in keys:
        h = hashlib.sha256(h + k.encode()).digest()
        out.append(h.hex())
    return out


class BlockCache:
    """Per-block accumulators of a local store's statistics, kept between runs (``path``: an
    ``.npz`` file), and fold checkpoints. A block's key identifies what its statistics depend on —
    the store objects it reads (the dim's index array ``frame_sequence``/``window_sequence`` stands
    for every array of the dim: region writers rewrite a shard of every array together; path, size,
    mtime: an unchanged object of an appended store is the same file, and a root copied with its
    timestamps, ``cp -a``, keeps its cache), the sequence bounds and tombstones over it — so after
    an incremental ingestion only the appended and the tombstoned blocks are read again, and the
    merge resumes from the last checkpoint before the first changed block (storage_layout.md,
    "Incremental ingestion"). A cache of an older format is ignored (everything computed once)."""

    FORMAT = 2

    def __init__(self, path: str | os.PathLike, extra: Iterable[str | os.PathLike] = ()):
        self.path = Path(path)
        self.blocks, self.checkpoints = self._load(self.path)
        self.fresh: set[str] = set()  # ``extra``: blocks this run's ``compute_stats(part=...)`` tasks computed
        for p in extra:
            blocks, _ = self._load(Path(p))
            self.blocks.update(blocks)
            self.fresh.update(blocks)
        self.new_blocks: dict[str, tuple[Layout, np.ndarray]] = {}
        self.new_checkpoints: dict[str, tuple[Layout, np.ndarray]] = {}
        self.computed: set[str] = set()
        self.hits = 0

    @classmethod
    def _load(cls, path: Path) -> tuple[dict[str, tuple[Layout, np.ndarray]], dict[str, tuple[Layout, np.ndarray]]]:
        blocks: dict = {}
        checkpoints: dict = {}
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != cls.FORMAT:
                    return {}, {}
                for i, entries in enumerate(meta["layouts"]):
                    layout = tuple((str(n), tuple(int(x) for x in shape)) for n, shape in entries)
                    for kind, into in (("b", blocks), ("c", checkpoints)):
                        rows = z[f"{kind}rows{i}"]
                        for key, row in zip(z[f"{kind}keys{i}"].tolist(), rows):
                            into[str(key)] = (layout, row)
        except (OSError, ValueError, KeyError):
            return {}, {}
        return blocks, checkpoints

    def has(self, key: str) -> bool:
        return key in self.blocks

    def get(self, key: str, compute) -> dict[str, RunningStats]:
        """The block's accumulators: from the cache, or ``compute()`` (then kept)."""
        hit = self.blocks.get(key)
        if hit is None:
            block = compute()
            self.computed.add(key)
            self.new_blocks[key] = _pack(block)
            return block
        if key in self.fresh:
            self.computed.add(key)
        else:
            self.hits += 1
        self.new_blocks[key] = hit
        return _unpack(*hit)

    def resume(self, chain: list[str], keys: list[str]) -> int:
        """How many blocks a fold over ``keys`` (chain ``chain``) can skip: one past the latest
        checkpoint whose blocks are all in the cache (0: fold from the start)."""
        for k in range(len(chain) - 1, -1, -1):
            if chain[k] in self.checkpoints and all(key in self.blocks for key in keys[: k + 1]):
                return k + 1
        return 0

    def skip(self, chain: list[str], keys: list[str], start: int) -> dict[str, RunningStats]:
        """The fold's accumulators after the first ``start`` blocks (``resume``); their blocks and
        checkpoints are carried into this run's file without being read."""
        for i, key in enumerate(keys[:start]):
            self.new_blocks[key] = self.blocks[key]
            self.hits += 1
            if chain[i] in self.checkpoints:
                self.new_checkpoints[chain[i]] = self.checkpoints[chain[i]]
        return _unpack(*self.checkpoints[chain[start - 1]])

    def checkpoint(self, chain_key: str, state: Mapping[str, RunningStats]) -> None:
        self.new_checkpoints[chain_key] = _pack(state)

    def save(self, path: str | os.PathLike | None = None, computed_only: bool = False) -> None:
        """Keep the blocks and checkpoints of this run only (atomically), in ``path`` (default: the
        cache's own file); ``computed_only``: only the blocks this run computed (a ``part`` task's
        output)."""
        path = Path(path) if path is not None else self.path
        blocks = {k: v for k, v in self.new_blocks.items() if not computed_only or k in self.computed}
        checkpoints = {} if computed_only else self.new_checkpoints
        layouts: dict[Layout, int] = {}
        groups: dict[tuple[str, int], tuple[list[str], list[np.ndarray]]] = {}
        for kind, items in (("b", blocks), ("c", checkpoints)):
            for key, (layout, row) in items.items():
                i = layouts.setdefault(layout, len(layouts))
                keys, rows = groups.setdefault((kind, i), ([], []))
                keys.append(key)
                rows.append(row)
        data = {}
        for i in range(len(layouts)):
            for kind in ("b", "c"):
                keys, rows = groups.get((kind, i), ([], []))
                width = len(rows[0]) if rows else 0
                data[f"{kind}keys{i}"] = np.array(keys, dtype="U64")
                data[f"{kind}rows{i}"] = np.stack(rows) if rows else np.zeros((0, width))
        meta = {"format": self.FORMAT, "layouts": [[[n, list(shape)] for n, shape in lay] for lay in layouts]}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **data)
        os.replace(tmp, path)


def _objects_key(store: str, arrays: Mapping, names: Iterable[str], lo: int, hi: int) -> list:
    """(array, shard, size, mtime) of the shard objects of ``names`` over records [lo, hi)."""
    out = []
    for n in names:
        shard = int(arrays[n].shards[0] if getattr(arrays[n], "shards", None) else arrays[n].chunks[0])
        nd = len(arrays[n].shape)
        encode = arrays[n].metadata.chunk_key_encoding.encode_chunk_key
        for k in range(lo // shard, (max(hi, lo + 1) - 1) // shard + 1):
            p = Path(store) / n / encode((k, *([0] * (nd - 1))))
            try:
                st = p.stat()
                out.append((n, k, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((n, k, None))
    return out


def part_cache(block_cache: str | os.PathLike, part: tuple[int, int]) -> Path:
    """Where ``compute_stats(part=part, block_cache=block_cache)`` leaves its blocks."""
    p = Path(block_cache)
    return p.with_name(f"{p.name.removesuffix('.npz')}.part{part[0]}of{part[1]}.npz")


def compute_stats(store_path: str | os.PathLike, *, canonical: bool = True, block_frames: int | None = None,
                  only: Iterable[str] | None = None, block_cache: str | os.PathLike | None = None,
                  part: tuple[int, int] | None = None, parts: int = 0) -> dict:
    """Statistics of one store (see the module docs); reads it block by block.

    Args:
        store_path: the store (``<subset>.zarr``) or a URL.
        canonical: also compute the own-frame canonical ImDyS feature statistics.
        block_frames: records per block (rounded to a multiple of the shard length); default: one
            shard per block (the unit that ``block_cache`` reuses).
        only: the arrays to compute (default: every numeric array).
        block_cache: an ``.npz`` file keeping per-block accumulators between runs (local stores
            only, ``BlockCache``): unchanged blocks are not read again. Same results either way.
        part: ``(i, n)``: only compute the frame and window blocks ``k`` with ``k % n == i`` that
            ``block_cache`` lacks, save them to ``part_cache(block_cache, part)`` and return
            ``{"blocks_computed": ...}`` (``n`` such tasks run in parallel, then one call with
            ``parts=n`` merges). Needs ``block_cache``.
        parts: the number of ``part`` calls that ran before this one: their blocks are read from
            their part files (deleted afterwards). The result is bit-identical to a plain call,
            since blocks are merged in the same order either way.

    Returns:
        JSON-ready dict: store info, ``arrays`` and ``canonical`` sections of per-channel
        ``count``/``mean``/``std``/``min``/``max`` (``None`` where a channel has no finite value).
    """
    t0 = time.perf_counter()
    store = resolve_store(store_path)
    group = _open_group(store)
    attrs = dict(group.attrs)
    fps = float(attrs.get("fps_hz", 30.0))
    arrays = {n: group[n] for n in group.array_keys()}
    by_dim: dict[str, list[str]] = {"frame": [], "window": [], "sequence": []}
    for n, a in sorted(arrays.items()):
        dims = _dims(a)
        if dims and dims[0] in by_dim and n not in BOOKKEEPING and _numeric(a) and (only is None or n in only):
            by_dim[dims[0]].append(n)
    result: dict[str, Any] = {
        "format": STATS_FORMAT,
        "schema_name": attrs.get("schema_name"),
        "schema_version": attrs.get("schema_version"),
        "store": Path(store).name if "://" not in store else store,
        "fps_hz": fps,
        "dynaset_version": __version__,
        "std": "population standard deviation (ddof=0) over finite values",
        "n_frames": int(arrays["frame_sequence"].shape[0]) if "frame_sequence" in arrays else 0,
        "n_windows": int(arrays["window_sequence"].shape[0]) if "window_sequence" in arrays else 0,
        "n_sequences": int(arrays["seq_frame_count"].shape[0]) if "seq_frame_count" in arrays else 0,
        # tombstoned sequences (incremental ingestion, storage_layout.md) are left out of every statistic
        "arrays": {},
        "canonical": {},
    }
    acc = {n: RunningStats(tuple(arrays[n].shape[1:])) for names in by_dim.values() for n in names}
    dead = np.zeros(result["n_sequences"], dtype=bool)
    if "seq_tombstone" in arrays and result["n_sequences"]:
        dead = np.asarray(arrays["seq_tombstone"][...]) == 1
    has_dead = bool(dead.any())

    def live_of(dim: str, a: int, b: int) -> np.ndarray:
        """Whether records [a, b) along ``dim`` belong to live sequences."""
        return ~dead[np.asarray(arrays[f"{dim}_sequence"][a:b], dtype=np.int64)]

    if has_dead:
        count = np.asarray(arrays["seq_frame_count"][...], dtype=np.int64)
        wcount = np.asarray(arrays["seq_window_count"][...], dtype=np.int64)
        result.update(n_frames_stored=result["n_frames"], n_frames=int(count[~dead].sum()),
                      n_windows=int(wcount[~dead].sum()), n_sequences=int((~dead).sum()),
                      n_sequences_tombstoned=int(dead.sum()))

    # frame arrays (and canonical features) in one pass
    frame_names = by_dim["frame"]
    can_ok = canonical and ROOT_POS in arrays and ROOT_ROT in arrays and result["n_frames"] > 0
    targets = {
        n: target_kind(n, dict(arrays[n].attrs)) for n in frame_names if n not in NOT_TARGETS
    }
    targets = {n: k for n, k in targets.items() if k in (WORLD_VECTOR, WORLD_POINT)}
    can_acc: dict[str, RunningStats] = {}
    can_units: dict[str, str] = {}
    n_frames = int(arrays["frame_sequence"].shape[0]) if "frame_sequence" in arrays else 0
    if part is not None and (block_cache is None or "://" in store):
        raise ValueError("compute_stats(part=...) needs a block_cache on a local store")
    extra = [part_cache(block_cache, (i, parts)) for i in range(parts)] if parts and block_cache is not None else []
    cache = BlockCache(block_cache, extra) if block_cache is not None and "://" not in store else None
    seq_bounds = {}
    for dim in ("frame", "window"):
        if f"seq_{dim}_offset" in arrays and result["n_sequences"] + int(dead.sum()) > 0:
            seq_bounds[dim] = (np.asarray(arrays[f"seq_{dim}_offset"][...], dtype=np.int64),
                               np.asarray(arrays[f"seq_{dim}_count"][...], dtype=np.int64))

    def block_key(dim: str, names: Iterable[str], a: int, b: int, lo: int, hi: int, extra=()) -> str:
        """What the statistics of records [a, b) along ``dim`` depend on (objects over [lo, hi))."""
        off, cnt = seq_bounds.get(dim, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        i0 = max(0, int(np.searchsorted(off + cnt, a, side="right")))
        i1 = int(np.searchsorted(off, b, side="left"))
        index = [f"{dim}_sequence"] if f"{dim}_sequence" in arrays else names
        doc = [dim, a, b, list(names), list(extra), _objects_key(store, arrays, index, lo, hi),
               off[i0:i1].tolist(), cnt[i0:i1].tolist(), np.flatnonzero(dead[i0:i1]).tolist()]
        return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()

    merged = [0]  # blocks merged into the accumulators (not skipped from a checkpoint)

    def fold(blocks: list[tuple[str | None, Any]]) -> dict[str, RunningStats]:
        """The accumulators of ``blocks`` ((key, compute) in record order) merged in that order.
        With a cache: resumed from its latest checkpoint whose blocks are unchanged, unchanged blocks
        read from it, a checkpoint kept every ``CHECKPOINT_BLOCKS``. ``part``: only compute this
        part's blocks that the cache lacks (nothing is merged)."""
        if part is not None:
            for i, (key, compute) in enumerate(blocks):
                if i % part[1] == part[0] and not cache.has(key):
                    cache.get(key, compute)
            return {}
        state: dict[str, RunningStats] = {}
        start = 0
        merged[0] += len(blocks)
        if cache is not None:
            keys = [k for k, _ in blocks]
            chain = chain_keys(keys)
            start = cache.resume(chain, keys)
            if start:
                state = cache.skip(chain, keys, start)
                merged[0] -= start
        for i in range(start, len(blocks)):
            key, compute = blocks[i]
            got = compute() if cache is None else cache.get(key, compute)
            for n, st in got.items():
                if n not in state:
                    state[n] = RunningStats(st.count.shape)
                state[n].merge(st)
            if cache is not None and ((i + 1) % CHECKPOINT_BLOCKS == 0 or i == len(blocks) - 1):
                cache.checkpoint(chain[i], state)
        return state

    if frame_names and n_frames:
        f_off = np.asarray(arrays["seq_frame_offset"][...], dtype=np.int64)
        f_cnt = np.asarray(arrays["seq_frame_count"][...], dtype=np.int64)
        read = sorted(set(frame_names) | ({ROOT_POS, ROOT_ROT} if can_ok else set()))
        step = _block_len([arrays[n] for n in read], block_frames or 1, whole_shards=block_frames is None)

        def frame_block(a: int, b: int, a0: int, b1: int) -> dict[str, RunningStats]:
            release_memory()  # the last block's temporaries: the peak stays one block's (docs/scaling.md)
            blk = {n: np.asarray(arrays[n][a0:b1]) for n in read}
            keep = live_of("frame", a, b) if has_dead else slice(None)
            out = {n: RunningStats.of(blk[n][a - a0 : b - a0][keep]) for n in frame_names}
            if can_ok:
                g = np.arange(a, b, dtype=np.int64)
                j = np.searchsorted(f_off, g, side="right") - 1
                t, cnt = g - f_off[j], f_cnt[j]
                base = np.clip(np.minimum(t, cnt - 2), 0, None)
                gf = f_off[j] + base
                gb = f_off[j] + np.minimum(base + 1, cnt - 1)
                feats = _canonical_frame_features(blk, a0, g, gf, gb, fps, targets)
                out.update({f"canonical/{n}": RunningStats.of(x[keep]) for n, x in feats.items()})
            return out

        blocks = []
        for a in range(0, n_frames, step):
            b = min(n_frames, a + step)
            a0, b1 = (max(0, a - 1), min(n_frames, b + 1)) if can_ok else (a, b)
            key = (block_key("frame", read, a, b, a0, b1, (can_ok, sorted(targets.items()), fps))
                   if cache is not None else None)
            blocks.append((key, functools.partial(frame_block, a, b, a0, b1)))
        for n, st in fold(blocks).items():
            if n.startswith("canonical/"):
                can_acc[n[len("canonical/"):]] = st
            else:
                acc[n] = st
        for n, st in can_acc.items():
            src = n[: -len("_vel")] if n.endswith("_vel") else n
            src_arr = arrays.get(ROOT_ROT if src == "joint_rot6d" else src)
            unit = "1" if src == "joint_rot6d" else str(src_arr.attrs.get("units", "")) if src_arr is not None else ""
            can_units[n] = f"{unit}/s" if n.endswith("_vel") else unit
            dims = ("joint", "rot6d") if src == "joint_rot6d" else _dims(arrays[src])[1:]
            result["canonical"][n] = st.to_dict(dims, can_units[n])

    def record_block(dim: str, names: list[str], a: int, b: int) -> dict[str, RunningStats]:
        if not has_dead:
            keep = slice(None)
        else:
            keep = live_of("window", a, b) if dim == "window" else ~dead[a:b]
        return {n: RunningStats.of(np.asarray(arrays[n][a:b])[keep]) for n in names}

    names = by_dim["window"]
    if names:
        n_rec = int(arrays[names[0]].shape[0])
        step = _block_len([arrays[n] for n in names], block_frames or 1, whole_shards=block_frames is None)
        blocks = [(block_key("window", names, a, min(n_rec, a + step), a, min(n_rec, a + step))
                   if cache is not None else None,
                   functools.partial(record_block, "window", names, a, min(n_rec, a + step)))
                  for a in range(0, n_rec, step)]
        acc.update(fold(blocks))
    names = by_dim["sequence"]
    if names and part is None:
        n_rec = int(arrays[names[0]].shape[0])
        if n_rec:
            for n, st in record_block("sequence", names, 0, n_rec).items():
                acc[n].merge(st)
    if part is not None:
        cache.save(part_cache(block_cache, part), computed_only=True)
        return {"blocks_computed": len(cache.computed), "seconds": round(time.perf_counter() - t0, 3)}
    for names in by_dim.values():
        for n in names:
            result["arrays"][n] = acc[n].to_dict(_dims(arrays[n])[1:], str(arrays[n].attrs.get("units", "")))
    if cache is not None:
        cache.save()
        for p in extra:
            p.unlink(missing_ok=True)
        result["blocks_reused"] = cache.hits
        result["blocks_merged"] = merged[0]
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def write_stats(store_path: str | os.PathLike, out_json: str | os.PathLike | None = None, **kwargs) -> Path:
    """Compute a store's statistics and store them as ``subsets/<schema_name>`` in ``out_json``
    (default: ``stats.json`` next to the store), keeping the other subsets already in the file.
    The file is replaced atomically. Returns its path."""
    store = resolve_store(store_path)
    stats = compute_stats(store, **kwargs)
    out = Path(out_json) if out_json is not None else Path(store).parent / STATS_FILE
    doc: dict[str, Any] = {"format": STATS_FORMAT, "subsets": {}}
    if out.is_file():
        try:
            old = json.loads(out.read_text(encoding="utf-8"))
            if old.get("format") == STATS_FORMAT:
                doc["subsets"].update(old.get("subsets", {}))
        except (OSError, ValueError):
            pass
    doc["subsets"][str(stats["schema_name"])] = stats
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def load_stats(path: str | os.PathLike | Mapping, subset: str | None = None) -> dict:
    """One store's statistics from a ``stats.json`` file, a release directory or a store path
    (``stats.json`` next to it; the subset is then the store's name), or an already loaded
    document (whole file or one subset's entry)."""
    if isinstance(path, Mapping):
        doc = dict(path)
    else:
        p = Path(path)
        if p.suffix == ".zarr" or (p / "zarr.json").is_file():
            if subset is None and p.suffix == ".zarr":
                subset = p.name[: -len(".zarr")]
            p = p.parent / STATS_FILE
        elif p.is_dir():
            p = p / STATS_FILE
        if not p.is_file():
            raise FileNotFoundError(f"no statistics file {p} (write one with pipeline.loaders.write_stats)")
        doc = json.loads(p.read_text(encoding="utf-8"))
    if "subsets" in doc:
        if subset is None:
            if len(doc["subsets"]) != 1:
                raise ValueError(f"statistics of several subsets {sorted(doc['subsets'])}; give the subset")
            subset = next(iter(doc["subsets"]))
        if subset not in doc["subsets"]:
            raise KeyError(f"no statistics for subset {subset!r} (have {sorted(doc['subsets'])})")
        return doc["subsets"][subset]
    return doc


class Normalizer:
    """``(x - mean) / std`` per channel for named batch entries, from a store's statistics.

    Args:
        stats: one store's statistics (``load_stats``).
        mapping: batch key → list of (section, stats name); several names are concatenated along
            the last axis (e.g. Zell's ``gamma_f`` = grf ‖ grm coefficients).
        min_std: channels whose std is below this (or that have no finite value) are only centred.
    """

    def __init__(self, stats: Mapping, mapping: Mapping[str, list[tuple[str, str]]], min_std: float = 1e-6):
        self.mean: dict[str, np.ndarray] = {}
        self.scale: dict[str, np.ndarray] = {}
        for key, parts in mapping.items():
            means, scales = [], []
            for section, name in parts:
                try:
                    entry = stats[section][name]
                except KeyError:
                    raise KeyError(f"statistics lack {section}/{name} (needed for {key!r})") from None
                mean = np.array(entry["mean"], dtype=np.float64)
                std = np.array(entry["std"], dtype=np.float64)
                mean = np.where(np.isfinite(mean), mean, 0.0)
                std = np.where(np.isfinite(std) & (std >= min_std), std, 1.0)
                means.append(mean)
                scales.append(std)
            self.mean[key] = np.concatenate(means, axis=-1).astype(np.float32)
            self.scale[key] = np.concatenate(scales, axis=-1).astype(np.float32)

    def __call__(self, batch: dict) -> dict:
        """Normalize the mapped entries of a numpy batch in place (returns it)."""
        for key, mean in self.mean.items():
            if key in batch:
                batch[key] = ((batch[key] - mean) / self.scale[key]).astype(np.float32, copy=False)
        return batch

    def invert(self, key: str, x):
        """Undo the normalization of entry ``key`` (numpy array or torch tensor)."""
        mean, scale = self.mean[key], self.scale[key]
        if hasattr(x, "new_tensor"):
            return x * x.new_tensor(scale) + x.new_tensor(mean)
        return x * scale + mean


__all__ = ["Normalizer", "RunningStats", "compute_stats", "load_stats", "write_stats"]
