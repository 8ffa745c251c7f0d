"""Virtual marker set: symmetry, attachment distances and foot markers at the sole."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import markers as mk
from pipeline import rotations as rot
from pipeline import skeleton as sk


def _rest(height_m: float):
    s = sk.anthropometric_skeleton(height_m)
    R = np.tile(np.eye(3), (1, sk.N_JOINTS, 1, 1))
    glob, pos = sk.forward_kinematics(R, np.array([[0.3, 1.0, -0.2]]), s.offsets_m)
    return s, glob, pos


def test_marker_tables_consistent():
    assert 40 <= mk.N_MARKERS <= 50
    assert len(set(mk.MARKER_NAMES)) == mk.N_MARKERS
    assert len(mk.MARKER_PARENTS) == mk.N_MARKERS
    assert set(mk.MARKER_DESCRIPTIONS) == set(mk.MARKER_NAMES)
    assert all(0 <= p < sk.N_JOINTS for p in mk.MARKER_PARENTS)
    for name in ("LFHD", "RBHD", "C7", "T10", "CLAV", "STRN", "RBAK", "LASI", "RPSI", "LHEE", "RTOE", "LMT5"):
        assert name in mk.MARKER_NAMES


def test_rest_pose_left_right_mirror_images():
    s, glob, pos = _rest(1.7)
    m = mk.marker_positions(glob, pos, s)[0] - pos[0, 0]  # relative to the pelvis (x = 0 plane)
    idx = {n: i for i, n in enumerate(mk.MARKER_NAMES)}
    pairs = 0
    for name, i in idx.items():
        if name.startswith("L"):
            j = idx["R" + name[1:]]
            assert np.allclose(m[j], m[i] * np.array([-1.0, 1.0, 1.0]), atol=1e-9), name
            assert m[i, 0] > 0.0, f"{name} should be on the subject's left (+x)"
            jl, jr = sk.JOINT_NAMES[mk.MARKER_PARENTS[i]], sk.JOINT_NAMES[mk.MARKER_PARENTS[j]]
            assert jr == jl.replace("left_", "right_"), name
            pairs += 1
        elif not name.startswith("R"):
            assert abs(m[i, 0]) < 1e-12, f"midline marker {name} off the midline"
    assert pairs >= 18


def test_markers_near_parent_joint_and_scale_with_height():
    s, glob, pos = _rest(1.7)
    m = mk.marker_positions(glob, pos, s)[0]
    d = np.linalg.norm(m - pos[0, list(mk.MARKER_PARENTS)], axis=-1)
    assert np.all(d < 0.25), dict(zip(mk.MARKER_NAMES, np.round(d, 3)))
    assert np.all(d > 0.0)
    s2 = sk.anthropometric_skeleton(1.9)
    assert np.allclose(mk.marker_offsets(s2), mk.marker_offsets(s) * 1.9 / 1.7)


def test_foot_markers_above_floor_near_sole_and_landmarks_plausible():
    s, glob, pos = _rest(1.7)
    m = mk.marker_positions(glob, pos, s)[0]
    sole = sk.sole_points(glob, pos, s)[0]
    floor_y = sole[0, 1]
    assert np.allclose(sole[:, 1], floor_y)
    idx = {n: i for i, n in enumerate(mk.MARKER_NAMES)}
    for side, ankle, heel_pt, toe_pt in (("L", 7, 0, 1), ("R", 8, 2, 3)):
        hee, toe = m[idx[side + "HEE"]], m[idx[side + "TOE"]]
        for mm in (hee, toe, m[idx[side + "MT5"]]):
            assert 0.005 < mm[1] - floor_y < 0.05
        assert hee[2] < pos[0, ankle, 2] - 0.04  # heel behind the ankle
        assert abs(hee[2] - sole[heel_pt, 2]) < 0.08
        assert pos[0, ankle, 2] < toe[2] < sole[toe_pt, 2]  # toe marker in front of the ankle, on the foot
        assert m[idx[side + "ANK"]][1] - floor_y > 0.04  # malleolus well above the floor
    # ASIS in front of and lateral to the pelvis joint, PSIS behind; head markers above the head joint
    pelvis = pos[0, 0]
    assert m[idx["LASI"], 2] > pelvis[2] + 0.05 and m[idx["LASI"], 0] > pelvis[0] + 0.08
    assert m[idx["LPSI"], 2] < pelvis[2] - 0.05
    assert m[idx["LFHD"], 2] > pos[0, 15, 2] and m[idx["LBHD"], 2] < pos[0, 15, 2]
    assert m[idx["CLAV"], 2] > m[idx["C7"], 2] + 0.1
    assert np.max(m[:, 1]) - floor_y < 1.7  # nothing above the top of the head


def test_markers_follow_rotations():
    s = sk.anthropometric_skeleton(1.7)
    aa = np.zeros((2, sk.N_JOINTS, 3))
    aa[1, 0] = [0.0, np.pi / 2, 0.0]  # root yaw about template y
    aa[1, 4] = [1.0, 0.0, 0.0]  # left knee flexion
    glob, pos = sk.forward_kinematics(rot.aa_to_rotmat(aa), np.zeros((2, 3)), s.offsets_m)
    m = mk.marker_positions(glob, pos, s)
    offs = mk.marker_offsets(s)
    parents = list(mk.MARKER_PARENTS)
    # body-fixed: distance to the parent joint is invariant
    d0 = np.linalg.norm(m[0] - pos[0, parents], axis=-1)
    d1 = np.linalg.norm(m[1] - pos[1, parents], axis=-1)
    assert np.allclose(d0, d1) and np.allclose(d0, np.linalg.norm(offs, axis=-1))
    # a knee-attached marker moves with the knee rotation, a hip-attached one does not rotate with it
    i_tib = mk.MARKER_NAMES.index("LTIB")
    rel = m[1, i_tib] - pos[1, 4]
    assert np.allclose(rel, glob[1, 4] @ offs[i_tib])
    assert not np.allclose(glob[1, 4], glob[1, 1])


@pytest.mark.parametrize("height", [1.5, 1.95])
def test_marker_shapes(height):
    s = sk.anthropometric_skeleton(height)
    R = np.tile(np.eye(3), (5, sk.N_JOINTS, 1, 1))
    glob, pos = sk.forward_kinematics(R, np.zeros((5, 3)), s.offsets_m)
    assert mk.marker_positions(glob, pos, s).shape == (5, mk.N_MARKERS, 3)
    assert mk.marker_offsets(s).shape == (mk.N_MARKERS, 3)
