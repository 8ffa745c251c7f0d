"""The per-sequence wiring of the pure stages, the simulated payload and the canonical hand-over."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.demo import generate_corpus
from pipeline.process import (
    BuildConfig, process_motion, sample_contact, simulated_key, simulated_payload, stage_payload,
)
from pipeline.simulate import simulate
from pipeline.sources.amass import read_amass
from pipeline.store import load_schema, validate_arrays
from pipeline.store.canonical_io import load_canonical, load_extras, save_canonical

FIXED = {"joint": 24, "bone": 23, "marker": 45, "foot_point": 4, "foot": 2, "actuated_joint": 23, "xyz": 3,
         "cubic_power": 4, "linear_power": 2, "beta": 16}


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = generate_corpus(root, n_subjects=1, seed=3)
    path = next(f for f in files if "walk_1p2" in f.name)
    cfg = BuildConfig()
    return cfg, process_motion(read_amass(path, root), cfg)


def test_stage_payload_matches_the_contact_schema(walk):
    cfg, p = walk
    frame, window, seq = stage_payload(p)
    schema = load_schema("contact")
    assert validate_arrays(schema, frame, {**FIXED, "frame": p.motion.n_frames}) == []
    assert validate_arrays(schema, window, {**FIXED, "window": len(p.window_start)}) == []
    assert seq["seq_id"] == p.motion.provenance.sequence_id and seq["seq_split"] in ("train", "val", "test")
    assert np.isnan(seq["seq_betas"][len(p.motion.betas):]).all()


def test_canonical_hand_over_round_trips(walk, tmp_path):
    _, p = walk
    path = save_canonical(p.motion, tmp_path / "m.npz")
    back = load_canonical(path)
    assert back.provenance == p.motion.provenance and back.mass_kg == p.motion.mass_kg
    for name in ("time_s", "joint_pos_m", "marker_pos_m", "foot_points_m", "joint_rot_aa_rad", "bone_length_m"):
        np.testing.assert_array_equal(getattr(back, name), getattr(p.motion, name))
    with np.load(path, allow_pickle=False) as z:  # no pickled members
        assert all(z[k].dtype != object for k in z.files)


def test_canonical_hand_over_carries_numeric_extras(walk, tmp_path):
    """Measured sequences hand their plate forces and inverse-dynamics torques to the simulate task (and a
    source's own ID torques with their DOF names, as a unicode array)."""
    _, p = walk
    n = p.motion.n_frames
    extras = {"plate_grf_n": np.full((n, 2, 3), np.nan), "id_joint_torque_nm": np.ones((n, 23, 3), np.float32),
              "known": np.zeros(n, bool), "source_dofs": np.array(["knee_angle_r", "pelvis_tx"])}
    path = save_canonical(p.motion, tmp_path / "m.npz", extras=extras)
    back = load_extras(path)
    assert set(back) == set(extras)
    for k, v in extras.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    assert load_canonical(path).provenance == p.motion.provenance
    assert load_extras(save_canonical(p.motion, tmp_path / "plain.npz")) == {}
    with pytest.raises(TypeError, match="numeric"):
        save_canonical(p.motion, tmp_path / "bad.npz", extras={"names": np.array(["a", None], dtype=object)})


def test_sample_contact_needs_load_on_both_sides_of_the_frame():
    # interval means t_i -> t_i+1: a landing during interval 2, loaded through interval 5, a
    # touch inside interval 8 only
    fz = np.array([0, 0, 30, 800, 900, 25, 0, 0, 50, 0], float)[:, None]
    got = sample_contact(fz)[:, 0]
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0])
    assert sample_contact(np.array([[30.0], [0.0]]))[0, 0]  # the first frame: the interval after it
    np.testing.assert_array_equal(sample_contact(np.full((3, 2), 19.9)), np.zeros((3, 2), bool))


def test_simulated_payload_is_a_valid_torque_sequence(walk):
    cfg, p = walk
    result = simulate([p.motion], cfg.simulate)[0]
    frame, window, seq = simulated_payload(p.motion, result, p.split, cfg.windows)
    schema = load_schema("torque")
    n, w = p.motion.n_frames, len(window["window_start"])
    assert validate_arrays(schema, frame, {**FIXED, "frame": n}, required=list(frame)) == []
    assert validate_arrays(schema, window, {**FIXED, "window": w}) == []
    # observed states are the simulator's, the reference is the canonical motion
    np.testing.assert_array_equal(frame["joint_pos_m"], result.sim_joint_pos_m.astype(np.float32))
    np.testing.assert_array_equal(frame["ref_joint_pos_m"], p.motion.joint_pos_m.astype(np.float32))
    # torques get linear windows, GRF cubic ones, both reproducing the windowed mean
    assert window["torque_coef_nm"].shape == (w, 2, 23, 3) and window["grf_coef_n"].shape == (w, 4, 2, 3)
    # contact from floor forces: heel point in contact at a frame exactly when the ankle body
    # carries >= 20 N over the intervals before and after it (the first frame: after it)
    loaded = result.body_contact_force_n[:, 7, 2] >= 20.0
    heel = loaded & np.concatenate([[True], loaded[:-1]])
    np.testing.assert_array_equal(frame["contact"][:, 0].astype(bool), heel)
    assert heel.any() and (heel != loaded).any()  # a walk's landings move labels
    assert seq["seq_pass"] == 0 and seq["seq_id"] == p.motion.provenance.sequence_id
    assert seq["seq_torque_source"] == "simulation" and seq["seq_grf_source"] == "simulation"
    assert simulated_key(seq["seq_id"], 2) == f"{seq['seq_id']}#pass2"
