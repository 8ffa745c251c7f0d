"""Subject skeletons from (synthetic) SMPL model files through smplx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import skeleton as sk

pytestmark = pytest.mark.smpl
pytest.importorskip("smplx")
pytest.importorskip("torch")

from pipeline import smpl_model  # noqa: E402

_PER_JOINT = 4  # vertices per joint cluster
_N_BETAS = 10


def _synthetic_smpl_arrays(seed: int = 0, n_joints: int = 24) -> dict[str, np.ndarray]:
    """A tiny model in SMPL's npz layout: clusters of vertices around the anthropometric joints.

    Joint j's J_regressor row averages its cluster; two extra vertices mark the top of the head
    and the floor so the mesh height is known.
    """
    rng = np.random.default_rng(seed)
    base = sk.anthropometric_skeleton(1.7).rest_joints_m
    centres = np.concatenate([base, base[rng.integers(0, 24, n_joints - 24)]]) if n_joints > 24 else base
    clusters = centres[:, None, :] + rng.normal(scale=0.02, size=(n_joints, _PER_JOINT, 3))
    floor_y = base[0, 1] - 0.555 * 1.7
    extremes = np.array([[0.0, floor_y, 0.0], [0.0, floor_y + 1.7, 0.0]])
    v_template = np.concatenate([clusters.reshape(-1, 3), extremes])
    V = v_template.shape[0]
    J_regressor = np.zeros((n_joints, V))
    for j in range(n_joints):
        J_regressor[j, j * _PER_JOINT : (j + 1) * _PER_JOINT] = 1.0 / _PER_JOINT
    shapedirs = rng.normal(scale=0.01, size=(V, 3, _N_BETAS))
    weights = np.zeros((V, n_joints))
    weights[np.arange(V), np.minimum(np.arange(V) // _PER_JOINT, n_joints - 1)] = 1.0
    parents = list(sk.PARENTS) + [20] * (n_joints - 24)
    kintree = np.array([[4294967295] + parents[1:], list(range(n_joints))], dtype=np.uint32)
    faces = np.array([[i, i + 1, i + 2] for i in range(V - 2)], dtype=np.uint32)
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": rng.normal(scale=1e-3, size=(V, 3, (n_joints - 1) * 9)),
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": faces,
    }


def _expected(arrays, betas):
    v_shaped = arrays["v_template"] + arrays["shapedirs"][:, :, : len(betas)] @ betas
    return arrays["J_regressor"] @ v_shaped, v_shaped


def test_model_skeleton_matches_numpy_blend_shapes(tmp_path: Path):
    arrays = _synthetic_smpl_arrays()
    (tmp_path / "smpl").mkdir()
    np.savez(tmp_path / "smpl" / "SMPL_FEMALE.npz", **arrays)
    betas = np.array([1.5, -2.0, 0.7, 0.0, 3.0, -1.0, 0.2, 0.5, -0.4, 2.2])
    skel = smpl_model.model_skeleton(tmp_path, "female", betas)
    joints, v_shaped = _expected(arrays, betas)
    assert skel.rest_joints_m.shape == (24, 3)
    assert np.max(np.abs(skel.rest_joints_m - joints)) < 1e-5
    assert np.max(np.abs(joints - _expected(arrays, np.zeros(10))[0])) > 1e-3  # betas matter
    assert skel.height_m == pytest.approx(np.ptp(v_shaped[:, 1]), abs=1e-6)
    assert skel.origin == "smpl-model:SMPL_FEMALE.npz"
    assert skel.bone_lengths_m.shape == (23,)


def test_model_file_directly_and_fewer_betas(tmp_path: Path):
    arrays = _synthetic_smpl_arrays(seed=1)
    path = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(path, **arrays)
    betas = np.array([2.0, -1.0, 0.5])
    for where in (path, tmp_path):
        skel = smpl_model.model_skeleton(where, "neutral", betas)
        assert np.max(np.abs(skel.rest_joints_m - _expected(arrays, betas)[0])) < 1e-5
    zero = smpl_model.model_skeleton(path, "neutral", np.zeros(0))
    assert np.max(np.abs(zero.rest_joints_m - arrays["J_regressor"] @ arrays["v_template"])) < 1e-5


def test_more_than_ten_betas_are_all_used(tmp_path: Path):
    # smplx caps models with < 300 shape directions at 10 betas; AMASS SMPL-H uses 16
    arrays = _synthetic_smpl_arrays(seed=2)
    arrays["shapedirs"] = np.random.default_rng(3).normal(scale=0.01, size=arrays["shapedirs"].shape[:2] + (16,))
    np.savez(tmp_path / "SMPL_MALE.npz", **arrays)
    betas = np.zeros(16)
    betas[12] = 3.0
    skel = smpl_model.model_skeleton(tmp_path, "male", betas)
    assert np.max(np.abs(skel.rest_joints_m - _expected(arrays, betas)[0])) < 1e-5


def test_smplh_uses_index_finger_base_for_hand_joints(tmp_path: Path):
    arrays = _synthetic_smpl_arrays(seed=4, n_joints=52)
    (tmp_path / "smplh").mkdir()
    np.savez(tmp_path / "smplh" / "SMPLH_MALE.npz", **arrays)
    betas = np.linspace(-1, 1, 10)
    skel = smpl_model.model_skeleton(tmp_path, "male", betas, model_type="smplh")
    joints = _expected(arrays, betas)[0]
    assert np.max(np.abs(skel.rest_joints_m[:22] - joints[:22])) < 1e-5
    assert np.max(np.abs(skel.rest_joints_m[22] - joints[22])) < 1e-5
    assert np.max(np.abs(skel.rest_joints_m[23] - joints[37])) < 1e-5


def test_object_arrays_pickles_and_non_npz_are_refused(tmp_path: Path):
    arrays = _synthetic_smpl_arrays()
    arrays["joint2num"] = np.array([{"pelvis": 0}], dtype=object)
    bad = tmp_path / "SMPL_MALE.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=r"SMPL_MALE\.npz.*object"):
        smpl_model.model_skeleton(bad, "male", np.zeros(10))

    pkl = tmp_path / "pk" / "SMPL_FEMALE.pkl"
    pkl.parent.mkdir()
    pkl.write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match=r"SMPL_FEMALE\.pkl"):
        smpl_model.model_skeleton(pkl.parent, "female", np.zeros(10))
    with pytest.raises(ValueError, match=r"pickled"):
        smpl_model.model_skeleton(pkl, "female", np.zeros(10))

    npy = tmp_path / "SMPL_NEUTRAL.npz"
    np.save(tmp_path / "x.npy", np.zeros(3))
    (tmp_path / "x.npy").rename(npy)
    with pytest.raises(ValueError, match=r"SMPL_NEUTRAL\.npz.*not an \.npz"):
        smpl_model.model_skeleton(npy, "neutral", np.zeros(10))

    with pytest.raises(FileNotFoundError):
        smpl_model.model_skeleton(tmp_path / "pk", "male", np.zeros(10))
