"""The SMPL 24-joint kinematic tree, a built-in anthropometric rest skeleton and forward kinematics.

Frames
------
* **Template (body) frame**: SMPL's rest frame — y up, the body faces +z, the subject's left is +x.
  Rest joint positions and all body-fixed offsets (bones, virtual markers) are expressed in it.
* **World (canonical) frame**: z up, metres. A pose maps template → world by the root (pelvis)
  rotation, exactly as in SMPL/AMASS: ``p_world = R_root (p_template - J0) + J0 + trans``, so the
  world pelvis position is ``trans + J0`` (``J0`` is *not* rotated).

Joint rotations are local (relative to the parent joint's frame), root rotation is global.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
"""SMPL's 24 body joints in SMPL order (index = position in this tuple)."""

PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)
"""Parent joint index of each joint (-1 for the root)."""

N_JOINTS = 24

REFERENCE_HEIGHT_M = 1.70
"""Standing height (floor to vertex) that ``_REST_FRACTIONS`` describe, in metres."""

# Rest (T-pose) joint positions in the template frame as fractions of standing height H,
# x: subject's left, y: height above the floor (the sole plane), z: forward.
# Proportions follow SMPL's mean-shape rest joints; joint heights agree with Winter (2009,
# "Biomechanics and Motor Control of Human Movement", Fig. 4.1) to within ~2 % of H:
# hip 0.50 H (Winter: greater trochanter 0.53 H), knee 0.285 H, ankle 0.039 H, shoulder 0.815 H.
_REST_FRACTIONS = np.array(
    [
        [0.000, 0.555, 0.000],    # pelvis
        [0.041, 0.502, -0.003],   # left_hip
        [-0.041, 0.502, -0.003],  # right_hip
        [0.000, 0.620, -0.015],   # spine1
        [0.058, 0.285, -0.006],   # left_knee
        [-0.058, 0.285, -0.006],  # right_knee
        [0.000, 0.697, -0.015],   # spine2
        [0.052, 0.039, -0.032],   # left_ankle
        [-0.052, 0.039, -0.032],  # right_ankle
        [0.000, 0.727, 0.000],    # spine3
        [0.066, 0.012, 0.042],    # left_foot (ball of the foot, metatarsophalangeal joints)
        [-0.066, 0.012, 0.042],   # right_foot
        [0.000, 0.853, -0.025],   # neck
        [0.045, 0.810, -0.020],   # left_collar
        [-0.045, 0.810, -0.020],  # right_collar
        [0.000, 0.891, 0.005],    # head
        [0.102, 0.815, -0.026],   # left_shoulder
        [-0.102, 0.815, -0.026],  # right_shoulder
        [0.255, 0.809, -0.040],   # left_elbow
        [-0.255, 0.809, -0.040],  # right_elbow
        [0.402, 0.812, -0.041],   # left_wrist
        [-0.402, 0.812, -0.041],  # right_wrist
        [0.452, 0.808, -0.049],   # left_hand
        [-0.452, 0.808, -0.049],  # right_hand
    ],
    dtype=np.float64,
)

# SMPL's template origin sits ~0.13 H above the pelvis joint; J0 (pelvis in template coordinates)
# is therefore (0, -0.131 H, 0.016 H), as for SMPL's mean shape (-0.223 m at 1.70 m).
_PELVIS_TEMPLATE_FRACTION = np.array([0.0, -0.131, 0.016])

BONES: tuple[tuple[int, int], ...] = tuple((PARENTS[j], j) for j in range(1, N_JOINTS))
"""(parent, child) joint pairs; bone ``k`` ends at joint ``k + 1``. Their lengths are ``l_sub``."""

BONE_NAMES: tuple[str, ...] = tuple(f"{JOINT_NAMES[p]}-{JOINT_NAMES[c]}" for p, c in BONES)


@dataclass(frozen=True)
class Skeleton:
    """A subject's rest skeleton.

    Attributes:
        rest_joints_m: (24, 3) rest joint positions in the template frame, metres; row 0 is J0.
        height_m: standing height used to build it, metres.
        origin: how it was made: ``"anthropometric"`` or ``"smpl-model:<file name>"``.
    """

    rest_joints_m: np.ndarray
    height_m: float
    origin: str = "anthropometric"

    @property
    def offsets_m(self) -> np.ndarray:
        """(24, 3) joint offsets from the parent joint in the template frame (row 0: J0), metres."""
        return rest_offsets(self.rest_joints_m)

    @property
    def bone_lengths_m(self) -> np.ndarray:
        """(23,) bone lengths in ``BONES`` order (Zell et al.'s per-subject ``l_sub``), metres."""
        return np.linalg.norm(self.offsets_m[1:], axis=-1)

    @property
    def ankle_height_m(self) -> float:
        """Mean height of the ankle joints above the sole plane at rest, metres."""
        return float(self.height_m * _REST_FRACTIONS[[7, 8], 1].mean())


def anthropometric_skeleton(height_m: float) -> Skeleton:
    """Built-in SMPL-tree rest skeleton scaled uniformly to ``height_m`` (metres)."""
    if not np.isfinite(height_m) or not 0.5 < height_m < 2.6:
        raise ValueError(f"implausible subject height {height_m!r} m (expected 0.5–2.6 m)")
    pelvis_template = _PELVIS_TEMPLATE_FRACTION * height_m
    rest = _REST_FRACTIONS * height_m
    rest = rest - rest[0] + pelvis_template
    return Skeleton(rest_joints_m=rest, height_m=float(height_m), origin="anthropometric")


def rest_offsets(rest_joints: np.ndarray) -> np.ndarray:
    """(24, 3) offsets of each joint from its parent; row 0 is the root's position itself."""
    rest_joints = np.asarray(rest_joints, dtype=np.float64)
    offsets = rest_joints.copy()
    parents = np.asarray(PARENTS[1:])
    offsets[1:] = rest_joints[1:] - rest_joints[parents]
    return offsets


def forward_kinematics(
    local_rotmats: np.ndarray, root_pos: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Global joint rotations and positions.

    Args:
        local_rotmats: (T, 24, 3, 3) local joint rotations; joint 0 is the global root rotation.
        root_pos: (T, 3) world position of the root (pelvis) joint, metres.
        offsets: (24, 3) template-frame offsets from each parent (``Skeleton.offsets_m``), metres.

    Returns:
        global_rotmats (T, 24, 3, 3) mapping each joint's template-aligned frame to world, and
        positions (T, 24, 3) of every joint in the world frame, metres.
    """
    local_rotmats = np.asarray(local_rotmats, dtype=np.float64)
    n = local_rotmats.shape[0]
    glob = np.empty_like(local_rotmats)
    pos = np.empty((n, N_JOINTS, 3), dtype=np.float64)
    glob[:, 0] = local_rotmats[:, 0]
    pos[:, 0] = root_pos
    for j in range(1, N_JOINTS):
        p = PARENTS[j]
        glob[:, j] = glob[:, p] @ local_rotmats[:, j]
        pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
    return glob, pos


FOOT_POINT_NAMES: tuple[str, ...] = ("left_heel", "left_toe", "right_heel", "right_toe")
"""Body-fixed points on the soles, used for ground alignment and contact labels."""

FOOT_POINT_PARENTS: tuple[int, ...] = (7, 10, 8, 11)
"""Joint each sole point is attached to: heels to the ankles, toe tips to the foot (ball) joints."""


def foot_point_offsets(skeleton: Skeleton) -> np.ndarray:
    """(4, 3) template-frame offsets of the sole points from their parent joints, metres.

    At rest all four lie on the sole plane (the floor): heels 0.028 H behind the ankle and
    an ankle height below it; toe tips 0.045 H in front of the ball joint, on the floor.
    """
    rest = skeleton.rest_joints_m
    h = skeleton.height_m
    sole_y = rest[0, 1] - _REST_FRACTIONS[0, 1] * h  # floor level in template coordinates
    offsets = np.zeros((4, 3))
    for k, (parent, dz) in enumerate(zip(FOOT_POINT_PARENTS, (-0.028, 0.045, -0.028, 0.045))):
        offsets[k] = [0.0, sole_y - rest[parent, 1], dz * h]
    return offsets


def sole_points(global_rotmats: np.ndarray, joint_pos: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(T, 4, 3) world positions of the sole points from FK output, metres."""
    offs = foot_point_offsets(skeleton)
    parents = list(FOOT_POINT_PARENTS)
    return joint_pos[:, parents] + np.einsum("tkij,kj->tki", global_rotmats[:, parents], offs)
