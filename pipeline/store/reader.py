"""Open dynaset stores with xarray and navigate their sequences."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import xarray as xr

from .schema import SUPPORTED_MAJOR, SchemaError, _parse_version


def check_schema_attrs(attrs: dict, where: str) -> tuple[str, str]:
    """(schema name, version) from store attrs, or ``SchemaError`` if missing or unsupported."""
    name, version = attrs.get("schema_name"), attrs.get("schema_version")
    if name is None or version is None:
        raise SchemaError(f"store {where} has no schema_name/schema_version attrs; not a dynaset store")
    if name not in SUPPORTED_MAJOR:
        raise SchemaError(f"store {where} has unknown schema {name!r}; supported: {sorted(SUPPORTED_MAJOR)}")
    major = _parse_version(str(version))[0]
    if major != SUPPORTED_MAJOR[name]:
        raise SchemaError(
            f"store {where} has schema {name} {version}; this dynaset supports major {SUPPORTED_MAJOR[name]}"
        )
    return str(name), str(version)


def open_store(path: str | Path) -> xr.Dataset:
    """Lazily open a store (dask-backed) after checking its schema name and major version."""
    ds = xr.open_zarr(str(path))
    check_schema_attrs(dict(ds.attrs), str(path))
    return ds


SEQUENCE_INDEX_COLUMNS = (
    "seq_id", "seq_source", "seq_dataset", "seq_subject", "seq_name", "seq_split", "seq_gender",
    "seq_frame_offset", "seq_frame_count", "seq_window_offset", "seq_window_count", "seq_duration_s",
)


def sequence_index(ds: xr.Dataset) -> pd.DataFrame:
    """One row per sequence (index ``sequence``): every 1-D per-sequence variable of ``ds``, ids,
    split and offsets/counts first."""
    names = [n for n, v in ds.data_vars.items() if v.dims == ("sequence",)]
    ordered = [n for n in SEQUENCE_INDEX_COLUMNS if n in names] + sorted(
        n for n in names if n not in SEQUENCE_INDEX_COLUMNS
    )
    data = {n: ds[n].values for n in ordered}
    for n, col in data.items():
        if col.dtype.kind == "T":  # numpy StringDType → python str for pandas
            data[n] = col.astype(object)
    return pd.DataFrame(data, index=pd.RangeIndex(ds.sizes.get("sequence", 0), name="sequence"))


def sequence(ds: xr.Dataset, i: int) -> xr.Dataset:
    """Sequence ``i``: its frames and windows, with per-sequence variables as scalars.

    ``window_start`` stays a global frame index; subtract ``seq_frame_offset`` for a local one.
    """
    n = ds.sizes.get("sequence", 0)
    if not -n <= i < n:
        raise IndexError(f"sequence {i} out of range for a store of {n} sequences")
    i = i % n
    f0 = int(ds["seq_frame_offset"][i])
    nf = int(ds["seq_frame_count"][i])
    w0 = int(ds["seq_window_offset"][i])
    nw = int(ds["seq_window_count"][i])
    return ds.isel(frame=slice(f0, f0 + nf), window=slice(w0, w0 + nw), sequence=i)
