"""KIT native MMM source (pipeline.sources.kit) against the real samples in ../shared/data/kit (MANIFEST.md:
KIT Motion-Language sample 00001_mmm.xml via chahuja/language2pose, MIT; mmm_model/ from
matthiasplappert/motion-classification, MIT); tests using them skip where the folder is absent.
Malformed variants are generated from the real file in tmp_path."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import skeleton as sk
from pipeline.process import BuildConfig, process_motion
from pipeline.sources.base import SourceError, get_source
from pipeline.sources.kit import fk, joint_fit
from pipeline.sources.kit import mmm_model as mm
from pipeline.sources.kit import mmm_motion as mo
from pipeline.sources.kit.source import KITMeasurement, KITSource

KIT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kit"
if not KIT_ROOT.is_dir():
    KIT_ROOT = Path("/work/shared/data/kit")
needs_data = pytest.mark.skipif(not KIT_ROOT.is_dir(),
                                reason=f"real KIT samples absent ({KIT_ROOT}); see shared/data/MANIFEST.md")
MOTION = KIT_ROOT / "00001_mmm.xml"
SKELETON = KIT_ROOT / "mmm_skeleton.xml"
REF_MODEL = KIT_ROOT / "mmm_model" / "mmm.xml"
TEST_MOTION = KIT_ROOT / "mmm_model" / "test_motion_mmm.xml"

RMSE_MAX_MM = {"00001_mmm.xml": 5.0, "test_motion_mmm.xml": 10.0}
"""Fit RMSE ceilings; measured 2.3 mm and 6.7 mm (docs/kit.md)."""


# ------------------------------------------------------------------------------------ pure, no data
def test_rpy_is_simox_fixed_axis_xyz():
    rng = np.random.default_rng(0)
    rpy = rng.uniform(-1, 1, (5, 3))
    want = (fk.axis_rotmat([0, 0, 1], rpy[:, 2]) @ fk.axis_rotmat([0, 1, 0], rpy[:, 1])
            @ fk.axis_rotmat([1, 0, 0], rpy[:, 0]))
    np.testing.assert_allclose(fk.rpy_to_rotmat(rpy), want, atol=1e-12)


_TINY = """<?xml version='1.0'?>
<Robot Type='t' RootNode='root'>
  <RobotNode name='root'><Joint type='revolute'><axis x='0' y='0' z='1'/></Joint><Child name='seg'/></RobotNode>
  <RobotNode name='seg'>
    <Transform><Matrix4x4 units='mm'><row1 c1='1' c2='0' c3='0' c4='0'/><row2 c1='0' c2='1' c3='0' c4='100'/>
      <row3 c1='0' c2='0' c3='1' c4='0'/><row4 c1='0' c2='0' c3='0' c4='1'/></Matrix4x4></Transform>
    <Joint type='revolute'><axis x='1' y='0' z='0'/></Joint>
    <Physics><Mass unit='kg' value='1'/></Physics>
    <Child name='tip'/></RobotNode>
  <RobotNode name='tip'><Transform><Translation x='0' y='0' z='-50' units='mm'/></Transform></RobotNode>
</Robot>"""


def test_tiny_model_fk():
    model = mm.parse_model(_TINY).scaled(2.0, 70.0)
    assert model.names == ("root", "seg", "tip") and model.revolute_names == ("root", "seg")
    assert model.mass_kg.sum() == pytest.approx(70.0)
    # root yawed 90°: seg's +y 200 mm points to −x; seg turned 90° about x: the tip's −z 100 mm turns to +y,
    # which the yaw turns to −x
    _, pos = fk.forward_kinematics(model, np.array([[1000.0, 0, 0]]), np.array([[0, 0, np.pi / 2]]),
                                   {"seg": np.array([np.pi / 2])})
    np.testing.assert_allclose(pos[0, 1], [1.0 - 0.2, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(pos[0, 2], [1.0 - 0.3, 0.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("text, problem", [
    ("<Robot RootNode='x'><RobotNode name='y'/></Robot>", "RootNode 'x'"),
    ("<Robot RootNode='a'><RobotNode name='a'><Child name='b'/></RobotNode></Robot>", "child node 'b'"),
    ("<Robot RootNode='a'><RobotNode name='a'><Joint type='spherical'/></RobotNode></Robot>", "unsupported joint"),
    ("<MMM/>", "not a Simox robot model"),
    ("<Robot", "not well-formed"),
])
def test_bad_models(text, problem):
    with pytest.raises(mm.ModelError, match=re.escape(problem)):
        mm.parse_model(text)


# ------------------------------------------------------------------------------------ real files
@pytest.fixture(scope="module")
def reads():
    src = KITSource()
    return {p.name: src.read(p, KIT_ROOT)[0] for p in src.discover(KIT_ROOT)}


def _fk(motion_path: Path, model_path: Path, conform: bool = True):
    motion = mo.parse_motion(motion_path.read_bytes())
    model = mm.load_model(model_path)
    if conform:
        model = mm.conform_to_reference(model)[0]
    scaled = model.scaled(motion.height_m, motion.mass_kg)
    values = {n: motion.joint_pos_rad[:, i] for i, n in enumerate(motion.joint_names)}
    rot, pos = fk.forward_kinematics(scaled, motion.root_pos_mm, motion.root_rpy_rad, values)
    return motion, scaled, rot, pos


@needs_data
def test_motion_header_and_timing():
    m = mo.parse_motion(MOTION.read_bytes())
    assert m.n_motions == 1 and m.name == "subject_id_4" and m.model_file == "mmm.xml"
    assert (m.height_m, m.mass_kg) == (1.82, 100.0)
    assert len(m.joint_names) == 44 and m.joint_names[27] == "LMrot_joint"
    assert m.n_frames == 378 and m.joint_pos_rad.shape == (378, 44)
    assert m.fps_hz == pytest.approx(100.0, rel=1e-6)
    assert m.time_s[0] == 0.0 and m.time_s[-1] == pytest.approx(3.77)


@needs_data
def test_model_copies_and_reference_table():
    skel, ref = mm.load_model(SKELETON), mm.load_model(REF_MODEL)
    for model in (skel, ref):
        assert model.names[0] == "root_joint" and model.mass_kg.sum() == pytest.approx(1.0, abs=1e-9)
    assert "LMrot_joint" in skel.names and "LMrot_joint" not in ref.names
    assert mm.conform_to_reference(ref)[1] == ()  # the reference copy is the table
    _, changes = mm.conform_to_reference(skel)
    assert sorted(c.split()[0] for c in changes) == sorted(
        ["BPSegment_joint", "BTSegment_joint", "BLNsegment_joint", "LSsegment_joint", "RSsegment_joint"])
    # zero pose of the conformed model: head top 1000 mm above the soles
    _, pos = fk.forward_kinematics(mm.conform_to_reference(skel)[0], np.zeros((1, 3)), np.zeros((1, 3)), {})
    z = pos[0, :, 2] * 1000
    assert z[skel.index("HeadSegment_joint")] - z[skel.index("LeftFootHeight_joint")] == pytest.approx(1000.0)


@needs_data
def test_recorded_com_decides_model_geometry_and_rpy_order():
    """test_motion_mmm.xml records the CoM per frame: the reference geometry reproduces it to < 1 mm (MMM's CoM
    is the mass-weighted mean of the segment frames), Simox's Rz·Ry·Rx order is required (Rx·Ry·Rz: > 2 cm off),
    and the skeleton copy's trunk/shoulder offsets are 9 cm off."""
    text = TEST_MOTION.read_text()
    motion = mo.parse_motion(text)
    com = np.array([[float(x) for x in s.split()] for s in re.findall(r"<CoM>(.*?)</CoM>", text)])
    com = com[: motion.n_frames] * 1e-3

    def com_error(model_path, rpy_fn=fk.rpy_to_rotmat):
        model = mm.load_model(model_path).scaled(motion.height_m, motion.mass_kg)
        values = {n: motion.joint_pos_rad[:, i] for i, n in enumerate(motion.joint_names)}
        saved = fk.rpy_to_rotmat
        fk.rpy_to_rotmat = rpy_fn
        try:
            _, pos = fk.forward_kinematics(model, motion.root_pos_mm, motion.root_rpy_rad, values)
        finally:
            fk.rpy_to_rotmat = saved
        w = model.mass_kg / model.mass_kg.sum()
        return np.linalg.norm(np.einsum("n,tni->ti", w, pos) - com, axis=-1).max()

    def rxryrz(rpy):
        return (fk.axis_rotmat([1, 0, 0], rpy[:, 0]) @ fk.axis_rotmat([0, 1, 0], rpy[:, 1])
                @ fk.axis_rotmat([0, 0, 1], rpy[:, 2]))

    assert com_error(REF_MODEL) < 1e-3
    assert com_error(REF_MODEL, rxryrz) > 0.02
    assert com_error(SKELETON) > 0.05


@needs_data
def test_fk_bone_lengths_root_height_and_forward_direction():
    motion, model, rot, pos = _fk(MOTION, SKELETON)
    h = motion.height_m

    def dist(a, b):
        return np.linalg.norm(pos[:, model.index(a)] - pos[:, model.index(b)], axis=-1)

    for a, b, frac in (("LHx_joint", "LKx_joint", 0.245), ("RKx_joint", "RAx_joint", 0.246),
                       ("LSx_joint", "LEx_joint", 0.188), ("REx_joint", "RWx_joint", 0.145),
                       ("root_joint", "RHx_joint", 0.052)):
        np.testing.assert_allclose(dist(a, b), frac * h, atol=1e-9)
    root_z = pos[:, 0, 2]
    assert 0.9 < np.median(root_z) < 1.0  # hip height 0.53 H = 0.965 m in stance
    # the model faces +y: its forward axis in the world agrees with the walking direction
    vel = np.diff(pos[:, 0, :2], axis=0) * motion.fps_hz
    fwd = rot[1:, 0, :2, 1]
    moving = np.linalg.norm(vel, axis=1) > 0.3
    cos = np.einsum("ti,ti->t", vel[moving], fwd[moving]) / (
        np.linalg.norm(vel[moving], axis=1) * np.linalg.norm(fwd[moving], axis=1))
    assert moving.sum() > 50 and np.median(cos) > 0.9


@needs_data
def test_read_provenance_fit_and_model_choice(reads):
    assert sorted(reads) == ["00001_mmm.xml", "test_motion_mmm.xml"]  # the two model files are not motions
    a, b = reads["00001_mmm.xml"], reads["test_motion_mmm.xml"]
    assert a.provenance.source == "kit" and a.provenance.sequence_id == "kit/KIT/subject_id_4/00001"
    assert b.provenance.sequence_id == "kit/KIT/subject_id_314/test_motion"
    assert a.provenance.licence.startswith("MIT")
    assert isinstance(a.measured, KITMeasurement) and a.measured.model_path == "mmm_skeleton.xml"
    assert b.measured.model_path == "mmm_model/mmm.xml"
    assert any("BPSegment_joint" in w for w in a.measured.warnings) and not b.measured.warnings
    assert a.subject.height_m == 1.82 and a.subject.mass_kg == 100.0 and a.fps_hz == pytest.approx(100.0)
    assert a.n_frames == 378 and a.up_axis == "z"
    for name, raw in reads.items():
        assert raw.measured.rmse_mm < RMSE_MAX_MM[name], (name, raw.measured.rmse_mm)
        assert raw.measured.fit.targets.names[0] == "ROOT" and len(raw.measured.fit.targets.names) == 27


@needs_data
def test_fit_has_no_pose_flips(reads):
    """00001: no joint turns faster than 20 rad/s between source frames (MMM's own joints stay below 16 rad/s)."""
    from pipeline import rotations as rot

    raw = reads["00001_mmm.xml"]
    q = rot.aa_to_quat(np.concatenate([raw.root_orient_aa_rad[:, None], raw.body_pose_aa_rad], axis=1))
    speed = 2 * np.arccos(np.clip(np.abs(np.sum(q[1:] * q[:-1], axis=-1)), 0, 1)) * raw.fps_hz
    assert speed.max() < joint_fit.MAX_JOINT_SPEED_RAD_S


@needs_data
def test_canonical_motion_is_plausible(reads):
    p = process_motion(reads["00001_mmm.xml"], BuildConfig(simulate=None))
    m = p.motion
    assert m.fps_hz == 30.0 and m.n_frames == int(3.77 * 30) + 1
    pelvis = m.joint_pos_m[:, 0, 2]
    assert 0.95 < np.median(pelvis) < 1.05  # SMPL pelvis 0.555 H = 1.01 m standing
    feet = m.foot_points_m[..., 2]
    assert feet.min() == pytest.approx(0.0, abs=1e-9)
    assert (feet.min(axis=0) < 0.015).all()  # every sole point reaches the floor
    assert (np.median(feet, axis=0) < 0.03).all()
    head = m.joint_pos_m[:, sk.JOINT_NAMES.index("head"), 2]
    assert 1.5 < np.median(head) < 1.7
    # the stored motion against the MMM joint centres: the residuals the quality metrics see
    res = p.metric_arrays()["marker_residual_m"]
    assert res.shape == (m.n_frames, 27)
    assert np.sqrt(np.nanmean(res**2)) < RMSE_MAX_MM["00001_mmm.xml"] * 1e-3


@needs_data
def test_registered_and_target_offsets():
    assert isinstance(get_source("kit"), KITSource)
    model = mm.conform_to_reference(mm.load_model(SKELETON))[0].scaled(1.82)
    ts, nodes = joint_fit.build_targets(model, 1.82)
    k = ts.names.index("LKNEE")
    assert np.linalg.norm(ts.offset_frac[k]) == pytest.approx(0.245)  # the MMM thigh along SMPL's thigh
    assert model.names[nodes[ts.names.index("LTOE")]] == "LFx_joint"


# ------------------------------------------------------------------------------------ bad input
def _tree(tmp_path: Path, text: str, name: str = "bad_mmm.xml") -> Path:
    """A source folder with the skeleton model beside a motion file holding ``text``."""
    shutil.copy(SKELETON, tmp_path / "mmm_skeleton.xml")
    (tmp_path / name).write_text(text)
    return tmp_path / name


def _frames(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"<JointPosition>.*?</JointPosition>", text)]


def _mutations(text: str) -> dict[str, tuple[str, str]]:
    jp = _frames(text)[5]
    short = text[: jp[0]] + "<JointPosition>" + " ".join(["0.1"] * 43) + "</JointPosition>" + text[jp[1]:]
    order = re.search(r"<JointOrder>.*?</JointOrder>", text, flags=re.S)
    ts = [m for m in re.finditer(r"<Timestep>.*?</Timestep>", text)][10]
    return {
        "not_xml": ("\x00\x01 this is not xml at all", "not well-formed XML"),
        "no_motion": ("<?xml version='1.0'?>\n<MMM>\n</MMM>\n", "no <Motion> element"),
        "no_joint_order": (text[: order.start()] + text[order.end():], "no <JointOrder>"),
        "wrong_dof": (short, "frame 5: <JointPosition> has 43 values, expected 44"),
        "unknown_joint": (text.replace("name='LMrot_joint'", "name='LMtoe_joint'"),
                          "JointOrder names 1 joint(s) the model mmm_skeleton.xml does not have: LMtoe_joint"),
        "truncated": (text[: len(text) // 2], "not well-formed XML, truncated or corrupt"),
        "time_back": (text[: ts.start()] + "<Timestep>0.0</Timestep>" + text[ts.end():], "Timestep does not increase"),
        "nan_root": (text.replace("<RootPosition>1142.97 -252.854 973.526", "<RootPosition>nan -252.854 973.526"),
                     "frame 0: <RootPosition> has non-finite values"),
        "other_root": ("<?xml version='1.0'?><Trajectory/>", "not an MMM motion file: root element <Trajectory>"),
    }


@needs_data
@pytest.mark.parametrize("case", ["not_xml", "no_motion", "no_joint_order", "wrong_dof", "unknown_joint",
                                  "truncated", "time_back", "nan_root", "other_root"])
def test_bad_motion_files(tmp_path, case):
    text, problem = _mutations(MOTION.read_text())[case]
    path = _tree(tmp_path, text)
    src = KITSource()
    assert path in src.discover(tmp_path) and (tmp_path / "mmm_skeleton.xml") not in src.discover(tmp_path)
    with pytest.raises(SourceError) as err:
        src.read(path, tmp_path)
    msg = str(err.value)
    assert msg.startswith("bad_mmm.xml: ") and "\n" not in msg
    assert problem in msg, msg


@needs_data
def test_unknown_joint_with_named_model(tmp_path):
    """A motion naming its model file explicitly: a joint the model lacks is named in the error."""
    text = MOTION.read_text().replace("name='LMrot_joint'", "name='LMtoe_joint'")
    text = text.replace("<File>mmm.xml</File>", "<File>mmm_skeleton.xml</File>")
    path = _tree(tmp_path, text)
    with pytest.raises(SourceError, match="JointOrder names 1 joint\\(s\\) the model mmm_skeleton.xml does not "
                                          "have: LMtoe_joint"):
        KITSource().read(path, tmp_path)


@needs_data
def test_missing_model(tmp_path):
    (tmp_path / "m_mmm.xml").write_text(MOTION.read_text())
    with pytest.raises(SourceError, match=r"^m_mmm.xml: no MMM model file: 'mmm.xml' not found"):
        KITSource().read(tmp_path / "m_mmm.xml", tmp_path)


@needs_data
def test_extra_motions_ignored(tmp_path):
    """Only the first <Motion> is the subject: an appended object motion changes nothing but a warning."""
    text = MOTION.read_text()
    start = text.index("<Motion ")
    end = text.index("</Motion>") + len("</Motion>")
    obj = text[start:end].replace("subject_id_4", "cup").replace("<JointPosition>", "<JointPosition>9 ")
    path = _tree(tmp_path, text[:end] + "\n" + obj + text[end:], name="two_mmm.xml")
    m = mo.parse_motion(path.read_bytes())
    assert m.n_motions == 2 and m.name == "subject_id_4" and m.joint_pos_rad.shape == (378, 44)
