"""Targets (torque / GRF path) on a synthetic torque store, and Zell samples."""

from __future__ import annotations

import numpy as np
import pytest
from conftest_loaders import read_all, stores  # noqa: F401  (session fixture)

from pipeline.loaders import ImDySWindows, ZellWindows

FRAME_TARGETS = ["grf_n", "grm_nm", "joint_torque_nm", "imposed_angmom_nms", "body_contact_force_n"]


@pytest.fixture(scope="module")
def torque_arrays(stores):
    return read_all(stores["torque"], FRAME_TARGETS + [
        "grf_coef_n", "grm_coef_nm", "torque_coef_nm", "joint_rot_coef_rad", "joint_pos_coef_m", "window_start",
        "seq_frame_offset", "seq_frame_count", "seq_window_offset", "seq_window_count", "seq_bone_length_m",
        "seq_mass_kg",
    ])


def _rz_inv(psi):
    c, s = np.cos(psi), np.sin(psi)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def test_default_targets_taken_when_present(stores, torque_arrays):
    ds = ImDySWindows(stores["torque"], "torque", as_tensors=False)
    assert ds.targets == ("joint_torque_nm", "imposed_angmom_nms", "grf_n", "body_contact_force_n")
    assert ImDySWindows(stores["release"], "motion", as_tensors=False).targets == ()
    offs, cnts = torque_arrays["seq_frame_offset"], torque_arrays["seq_frame_count"]
    picks = [int(offs[2]), int(offs[2]) + 17, int(offs[2] + cnts[2] - 1), 6]
    b = ds.get_batch(picks)
    assert b["joint_torque_nm"].shape == (4, 1, 23, 3)
    assert b["grf_n"].shape == (4, 2, 2, 3) and b["body_contact_force_n"].shape == (4, 2, 24, 3)
    for j, g in enumerate(picks):
        seq = int(b["seq_index"][j])
        last = int(offs[seq] + cnts[seq] - 1)
        M = _rz_inv(float(b["heading_rad"][j]))
        # joint-local targets as stored, at t
        np.testing.assert_array_equal(b["joint_torque_nm"][j, 0], torque_arrays["joint_torque_nm"][g])
        np.testing.assert_array_equal(b["imposed_angmom_nms"][j, 0], torque_arrays["imposed_angmom_nms"][g])
        # world vectors at t, t+1 (clamped), rotated by -heading
        for k, gk in enumerate((g, min(g + 1, last))):
            np.testing.assert_allclose(b["grf_n"][j, k], torque_arrays["grf_n"][gk].astype(np.float64) @ M.T,
                                       rtol=1e-5, atol=1e-3)
            np.testing.assert_allclose(b["body_contact_force_n"][j, k],
                                       torque_arrays["body_contact_force_n"][gk].astype(np.float64) @ M.T,
                                       rtol=1e-5, atol=1e-3)
        assert b["grf_n_is_pad"][j].tolist() == [False, g + 1 > last]
        assert not b["joint_torque_nm_is_pad"][j].any()
    assert np.isnan(b["grf_n"][3, 0, 0]).all()  # NaNs pass through (frames 5..8, left foot)


def test_exclude_accounts_for_target_offsets(stores, torque_arrays):
    ds = ImDySWindows(stores["torque"], "torque", w=0, edge="exclude", targets={"grf_n": (0, 1, 2)},
                      as_tensors=False)
    cnts = torque_arrays["seq_frame_count"]
    assert len(ds) == int((cnts - 2).sum())  # states t..t+1, targets t..t+2
    b = ds.get_batch(np.arange(len(ds)))
    assert not b["grf_n_is_pad"].any() and not b["state_is_pad"].any()


def test_windowing_does_not_depend_on_subset(stores):
    a = ImDySWindows(stores["release"], "contact", as_tensors=False, targets={})
    b = ImDySWindows(stores["torque"], "torque", as_tensors=False, targets={})
    idx = np.arange(0, len(a), 11)
    x, y = a.get_batch(idx), b.get_batch(idx)
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])


def test_unknown_target_is_an_error(stores):
    with pytest.raises(KeyError):
        ImDySWindows(stores["release"], "motion", targets=["grf_n"])


@pytest.mark.parametrize("q", ["rot", "pos"])
def test_zell_samples_match_stored_coefficients(stores, torque_arrays, q):
    ds = ZellWindows(stores["torque"], "torque", q=q, as_tensors=False)
    n_w = int(torque_arrays["seq_window_count"].sum())
    assert len(ds) == n_w
    idx = np.array([0, 1, 77, n_w - 1, 300])
    b = ds.get_batch(idx)
    qname = "joint_rot_coef_rad" if q == "rot" else "joint_pos_coef_m"
    np.testing.assert_array_equal(b["gamma_q"], torque_arrays[qname][idx])
    assert b["gamma_q"].shape == (5, 4, 24, 3)
    assert b["gamma_f"].shape == (5, 4, 2, 6)
    np.testing.assert_array_equal(b["gamma_f"][..., :3], torque_arrays["grf_coef_n"][idx])
    np.testing.assert_array_equal(b["gamma_f"][..., 3:], torque_arrays["grm_coef_nm"][idx])
    np.testing.assert_array_equal(b["gamma_tau"], torque_arrays["torque_coef_nm"][idx])
    seq = b["seq_index"]
    np.testing.assert_array_equal(b["l_sub"], torque_arrays["seq_bone_length_m"][seq])
    assert b["l_sub"].shape == (5, 23)
    np.testing.assert_array_equal(b["window_index"], idx - torque_arrays["seq_window_offset"][seq])
    np.testing.assert_array_equal(b["window_start"],
                                  torque_arrays["window_start"][idx] - torque_arrays["seq_frame_offset"][seq])
    np.testing.assert_array_equal(b["seq_mass_kg"], torque_arrays["seq_mass_kg"][seq])


def test_zell_parts_follow_the_subset(stores):
    b = ZellWindows(stores["release"], "motion", as_tensors=False)[3]
    assert set(b) == {"gamma_q", "l_sub", "seq_mass_kg", "seq_index", "window_index", "window_start", "sample_index"}


def test_zell_split_filter(stores):
    full = ZellWindows(stores["release"], "motion", as_tensors=False)
    train = ZellWindows(stores["release"], "motion", split="train", as_tensors=False)
    b = train.get_batch(np.arange(len(train)))
    assert set(full.index.loc[b["seq_index"], "seq_split"]) == {"train"}
    assert 0 < len(train) < len(full)


@pytest.mark.parametrize("subset", ["ground_reaction", "torque"])
def test_empty_stores_load_as_empty(stores, subset):
    from pipeline.loaders import compute_stats, open_release

    ds, index = open_release(stores["release"], subset, split="train")
    assert len(index) == 0 and ds.sizes["frame"] == 0
    w = ImDySWindows(stores["release"], subset, as_tensors=False)
    assert len(w) == 0 and w.targets == ()
    assert len(ZellWindows(stores["release"], subset, as_tensors=False)) == 0
    stats = compute_stats(stores["release"] / f"{subset}.zarr")
    assert stats["n_frames"] == 0 and stats["arrays"]["grf_n"]["count"][0] == [0, 0, 0]
