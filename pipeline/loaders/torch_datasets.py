"""Map-style datasets for PyTorch (torch is optional: imported only to make tensors / loaders).

* ``ImDySWindows``: one sample per frame t of each selected sequence: the ImDyS state window
  s^{t-w..t+w+1} (markers, joints or 6-D rotations, with velocities) canonicalized to the
  heading and root of frame t, targets when the store has them (tau^t, GRF lambda^{t..t+1}),
  pad masks and the body mass. See ``pipeline.loaders.windows`` for the exact conventions.
* ``ZellWindows``: one sample per polynomial window: [gamma_q, l_sub, gamma_f, gamma_tau].

Both read only what they need from Zarr through a bounded chunk cache (``cache_mb`` per process)
opened lazily in the process that reads (each ``DataLoader`` worker opens its own handles; a
pickled dataset carries only paths and small per-sequence arrays), or, with ``in_memory=True``,
from numpy copies of the selected sequences (the same assembly code). Indexing with an int gives
one sample; with a list/array of ints, a whole batch assembled at once (vectorized; this is what
``make_loader`` uses). ``__getitems__`` makes a plain ``DataLoader(ds, batch_size=B)`` batch
reads too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .sampling import BatchSampler, ChunkShuffleSampler, ShuffleSampler
from .sources import ZarrSource, read_records
from .stats import Normalizer, load_stats
from .windows import (
    DEFAULT_TARGETS,
    LOCAL,
    ROOT_POS,
    ROOT_ROT,
    ZELL_FORCE,
    ZELL_Q,
    ZELL_TORQUE,
    ImDySConfig,
    InMemorySource,
    assemble_imdys,
    assemble_zell,
    sample_table,
    target_kind,
)
from .xarray_api import read_index, resolve_store, select_sequences, stats_path_for


def _array_info(store: str) -> dict[str, dict[str, Any]]:
    """name → dims, shape, chunk length, dtype, attrs of every array (metadata only)."""
    import zarr

    group = zarr.open_group(store, mode="r", zarr_format=3)
    info = {}
    for name in group.array_keys():
        a = group[name]
        info[name] = {
            "dims": tuple(a.metadata.dimension_names or ()),
            "shape": tuple(int(s) for s in a.shape),
            "chunk": int(a.chunks[0]) if a.ndim else 0,
            "dtype": np.dtype(a.dtype) if np.dtype(a.dtype).kind != "T" else None,
            "attrs": dict(a.attrs),
        }
    return info


def _to_tensors(batch: Mapping[str, np.ndarray]) -> dict:
    """Tensors of a numpy batch, packed as views of one storage per dtype.

    A ``DataLoader`` worker moves every storage of a batch to shared memory separately (a few
    hundred µs each); packing cuts a batch's ~13 storages to 3 (float32, bool, int64). Outside
    workers (nothing to ship) the arrays are wrapped without a copy.
    """
    import torch

    if torch.utils.data.get_worker_info() is None:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}

    by_dtype: dict[np.dtype, list[str]] = {}
    for k, v in batch.items():
        by_dtype.setdefault(np.asarray(v).dtype, []).append(k)
    out = {}
    for dtype, keys in by_dtype.items():
        sizes = [int(np.asarray(batch[k]).size) for k in keys]
        flat = np.empty(sum(sizes), dtype=dtype)
        pos = 0
        for k, n in zip(keys, sizes):
            flat[pos : pos + n] = np.asarray(batch[k]).reshape(-1)
            pos += n
        buf = torch.from_numpy(flat)
        pos = 0
        for k, n in zip(keys, sizes):
            out[k] = buf[pos : pos + n].view(np.shape(batch[k]))
            pos += n
    return {k: out[k] for k in batch}


class _RecordDataset:
    """Shared plumbing: store resolution, sequence selection, batching, tensors, normalization."""

    record_dim = "frame"

    def __init__(
        self, path_or_url, subset, split, source, subject, dataset, query, cache_mb, in_memory, as_tensors,
    ):
        self.store = resolve_store(path_or_url, subset)
        index, attrs = read_index(self.store)
        if subset is not None and attrs.get("schema_name") != subset:
            raise ValueError(f"{self.store} holds a {attrs.get('schema_name')} store, not {subset}")
        self.subset = str(attrs.get("schema_name"))
        self.attrs = attrs
        self.fps = float(attrs.get("fps_hz", 30.0))
        self.info = _array_info(self.store)
        sel = select_sequences(index, split, source, subject, dataset, query)
        self.index = index.iloc[sel].assign(store_sequence=sel)
        self.cache_mb = float(cache_mb)
        self.in_memory = bool(in_memory)
        self.as_tensors = bool(as_tensors)
        self.normalizer: Normalizer | None = None
        self._mass = index["seq_mass_kg"].to_numpy(np.float32)
        self._frame_offset = index["seq_frame_offset"].to_numpy(np.int64)

    # -- set-up helpers
    def _make_source(self, names: Sequence[str], offset: np.ndarray, count: np.ndarray):
        """(source, offsets of the selected sequences in it)."""
        if not self.in_memory:
            return ZarrSource(self.store, names, self.cache_mb), offset
        ranges = [(int(a), int(a + n)) for a, n in zip(offset, count)]
        arrays = read_records(self.store, names, ranges)
        compact = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64) if count.size else offset
        return InMemorySource(arrays), compact

    def _load_stats(self, stats):
        if stats is None:
            return load_stats(stats_path_for(self.store), self.subset)
        return load_stats(stats, self.subset)

    # -- sizes
    def __len__(self) -> int:
        return len(self.table)

    @property
    def chunk_length(self) -> int:
        return int(self._chunk)

    def sample_blocks(self) -> np.ndarray:
        """Store chunk (along the record dim) of every sample's centre record, for
        ``ChunkShuffleSampler``."""
        all_i = np.arange(len(self), dtype=np.int64)
        row, k = self.table.locate(all_i)
        return (self._store_record_offset[row] + k) // self._chunk

    # -- access
    def _assemble(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def get_batch(self, indices: Iterable[int]) -> dict:
        """Samples ``indices`` assembled at once: dict of (B, ...) arrays (tensors if
        ``as_tensors``), normalized if the dataset normalizes."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64)
        batch = self._assemble(idx)
        if self.normalizer is not None:
            batch = self.normalizer(batch)
        return _to_tensors(batch) if self.as_tensors else batch

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.get_batch(range(*i.indices(len(self))))
        if isinstance(i, (list, tuple, np.ndarray)) or (hasattr(i, "tolist") and getattr(i, "ndim", 0) == 1):
            return self.get_batch(np.asarray(i.tolist() if hasattr(i, "tolist") else i, dtype=np.int64))
        batch = self.get_batch(np.asarray([int(i)]))
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Per-sample dicts of one batched read (``DataLoader``'s default collate stacks them)."""
        batch = self.get_batch(np.asarray(indices, dtype=np.int64))
        return [{k: v[j] for k, v in batch.items()} for j in range(len(indices))]

    def cache_stats(self):
        """Chunk cache counters of this process (None for in-memory datasets)."""
        return getattr(self.source, "stats", None)


class ImDySWindows(_RecordDataset):
    """ImDyS training windows, one per frame of each selected sequence.

    Args:
        path_or_url: release / build directory, store path or URL (``resolve_store``).
        subset: store to read; ``motion`` and ``contact`` give states only, ``ground_reaction`` and
            ``torque`` add their targets (the windowing does not depend on the subset).
        split, source, subject, dataset, query: sequence filters (``select_sequences``).
        w: half width: states s^{t-w} .. s^{t+w+1} (``2w + 2`` frames; ImDy uses 2).
        representation: ``markers`` (``marker_pos_m``, default), ``joints`` (``joint_pos_m``) or
            ``rot6d`` (``joint_rot_aa_rad`` → 6-D, root canonicalized).
        edge: ``clamp`` (every frame; out-of-sequence frames repeat the edge frame and are flagged
            in ``*_is_pad``) or ``exclude`` (only centres whose states and targets all fit).
        targets: ``None`` → ``DEFAULT_TARGETS`` present in the store; else target array → frame
            offsets relative to t (a list of names means offset 0); ``{}`` for none.
        normalize: apply ``stats`` (``stats.json`` next to the store when ``None``).
        cache_mb: decoded-chunk cache per process (MiB); memory is bounded by it.
        in_memory: read the selected sequences into numpy once (small data, benchmarks).
        as_tensors: return torch tensors (else numpy arrays; torch then is not needed).

    A sample (batch: every entry gets a leading batch dim) holds ``state`` (L, K, D),
    ``state_vel``, ``root_pos`` (L, 3), ``root_vel``, ``state_is_pad`` (L,), ``heading_rad``,
    ``origin_xy_m`` (2,), ``seq_mass_kg``, ``seq_index`` (store sequence), ``frame_index``
    (t within the sequence), ``sample_index`` and per target ``<name>`` (n_offsets, ...) with
    ``<name>_is_pad``.
    """

    def __init__(
        self,
        path_or_url,
        subset: str | None = "motion",
        *,
        split=None,
        source=None,
        subject=None,
        dataset=None,
        query: str | None = None,
        w: int = 2,
        representation: str = "markers",
        edge: str = "clamp",
        targets: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
        normalize: bool = False,
        stats=None,
        cache_mb: float = 128.0,
        in_memory: bool = False,
        as_tensors: bool = True,
    ):
        super().__init__(path_or_url, subset, split, source, subject, dataset, query, cache_mb, in_memory, as_tensors)
        frames_in_store = self.info.get("frame_sequence", {}).get("shape", (0,))[0]
        if targets is None:
            wanted = {n: o for n, o in DEFAULT_TARGETS.items() if n in self.info and frames_in_store > 0}
        elif isinstance(targets, Mapping):
            wanted = {str(n): tuple(int(x) for x in o) for n, o in targets.items()}
        else:
            wanted = {str(n): (0,) for n in targets}
        for name in wanted:
            inf = self.info.get(name)
            if inf is None or inf["dims"][:1] != ("frame",):
                raise KeyError(f"target {name!r} is not a frame array of {self.store}")
        self.config = ImDySConfig(
            w=w, representation=representation, fps=self.fps,
            targets=tuple((n, tuple(o), target_kind(n, self.info[n]["attrs"])) for n, o in wanted.items()),
        )
        self.edge = edge
        for name in (ROOT_POS, ROOT_ROT, self.config.state_array):
            if name not in self.info:
                raise KeyError(f"{self.store} has no {name}")
        self._chunk = self.info[self.config.state_array]["chunk"]
        seq = self.index["store_sequence"].to_numpy(np.int64)
        offset = self.index["seq_frame_offset"].to_numpy(np.int64)
        count = self.index["seq_frame_count"].to_numpy(np.int64)
        self.source, src_offset = self._make_source(self.config.arrays, offset, count)
        lo, hi = self.config.extent
        self.table = sample_table(seq, src_offset, count, lo, hi, edge)
        self._store_record_offset = offset
        if normalize:
            self.normalizer = Normalizer(self._load_stats(stats), self._norm_mapping())

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t[0] for t in self.config.targets)

    def _norm_mapping(self) -> dict[str, list[tuple[str, str]]]:
        state = "joint_rot6d" if self.config.representation == "rot6d" else self.config.state_array
        mapping = {
            "state": [("canonical", state)],
            "state_vel": [("canonical", f"{state}_vel")],
            "root_pos": [("canonical", ROOT_POS)],
            "root_vel": [("canonical", f"{ROOT_POS}_vel")],
        }
        for name, _, kind in self.config.targets:
            dtype = self.info[name]["dtype"]
            if dtype is None or dtype.kind != "f":
                continue  # labels (e.g. contact) stay as stored
            mapping[name] = [("arrays" if kind == LOCAL else "canonical", name)]
        return mapping

    def _assemble(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        row, t = self.table.locate(indices)
        off, cnt = self.table.frame_offset[row], self.table.count[row]
        lo, hi = self.config.extent
        zarr_source = isinstance(self.source, ZarrSource)
        if zarr_source:
            first, final = off + np.clip(t - lo - 1, 0, cnt - 1), off + np.clip(t + hi + 1, 0, cnt - 1)
            groups = self.source.plan_groups(first, final)
        else:
            groups = [np.arange(indices.size)]
        if len(groups) == 1:
            if zarr_source:
                self.source.prefetch(first, final)
            out = assemble_imdys(self.source, self.config, off, cnt, t)
        else:
            out = {}
            for g in groups:
                self.source.prefetch(first[g], final[g])
                part = assemble_imdys(self.source, self.config, off[g], cnt[g], t[g])
                for k, v in part.items():
                    if k not in out:
                        out[k] = np.empty((indices.size,) + v.shape[1:], dtype=v.dtype)
                    out[k][g] = v
        seq = self.table.seq[row]
        out["seq_mass_kg"] = self._mass[seq]
        out["seq_index"] = seq
        out["frame_index"] = t
        out["sample_index"] = indices
        return out


class ZellWindows(_RecordDataset):
    """Zell et al.'s per-window samples, one per polynomial window of each selected sequence.

    Args:
        path_or_url, subset, split, source, subject, dataset, query, normalize, stats, cache_mb,
        in_memory, as_tensors: as for ``ImDySWindows``.
        q: ``rot`` (``joint_rot_coef_rad``, default) or ``pos`` (``joint_pos_coef_m``) for gamma_q.

    A sample holds ``gamma_q`` (4, 24, 3) cubic coefficients; ``l_sub`` (23,) bone lengths
    (``seq_bone_length_m``); when the store has them ``gamma_f`` (4, 2, 6) = ``grf_coef_n`` ‖
    ``grm_coef_nm`` along the last axis (force xyz, moment xyz per foot) and ``gamma_tau``
    (2, 23, 3) = ``torque_coef_nm``; ``seq_mass_kg``, ``seq_index``, ``window_index`` (within the
    sequence), ``window_start`` (first frame, within the sequence), ``sample_index``.
    Coefficients are as stored (see the store attr ``window_time`` for the polynomial variable).
    """

    record_dim = "window"

    def __init__(
        self,
        path_or_url,
        subset: str | None = "motion",
        *,
        split=None,
        source=None,
        subject=None,
        dataset=None,
        query: str | None = None,
        q: str = "rot",
        normalize: bool = False,
        stats=None,
        cache_mb: float = 64.0,
        in_memory: bool = False,
        as_tensors: bool = True,
    ):
        super().__init__(path_or_url, subset, split, source, subject, dataset, query, cache_mb, in_memory, as_tensors)
        if q not in ZELL_Q:
            raise ValueError(f"q must be one of {sorted(ZELL_Q)}, got {q!r}")
        self.q_array = ZELL_Q[q]
        self.force_arrays = tuple(n for n in ZELL_FORCE if n in self.info) if all(
            n in self.info for n in ZELL_FORCE) else ()
        self.torque_arrays = tuple(n for n in ZELL_TORQUE if n in self.info)
        self.names = (self.q_array, *self.force_arrays, *self.torque_arrays, "window_start")
        import zarr

        group = zarr.open_group(self.store, mode="r", zarr_format=3)
        self._bones = np.asarray(group["seq_bone_length_m"][...], dtype=np.float32)
        del group
        self._chunk = self.info[self.q_array]["chunk"]
        seq = self.index["store_sequence"].to_numpy(np.int64)
        offset = self.index["seq_window_offset"].to_numpy(np.int64)
        count = self.index["seq_window_count"].to_numpy(np.int64)
        self.source, src_offset = self._make_source(self.names, offset, count)
        self.table = sample_table(seq, src_offset, count)
        self._store_record_offset = offset
        if normalize:
            mapping = {"gamma_q": [("arrays", self.q_array)], "l_sub": [("arrays", "seq_bone_length_m")]}
            if self.force_arrays:
                mapping["gamma_f"] = [("arrays", n) for n in self.force_arrays]
            if self.torque_arrays:
                mapping["gamma_tau"] = [("arrays", self.torque_arrays[0])]
            self.normalizer = Normalizer(self._load_stats(stats), mapping)

    def _assemble(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        row, k = self.table.locate(indices)
        g = self.table.frame_offset[row] + k
        if isinstance(self.source, ZarrSource):
            groups = self.source.plan_groups(g, g)
        else:
            groups = [np.arange(indices.size)]
        parts = {}
        for grp in groups:
            if isinstance(self.source, ZarrSource):
                self.source.prefetch(g[grp], g[grp])
            part = assemble_zell(self.source, self.names, g[grp])
            for n, v in part.items():
                if n not in parts:
                    parts[n] = np.empty((indices.size,) + v.shape[1:], dtype=v.dtype)
                parts[n][grp] = v
        seq = self.table.seq[row]
        out = {"gamma_q": parts[self.q_array], "l_sub": self._bones[seq]}
        if self.force_arrays:
            out["gamma_f"] = np.concatenate([parts[n] for n in self.force_arrays], axis=-1)
        if self.torque_arrays:
            out["gamma_tau"] = parts[self.torque_arrays[0]]
        out["seq_mass_kg"] = self._mass[seq]
        out["seq_index"] = seq
        out["window_index"] = k
        out["window_start"] = parts["window_start"] - self._frame_offset[seq]
        out["sample_index"] = indices
        return out


def make_loader(
    dataset: _RecordDataset,
    batch_size: int = 256,
    *,
    shuffle: bool = True,
    chunk_shuffle: bool = False,
    group_chunks: int = 8,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    **kwargs,
):
    """A ``torch.utils.data.DataLoader`` fetching whole batches (one vectorized read each).

    Batches are drawn in the main process by ``BatchSampler`` over ``ShuffleSampler`` (or
    ``ChunkShuffleSampler`` with ``chunk_shuffle=True``) seeded with ``seed``; the samples do
    not depend on ``num_workers``. Extra keyword arguments go to ``DataLoader`` (``pin_memory``,
    ``persistent_workers``, ``prefetch_factor``, ``multiprocessing_context``, ...). Call
    ``loader.sampler.set_epoch(e)`` to pin an epoch (else each pass advances it).

    Workers start with ``multiprocessing_context="forkserver"`` unless told otherwise: a plain
    fork copies whatever threads and event loops the parent runs (Dask, Prefect, asyncio), which
    can kill workers; the dataset opens its store handles lazily in each worker anyway.
    """
    import torch

    if num_workers > 0:
        kwargs.setdefault("multiprocessing_context", "forkserver")

    if chunk_shuffle:
        base = ChunkShuffleSampler(dataset, seed=seed, group_chunks=group_chunks)
    else:
        base = ShuffleSampler(len(dataset), seed=seed, shuffle=shuffle)
    batches = BatchSampler(base, batch_size, drop_last)
    return torch.utils.data.DataLoader(
        dataset, sampler=batches, batch_size=None, num_workers=num_workers, **kwargs
    )
