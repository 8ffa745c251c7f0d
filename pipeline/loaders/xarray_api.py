"""Open a dynaset release (or build output) lazily with xarray and select sequences.

``open_release(path, subset, split=..., source=..., subject=...)`` returns the subset's store as a
lazy (dask-backed) ``xarray.Dataset`` restricted to the selected sequences, plus their index as a
``pandas.DataFrame``. Selection reads only the per-sequence arrays; frames and windows stay lazy.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.store import open_store, sequence_index
from pipeline.store.schema import SUBSETS

STATS_FILE = "stats.json"


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def resolve_store(path_or_url: str | Path, subset: str | None = None) -> str:
    """Path (or URL) of the ``subset`` store inside a release / build output directory, or the
    store itself when ``path_or_url`` already is one (``*.zarr`` or a directory with ``zarr.json``).

    Local layouts searched: ``<dir>/<subset>.zarr`` and ``<dir>/stores/<subset>.zarr``. URLs
    (``s3://``, ``https://``, ... opened through fsspec) are joined as ``<url>/<subset>.zarr``.
    """
    text = str(path_or_url)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if _is_url(text):
        if text.rstrip("/").endswith(".zarr"):
            return text.rstrip("/")
        if subset is None:
            raise ValueError(f"{text} is not a store URL (*.zarr); give the subset")
        return f"{text.rstrip('/')}/{subset}.zarr"
    p = Path(text)
    if p.suffix == ".zarr" or (p / "zarr.json").is_file():
        if not p.exists():
            raise FileNotFoundError(f"store {p} does not exist")
        return str(p)
    if subset is None:
        raise ValueError(f"{p} is not a store; give the subset ({', '.join(SUBSETS)})")
    for cand in (p / f"{subset}.zarr", p / "stores" / f"{subset}.zarr"):
        if cand.is_dir():
            return str(cand)
    found = sorted(x.name for x in p.glob("*.zarr")) if p.is_dir() else []
    raise FileNotFoundError(f"no {subset}.zarr under {p} (found: {found or 'nothing'})")


def stats_path_for(store: str | Path) -> str:
    """Where ``stats.json`` of a store lives: next to it, in the release directory."""
    text = str(store).rstrip("/")
    if _is_url(text):
        return text.rsplit("/", 1)[0] + "/" + STATS_FILE
    return str(Path(text).parent / STATS_FILE)


def read_index(store: str | Path) -> tuple[pd.DataFrame, dict]:
    """(per-sequence index, store attrs) of a store; reads only per-sequence arrays."""
    ds = open_store(store)
    try:
        return sequence_index(ds), dict(ds.attrs)
    finally:
        ds.close()


def _as_set(value: str | Iterable[str] | None) -> set[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {value}
    return {str(v) for v in value}


def live_mask(index: pd.DataFrame) -> np.ndarray:
    """Per index row: the sequence is live (not tombstoned by an incremental ingestion; stores
    without ``seq_tombstone`` have none)."""
    if "seq_tombstone" not in index:
        return np.ones(len(index), dtype=bool)
    return index["seq_tombstone"].to_numpy() != 1


def select_sequences(
    index: pd.DataFrame,
    split: str | Iterable[str] | None = None,
    source: str | Iterable[str] | None = None,
    subject: str | Iterable[str] | None = None,
    dataset: str | Iterable[str] | None = None,
    query: str | None = None,
) -> np.ndarray:
    """Store indices (sorted) of the sequences matching every given filter.

    ``split``/``source``/``subject``/``dataset`` match ``seq_split``/``seq_source``/
    ``seq_subject``/``seq_dataset`` (a value or a collection of values); ``subject`` also
    matches ``<dataset>/<subject>`` (subject ids are only unique within a dataset). ``query`` is
    a ``DataFrame.query`` expression over the index columns (e.g. ``"seq_duration_s > 5"``).
    Sequences tombstoned by an incremental ingestion (``seq_tombstone`` = 1) are never selected.
    """
    mask = live_mask(index)
    for col, want in (("seq_split", split), ("seq_source", source), ("seq_dataset", dataset)):
        values = _as_set(want)
        if values is not None:
            mask &= index[col].astype(str).isin(values).to_numpy()
    subjects = _as_set(subject)
    if subjects is not None:
        qualified = index["seq_dataset"].astype(str) + "/" + index["seq_subject"].astype(str)
        mask &= (index["seq_subject"].astype(str).isin(subjects) | qualified.isin(subjects)).to_numpy()
    if query:
        mask &= index.eval(query).to_numpy(dtype=bool)
    return np.flatnonzero(mask).astype(np.int64)


def _ranges(offset: np.ndarray, count: np.ndarray) -> list[tuple[int, int]]:
    """Merged [a, b) record ranges of the given sequences (store order)."""
    out: list[tuple[int, int]] = []
    for a, n in zip(offset.tolist(), count.tolist()):
        if n <= 0:
            continue
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], a + n)
        else:
            out.append((a, a + n))
    return out


def _indexer(ranges: list[tuple[int, int]]) -> np.ndarray:
    if not ranges:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges])


def _remap(da: xr.DataArray, fn, dtype) -> xr.DataArray:
    data = da.data
    if hasattr(data, "map_blocks"):
        return da.copy(data=data.map_blocks(fn, dtype=dtype))
    return da.copy(data=fn(np.asarray(data)))


def subset_dataset(ds: xr.Dataset, index: pd.DataFrame, sel: np.ndarray) -> tuple[xr.Dataset, pd.DataFrame]:
    """``ds`` and ``index`` restricted to store sequences ``sel`` (lazy for frames and windows).

    Offsets, ``frame_sequence``, ``window_sequence`` and the global ``window_start`` are rewritten
    for the selection (so ``pipeline.store.sequence`` works on it); ``seq_store_index`` / the
    ``store_sequence`` column keep each sequence's index in the full store.
    """
    sel = np.asarray(sel, dtype=np.int64)
    f_off = index["seq_frame_offset"].to_numpy(np.int64)
    f_cnt = index["seq_frame_count"].to_numpy(np.int64)
    w_off = index["seq_window_offset"].to_numpy(np.int64)
    w_cnt = index["seq_window_count"].to_numpy(np.int64)
    new_f_off = np.concatenate([[0], np.cumsum(f_cnt[sel])[:-1]]).astype(np.int64) if sel.size else sel
    new_w_off = np.concatenate([[0], np.cumsum(w_cnt[sel])[:-1]]).astype(np.int64) if sel.size else sel
    lut = np.full(len(index), -1, dtype=np.int64)
    lut[sel] = np.arange(sel.size)
    shift = np.zeros(len(index), dtype=np.int64)  # new global frame = old + shift[old sequence]
    shift[sel] = new_f_off - f_off[sel]

    out = ds.isel(
        frame=_indexer(_ranges(f_off[sel], f_cnt[sel])),
        window=_indexer(_ranges(w_off[sel], w_cnt[sel])),
        sequence=sel,
    )
    out["seq_frame_offset"] = ("sequence", new_f_off)
    out["seq_window_offset"] = ("sequence", new_w_off)
    out["seq_store_index"] = ("sequence", sel)
    out["frame_sequence"] = _remap(out["frame_sequence"], lambda b: lut[b].astype(np.int32), np.int32)
    ws_old = out["window_sequence"]
    out["window_start"] = xr.DataArray(
        _shift_starts(out["window_start"].data, ws_old.data, shift), dims=("window",),
        attrs=out["window_start"].attrs,
    )
    out["window_sequence"] = _remap(ws_old, lambda b: lut[b].astype(np.int32), np.int32)
    out.attrs = {**ds.attrs, "selection_sequences": int(sel.size)}

    idx = index.iloc[sel].copy()
    idx["store_sequence"] = sel
    idx["seq_frame_offset"] = new_f_off
    idx["seq_window_offset"] = new_w_off
    idx.index = pd.RangeIndex(sel.size, name="sequence")
    return out, idx


def _shift_starts(starts, wseq, shift: np.ndarray):
    def fn(s, q):
        return s + shift[q] if q.size else s

    if hasattr(starts, "map_blocks"):
        import dask.array as dsa

        return dsa.map_blocks(fn, starts, wseq, dtype=np.int64)
    return fn(np.asarray(starts), np.asarray(wseq))


def open_release(
    path_or_url: str | Path,
    subset: str | None = "motion",
    split: str | Iterable[str] | None = None,
    source: str | Iterable[str] | None = None,
    subject: str | Iterable[str] | None = None,
    dataset: str | Iterable[str] | None = None,
    query: str | None = None,
) -> tuple[xr.Dataset, pd.DataFrame]:
    """Open subset ``subset`` of a release lazily and select sequences.

    Args:
        path_or_url: release or build output directory (holding ``<subset>.zarr``), the store
            itself, or a URL of either (fsspec).
        subset: ``motion`` | ``contact`` | ``ground_reaction`` | ``torque`` (may be ``None`` when
            ``path_or_url`` is a store; it is checked against the store's ``schema_name``).
        split, source, subject, dataset, query: sequence filters (``select_sequences``).

    Returns:
        ``(ds, index)``: the dask-backed dataset of the selected sequences (offsets and
        ``frame_sequence``/``window_sequence``/``window_start`` renumbered for the selection)
        and one index row per selected sequence (``store_sequence``: index in the full store).
        Sequences tombstoned by an incremental ingestion are left out (storage_layout.md); without
        filters and tombstones, the store is returned as opened. This is the one call that gives
        the live dataset of a store in any layout.
    """
    store = resolve_store(path_or_url, subset)
    ds = open_store(store)
    if subset is not None and ds.attrs.get("schema_name") != subset:
        raise ValueError(f"{store} holds a {ds.attrs.get('schema_name')} store, not {subset}")
    index = sequence_index(ds)
    if all(v is None for v in (split, source, subject, dataset, query)) and live_mask(index).all():
        index = index.assign(store_sequence=np.arange(len(index), dtype=np.int64))
        return ds, index
    return subset_dataset(ds, index, select_sequences(index, split, source, subject, dataset, query))

