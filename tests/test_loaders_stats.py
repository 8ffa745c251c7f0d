"""Normalization statistics: streaming results equal numpy on the full arrays; stats.json; normalize."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest_loaders import read_all, stores  # noqa: F401  (session fixture)

from pipeline.loaders import ImDySWindows, ZellWindows, compute_stats, load_stats, write_stats
from pipeline.loaders.windows import ImDySConfig, InMemorySource, assemble_imdys


def _numpy_stats(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
        return {
            "count": np.isfinite(x).sum(0), "mean": np.nanmean(x, 0), "std": np.nanstd(x, 0),
            "min": np.nanmin(x, 0), "max": np.nanmax(x, 0),
        }


def _as_array(v):
    return np.array(v, dtype=np.float64)  # None → nan


@pytest.fixture(scope="module")
def torque_stats(stores):
    return compute_stats(stores["torque"], block_frames=256)  # many blocks: exercises the merging


def test_array_stats_match_numpy(stores, torque_stats):
    names = ["marker_pos_m", "joint_rot_aa_rad", "root_pos_m", "contact", "time_s", "grf_n", "joint_torque_nm",
             "grf_coef_n", "torque_coef_nm", "joint_pos_fit_rmse_m", "seq_mass_kg", "seq_bone_length_m", "seq_betas"]
    arrays = read_all(stores["torque"], names)
    assert set(names) <= set(torque_stats["arrays"])
    assert "frame_sequence" not in torque_stats["arrays"] and "window_start" not in torque_stats["arrays"]
    for n in names:
        exp = _numpy_stats(arrays[n])
        got = torque_stats["arrays"][n]
        assert got["shape"] == list(arrays[n].shape[1:])
        np.testing.assert_array_equal(np.array(got["count"]), exp["count"], err_msg=n)
        for key in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(_as_array(got[key]), exp[key], rtol=1e-9, atol=1e-9, err_msg=f"{n} {key}")
    # NaN-aware: 4 frames of the left foot's GRF are NaN; seq_betas has NaN padding
    assert torque_stats["arrays"]["grf_n"]["count"][0] == [arrays["grf_n"].shape[0] - 4] * 3
    json.dumps(torque_stats, allow_nan=False)


def test_block_size_does_not_matter(stores, torque_stats):
    big = compute_stats(stores["torque"], block_frames=1 << 20)
    for section in ("arrays", "canonical"):
        for n, entry in torque_stats[section].items():
            for key in ("mean", "std"):
                np.testing.assert_allclose(_as_array(big[section][n][key]), _as_array(entry[key]),
                                           rtol=1e-9, atol=1e-9, err_msg=f"{section} {n} {key}")


def test_canonical_stats_equal_own_frame_windows(stores, torque_stats):
    """Canonical stats = stats of the loader's own windows at offset 0 (w = 0) over every frame."""
    names = ["root_pos_m", "joint_rot_aa_rad", "marker_pos_m", "joint_pos_m", "grf_n", "seq_frame_offset",
             "seq_frame_count"]
    arrays = read_all(stores["torque"], names)
    off, cnt = arrays["seq_frame_offset"], arrays["seq_frame_count"]
    seq = np.repeat(np.arange(off.size), cnt)
    t = np.arange(int(cnt.sum())) - off[seq]
    src = InMemorySource(arrays)
    for rep, state in (("markers", "marker_pos_m"), ("joints", "joint_pos_m"), ("rot6d", "joint_rot6d")):
        cfg = ImDySConfig(w=0, representation=rep, fps=30.0, targets=(("grf_n", (0,), "world_vector"),))
        b = assemble_imdys(src, cfg, off[seq], cnt[seq], t)
        for key, name in (("state", state), ("state_vel", f"{state}_vel"), ("root_pos", "root_pos_m"),
                          ("root_vel", "root_pos_m_vel"), ("grf_n", "grf_n")):
            exp = _numpy_stats(b[key][:, 0])
            got = torque_stats["canonical"][name]
            np.testing.assert_array_equal(np.array(got["count"]), exp["count"])
            for k in ("mean", "std", "min", "max"):
                np.testing.assert_allclose(_as_array(got[k]), exp[k], rtol=1e-5, atol=1e-5, err_msg=f"{name} {k}")
    assert "joint_torque_nm" not in torque_stats["canonical"]  # joint-local: not canonicalized


def test_write_stats_merges_subsets(stores, tmp_path):
    out = tmp_path / "stats.json"
    write_stats(stores["motion"], out)
    write_stats(stores["contact"], out)
    doc = json.loads(out.read_text())
    assert doc["format"] == "dynaset-stats/1" and set(doc["subsets"]) == {"motion", "contact"}
    assert load_stats(out, "contact")["schema_name"] == "contact"
    with pytest.raises(ValueError):
        load_stats(out)  # ambiguous


def test_normalize_applies_stats(stores, tmp_path_factory):
    stats_file = write_stats(stores["torque"])  # next to the store: synthetic/stats.json
    assert stats_file.name == "stats.json" and stats_file.parent == stores["torque"].parent
    stats = load_stats(stores["torque"])
    raw = ImDySWindows(stores["torque"], "torque", as_tensors=False)
    norm = ImDySWindows(stores["torque"], "torque", as_tensors=False, normalize=True)
    idx = np.arange(0, len(raw), 13)
    a, b = raw.get_batch(idx), norm.get_batch(idx)
    for key, section, name in (("state", "canonical", "marker_pos_m"), ("state_vel", "canonical", "marker_pos_m_vel"),
                               ("grf_n", "canonical", "grf_n"), ("joint_torque_nm", "arrays", "joint_torque_nm")):
        mean = np.array(stats[section][name]["mean"], dtype=np.float64)
        std = np.array(stats[section][name]["std"], dtype=np.float64)
        np.testing.assert_allclose(b[key], (a[key] - mean) / std, rtol=1e-4, atol=1e-4, err_msg=key)
    # root x/y are 0 at offset 0 (std 0): only centred
    np.testing.assert_allclose(b["root_pos"][..., :2], a["root_pos"][..., :2], atol=1e-6)
    np.testing.assert_allclose(norm.normalizer.invert("state", b["state"]), a["state"], atol=1e-4)
    np.testing.assert_array_equal(a["state_is_pad"], b["state_is_pad"])

    z = ZellWindows(stores["torque"], "torque", as_tensors=False, normalize=True, stats=stats_file)
    zr = ZellWindows(stores["torque"], "torque", as_tensors=False)
    bz, br = z[5], zr[5]
    m = np.array(stats["arrays"]["seq_bone_length_m"]["mean"])
    s = np.array(stats["arrays"]["seq_bone_length_m"]["std"])
    np.testing.assert_allclose(bz["l_sub"], (br["l_sub"] - m) / s, rtol=1e-4, atol=1e-4)


def test_parts_in_parallel_tasks_equal_one_pass(stores, torque_stats, tmp_path):
    """compute_stats(part=(i, n)) tasks then one merge (parts=n) give the very same figures (blocks
    are merged in the same order); the part files are removed; a second run reuses every block."""
    from pipeline.loaders.stats import part_cache

    cache = tmp_path / "stats" / "torque.npz"
    done = [compute_stats(stores["torque"], block_frames=256, block_cache=cache, part=(i, 3)) for i in range(3)]
    assert all(part_cache(cache, (i, 3)).is_file() for i in range(3))
    assert sum(d["blocks_computed"] for d in done) > 3
    merged = compute_stats(stores["torque"], block_frames=256, block_cache=cache, parts=3)
    assert not any(part_cache(cache, (i, 3)).exists() for i in range(3)) and cache.is_file()
    assert merged["blocks_reused"] == 0
    drop = ("seconds", "blocks_reused", "blocks_merged")
    assert {k: v for k, v in merged.items() if k not in drop} == {k: v for k, v in torque_stats.items() if k not in drop}
    again = compute_stats(stores["torque"], block_frames=256, block_cache=cache)
    assert again["blocks_reused"] == sum(d["blocks_computed"] for d in done)
    assert again["arrays"] == merged["arrays"] and again["canonical"] == merged["canonical"]

