"""AMASS npz reader: layouts, provenance, and one clear error per bad file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from pipeline.sources.amass import AmassSource, parse_ids, read_amass
from pipeline.sources.base import LICENCE_MAX_CHARS, SourceError, find_licence, get_source

T = 50


def _smplh(rng) -> dict:
    return {
        "poses": rng.normal(0, 0.2, (T, 156)),
        "trans": rng.normal(0, 0.1, (T, 3)),
        "betas": rng.normal(0, 0.5, 16),
        "gender": np.array("female"),
        "mocap_framerate": np.array(120.0),
        "dmpls": np.zeros((T, 8)),
    }


def _write(root: Path, rel: str, data: dict, **kw) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data, **kw)
    return path


def test_smplh_layout_and_provenance(tmp_path):
    rng = np.random.default_rng(0)
    data = _smplh(rng)
    path = _write(tmp_path, "CMU/01/01_01_poses.npz", data)
    raw = read_amass(path, tmp_path)
    assert raw.model_type == "smplh"
    assert raw.fps_hz == 120.0
    assert raw.subject.gender == "female"
    np.testing.assert_array_equal(raw.root_orient_aa_rad, data["poses"][:, :3])
    np.testing.assert_array_equal(raw.body_pose_aa_rad[:, :21].reshape(T, -1), data["poses"][:, 3:66])
    np.testing.assert_array_equal(raw.body_pose_aa_rad[:, 21:], 0.0)  # SMPL hand joints: fingers dropped
    np.testing.assert_array_equal(raw.trans_m, data["trans"])
    prov = raw.provenance
    assert (prov.dataset, prov.subject, prov.name) == ("CMU", "01", "01_01")
    assert prov.path == "CMU/01/01_01_poses.npz"
    assert prov.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov.sequence_id == "amass/CMU/01/01_01"
    assert prov.licence == "unknown"  # no licence sidecar anywhere up to the root


def test_smplx_split_keys_bytes_gender_and_alternate_rate_key(tmp_path):
    rng = np.random.default_rng(1)
    root_orient = rng.normal(0, 0.2, (T, 3))
    pose_body = rng.normal(0, 0.2, (T, 63))
    data = {
        "poses": np.concatenate([root_orient, pose_body, np.zeros((T, 99))], axis=1),
        "root_orient": root_orient,
        "pose_body": pose_body,
        "trans": rng.normal(0, 0.1, (T, 3)),
        "betas": rng.normal(0, 0.5, 10),
        "gender": np.array(b"male"),
        "mocap_frame_rate": np.array(60.0),
    }
    path = _write(tmp_path, "BMLrub/rub001/walk_stageii.npz", data)
    raw = read_amass(path, tmp_path)
    assert raw.model_type == "smplx"
    assert raw.fps_hz == 60.0 and raw.subject.gender == "male"
    assert raw.subject.betas.shape == (10,)
    np.testing.assert_array_equal(raw.body_pose_aa_rad[:, :21].reshape(T, -1), pose_body)
    assert raw.provenance.name == "walk"


def test_smplx_poses_only(tmp_path):
    rng = np.random.default_rng(2)
    data = _smplh(rng)
    data["poses"] = rng.normal(0, 0.2, (T, 165))
    raw = read_amass(_write(tmp_path, "D/S/x_poses.npz", data), tmp_path)
    assert raw.model_type == "smplx"
    np.testing.assert_array_equal(raw.body_pose_aa_rad[:, :21].reshape(T, -1), data["poses"][:, 3:66])


def test_subject_sidecar(tmp_path):
    data = _smplh(np.random.default_rng(3))
    path = _write(tmp_path, "D/S1/a_poses.npz", data)
    (path.parent / "subject.json").write_text(json.dumps({"height_m": 1.81, "mass_kg": 77.5, "gender": "male"}))
    raw = read_amass(path, tmp_path)
    assert raw.subject.height_m == 1.81 and raw.subject.mass_kg == 77.5 and raw.subject.gender == "male"


def test_discover_skips_shape_files(tmp_path):
    data = _smplh(np.random.default_rng(4))
    _write(tmp_path, "D/S1/b_poses.npz", data)
    _write(tmp_path, "D/S1/a_poses.npz", data)
    _write(tmp_path, "D/S1/shape.npz", {"betas": np.zeros(16)})
    _write(tmp_path, "D/S1/x_stagei.npz", {"betas": np.zeros(16)})
    found = [p.relative_to(tmp_path).as_posix() for p in get_source("amass").discover(tmp_path)]
    assert found == ["D/S1/a_poses.npz", "D/S1/b_poses.npz"]


def test_parse_ids_shallow_trees():
    assert parse_ids(PurePosixPath("A/B/C/seq_poses.npz")) == ("A", "C", "seq")
    assert parse_ids(PurePosixPath("S9/seq.npz")) == ("unknown", "S9", "seq")


@pytest.mark.parametrize(
    "mutate, keyword",
    [
        (lambda d: d.pop("trans"), "missing key 'trans'"),
        (lambda d: d.pop("poses"), "missing key 'poses'"),
        (lambda d: d.pop("mocap_framerate"), "unknown frame rate"),
        (lambda d: d.__setitem__("mocap_framerate", np.array(0.0)), "invalid frame rate"),
        (lambda d: d["poses"].__setitem__((3, 5), np.nan), "non-finite"),
        (lambda d: d.__setitem__("poses", np.zeros((T, 100))), "(T, 72|156|165)"),
        (lambda d: d.__setitem__("trans", np.zeros((T - 1, 3))), "frames"),
    ],
)
def test_bad_content_gives_one_clear_error(tmp_path, mutate, keyword):
    data = _smplh(np.random.default_rng(5))
    mutate(data)
    path = _write(tmp_path, "D/S/bad_poses.npz", data)
    with pytest.raises(SourceError) as err:
        read_amass(path, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("D/S/bad_poses.npz: ")
    assert keyword in msg


def test_pickled_object_array_is_refused_not_loaded(tmp_path):
    data = _smplh(np.random.default_rng(6))
    data["gender"] = np.array([{"evil": "payload"}], dtype=object)
    path = tmp_path / "D/S/pickled_poses.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)  # numpy pickles object arrays into the npz
    with pytest.raises(SourceError, match="pickled object array"):
        read_amass(path, tmp_path)


def test_truncated_file(tmp_path):
    path = _write(tmp_path, "D/S/good_poses.npz", _smplh(np.random.default_rng(7)))
    blob = path.read_bytes()
    bad = tmp_path / "D/S/trunc_poses.npz"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SourceError, match="trunc_poses.npz: .*(corrupt|truncated|npz)"):
        read_amass(bad, tmp_path)
    assert AmassSource().read(path, tmp_path)[0].n_frames == T


def test_licence_sidecars(tmp_path):
    """Nearest sidecar wins, walking up to (and including) the root; empty ones are skipped."""
    rng = np.random.default_rng(5)
    path = _write(tmp_path / "root", "CMU/01/01_01_poses.npz", _smplh(rng))
    root = tmp_path / "root"
    (tmp_path / "LICENSE").write_text("outside the root: never read\n")
    assert find_licence(path, root) == "unknown"
    (root / "LICENSE.txt").write_text("\n   \n  CC0-1.0   (public   domain)  \nmore text\n")
    assert find_licence(path, root) == "CC0-1.0 (public domain)"
    (root / "CMU" / "Copyright.txt").write_text("Copyright CMU Graphics Lab, free for all uses\n")
    assert read_amass(path, root).provenance.licence == "Copyright CMU Graphics Lab, free for all uses"
    (root / "CMU" / "01" / "LICENCE.md").write_text("")  # empty: keep looking
    assert find_licence(path, root) == "Copyright CMU Graphics Lab, free for all uses"
    (root / "CMU" / "licence.txt").write_text("AMASS non-commercial\n")  # preferred over Copyright.txt
    assert find_licence(path, root) == "AMASS non-commercial"
    (root / "CMU" / "01" / "LICENCE.md").write_text("x" * 500 + "\n")
    assert find_licence(path, root) == "x" * LICENCE_MAX_CHARS
    (root / "CMU" / "01" / "license").write_text("Apache-2.0\n")  # any case, exact names before LICENCE*
    assert find_licence(path, root) == "Apache-2.0"
    assert find_licence(tmp_path / "elsewhere" / "a.npz", root) == "unknown"
