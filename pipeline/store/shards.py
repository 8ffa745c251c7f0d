"""Whole-shard encoding and writing for the store writer, without zarr's per-chunk machinery.

A Zarr v3 array with the ``sharding_indexed`` codec stores one object per shard: its inner chunks,
each encoded by the inner codecs (``bytes`` little-endian, then ``blosc``), one after the other,
followed by the shard index — (offset, nbytes) as little-endian uint64 per inner chunk in C order,
then the index's crc32c (``index_location: end``). An inner chunk that lies wholly past the end of
the array is not stored (offset = nbytes = 2^64 − 1), as zarr does.

``ShardWriter`` reads an array's ``zarr.json`` once, encodes a whole shard in one call (numcodecs
Blosc with the array's own configuration) and writes it as a new file renamed into place: an
existing object is never modified in place, so a hard link to it (a release) keeps its bytes.
Reading stays with zarr (``xarray.open_zarr``); tests check the round trip.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_EMPTY = np.uint64(2**64 - 1)
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def _crc32c(data: bytes) -> bytes:
    import google_crc32c

    return np.uint32(google_crc32c.value(data)).astype("<u4").tobytes()


@dataclass(frozen=True)
class ShardLayout:
    """What encoding one array's shards needs, from its ``zarr.json``.

    Attributes:
        path: the array's folder.
        shape: array shape; shard: shard shape; chunk: inner chunk shape (all in elements).
        dtype: little-endian numpy dtype; fill: fill value.
        blosc: numcodecs Blosc configuration (``cname``, ``clevel``, ``shuffle``, ``blocksize``, ``typesize``).
        separator: chunk key separator.
    """

    path: Path
    shape: tuple[int, ...]
    shard: tuple[int, ...]
    chunk: tuple[int, ...]
    dtype: np.dtype
    fill: object
    blosc: dict
    separator: str

    @classmethod
    def read(cls, array_path: Path) -> ShardLayout:
        meta = json.loads((Path(array_path) / "zarr.json").read_text())
        (codec,) = meta["codecs"]
        if codec["name"] != "sharding_indexed":
            raise ValueError(f"{array_path}: not a sharded array")
        conf = codec["configuration"]
        inner = [c["name"] for c in conf["codecs"]]
        index = [c["name"] for c in conf["index_codecs"]]
        if inner != ["bytes", "blosc"] or index != ["bytes", "crc32c"] or conf.get("index_location", "end") != "end":
            raise ValueError(f"{array_path}: unsupported codecs {inner} / index {index}")
        b = conf["codecs"][1]["configuration"]
        dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        fill = meta["fill_value"]
        fill = float(fill) if isinstance(fill, str) else fill  # "NaN", "Infinity"
        return cls(
            path=Path(array_path), shape=tuple(meta["shape"]),
            shard=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]), chunk=tuple(conf["chunk_shape"]),
            dtype=dtype, fill=fill,
            blosc={"cname": b["cname"], "clevel": int(b["clevel"]), "shuffle": _SHUFFLE[b["shuffle"]],
                   "blocksize": int(b.get("blocksize", 0)), "typesize": int(b.get("typesize", dtype.itemsize))},
            separator=meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/"),
        )

    def key(self, shard_index: int) -> Path:
        """Object path of shard ``shard_index`` along the first dim (other dims are one shard)."""
        return self.path / self.separator.join(["c", str(shard_index), *("0" for _ in self.shape[1:])])

    def encode(self, shard_index: int, block: np.ndarray) -> bytes:
        """Encoded bytes of shard ``shard_index`` holding ``block`` (its rows; fewer than the shard
        length only for the array's last shard, the rest is fill)."""
        from numcodecs import Blosc

        n, c = self.shard[0], self.chunk[0]
        start = shard_index * n
        valid = min(n, self.shape[0] - start)
        if block.shape[0] != valid or block.shape[1:] != tuple(self.shape[1:]):
            raise ValueError(f"{self.path.name}: shard {shard_index} needs {(valid, *self.shape[1:])}, got {block.shape}")
        block = np.ascontiguousarray(block, dtype=self.dtype)
        codec = Blosc(**self.blosc)
        n_chunks = n // c
        index = np.full((n_chunks, 2), _EMPTY, dtype="<u8")
        parts, offset = [], 0
        for j in range(n_chunks):
            a = j * c
            if a >= valid:
                break  # wholly past the array's end: not stored
            chunk = block[a : a + c]
            if chunk.shape[0] < c:  # the array's last, partial chunk: padded with the fill value
                chunk = np.concatenate([chunk, np.full((c - chunk.shape[0], *chunk.shape[1:]), self.fill, self.dtype)])
            data = codec.encode(chunk)
            parts.append(data)
            index[j] = (offset, len(data))
            offset += len(data)
        raw_index = index.tobytes()
        return b"".join([*parts, raw_index, _crc32c(raw_index)])

    def write(self, shard_index: int, block: np.ndarray) -> int:
        """Encode and write shard ``shard_index`` as a new file renamed into place; returns bytes written."""
        data = self.encode(shard_index, block)
        path = self.key(shard_index)
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return len(data)
