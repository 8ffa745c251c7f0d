"""PyTorch integration: DataLoader workers, determinism, chunk shuffling, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest_loaders import stores  # noqa: F401  (session fixture)

torch = pytest.importorskip("torch")

from pipeline.loaders import ChunkShuffleSampler, ImDySWindows, ShuffleSampler, ZellWindows, make_loader  # noqa: E402


def _collect(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def test_two_workers_yield_the_same_samples_as_zero(stores):
    ds = ImDySWindows(stores["torque"], "torque", split="train", cache_mb=1)
    runs = {}
    for nw in (0, 2):
        runs[nw] = _collect(make_loader(ds, batch_size=64, seed=7, num_workers=nw, ))
    assert len(runs[0]) == len(runs[2]) == -(-len(ds) // 64)
    for a, b in zip(runs[0], runs[2]):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) or (a[k].is_floating_point() and torch.allclose(a[k], b[k], equal_nan=True)), k
    seen = torch.cat([b["sample_index"] for b in runs[0]])
    assert sorted(seen.tolist()) == list(range(len(ds)))  # an epoch visits every sample once
    other = _collect(make_loader(ds, batch_size=64, seed=8))
    assert not torch.equal(other[0]["sample_index"], runs[0][0]["sample_index"])


def test_chunk_shuffle_with_workers_is_deterministic_and_local(stores):
    ds = ImDySWindows(stores["release"], "contact", cache_mb=1)
    a = _collect(make_loader(ds, batch_size=128, seed=3, chunk_shuffle=True, group_chunks=2, num_workers=2))
    b = _collect(make_loader(ds, batch_size=128, seed=3, chunk_shuffle=True, group_chunks=2, num_workers=0))
    for x, y in zip(a, b):
        assert torch.equal(x["sample_index"], y["sample_index"]) and torch.equal(x["state"], y["state"])
    blocks = ds.sample_blocks()
    order = np.concatenate([x["sample_index"].numpy() for x in a])
    assert sorted(order.tolist()) == list(range(len(ds)))
    # samples of a group of 2 chunks are contiguous in the order: a 128-batch touches <= 4 chunks
    for x in a:
        assert np.unique(blocks[x["sample_index"].numpy()]).size <= 4


def test_samplers_are_seeded_permutations():
    s = ShuffleSampler(100, seed=1)
    e0, e1 = list(s), list(s)
    assert sorted(e0) == list(range(100)) and e0 != e1
    s.set_epoch(0)
    assert list(s) == e0
    blocks = np.repeat(np.arange(10), 10)
    c = ChunkShuffleSampler(blocks, seed=2, group_chunks=1)
    order = np.array(list(c))
    assert sorted(order.tolist()) == list(range(100))
    assert all(np.unique(blocks[order[i:i + 10]]).size == 1 for i in range(0, 100, 10))


def test_plain_dataloader_uses_batched_reads(stores):
    ds = ImDySWindows(stores["release"], "motion", representation="joints")
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=False)
    first = next(iter(loader))
    assert first["state"].shape == (32, 6, 24, 3) and first["state"].dtype == torch.float32
    assert first["state_is_pad"].dtype == torch.bool
    ref = ds[list(range(32))]
    assert torch.equal(first["state"], ref["state"])
    assert ds[5]["state"].shape == (6, 24, 3)


def test_pickled_dataset_carries_no_store_handles(stores):
    ds = ImDySWindows(stores["release"], "contact")
    ds[[0, 1000, 3000]]  # opens the store and fills the cache in this process
    assert ds.source._pools is not None
    blob = pickle.dumps(ds)
    assert len(blob) < 200_000  # paths and small per-sequence arrays only, no chunk buffers
    clone = pickle.loads(blob)
    assert clone.source._pools is None
    assert torch.equal(clone[[0, 1000, 3000]]["state"], ds[[0, 1000, 3000]]["state"])
    z = pickle.loads(pickle.dumps(ZellWindows(stores["release"], "contact")))
    assert z[2]["gamma_q"].shape == (4, 24, 3)


def test_numpy_output_without_tensors(stores):
    ds = ImDySWindows(stores["release"], "contact", as_tensors=False, split="val")
    b = ds[[0, 1]]
    assert isinstance(b["state"], np.ndarray)
