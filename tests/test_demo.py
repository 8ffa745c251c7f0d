"""Tests for pipeline.demo: the synthetic AMASS-format corpus.

Files are read back exactly as a reader would (``allow_pickle=False``; world pelvis = trans + J0
with J0 from ``anthropometric_skeleton(subject.json height)``) and checked with forward kinematics.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import demo
from pipeline.skeleton import anthropometric_skeleton, forward_kinematics, sole_points

CONTACT_TOL_M = 0.002
"""A sole point within 2 mm of the floor in two consecutive frames counts as planted."""

# Documented sliding bounds (horizontal speed of planted sole points), m/s. Measured on the
# default corpus: walking max ≈ 6 mm/s (p99 ≈ 0.2 mm/s), running max ≈ 90 mm/s (touch-down /
# take-off frames), standing/squats/jumps ≈ 1 mm/s.
WALK_SLIDE_P99, WALK_SLIDE_MAX = 0.010, 0.030
RUN_SLIDE_P99, RUN_SLIDE_MAX = 0.020, 0.150
STATIC_SLIDE_MAX = 0.010


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[demo.SequenceSpec]]:
    root = tmp_path_factory.mktemp("demo") / "amass"
    files = demo.generate_corpus(root)
    return root, files, demo.plan_corpus()


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _fk(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(soles (T,4,3), joints (T,24,3), local rotmats (T,24,3,3), fps) as a reader would compute them."""
    d = _load(path)
    subject = json.loads((path.parent / "subject.json").read_text())
    skel = anthropometric_skeleton(subject["height_m"])
    poses = d["poses"]
    n = poses.shape[0]
    aa = np.concatenate([poses[:, :66].reshape(n, 22, 3), np.zeros((n, 2, 3))], axis=1)
    L = demo.aa_to_rotmat(aa)
    glob, pos = forward_kinematics(L, d["trans"] + skel.rest_joints_m[0], skel.offsets_m)
    fps = float(d["mocap_framerate"] if "mocap_framerate" in d else d["mocap_frame_rate"])
    return sole_points(glob, pos, skel), pos, L, fps


def _planted_speeds(soles: np.ndarray, floor_z: float, fps: float) -> np.ndarray:
    """Horizontal speeds (m/s) of sole points within CONTACT_TOL_M of the floor in consecutive frames."""
    near = soles[..., 2] - floor_z < CONTACT_TOL_M
    both = near[1:] & near[:-1]
    speed = np.linalg.norm(np.diff(soles[..., :2], axis=0), axis=-1) * fps
    return speed[both]


def _by_kind(specs: list[demo.SequenceSpec], kind: str) -> list[demo.SequenceSpec]:
    out = [s for s in specs if s.motion.kind == kind]
    assert out, kind
    return out


# --- format --------------------------------------------------------------------------------------


def test_layout_and_sidecars(corpus):
    root, files, specs = corpus
    assert [f.relative_to(root).as_posix() for f in files] == [s.rel_path for s in specs]
    assert len(files) == 32  # 4 subjects x 8 motions
    for f in files:
        rel = f.relative_to(root)
        assert rel.parts[0] == "DynasetSynth" and rel.parts[1] in {"S01", "S02", "S03", "S04"}
        assert f.name.endswith("_poses.npz")
    for sid in ("S01", "S02", "S03", "S04"):
        info = json.loads((root / "DynasetSynth" / sid / "subject.json").read_text())
        assert set(info) == {"height_m", "mass_kg", "gender"}
        assert 1.55 <= info["height_m"] <= 1.95
        assert 19.0 <= info["mass_kg"] / info["height_m"] ** 2 <= 28.0 + 1e-6
        assert info["gender"] in {"male", "female"}


def test_smplh_files(corpus):
    root, files, specs = corpus
    smplh = [s for s in specs if s.layout == "smplh"]
    assert len(smplh) >= 16
    for s in smplh:
        d = _load(root / s.rel_path)
        assert set(d) == {"poses", "trans", "betas", "gender", "mocap_framerate", "dmpls"}
        n = s.n_frames
        assert d["poses"].shape == (n, 156) and d["poses"].dtype == np.float64
        assert d["trans"].shape == (n, 3) and d["trans"].dtype == np.float64
        assert d["betas"].shape == (16,) and d["betas"].dtype == np.float64
        assert np.all(np.abs(d["betas"]) < 1.5)
        assert d["dmpls"].shape == (n, 8) and not d["dmpls"].any()
        assert d["gender"].dtype.kind == "U" and d["gender"].shape == () and str(d["gender"]) == s.subject.gender
        assert d["mocap_framerate"].shape == () and float(d["mocap_framerate"]) == s.fps_hz
        assert not d["poses"][:, 66:].any()  # hands zero
        assert np.all(np.isfinite(d["poses"])) and np.all(np.isfinite(d["trans"]))


def test_smplx_files(corpus):
    root, files, specs = corpus
    smplx = [s for s in specs if s.layout == "smplx"]
    assert len(smplx) >= 8
    assert {s.n_betas for s in smplx} == {10, 16}
    for s in smplx:
        d = _load(root / s.rel_path)
        n = s.n_frames
        assert {"poses", "root_orient", "pose_body", "pose_hand", "pose_jaw", "pose_eye", "trans", "betas",
                "gender", "mocap_frame_rate", "surface_model_type"} <= set(d)
        assert "mocap_framerate" not in d
        assert d["poses"].shape == (n, 165)
        assert d["root_orient"].shape == (n, 3) and d["pose_body"].shape == (n, 63)
        assert d["pose_hand"].shape == (n, 90) and d["pose_jaw"].shape == (n, 3) and d["pose_eye"].shape == (n, 6)
        np.testing.assert_array_equal(d["poses"][:, :3], d["root_orient"])
        np.testing.assert_array_equal(d["poses"][:, 3:66], d["pose_body"])
        assert not d["poses"][:, 66:].any()
        assert d["betas"].shape == (s.n_betas,)
        np.testing.assert_array_equal(d["betas"], np.asarray(s.subject.betas[: s.n_betas]))
        assert d["gender"].dtype.kind == "S" and d["gender"].item() == s.subject.gender.encode()
        assert str(d["surface_model_type"]) == "smplx"
        assert float(d["mocap_frame_rate"]) == s.fps_hz


def test_mixed_frame_rates_and_layouts(corpus):
    root, files, specs = corpus
    rates = set()
    for f in files:
        d = _load(f)
        rates.add(float(d["mocap_framerate"] if "mocap_framerate" in d else d["mocap_frame_rate"]))
    assert rates == {60.0, 100.0, 120.0, 250.0}
    assert {s.layout for s in specs} == {"smplh", "smplx"}
    durations = [s.duration_s for s in specs]
    assert min(durations) >= 4.0 - 1e-9 and max(durations) <= 10.0 + 1e-9
    assert 150.0 < sum(durations) < 300.0  # ≈ 3–4 min by default


def test_deterministic_bytes(tmp_path, corpus):
    root, files, _ = corpus
    again = demo.generate_corpus(tmp_path / "again")
    assert len(again) == len(files)
    for a, b in zip(files, again):
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest(), a.name
    side = root / "DynasetSynth" / "S01" / "subject.json"
    assert side.read_bytes() == (tmp_path / "again" / "DynasetSynth" / "S01" / "subject.json").read_bytes()
    other = demo.generate_corpus(tmp_path / "other", n_subjects=1, seed=1)
    assert hashlib.sha256(other[0].read_bytes()).digest() != hashlib.sha256(files[0].read_bytes()).digest()


def test_hours_target(tmp_path):
    files = demo.generate_corpus(tmp_path, n_subjects=2, hours=0.05, seed=3)
    total_s = 0.0
    for f in files:
        d = _load(f)
        fps = float(d["mocap_framerate"] if "mocap_framerate" in d else d["mocap_frame_rate"])
        total_s += d["poses"].shape[0] / fps
    assert total_s >= 0.05 * 3600.0
    assert total_s < 0.05 * 3600.0 + 10.0  # stops at the first file that reaches the target
    names = {f.name for f in files}
    assert any("_t02_" in n for n in names)  # more trial rounds were added


# --- rotations and joint conventions -------------------------------------------------------------


def test_axis_angle_round_trip():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(500, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 494), [0.0, 1e-9, np.pi - 1e-7, np.pi, 1e-4, 3.0]])
    aa = axes * angles[:, None]
    R = demo.aa_to_rotmat(aa)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(demo.aa_to_rotmat(demo.rotmat_to_aa(R)), R, atol=1e-9)
    small = angles < np.pi - 1e-3
    np.testing.assert_allclose(demo.rotmat_to_aa(R)[small], aa[small], atol=1e-9)


def _fk_template(channels: dict[str, float], foot_pitch: float | None = None) -> np.ndarray:
    """(24, 3) joint positions in the world for one pose from demo channels, heading +x, pelvis at 0."""
    skel = anthropometric_skeleton(1.75)
    ch = {k: np.array([v]) for k, v in channels.items()}
    L = demo._assemble(ch, 1, 0.0, None if foot_pitch is None else np.array([foot_pitch]))
    _, pos = forward_kinematics(L, np.zeros((1, 3)), skel.offsets_m)
    return pos[0]


def test_hip_knee_ankle_flexion_directions():
    """Heading 0: forward is world +x, up +z, the subject's left is +y."""
    rest = _fk_template({})
    # neutral: legs straight down, left leg on the +y side, facing +x
    assert rest[4, 2] < rest[1, 2] and rest[4, 1] > 0 > rest[5, 1]
    assert rest[10, 0] > rest[7, 0]  # toes (ball) in front of the ankle
    # hip flexion swings the leg forward (+x) and up
    for hip, knee, name in ((1, 4, "hip_flex_l"), (2, 5, "hip_flex_r")):
        p = _fk_template({name: 30.0})
        thigh = p[knee] - p[hip]
        assert thigh[0] > 0.4 * np.linalg.norm(thigh)
        thigh0 = rest[knee] - rest[hip]
        fwd = np.degrees(np.arctan2(thigh[0], -thigh[2]) - np.arctan2(thigh0[0], -thigh0[2]))
        assert fwd == pytest.approx(30.0, abs=1.0)
    # knee flexion bends the shank backwards (-x)
    for knee, ankle, name in ((4, 7, "knee_l"), (5, 8, "knee_r")):
        p = _fk_template({name: 60.0})
        shank, shank0 = p[ankle] - p[knee], rest[ankle] - rest[knee]
        back = np.degrees(np.arctan2(-shank[0], -shank[2]) - np.arctan2(-shank0[0], -shank0[2]))
        assert back == pytest.approx(60.0, abs=1.0)
    # ankle dorsiflexion lifts the toes
    p = _fk_template({"ankle_l": 20.0})
    foot = p[10] - p[7]
    assert np.degrees(np.arctan2(foot[2], foot[0])) > rest_pitch(rest) + 15.0
    # trunk flexion leans forward; shoulder flexion brings the arm forward; elbow flexion forward
    p = _fk_template({"spine_flex": 30.0})
    assert p[15, 0] > rest[15, 0] + 0.1
    p = _fk_template({"sh_flex_l": 90.0, "sh_flex_r": 90.0})
    assert p[18, 0] - p[16, 0] > 0.2 and p[19, 0] - p[17, 0] > 0.2
    p = _fk_template({"elbow_l": 90.0, "elbow_r": 90.0})
    assert p[18, 2] < p[16, 2] - 0.2  # arms hang down
    assert p[20, 0] - p[18, 0] > 0.15 and p[21, 0] - p[19, 0] > 0.15


def rest_pitch(rest: np.ndarray) -> float:
    foot = rest[10] - rest[7]
    return float(np.degrees(np.arctan2(foot[2], foot[0])))


def test_smpl_axis_convention_directly():
    """The raw SMPL convention behind the channels: hip R_x(-θ) forward, knee R_x(+θ) backward."""
    skel = anthropometric_skeleton(1.70)
    L = np.broadcast_to(np.eye(3), (2, 24, 3, 3)).copy()
    L[0, 1] = demo.aa_to_rotmat(np.array([-0.5, 0.0, 0.0]))  # left hip, template frame
    L[1, 4] = demo.aa_to_rotmat(np.array([0.8, 0.0, 0.0]))  # left knee
    _, pos = forward_kinematics(L, np.zeros((2, 3)), skel.offsets_m)
    assert pos[0, 4, 2] - pos[0, 1, 2] > 0.1  # knee in front (+z, the template's facing direction)
    assert pos[1, 7, 2] - pos[1, 4, 2] < -0.2  # ankle behind the knee


def test_root_orientation_maps_template_to_z_up_world(corpus):
    root, _, specs = corpus
    for s in _by_kind(specs, "stand"):
        d = _load(root / s.rel_path)
        R = demo.aa_to_rotmat(d["poses"][:, :3])
        up = R[:, :, 1]  # template +y in world
        assert np.all(up[:, 2] > np.cos(np.radians(5.0)))
        facing = R[:, :, 2]  # template +z in world
        heading = np.array([np.cos(s.heading_rad), np.sin(s.heading_rad), 0.0])
        assert np.all(facing @ heading > np.cos(np.radians(5.0)))


# --- ground contact and plausibility -------------------------------------------------------------


def test_walking_feet_touch_floor_and_do_not_slide(corpus):
    root, _, specs = corpus
    for s in _by_kind(specs, "walk"):
        soles, pos, _, fps = _fk(root / s.rel_path)
        lowest = soles[..., 2].min(axis=1) - s.floor_z_m
        # always one foot in stance, and its lowest sole point is on the floor
        assert np.all(np.abs(lowest) < 0.01), s.rel_path
        assert np.abs(lowest).max() < 1e-6
        speeds = _planted_speeds(soles, s.floor_z_m, fps)
        assert speeds.size > 0.5 * s.n_frames
        assert np.percentile(speeds, 99) < WALK_SLIDE_P99 and speeds.max() < WALK_SLIDE_MAX, s.rel_path
        # speed and direction as specified; pelvis moves steadily forward
        heading = np.array([np.cos(s.heading_rad), np.sin(s.heading_rad)])
        disp = pos[-1, 0, :2] - pos[0, 0, :2]
        mean_speed = disp @ heading / ((s.n_frames - 1) / fps)
        assert mean_speed == pytest.approx(s.motion.speed_mps, rel=0.03)
        assert abs(disp @ np.array([-heading[1], heading[0]])) < 0.1
        v_fwd = np.diff(pos[:, 0, :2], axis=0) @ heading * fps
        assert v_fwd.min() > 0.5 * s.motion.speed_mps
        # vertical pelvis excursion of a few centimetres
        assert 0.01 < np.ptp(pos[:, 0, 2]) < 0.10


def test_walking_joint_ranges(corpus):
    """Hip flexes forward in swing and extends in late stance; knee ~15-25° loading, ~55-70° swing."""
    root, _, specs = corpus
    for s in _by_kind(specs, "walk"):
        soles, pos, L, fps = _fk(root / s.rel_path)
        knee = np.degrees(np.arctan2(L[:, 4, 2, 1], L[:, 4, 1, 1]))
        assert 50.0 < knee.max() < 75.0 and knee.min() > -2.0
        # forward is the heading: at the largest hip flexion the left knee is ahead of the hip
        heading = np.array([np.cos(s.heading_rad), np.sin(s.heading_rad)])
        ahead = (pos[:, 4, :2] - pos[:, 1, :2]) @ heading
        assert ahead.max() > 0.15 and ahead.min() < 0.0
        # loading response: knee flexion peaks at 10-30° while the left foot is flat on the floor
        flat = np.all(soles[:, :2, 2] - s.floor_z_m < 1e-4, axis=1)
        assert 10.0 < knee[flat].max() < 35.0


def test_running_has_flight_and_little_sliding(corpus):
    root, _, specs = corpus
    for s in _by_kind(specs, "run"):
        soles, pos, _, fps = _fk(root / s.rel_path)
        lowest = soles[..., 2].min(axis=1) - s.floor_z_m
        assert lowest.min() > -1e-6
        flight = lowest > 0.01
        assert 0.1 < flight.mean() < 0.6, s.rel_path
        # ballistic pelvis in flight: vertical acceleration -g (interior flight frames)
        acc = np.diff(pos[:, 0, 2], 2) * fps**2
        inner = flight[:-2] & flight[1:-1] & flight[2:]
        np.testing.assert_allclose(acc[inner], -demo.G_MPS2, atol=0.05)
        speeds = _planted_speeds(soles, s.floor_z_m, fps)
        assert np.percentile(speeds, 99) < RUN_SLIDE_P99 and speeds.max() < RUN_SLIDE_MAX, s.rel_path
        heading = np.array([np.cos(s.heading_rad), np.sin(s.heading_rad)])
        mean_speed = (pos[-1, 0, :2] - pos[0, 0, :2]) @ heading / ((s.n_frames - 1) / fps)
        assert mean_speed == pytest.approx(s.motion.speed_mps, rel=0.03)


def test_stand_squat_feet_flat(corpus):
    root, _, specs = corpus
    for s in _by_kind(specs, "stand") + _by_kind(specs, "squat"):
        soles, pos, L, fps = _fk(root / s.rel_path)
        assert np.abs(soles[..., 2] - s.floor_z_m).max() < 1e-3, s.rel_path  # heels and toes down
        assert np.abs(np.diff(soles[..., :2], axis=0)).max() * fps < STATIC_SLIDE_MAX
        if s.motion.kind == "squat":
            knee = np.degrees(np.arctan2(L[:, 4, 2, 1], L[:, 4, 1, 1]))
            assert 90.0 < knee.max() < 110.0
            assert np.ptp(pos[:, 0, 2]) > 0.25  # pelvis goes down
        else:
            assert np.ptp(pos[:, 0, 2]) < 0.02 and 0.002 < np.ptp(pos[:, 0, 0]) + np.ptp(pos[:, 0, 1]) < 0.1


def test_jump_has_countermovement_and_flight(corpus):
    root, _, specs = corpus
    for s in _by_kind(specs, "jump"):
        soles, pos, _, fps = _fk(root / s.rel_path)
        lowest = soles[..., 2].min(axis=1) - s.floor_z_m
        assert lowest.min() > -1e-6
        flight = lowest > 0.005
        assert 0.3 < flight.sum() / fps < 0.5 * (s.duration_s // 3.0 + 1)
        pz = pos[:, 0, 2]
        stand = pz[: int(0.4 * fps)].mean()
        assert pz.min() < stand - 0.2  # countermovement
        assert pz.max() > stand + 0.15  # jump height
        acc = np.diff(pz, 2) * fps**2
        inner = flight[:-2] & flight[1:-1] & flight[2:]
        np.testing.assert_allclose(acc[inner], -demo.G_MPS2, atol=0.05)
        speeds = _planted_speeds(soles, s.floor_z_m, fps)
        assert speeds.max() < STATIC_SLIDE_MAX


def test_floor_offset_is_applied(corpus):
    """The floor is at the spec's 0.1–0.3 m offset, not at z = 0 (ground alignment is exercised)."""
    root, _, specs = corpus
    offsets = []
    for s in specs[:8]:
        soles, _, _, _ = _fk(root / s.rel_path)
        offsets.append(np.median(soles[..., 2].min(axis=1)))
        assert offsets[-1] == pytest.approx(s.floor_z_m, abs=0.01)
    assert min(offsets) > 0.09 and len(set(np.round(offsets, 3))) > 1


# --- broken inputs -------------------------------------------------------------------------------


def test_bad_files_are_bad(tmp_path):
    bad = demo.write_bad_files(tmp_path)
    assert set(bad.values()) == {"truncated", "pickled", "trans", "NaN", "frame rate"}
    for rel, problem in bad.items():
        path = tmp_path / rel
        assert path.is_file() and path.name.endswith("_poses.npz")
        if problem == "truncated":
            assert not zipfile.is_zipfile(path)
            with pytest.raises((zipfile.BadZipFile, EOFError, ValueError, OSError)):
                np.load(path, allow_pickle=False)["poses"]
            continue
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if problem == "pickled":
                for key in ("gender", "poses"):
                    with pytest.raises(ValueError, match="allow_pickle"):
                        npz[key]
            else:
                d = {k: npz[k] for k in keys}
        if problem == "pickled":
            with np.load(path, allow_pickle=True) as npz:
                assert npz["poses"].dtype == object and npz["gender"].dtype == object
        elif problem == "trans":
            assert "trans" not in keys and "poses" in keys
        elif problem == "NaN":
            assert np.isnan(d["poses"]).any() and np.isfinite(d["trans"]).all()
        elif problem == "frame rate":
            assert not keys & {"mocap_framerate", "mocap_frame_rate"} and "poses" in keys
    # the good remainder of each file is valid (only the stated problem is wrong)
    d = _load(tmp_path / next(r for r, p in bad.items() if p == "NaN"))
    assert d["poses"].shape[1] == 156 and np.isnan(d["poses"]).sum() == 5


def test_amass_reader_round_trip_and_rejections(tmp_path, corpus):
    amass = pytest.importorskip("pipeline.sources.amass")
    root, files, specs = corpus
    for f, s in list(zip(files, specs))[:8]:
        m = amass.read_amass(f, root)
        assert m.fps_hz == s.fps_hz and m.n_frames == s.n_frames and m.model_type == s.layout
        assert m.subject.height_m == s.subject.height_m and m.subject.gender == s.subject.gender
    bad = demo.write_bad_files(tmp_path)
    for rel, problem in bad.items():
        with pytest.raises(ValueError) as exc:
            amass.read_amass(tmp_path / rel, tmp_path)
        assert problem.lower() in str(exc.value).lower(), (rel, str(exc.value))
