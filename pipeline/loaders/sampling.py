"""Deterministic samplers (torch-free; any ``DataLoader`` accepts them as ``sampler``).

* ``ShuffleSampler``: a permutation of all samples per epoch.
* ``ChunkShuffleSampler``: shuffles *blocks* of samples whose window centres share a store
  chunk (frames aligned to the store's frame chunks, 256 by default), then shuffles samples within
  groups of ``group_chunks`` blocks. Consecutive batches then touch few chunks, so the chunk cache
  of the Zarr loader stays small and reads stay contiguous, while batches still mix
  ``group_chunks`` distant places of the corpus.
* ``BatchSampler``: lists of ``batch_size`` indices from a sampler (for ``DataLoader(...,
  sampler=BatchSampler(...), batch_size=None)``, which fetches whole batches at once).

Epoch ``e`` of a sampler seeded ``seed`` is drawn from ``numpy.random.default_rng([seed, e])``;
iterating a sampler uses its current epoch and then advances it (``set_epoch`` pins it). The
order depends on nothing else: not on workers, processes or global random state.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class ShuffleSampler:
    """All indices ``0 .. n-1``, permuted per epoch (or in order with ``shuffle=False``)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> np.ndarray:
        e = self.epoch if epoch is None else int(epoch)
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        return np.random.default_rng([self.seed, e]).permutation(self.n).astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.n


class ChunkShuffleSampler(ShuffleSampler):
    """Chunk-aware shuffling (see the module docs).

    Args:
        blocks: block id of every sample (``dataset.sample_blocks()``), or a dataset having it.
        seed: seed of the permutations.
        group_chunks: blocks whose samples are shuffled together (larger mixes more, needs a
            larger chunk cache: about ``2 * group_chunks`` chunks per array and worker).
    """

    def __init__(self, blocks, seed: int = 0, group_chunks: int = 8):
        if hasattr(blocks, "sample_blocks"):
            blocks = blocks.sample_blocks()
        self.blocks = np.asarray(blocks, dtype=np.int64)
        if group_chunks < 1:
            raise ValueError("group_chunks must be >= 1")
        self.group_chunks = int(group_chunks)
        super().__init__(self.blocks.size, seed, True)

    def order(self, epoch: int | None = None) -> np.ndarray:
        e = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, e])
        by_block = np.argsort(self.blocks, kind="stable")
        _, starts, counts = np.unique(self.blocks[by_block], return_index=True, return_counts=True)
        perm = rng.permutation(starts.size)
        out = []
        for g in range(0, perm.size, self.group_chunks):
            members = np.concatenate([by_block[starts[i] : starts[i] + counts[i]] for i in perm[g : g + self.group_chunks]])
            out.append(rng.permutation(members))
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


class BatchSampler:
    """Consecutive lists of ``batch_size`` indices of ``sampler`` (last one shorter unless
    ``drop_last``); forwards ``set_epoch``."""

    def __init__(self, sampler, batch_size: int, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(iter(self.sampler))
        bs = self.batch_size
        stop = len(order) - len(order) % bs if self.drop_last else len(order)
        for a in range(0, stop, bs):
            yield order[a : a + bs]

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
