"""open_release: store resolution, lazy selection by split / source / subject, index."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dask.array
import numpy as np
import pytest
from conftest_loaders import read_all, stores  # noqa: F401  (session fixture)

from pipeline.loaders import open_release, resolve_store
from pipeline.store import sequence


def test_resolve_store(stores):
    release = stores["release"]
    assert resolve_store(release, "contact") == str(release / "contact.zarr")
    assert resolve_store(release / "motion.zarr", "motion") == str(release / "motion.zarr")
    assert resolve_store(f"file://{release}", "motion") == str(release / "motion.zarr")
    assert resolve_store("s3://bucket/rel", "torque") == "s3://bucket/rel/torque.zarr"
    with pytest.raises(FileNotFoundError, match="no motion.zarr"):
        resolve_store(release.parent / "corpus", "motion")
    with pytest.raises(ValueError):
        open_release(release / "motion.zarr", "contact")


def test_open_release_is_lazy_and_complete(stores):
    ds, index = open_release(stores["release"], "motion")
    assert isinstance(ds["marker_pos_m"].data, dask.array.Array)
    assert len(index) == ds.sizes["sequence"] == 16
    assert index["store_sequence"].tolist() == list(range(16))


@pytest.mark.parametrize(
    "filters",
    [{"split": "train"}, {"split": ["val", "test"]}, {"subject": "S01"}, {"subject": "DynasetSynth/S02"},
     {"source": "amass", "query": "seq_duration_s > 7"}, {"split": "train", "subject": "S01"}],
)
def test_selection_matches_the_store(stores, filters):
    full = read_all(stores["contact"], ["marker_pos_m", "contact", "joint_rot_coef_rad", "window_start",
                                         "seq_frame_offset", "seq_frame_count", "seq_window_offset", "seq_window_count"])
    ds_all, index_all = open_release(stores["release"], "contact")
    ds, index = open_release(stores["release"], "contact", **filters)
    assert isinstance(ds["marker_pos_m"].data, dask.array.Array)
    expect = np.ones(len(index_all), dtype=bool)
    if "split" in filters:
        expect &= index_all["seq_split"].isin(np.atleast_1d(filters["split"])).to_numpy()
    if "subject" in filters:
        expect &= (index_all["seq_subject"] == filters["subject"].split("/")[-1]).to_numpy()
    if "query" in filters:
        expect &= (index_all["seq_duration_s"] > 7).to_numpy()
    assert index["store_sequence"].tolist() == np.flatnonzero(expect).tolist()
    assert ds.sizes["sequence"] == len(index)
    assert ds.sizes["frame"] == int(full["seq_frame_count"][expect].sum())
    if len(index) == 0:
        return
    for i in sorted({0, len(index) // 2, len(index) - 1}):  # selected sequences equal their store slices
        s = int(index["store_sequence"].iloc[i])
        seq = sequence(ds, i)
        a, n = int(full["seq_frame_offset"][s]), int(full["seq_frame_count"][s])
        np.testing.assert_array_equal(seq["marker_pos_m"].values, full["marker_pos_m"][a:a + n])
        np.testing.assert_array_equal(seq["contact"].values, full["contact"][a:a + n])
        wa, wn = int(full["seq_window_offset"][s]), int(full["seq_window_count"][s])
        np.testing.assert_array_equal(seq["joint_rot_coef_rad"].values, full["joint_rot_coef_rad"][wa:wa + wn])
        # window_start renumbered to the selection's frame dim: same local start
        local = seq["window_start"].values - int(index["seq_frame_offset"].iloc[i])
        np.testing.assert_array_equal(local, full["window_start"][wa:wa + wn] - a)
        assert set(np.unique(seq["frame_sequence"].values)) == {i}
        assert set(np.unique(seq["window_sequence"].values)) == {i}
    assert set(index["seq_split"]) <= set(np.atleast_1d(filters.get("split", ["train", "val", "test"])))


def test_importing_loaders_needs_no_torch():
    code = textwrap.dedent(
        """
        import sys
        import pipeline.loaders as L
        from pipeline.loaders import open_release, compute_stats, ChunkShuffleSampler
        assert "torch" not in sys.modules, "torch imported"
        L.ImDySWindows  # the dataset class itself is torch-free too
        assert "torch" not in sys.modules, "torch imported by the dataset module"
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
