"""Reader: open_store version gate, sequence index, per-sequence slices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr

from pipeline.store import SchemaError, open_store, sequence, sequence_index
from test_store_writer import LENGTHS, SMALL, build


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("reader"), "contact", SMALL)


def _set_attr(path, **attrs):
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    for k, v in attrs.items():
        if v is None:
            del g.attrs[k]
        else:
            g.attrs[k] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


def test_open_store_and_index(built):
    path, plan, raw = built
    ds = open_store(path)
    assert ds.attrs["schema_name"] == "contact" and ds.attrs["fps_hz"] == 60.0
    idx = sequence_index(ds)
    assert len(idx) == 3 and idx.index.name == "sequence"
    assert list(idx.columns[:4]) == ["seq_id", "seq_source", "seq_dataset", "seq_subject"]
    assert list(idx["seq_id"]) == [r[2]["seq_id"] for r in raw]
    assert list(idx["seq_split"]) == ["train", "val", "test"]
    assert list(idx["seq_frame_offset"]) == [0, 5000, 5037]
    assert list(idx["seq_frame_count"]) == list(LENGTHS)
    assert list(idx["seq_window_count"]) == [625, 5, 375]
    assert "seq_height_m" in idx.columns and "seq_betas" not in idx.columns


@pytest.mark.parametrize("i", [0, 1, 2, -1])
def test_sequence_slice(built, i):
    path, plan, raw = built
    ds = open_store(path)
    one = sequence(ds, i)
    frame, window, values = raw[i]
    k = i % 3
    assert one.sizes["frame"] == LENGTHS[k] and "sequence" not in one.dims
    assert str(one["seq_id"].values) == values["seq_id"]
    np.testing.assert_array_equal(one["joint_pos_m"].values, frame["joint_pos_m"])
    np.testing.assert_array_equal(one["contact"].values, frame["contact"].astype(np.uint8))
    np.testing.assert_array_equal(one["time_s"].values, frame["time_s"].astype(np.float32))
    assert (one["frame_sequence"].values == k).all() and (one["window_sequence"].values == k).all()
    local = one["window_start"].values - int(one["seq_frame_offset"])
    np.testing.assert_array_equal(local, window["window_start"])
    with pytest.raises(IndexError):
        sequence(ds, 3)


def test_refuses_newer_major(built, tmp_path):
    import shutil

    path = tmp_path / "v3.zarr"
    shutil.copytree(built[0], path)
    _set_attr(path, schema_version="3.0.0")
    with pytest.raises(SchemaError, match=r"store .*v3\.zarr has schema contact 3\.0\.0, newer than this dynaset "
                       r".* reads \(major 2\); upgrade dynaset"):
        open_store(path)
    _set_attr(path, schema_version="2.3.0")  # minor bumps are readable
    assert open_store(path).attrs["schema_version"] == "2.3.0"
    _set_attr(path, schema_version=None)
    with pytest.raises(SchemaError, match="no schema_name/schema_version"):
        open_store(path)


def test_empty_store_reader(tmp_path):
    from pipeline.store import plan_store, write_store
    from test_store_writer import ATTRS, COORDS

    path = write_store(plan_store("torque", [], ATTRS, COORDS), tmp_path / "torque.zarr")
    ds = open_store(path)
    assert len(sequence_index(ds)) == 0
    with pytest.raises(IndexError):
        sequence(ds, 0)
