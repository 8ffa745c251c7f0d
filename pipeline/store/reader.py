"""Open dynaset stores with xarray and navigate their sequences."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xarray as xr

from .. import __version__
from .schema import SUPPORTED_MAJOR, SchemaError, _parse_version


class SchemaUpgradeWarning(UserWarning):
    """A store of an older schema major was presented in the current layout on read."""


@dataclass(frozen=True)
class StoreSchema:
    """A store's schema as checked by ``check_store_schema``.

    Attributes:
        name: schema (subset) name.
        version: schema version the store declares.
        read_as: version the reader presents (``version``, or the target of a read-time upgrade).
        renames: (stored name, current name) pairs a read-time upgrade applies.
    """

    name: str
    version: str
    read_as: str
    renames: tuple[tuple[str, str], ...] = ()

    @property
    def upgraded(self) -> bool:
        return self.read_as != self.version

    def message(self, where: str) -> str:
        """The ``SchemaUpgradeWarning`` text of an upgraded store."""
        names = ", ".join(f"{a} -> {b}" for a, b in self.renames)
        return (
            f"store {where} has schema {self.name} {self.version}; reading it as {self.read_as} "
            f"(renamed on read: {names}). Upgrade it on disk with: dynaset migrate {where}"
        )


def check_store_schema(attrs: dict, where: str) -> StoreSchema:
    """Check a store's schema attrs against what this dynaset reads.

    The current major is read as is; an older major is read through its registered migrations
    when they only rename arrays (``StoreSchema.renames``); otherwise ``SchemaError`` says why:
    not a dynaset store, unknown schema, newer major (upgrade dynaset), older major that needs
    ``dynaset migrate STORE``, or no registered migration path.
    """
    name, version = attrs.get("schema_name"), attrs.get("schema_version")
    if name is None or version is None:
        raise SchemaError(f"store {where} has no schema_name/schema_version attrs; not a dynaset store")
    if name not in SUPPORTED_MAJOR:
        raise SchemaError(f"store {where} has unknown schema {name!r}; supported: {sorted(SUPPORTED_MAJOR)}")
    name, version = str(name), str(version)
    major, supported = _parse_version(version)[0], SUPPORTED_MAJOR[name]
    if major == supported:
        return StoreSchema(name, version, version)
    if major > supported:
        raise SchemaError(
            f"store {where} has schema {name} {version}, newer than this dynaset ({__version__}) reads "
            f"(major {supported}); upgrade dynaset to read it"
        )
    from .migrations import migration_path, read_renames

    try:
        steps = migration_path(name, version)
    except SchemaError as exc:
        raise SchemaError(f"store {where} has schema {name} {version}; this dynaset reads major {supported}: {exc}") from None
    if not all(s.is_pure_rename for s in steps):
        raise SchemaError(
            f"store {where} has schema {name} {version}; this dynaset reads major {supported}. "
            f"Migrate it with: dynaset migrate {where}"
        )
    return StoreSchema(name, version, steps[-1].to_version, tuple(read_renames(steps).items()))


def check_schema_attrs(attrs: dict, where: str) -> tuple[str, str]:
    """(schema name, stored version) of a readable store (``check_store_schema``), or ``SchemaError``."""
    s = check_store_schema(attrs, where)
    return s.name, s.version


def open_store(path: str | Path) -> xr.Dataset:
    """Lazily open a store (dask-backed) after checking its schema name and major version.

    A store of an older major whose migrations are pure renames is presented in the current
    layout (variables renamed lazily, ``schema_version`` set to the upgraded version and the stored
    one kept in ``stored_schema_version``) with a ``SchemaUpgradeWarning``; other older majors
    raise ``SchemaError`` naming ``dynaset migrate STORE``.
    """
    ds = xr.open_zarr(str(path))
    s = check_store_schema(dict(ds.attrs), str(path))
    if s.upgraded:
        warnings.warn(s.message(str(path)), SchemaUpgradeWarning, stacklevel=2)
        ds = ds.rename_vars({a: b for a, b in s.renames if a in ds.variables})
        ds.attrs.update({"schema_version": s.read_as, "stored_schema_version": s.version})
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
