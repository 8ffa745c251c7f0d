"""Forward kinematics of an MMM model driven by an MMM motion (pure numpy).

Conventions (Simox, the library MMM builds on):

* ``RootRotation`` (roll, pitch, yaw) in rad → ``R = Rz(yaw) · Ry(pitch) · Rx(roll)``
  (``VirtualRobot::MathTools::rpy2eigen4f``: fixed-axis x, then y, then z);
* ``RootPosition`` in mm is the world position of the model's root node frame;
* each node's global pose is ``G_parent · T_node · J_node(q)`` with ``J`` a rotation by ``q`` (rad) about
  the node's axis (revolute) or a translation by ``q`` (mm) along it (prismatic); joints a motion does
  not list stay at 0.

World frame of KIT motions: z up, the floor at z ≈ 0, mm. Outputs here are in metres.
"""

from __future__ import annotations

import numpy as np

from pipeline.sources.kit.mmm_model import MMMModel


def rpy_to_rotmat(rpy_rad: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation ``Rz(yaw) Ry(pitch) Rx(roll)`` from (..., 3) roll, pitch, yaw in rad (Simox)."""
    rpy = np.asarray(rpy_rad, dtype=np.float64)
    cr, sr = np.cos(rpy[..., 0]), np.sin(rpy[..., 0])
    cp, sp = np.cos(rpy[..., 1]), np.sin(rpy[..., 1])
    cy, sy = np.cos(rpy[..., 2]), np.sin(rpy[..., 2])
    m = np.empty(rpy.shape[:-1] + (3, 3))
    m[..., 0, 0] = cy * cp
    m[..., 0, 1] = cy * sp * sr - sy * cr
    m[..., 0, 2] = cy * sp * cr + sy * sr
    m[..., 1, 0] = sy * cp
    m[..., 1, 1] = sy * sp * sr + cy * cr
    m[..., 1, 2] = sy * sp * cr - cy * sr
    m[..., 2, 0] = -sp
    m[..., 2, 1] = cp * sr
    m[..., 2, 2] = cp * cr
    return m


def axis_rotmat(axis: np.ndarray, angle_rad: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations by ``angle_rad`` (T,) about the unit ``axis`` (3,) (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    t = np.asarray(angle_rad, dtype=np.float64)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    s, c = np.sin(t)[:, None, None], np.cos(t)[:, None, None]
    return np.eye(3)[None] + s * k[None] + (1.0 - c) * (k @ k)[None]


def forward_kinematics(model: MMMModel, root_pos_mm: np.ndarray, root_rpy_rad: np.ndarray,
                       joint_values: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Global node poses of ``model`` for every frame.

    Args:
        model: the (scaled) MMM model.
        root_pos_mm: (T, 3) ``RootPosition``, mm.
        root_rpy_rad: (T, 3) ``RootRotation`` roll, pitch, yaw, rad.
        joint_values: node name → (T,) joint value (rad for revolute, mm for prismatic); missing nodes are 0.

    Returns:
        rotations (T, N, 3, 3) node frame → world, and positions (T, N, 3) of the node origins in metres.
    """
    root_pos = np.asarray(root_pos_mm, dtype=np.float64)
    n = root_pos.shape[0]
    rot = np.empty((n, model.n_nodes, 3, 3))
    pos = np.empty((n, model.n_nodes, 3))
    base_r, base_p = rpy_to_rotmat(root_rpy_rad), root_pos
    for i in range(model.n_nodes):
        p = int(model.parents[i])
        pr, pp = (base_r, base_p) if p < 0 else (rot[:, p], pos[:, p])
        t = model.transforms_mm[i]
        r_i = pr @ t[:3, :3]
        p_i = pp + pr @ t[:3, 3]
        q = joint_values.get(model.names[i])
        if q is not None and model.kinds[i] == "revolute":
            r_i = r_i @ axis_rotmat(model.axes[i], q)
        elif q is not None and model.kinds[i] == "prismatic":
            p_i = p_i + (r_i @ model.axes[i]) * np.asarray(q, dtype=np.float64)[:, None]
        rot[:, i], pos[:, i] = r_i, p_i
    return rot, pos * 1e-3


def centre_of_mass(model: MMMModel, rot: np.ndarray, pos_m: np.ndarray) -> np.ndarray:
    """(T, 3) whole-body centre of mass in metres from FK output (segment CoMs in the node frames)."""
    w = model.mass_kg / max(float(model.mass_kg.sum()), 1e-12)
    com = pos_m + np.einsum("tnij,nj->tni", rot, model.com_mm * 1e-3)
    return np.einsum("n,tni->ti", w, com)
