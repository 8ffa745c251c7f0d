"""Bounded, lazily opened Zarr frame sources for the window loaders.

``ZarrSource`` reads the record-major arrays of one store (frames or windows) through
``ChunkPool``s: per array a fixed number of *slots*, each holding one decoded chunk along the
record dim, evicted least-recently-used. Memory is therefore bounded by ``cache_mb`` (plus one
batch), whatever the store size, and a gather of many records is a single numpy fancy index into
the slot buffer. Missing chunks are read with one Zarr call per run of consecutive chunks.

The source holds only the store path until first use; the Zarr handles and buffers are created
in the process that uses them (each ``DataLoader`` worker opens its own) and are dropped when the
source is pickled. Not thread-safe: use one source per thread (``DataLoader`` workers are
processes).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_SLOTS = 4
"""Fewest slots per pool whatever ``cache_mb`` says (a window spans at most 2 chunks)."""


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Runs [c0, c1] (inclusive) of consecutive ids in a sorted list."""
    out: list[tuple[int, int]] = []
    for c in ids:
        if out and c == out[-1][1] + 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


class CacheTooSmall(RuntimeError):
    """A gather needs more distinct chunks at once than a pool has slots."""


@dataclass
class CacheStats:
    """Counters of one source (per process)."""

    hits: int = 0
    misses: int = 0
    zarr_reads: int = 0
    bytes_decoded: int = 0


class ChunkPool:
    """Decoded chunks of one Zarr array along its first dim, in ``n_slots`` LRU slots."""

    def __init__(self, array, n_slots: int, stats: CacheStats):
        self.array = array
        self.chunk = int(array.chunks[0])
        self.n = int(array.shape[0])
        self.n_slots = int(n_slots)
        self.buf = np.empty((self.n_slots, self.chunk) + tuple(array.shape[1:]), dtype=array.dtype)
        self.lru: OrderedDict[int, int] = OrderedDict()  # chunk id → slot, oldest first
        self.free = list(range(self.n_slots - 1, -1, -1))
        self.stats = stats

    def _ensure(self, chunks: np.ndarray) -> np.ndarray:
        """Slots holding the (sorted, unique) chunk ids, reading the missing ones."""
        if chunks.size > self.n_slots:
            raise CacheTooSmall(f"{chunks.size} chunks needed at once, pool has {self.n_slots} slots")
        lru = self.lru
        slots = np.empty(chunks.size, dtype=np.int64)
        missing: list[tuple[int, int]] = []  # (position in chunks, chunk id)
        for i, c in enumerate(chunks.tolist()):
            s = lru.get(c)
            if s is None:
                missing.append((i, c))
            else:
                lru.move_to_end(c)
                slots[i] = s
        self.stats.hits += chunks.size - len(missing)
        if not missing:
            return slots
        self.stats.misses += len(missing)
        for (i, _), slot in zip(missing, self._assign([c for _, c in missing], set(chunks.tolist()))):
            slots[i] = slot
        for c0, c1 in _runs([c for _, c in missing]):  # one call per run of consecutive chunks
            self.store_block(c0, np.asarray(self.array[c0 * self.chunk : min((c1 + 1) * self.chunk, self.n)]))
        return slots

    def _assign(self, new: list[int], keep: set) -> list[int]:
        """Slots for chunk ids ``new`` (registered in the LRU), evicting the least recently used
        chunks not in ``keep``."""
        lru = self.lru
        out = []
        for c in new:
            if self.free:
                s = self.free.pop()
            else:
                victim = next(k for k in lru if k not in keep)
                s = lru.pop(victim)
            lru[c] = s
            out.append(s)
        return out

    def store_block(self, c0: int, block: np.ndarray) -> None:
        """Copy decoded records of chunks ``c0, c0 + 1, ...`` (already assigned) into their slots."""
        self.stats.zarr_reads += 1
        self.stats.bytes_decoded += block.nbytes
        for j in range(-(-block.shape[0] // self.chunk)):
            part = block[j * self.chunk : (j + 1) * self.chunk]
            self.buf[self.lru[c0 + j], : part.shape[0]] = part

    def missing(self, chunks: Iterable[int]) -> list[int]:
        return [c for c in chunks if c not in self.lru]

    def gather(self, idx: np.ndarray, sub: int | None = None) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        flat = idx.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.n):
            raise IndexError(f"record index out of range [0, {self.n})")
        ch = flat // self.chunk
        uniq, inv = np.unique(ch, return_inverse=True)
        slots = self._ensure(uniq)[inv]
        rows = flat - ch * self.chunk
        out = self.buf[slots, rows] if sub is None else self.buf[slots, rows, sub]
        return out.reshape(idx.shape + out.shape[1:])


class ZarrSource:
    """Frame (or window) source reading arrays ``names`` of the store at ``path`` on demand.

    Args:
        path: store path or URL (anything ``zarr.open_group`` accepts).
        names: record-major arrays to serve (all on the same record dim).
        cache_mb: decoded-chunk budget in MiB for all arrays together (per process).
    """

    def __init__(self, path: str, names: Iterable[str], cache_mb: float = 128.0):
        self.path = str(path)
        self.names = tuple(dict.fromkeys(names))
        self.cache_mb = float(cache_mb)
        self._pools: dict[str, ChunkPool] | None = None
        self._pid: int | None = None
        self.stats = CacheStats()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pools"] = None  # never pickle Zarr handles or buffers
        state["_pid"] = None
        state["stats"] = CacheStats()
        return state

    def _open(self) -> dict[str, ChunkPool]:
        import zarr

        group = zarr.open_group(self.path, mode="r", zarr_format=3)
        arrays = {n: group[n] for n in self.names}
        chunk_bytes = sum(
            int(a.chunks[0]) * int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize for a in arrays.values()
        )
        n_slots = max(MIN_SLOTS, int(self.cache_mb * 2**20 // max(chunk_bytes, 1)))
        self.stats = CacheStats()
        self._pools = {n: ChunkPool(a, n_slots, self.stats) for n, a in arrays.items()}
        self._pid = os.getpid()
        return self._pools

    @property
    def pools(self) -> dict[str, ChunkPool]:
        if self._pools is None or self._pid != os.getpid():
            return self._open()
        return self._pools

    @property
    def n_slots(self) -> int:
        return min(p.n_slots for p in self.pools.values())

    @property
    def chunk_lengths(self) -> tuple[int, ...]:
        return tuple(sorted({p.chunk for p in self.pools.values()}))

    def gather(self, name: str, idx: np.ndarray, sub: int | None = None) -> np.ndarray:
        return self.pools[name].gather(idx, sub)

    def prefetch(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Read, in one concurrent Zarr call for all arrays, every chunk that samples reading
        records ``[lo_i, hi_i]`` need and the pools lack (skipped if they cannot hold them all)."""
        from zarr.core.sync import sync

        lo = np.asarray(lo, dtype=np.int64)
        hi = np.asarray(hi, dtype=np.int64)
        if lo.size == 0:
            return
        needs = []
        for pool in self.pools.values():
            a, b = lo // pool.chunk, hi // pool.chunk
            parts = [a, b] + [np.arange(x, y + 1) for x, y in zip(a[b - a > 1], b[b - a > 1])]
            needs.append(np.unique(np.concatenate(parts)).tolist())
            if len(needs[-1]) > pool.n_slots:
                return  # before any slot is assigned: gather reads what it needs
        requests = []
        for pool, need in zip(self.pools.values(), needs):
            new = pool.missing(need)
            if not new:
                continue
            pool.stats.misses += len(new)
            pool._assign(new, set(need))
            for c0, c1 in _runs(new):
                requests.append((pool, c0, c1))
        if not requests:
            return

        async def fetch():
            import asyncio

            return await asyncio.gather(*[
                pool.array.async_array.getitem(slice(c0 * pool.chunk, min((c1 + 1) * pool.chunk, pool.n)))
                for pool, c0, c1 in requests
            ])

        for (pool, c0, _), block in zip(requests, sync(fetch())):
            pool.store_block(c0, np.asarray(block))

    def plan_groups(self, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
        """Split samples reading records ``[lo_i, hi_i]`` into groups that each fit the pools.

        Returns index arrays into the batch (one group when the whole batch fits, the usual case).
        """
        lo = np.asarray(lo, dtype=np.int64)
        hi = np.asarray(hi, dtype=np.int64)
        n_slots = self.n_slots
        lengths = self.chunk_lengths

        def n_chunks(sel: np.ndarray) -> int:
            worst = 0
            for c in lengths:
                a, b = lo[sel] // c, hi[sel] // c
                parts = [a, b] + [np.arange(x, y + 1) for x, y in zip(a[b - a > 1], b[b - a > 1])]
                worst = max(worst, np.unique(np.concatenate(parts)).size)
            return worst

        every = np.arange(lo.size)
        if lo.size == 0 or n_chunks(every) <= n_slots:
            return [every]
        order = np.argsort(lo, kind="stable")
        groups: list[np.ndarray] = []
        current: list[int] = []
        seen: list[set] = [set() for _ in lengths]
        for i in order.tolist():
            spans = [set(range(int(lo[i]) // c, int(hi[i]) // c + 1)) for c in lengths]
            if any(len(s | span) > n_slots for s, span in zip(seen, spans)) and current:
                groups.append(np.asarray(current, dtype=np.int64))
                current, seen = [], [set() for _ in lengths]
            current.append(i)
            for s, span in zip(seen, spans):
                s |= span
        groups.append(np.asarray(current, dtype=np.int64))
        return groups


def read_records(path: str, names: Sequence[str], ranges: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Arrays ``names`` over the concatenated record ranges ``[a, b)`` (for in-memory copies)."""
    import zarr

    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    out = {}
    for n in names:
        arr = group[n]
        parts = [np.asarray(arr[a:b]) for a, b in ranges if b > a]
        out[n] = np.concatenate(parts) if parts else np.zeros((0,) + tuple(arr.shape[1:]), dtype=arr.dtype)
    return out
