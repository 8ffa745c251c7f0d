"""ImDyS windows: contents vs. direct slices of the stored arrays, pad masks, heading invariance."""

from __future__ import annotations

import numpy as np
import pytest
from conftest_loaders import read_all, stores  # noqa: F401  (session fixture)
from scipy.spatial.transform import Rotation

from pipeline.loaders import ImDySWindows
from pipeline.loaders.windows import heading_from_root_aa

FPS = 30.0


def _rz_inv(psi: float) -> np.ndarray:
    c, s = np.cos(psi), np.sin(psi)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # Rz(-psi)


def expected_window(arrays, off, n, t, w, representation):
    """The documented canonicalization, computed independently in float64 with scipy."""
    rot = arrays["joint_rot_aa_rad"].astype(np.float64)
    root = arrays["root_pos_m"].astype(np.float64)
    fwd = Rotation.from_rotvec(rot[off + t, 0]).apply([0.0, 0.0, 1.0])
    psi = np.arctan2(fwd[1], fwd[0])
    M = _rz_inv(psi)
    origin = np.array([root[off + t, 0], root[off + t, 1], 0.0])
    frames = [min(max(t + k, 0), n - 1) for k in range(-w, w + 2)]
    pad = np.array([t + k != f for k, f in zip(range(-w, w + 2), frames)])

    def vel(x, f):  # forward difference, backward at the last frame
        if f < n - 1:
            return (x[off + f + 1] - x[off + f]) * FPS
        return (x[off + f] - x[off + f - 1]) * FPS

    if representation == "rot6d":
        def six(f):
            R = Rotation.from_rotvec(rot[off + f]).as_matrix()  # (24, 3, 3)
            R[0] = M @ R[0]
            return np.concatenate([R[:, :, 0], R[:, :, 1]], axis=-1)

        state = np.stack([six(f) for f in frames])
        state_vel = np.stack([(six(f + 1) - six(f)) * FPS if f < n - 1 else (six(f) - six(f - 1)) * FPS for f in frames])
    else:
        x = arrays["marker_pos_m" if representation == "markers" else "joint_pos_m"].astype(np.float64)
        state = np.stack([(x[off + f] - origin) @ M.T for f in frames])
        state_vel = np.stack([vel(x, f) @ M.T for f in frames])
    root_pos = np.stack([(root[off + f] - origin) @ M.T for f in frames])
    root_vel = np.stack([vel(root, f) @ M.T for f in frames])
    return {"state": state, "state_vel": state_vel, "root_pos": root_pos, "root_vel": root_vel,
            "state_is_pad": pad, "heading_rad": psi}


@pytest.fixture(scope="module")
def contact_arrays(stores):
    return read_all(stores["contact"], ["root_pos_m", "joint_rot_aa_rad", "marker_pos_m", "joint_pos_m",
                                        "seq_frame_offset", "seq_frame_count", "seq_mass_kg"])


@pytest.mark.parametrize("representation", ["markers", "joints", "rot6d"])
@pytest.mark.parametrize("w", [2, 1])
def test_window_contents_match_canonicalized_slices(stores, contact_arrays, representation, w):
    ds = ImDySWindows(stores["release"], "contact", w=w, representation=representation, as_tensors=False)
    offs, cnts = contact_arrays["seq_frame_offset"], contact_arrays["seq_frame_count"]
    assert len(ds) == int(cnts.sum())
    rng = np.random.default_rng(1)
    picks = []
    for s in (0, 5, 15):  # first frames, last frames and random frames of a few sequences
        off, n = int(offs[s]), int(cnts[s])
        ts = [0, 1, n - 1, n - 2, *rng.integers(0, n, 3).tolist()]
        picks += [(s, off, n, t, off + t) for t in ts]  # sample index == global frame (clamp)
    batch = ds.get_batch([p[4] for p in picks])
    for j, (s, off, n, t, _) in enumerate(picks):
        exp = expected_window(contact_arrays, off, n, t, w, representation)
        for key in ("state", "state_vel", "root_pos", "root_vel"):
            np.testing.assert_allclose(batch[key][j], exp[key], atol=2e-4, rtol=1e-4, err_msg=f"{key} seq {s} t {t}")
        np.testing.assert_array_equal(batch["state_is_pad"][j], exp["state_is_pad"])
        assert np.isclose(np.cos(batch["heading_rad"][j] - exp["heading_rad"]), 1.0, atol=1e-6)
        assert batch["seq_index"][j] == s and batch["frame_index"][j] == t
        assert batch["seq_mass_kg"][j] == pytest.approx(contact_arrays["seq_mass_kg"][s])
    assert ds[picks[3][4]]["state"].shape == (2 * w + 2, *batch["state"].shape[2:])


def test_pad_masks_at_both_edges(stores, contact_arrays):
    w = 2
    ds = ImDySWindows(stores["release"], "contact", w=w, as_tensors=False)
    off, n = int(contact_arrays["seq_frame_offset"][3]), int(contact_arrays["seq_frame_count"][3])
    b = ds.get_batch(np.arange(off, off + n))
    pad = b["state_is_pad"]
    # frame t pads states t-w+k < 0 at the start and t-w+k > n-1 at the end
    np.testing.assert_array_equal(pad[0], [True, True, False, False, False, False])
    np.testing.assert_array_equal(pad[1], [True, False, False, False, False, False])
    assert not pad[2:n - 3].any()
    np.testing.assert_array_equal(pad[n - 3], [False, False, False, False, False, True])
    np.testing.assert_array_equal(pad[n - 2], [False, False, False, False, True, True])
    np.testing.assert_array_equal(pad[n - 1], [False, False, False, True, True, True])
    # padded states repeat the edge frame (canonicalized in the centre's frame)
    np.testing.assert_array_equal(b["state"][0, 0], b["state"][0, 2])
    np.testing.assert_array_equal(b["state"][n - 1, 5], b["state"][n - 1, 2])
    np.testing.assert_array_equal(b["state_vel"][n - 1, 5], b["state_vel"][n - 1, 2])
    # never a frame of the neighbouring sequences
    assert set(b["seq_index"].tolist()) == {3}


def test_exclude_never_pads(stores, contact_arrays):
    w = 2
    clamp = ImDySWindows(stores["release"], "contact", w=w, as_tensors=False)
    ds = ImDySWindows(stores["release"], "contact", w=w, edge="exclude", as_tensors=False)
    cnts = contact_arrays["seq_frame_count"]
    assert len(ds) == int(np.maximum(cnts - 2 * w - 1, 0).sum())
    b = ds.get_batch(np.arange(len(ds)))
    assert not b["state_is_pad"].any()
    assert b["frame_index"].min() == w
    assert np.all(b["frame_index"] <= cnts[b["seq_index"]] - w - 2)
    # the same centre gives the same window in both modes
    g = contact_arrays["seq_frame_offset"][b["seq_index"][:50]] + b["frame_index"][:50]
    ref = clamp.get_batch(g)
    np.testing.assert_array_equal(ref["state"], b["state"][:50])


@pytest.mark.parametrize("representation", ["markers", "joints", "rot6d"])
def test_rotated_copy_gives_identical_inputs(stores, representation):
    a = ImDySWindows(stores["release"], "contact", representation=representation, as_tensors=False)
    r = ImDySWindows(stores["rotated"], "contact", representation=representation, as_tensors=False)
    idx = np.arange(0, len(a), 7)
    ba, br = a.get_batch(idx), r.get_batch(idx)
    for key in ("state", "state_vel", "root_pos", "root_vel"):
        np.testing.assert_allclose(br[key], ba[key], atol=2e-3, err_msg=key)
    assert not np.allclose(br["heading_rad"], ba["heading_rad"])
    np.testing.assert_array_equal(br["state_is_pad"], ba["state_is_pad"])


def test_small_cache_and_in_memory_match(stores):
    ref = ImDySWindows(stores["release"], "contact", as_tensors=False, in_memory=True)
    tiny = ImDySWindows(stores["release"], "contact", as_tensors=False, cache_mb=0.01)  # 4 slots: many groups
    idx = np.random.default_rng(0).permutation(len(ref))[:300]
    a, b = ref.get_batch(idx), tiny.get_batch(idx)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    st = tiny.cache_stats()
    assert st.misses > 4 and tiny.source.n_slots == 4
    # chunk-local batches go through the prefetch path (whole batch fits the pool)
    from pipeline.loaders import BatchSampler, ChunkShuffleSampler

    small = ImDySWindows(stores["release"], "contact", as_tensors=False, cache_mb=1.5)
    for batch in list(BatchSampler(ChunkShuffleSampler(small, seed=0, group_chunks=2), 128))[:12]:
        x, y = ref.get_batch(batch), small.get_batch(batch)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert small.cache_stats().zarr_reads > 0


def test_heading_falls_back_to_left_axis_when_lying():
    # identity root rotation: template +z (forward) is world +z (vertical), template +x (left) is world +x
    for yaw in (0.0, 1.0, -2.5):
        rv = (Rotation.from_euler("z", yaw) * Rotation.from_euler("x", 0.05)).as_rotvec()
        psi = heading_from_root_aa(rv)
        assert np.isclose(np.cos(psi - (yaw - np.pi / 2)), 1.0, atol=1e-3)
    # upright: Rx(+90°) maps forward (+z) to world -y; Rz(0.3) then turns it
    upright = Rotation.from_euler("z", 0.3) * Rotation.from_euler("x", np.pi / 2)
    assert np.isclose(heading_from_root_aa(upright.as_rotvec()), 0.3 - np.pi / 2)
