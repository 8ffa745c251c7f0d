"""The canonical SMPL skeleton fitted to MMM joint centres (pure numpy; the marker IK's solver).

The MMM and SMPL skeletons differ in proportions (MMM hips 0.530 H high and 0.052 H apart, SMPL's 0.502 H
and 0.041 H; MMM upper arm 0.188 H, SMPL's 0.153 H ...), so MMM joint centres are *targets* attached to
SMPL joints with body-fixed offsets, exactly like lab markers in ``pipeline.lab.marker_ik``:

* each target is an MMM node position (``TARGETS``) attached to the SMPL joint whose rotation carries it;
* its initial offset (template frame, y up, +z forward, +x left) is the difference of the two skeletons'
  rest positions (``"rest"``: pelvis, hips, spine, neck, head, clavicles, shoulders — both rest poses are
  upright there), the SMPL bone's direction times the MMM segment length (``"bone"``: knee, ankle, elbow,
  wrist, hand end — SMPL's rest pose is a T-pose, MMM's has the arms down), or the MMM rest vector from the
  MMM joint matching the SMPL parent (``"anchored"``: sole and toe points from the ankle — SMPL's ankle sits
  0.032 H behind MMM's, which would otherwise lengthen the foot and pitch it);
* the solver is ``pipeline.lab.marker_ik``'s Levenberg–Marquardt (``solve_from_far``/``solve_poses``, regularised
  towards its neutral pose), the height is known (the motion's ``ModelProcessorConfig``), the offsets are
  calibrated on up to ``IKConfig.calib_frames`` frames as for markers (median in the parent frame, moved at
  most ``max_offset_shift_m``), then every frame is solved from the calibration poses, outliers re-solved
  from a neighbour (``marker_ik._repair``), and pose flips between equally good solutions removed
  (``continuity_repair``).

Result: ``IKResult`` with per-frame RMSE over the targets (m) and per-target residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.lab import marker_ik as ik
from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.sources.kit import fk
from pipeline.sources.kit.mmm_model import MMMModel


@dataclass(frozen=True)
class JointTarget:
    """One MMM joint centre as an IK target.

    Attributes:
        name: target name (stored with the residuals).
        nodes: MMM node names, first present in the model wins.
        parent: SMPL joint carrying the target.
        mode: ``"rest"`` or ``"bone"`` (module docstring).
        bone_child: SMPL joint giving the bone direction (``"bone"`` mode).
        mmm_from: MMM node the segment starts at (``"bone"`` mode: length = |node − mmm_from| at rest;
            ``"anchored"`` mode: the MMM node at the SMPL parent joint, offset = MMM rest node − mmm_from).
    """

    name: str
    nodes: tuple[str, ...]
    parent: int
    mode: str = "rest"
    bone_child: int = -1
    mmm_from: str = ""


def _sided(side: str) -> list[JointTarget]:
    s = "left" if side == "L" else "right"
    j = {n: sk.JOINT_NAMES.index(f"{s}_{n}") for n in ("hip", "knee", "ankle", "foot", "collar", "shoulder",
                                                         "elbow", "wrist", "hand")}
    foot = "LeftFootHeight_joint" if side == "L" else "RightFootHeight_joint"
    hand = "LeftHandSegment_joint" if side == "L" else "RightHandSegment_joint"
    return [
        JointTarget(f"{side}HIP", (f"{side}Hx_joint",), 0),
        JointTarget(f"{side}KNEE", (f"{side}Kx_joint",), j["hip"], "bone", j["knee"], f"{side}Hx_joint"),
        JointTarget(f"{side}ANKLE", (f"{side}Ax_joint",), j["knee"], "bone", j["ankle"], f"{side}Kx_joint"),
        JointTarget(f"{side}SOLE", (foot,), j["ankle"], "anchored", -1, f"{side}Ax_joint"),
        JointTarget(f"{side}TOE", (f"{side}Fx_joint",), j["ankle"], "anchored", -1, f"{side}Ax_joint"),
        JointTarget(f"{side}CLAV", (f"{side}SCx_joint",), sk.JOINT_NAMES.index("spine3")),
        JointTarget(f"{side}SHOULDER", (f"{side}Sx_joint",), j["collar"]),
        JointTarget(f"{side}ELBOW", (f"{side}Ex_joint",), j["shoulder"], "bone", j["elbow"], f"{side}Sx_joint"),
        JointTarget(f"{side}WRIST", (f"{side}Wx_joint",), j["elbow"], "bone", j["wrist"], f"{side}Ex_joint"),
        JointTarget(f"{side}HAND", (hand,), j["wrist"], "bone", j["hand"], f"{side}Wx_joint"),
    ]


TARGETS: tuple[JointTarget, ...] = (
    JointTarget("ROOT", ("root_joint",), 0),
    JointTarget("LUMBAR", ("BPx_joint",), 0),
    JointTarget("THORAX", ("BTx_joint",), sk.JOINT_NAMES.index("spine1")),
    JointTarget("STERNUM", ("collarSegment_joint",), sk.JOINT_NAMES.index("spine3")),
    JointTarget("LOWNECK", ("BLNx_joint",), sk.JOINT_NAMES.index("spine3")),
    JointTarget("UPNECK", ("BUNx_joint",), sk.JOINT_NAMES.index("neck")),
    JointTarget("HEADTOP", ("HeadSegment_joint",), sk.JOINT_NAMES.index("head")),
    *_sided("L"),
    *_sided("R"),
)
"""MMM joint centres fitted, with the SMPL joint carrying each."""

MMM_TO_TEMPLATE = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
"""MMM model axes (x right, y forward, z up) → SMPL template axes (x left, y up, z forward)."""


def mmm_rest_positions(model: MMMModel) -> np.ndarray:
    """(N, 3) node positions of the scaled model at zero pose in the SMPL template axes, metres, with the
    sole plane (the lowest ``*FootHeight_joint``, else the lowest node) at y = 0."""
    rot_, pos = fk.forward_kinematics(model, np.zeros((1, 3)), np.zeros((1, 3)), {})
    p = pos[0] @ MMM_TO_TEMPLATE.T
    soles = [i for i, n in enumerate(model.names) if n.endswith("FootHeight_joint")]
    floor = float(p[soles, 1].min()) if soles else float(p[:, 1].min())
    p[:, 1] -= floor
    return p


def build_targets(model: MMMModel, height_m: float) -> tuple[ik.TargetSet, tuple[int, ...]]:
    """Targets present in ``model`` as a ``marker_ik.TargetSet`` (offsets / height, template frame) and the
    MMM node index of each; targets whose nodes the model lacks are left out."""
    rest_smpl = sk._REST_FRACTIONS * height_m  # template axes, sole plane at y = 0
    rest_mmm = mmm_rest_positions(model)
    names, parents, offs, nodes = [], [], [], []
    for t in TARGETS:
        node = next((n for n in t.nodes if n in model.names), None)
        if node is None or (t.mode != "rest" and t.mmm_from not in model.names):
            continue
        i = model.index(node)
        if t.mode == "bone":
            d = rest_smpl[t.bone_child] - rest_smpl[t.parent]
            length = float(np.linalg.norm(rest_mmm[i] - rest_mmm[model.index(t.mmm_from)]))
            off = d / np.linalg.norm(d) * length
        elif t.mode == "anchored":
            off = rest_mmm[i] - rest_mmm[model.index(t.mmm_from)]
        else:
            off = rest_mmm[i] - rest_smpl[t.parent]
        names.append(t.name)
        parents.append(t.parent)
        offs.append(off / height_m)
        nodes.append(i)
    k = len(names)
    ts = ik.TargetSet(names=tuple(names), parents=np.asarray(parents, dtype=int),
                      offset_frac=np.asarray(offs, dtype=np.float64).reshape(-1, 3),
                      indices=tuple((i,) for i in range(k)), labels=tuple((n,) for n in names),
                      wand=np.zeros(k, dtype=bool))
    return ts, tuple(nodes)


REQUIRED_TARGETS = ("ROOT", "LHIP", "RHIP", "LKNEE", "RKNEE", "LANKLE", "RANKLE")


MAX_JOINT_SPEED_RAD_S = 20.0
"""A joint turning faster than this between two frames is re-solved from the previous frame's pose
(``continuity_repair``)."""

CONTINUITY_TOL_M = 0.002
"""A re-solved frame is kept when its RMSE is at most this much worse than the frame's own solution, m."""


def _frame_jump(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T,) largest rotation angle over joints between local rotations a and b (T, 24, 3, 3), rad."""
    rel = np.einsum("tjki,tjkl->tjil", a, b)
    cos = np.clip((np.einsum("tjii->tj", rel) - 1.0) / 2.0, -1.0, 1.0)
    return np.arccos(cos).max(axis=1)


def continuity_repair(ts: ik.TargetSet, obs: np.ndarray, w: np.ndarray, skel: sk.Skeleton, offsets_m: np.ndarray,
                      local: np.ndarray, root: np.ndarray, cfg: ik.IKConfig, fps_hz: float
                      ) -> tuple[np.ndarray, np.ndarray, int]:
    """Frames solved independently can land on either of two equally good poses where a joint centre is
    nearly on a rotation axis (a straight elbow: upper-arm twist vs elbow rotation). Walking forward, a frame
    whose joints turn faster than ``MAX_JOINT_SPEED_RAD_S`` from the previous frame is re-solved from the
    previous frame's pose and the new pose kept if it fits within ``CONTINUITY_TOL_M``. Returns the poses and
    the number of frames changed."""
    local, root = local.copy(), root.copy()
    limit = MAX_JOINT_SPEED_RAD_S / fps_hz
    err = ik._frame_rmse(ts, obs, w, skel, offsets_m, local, root)
    changed = 0
    for t in range(1, local.shape[0]):
        if _frame_jump(local[t - 1: t], local[t: t + 1])[0] <= limit:
            continue
        l2, r2 = ik.solve_poses(ts, obs[t: t + 1], w[t: t + 1], skel, offsets_m, local[t - 1: t], root[t - 1: t],
                                cfg.iterations, cfg)
        e2 = ik._frame_rmse(ts, obs[t: t + 1], w[t: t + 1], skel, offsets_m, l2, r2)[0]
        if e2 <= err[t] + CONTINUITY_TOL_M and _frame_jump(local[t - 1: t], l2)[0] < _frame_jump(
                local[t - 1: t], local[t: t + 1])[0]:
            local[t], root[t], err[t] = l2[0], r2[0], e2
            changed += 1
    return local, root, changed


def fit_joint_centres(obs_m: np.ndarray, ts: ik.TargetSet, height_m: float, cfg: ik.IKConfig | None = None,
                      fps_hz: float | None = None) -> ik.IKResult:
    """Fit the anthropometric SMPL skeleton (``height_m``) to MMM joint centres ``obs_m`` (T, K, 3), z up, m,
    sampled at ``fps_hz`` (given: ``continuity_repair`` runs after the per-frame solve).

    ``ts`` from ``build_targets``; ``ValueError`` when the legs/pelvis targets are missing.
    """
    missing = [n for n in REQUIRED_TARGETS if n not in ts.names]
    if missing:
        raise ValueError(f"the model lacks the joint centres {', '.join(missing)} needed for the fit")
    cfg = cfg or ik.IKConfig()
    obs = np.asarray(obs_m, dtype=np.float64)
    n = obs.shape[0]
    w = np.isfinite(obs).all(axis=-1).astype(np.float64)
    skel = sk.anthropometric_skeleton(height_m)
    offsets = ts.offset_frac * height_m
    frames = np.arange(n)
    calib = np.unique(np.linspace(0, n - 1, min(cfg.calib_frames, n)).round().astype(int))
    oc, wc = obs[calib], w[calib]
    r0, root = ik.initial_root(ts, oc, wc, skel, offsets)
    local = np.broadcast_to(rot.aa_to_rotmat(ik.REST_POSE), (len(calib), sk.N_JOINTS, 3, 3)).copy()
    local[:, 0] = r0
    local, root = ik.solve_from_far(ts, oc, wc, skel, offsets, local, root, cfg)
    if cfg.calibrate_offsets:
        glob, joints = sk.forward_kinematics(local, root, skel.offsets_m)
        offsets = ik._calibrate_offsets(ts, oc, wc, glob, joints, ts.offset_frac * height_m, cfg)
        local, root = ik.solve_poses(ts, oc, wc, skel, offsets, local, root, cfg.refine_iterations, cfg)
    tc = calib.astype(np.float64)
    if len(calib) >= 2:
        local_f = rot.quat_to_rotmat(rot.resample_quats(tc, rot.rotmat_to_quat(local), frames.astype(np.float64)))
    else:
        local_f = np.repeat(local, n, 0)
    r0, root_f = ik.initial_root(ts, obs, w, skel, offsets)
    local_f[:, 0] = r0
    local_f, root_f = ik.solve_poses(ts, obs, w, skel, offsets, local_f, root_f, cfg.iterations, cfg)
    local_f, root_f = ik._repair(ts, obs, w, skel, offsets, local_f, root_f, cfg)
    if fps_hz is not None:
        local_f, root_f, _ = continuity_repair(ts, obs, w, skel, offsets, local_f, root_f, cfg, fps_hz)
    glob, joints = sk.forward_kinematics(local_f, root_f, skel.offsets_m)
    pred = ik.target_positions(glob, joints, ts.parents, offsets)
    res = np.where(w > 0, np.linalg.norm(pred - np.nan_to_num(obs), axis=-1), np.nan)
    with np.errstate(invalid="ignore"):
        rmse = np.sqrt(np.nanmean(res**2, axis=1))
    aa = rot.quat_to_aa(rot.rotmat_to_quat(local_f))
    return ik.IKResult(root_orient_aa_rad=aa[:, 0], body_pose_aa_rad=aa[:, 1:], root_pos_m=root_f,
                       height_m=float(height_m), targets=ts, offsets_m=offsets, rmse_m=rmse, residual_m=res,
                       solved=np.ones(n, dtype=bool))
