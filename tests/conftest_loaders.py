"""Shared stores for the loader tests (imported by tests/test_loaders_*.py; not a pytest conftest).

``loader_stores`` builds, once per test session, a small real release without Prefect: a generated
AMASS corpus (2 subjects × 8 motions, ~3.4k frames at 30 FPS) → read → process → stage → the
``motion`` and ``contact`` stores, exactly as ``flows.build`` wires them. It also derives:

* ``synthetic/torque.zarr``: a copy of the contact store relabelled ``torque`` with the arrays the
  imitation engine will add (``grf_n``, ``grm_nm``, ``joint_torque_nm``, ``imposed_angmom_nms``,
  ``body_contact_force_n`` per frame; ``grf_coef_n``, ``grm_coef_nm``, ``torque_coef_nm`` per
  window), filled with seeded random values and a few NaNs;
* ``rotated/contact.zarr``: the contact store with every sequence rotated about z by a
  per-sequence angle and shifted in x/y (positions, root rotation), for the heading test.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

_CACHE: dict[str, Path] = {}

ROTATION_RAD = np.array([0.7, -2.1, 3.0, 1.3, -0.4, 2.6, -1.7, 0.2, 1.9, -2.9, 0.5, -1.1, 2.2, -0.8, 1.0, -3.1])
SHIFT_XY_M = np.array([3.5, -7.25])


def build_release(root: Path) -> Path:
    """The four stores under ``root/release`` built directly from a generated corpus
    (``ground_reaction`` and ``torque`` have no sequences yet, as in a real build today)."""
    from pipeline.dataset.assembly import store_attrs
    from pipeline.demo import generate_corpus
    from pipeline.process import BuildConfig, process_motion, stage_payload
    from pipeline.sources.amass import read_amass
    from pipeline.store import load_schema, plan_store, stage_sequence, write_store

    corpus = root / "corpus"
    files = generate_corpus(corpus, n_subjects=2, seed=0)
    cfg = BuildConfig()
    staged = []
    for f in files:
        p = process_motion(read_amass(f, corpus), cfg)
        frame_arrays, window_arrays, seq_values = stage_payload(p)
        staged.append(stage_sequence(root / "staging", p.motion.provenance.sequence_id, frame_arrays,
                                     window_arrays, seq_values, subsets=p.subsets))
    staged.sort(key=lambda s: s.key)
    attrs, coords = store_attrs(cfg)
    out = root / "release"
    for subset in ("motion", "contact", "ground_reaction", "torque"):  # the last two empty, as built today
        declared = load_schema(subset).coords
        plan = plan_store(subset, [s for s in staged if subset in s.subsets], attrs,
                          {k: v for k, v in coords.items() if k in declared})
        write_store(plan, out / f"{subset}.zarr")
    shutil.rmtree(root / "staging", ignore_errors=True)
    return out


def _consolidate(path: Path) -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path), zarr_format=3)


def _add_array(group, name, data, dims, units, description, chunk):
    import zarr.codecs

    chunks = (chunk, *data.shape[1:])
    shards = (chunk * 16, *data.shape[1:])
    arr = group.create_array(
        name, shape=data.shape, chunks=chunks, shards=shards, dtype=data.dtype, dimension_names=list(dims),
        compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
        fill_value=float("nan"), attributes={"units": units, "description": description},
    )
    arr[...] = data


def make_torque_store(src: Path, dst: Path, seed: int = 0) -> Path:
    """Copy ``src`` (a contact store) to ``dst`` relabelled ``torque`` with synthetic targets."""
    import zarr

    shutil.copytree(src, dst)
    group = zarr.open_group(str(dst), mode="r+", zarr_format=3)
    group.attrs["schema_name"] = "torque"
    n_f = group["frame_sequence"].shape[0]
    n_w = group["window_sequence"].shape[0]
    chunk = group["marker_pos_m"].chunks[0]
    rng = np.random.default_rng(seed)

    def rand(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    grf = rand(n_f, 2, 3, scale=300.0)
    grf[5:9, 0] = np.nan  # a foot without data for a few frames
    frame_arrays = {
        "grf_n": (grf, ("frame", "foot", "xyz"), "N", "Ground reaction force on each foot, in the world (canonical) frame."),
        "grm_nm": (rand(n_f, 2, 3, scale=20.0), ("frame", "foot", "xyz"), "N·m", "Ground reaction moment, world (canonical) frame."),
        "joint_torque_nm": (rand(n_f, 23, 3, scale=50.0), ("frame", "actuated_joint", "xyz"), "N·m", "Net joint torque, joint-local frame."),
        "imposed_angmom_nms": (rand(n_f, 23, 3, scale=2.0), ("frame", "actuated_joint", "xyz"), "N·m·s", "Imposed angular momentum, joint-local frame."),
        "body_contact_force_n": (rand(n_f, 24, 3, scale=100.0), ("frame", "joint", "xyz"), "N", "Contact force on each body, world (canonical) frame."),
    }
    window_arrays = {
        "grf_coef_n": (rand(n_w, 4, 2, 3, scale=300.0), ("window", "cubic_power", "foot", "xyz"), "N", "GRF fit."),
        "grm_coef_nm": (rand(n_w, 4, 2, 3, scale=20.0), ("window", "cubic_power", "foot", "xyz"), "N·m", "GRM fit."),
        "torque_coef_nm": (rand(n_w, 2, 23, 3, scale=50.0), ("window", "linear_power", "actuated_joint", "xyz"), "N·m", "Torque fit."),
    }
    for name, (data, dims, units, descr) in {**frame_arrays, **window_arrays}.items():
        _add_array(group, name, data, dims, units, descr, chunk)
    _consolidate(dst)
    return dst


def _rz(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_rotated_store(src: Path, dst: Path) -> Path:
    """Copy ``src`` rotating sequence i about z by ``ROTATION_RAD[i]`` and shifting x/y by
    ``SHIFT_XY_M * (i + 1)``: positions and the root's global rotation transform, local joint
    rotations do not."""
    import zarr
    from scipy.spatial.transform import Rotation

    shutil.copytree(src, dst)
    group = zarr.open_group(str(dst), mode="r+", zarr_format=3)
    off = group["seq_frame_offset"][...]
    cnt = group["seq_frame_count"][...]
    data = {n: np.asarray(group[n][...], dtype=np.float64) for n in ("root_pos_m", "joint_pos_m", "marker_pos_m", "joint_rot_aa_rad")}
    for i, (a, n) in enumerate(zip(off, cnt)):
        sl = slice(int(a), int(a + n))
        R = _rz(ROTATION_RAD[i % len(ROTATION_RAD)])
        shift = np.array([*(SHIFT_XY_M * (i + 1)), 0.0])
        for name in ("root_pos_m", "joint_pos_m", "marker_pos_m"):
            data[name][sl] = data[name][sl] @ R.T + shift
        root = Rotation.from_rotvec(data["joint_rot_aa_rad"][sl, 0])
        data["joint_rot_aa_rad"][sl, 0] = (Rotation.from_matrix(R) * root).as_rotvec()
    for name, value in data.items():
        group[name][...] = value.astype(np.float32)
    _consolidate(dst)
    return dst


def loader_stores(tmp_path_factory) -> dict[str, Path]:
    """Build (once per session) and return the test stores."""
    if not _CACHE:
        root = tmp_path_factory.mktemp("loaders")
        release = build_release(root)
        _CACHE["release"] = release
        _CACHE["motion"] = release / "motion.zarr"
        _CACHE["contact"] = release / "contact.zarr"
        _CACHE["torque"] = make_torque_store(release / "contact.zarr", root / "synthetic" / "torque.zarr")
        _CACHE["rotated"] = make_rotated_store(release / "contact.zarr", root / "rotated" / "contact.zarr")
    return dict(_CACHE)


@pytest.fixture(scope="session")
def stores(tmp_path_factory) -> dict[str, Path]:
    return loader_stores(tmp_path_factory)


def read_all(store: Path, names) -> dict[str, np.ndarray]:
    """Whole arrays of a (small test) store, read with zarr directly."""
    import zarr

    group = zarr.open_group(str(store), mode="r", zarr_format=3)
    return {n: np.asarray(group[n][...]) for n in names}
