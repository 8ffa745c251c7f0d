"""Canonicalize stage: resample to the canonical rate, z-up world, forward kinematics, ground at z = 0.

Pipeline for one ``RawMotion`` (all float64):

1. validate (≥ 2 frames, finite arrays, finite fps > 0, lasts ≥ one canonical frame interval);
2. source world → canonical world: z-up sources are used as is; y-up sources are rotated by
   +90° about x, ``(x, y, z) → (x, −z, y)``: x is kept, source up (+y) becomes +z and source
   +z becomes −y. The rotation is applied to the root rotation and the pelvis position;
3. resample from ``k / fps_src`` to ``k / fps_hz`` (``target_times``): joint rotations by slerp,
   the pelvis position (``trans + J0``) by a not-a-knot cubic spline (or linearly);
4. forward kinematics on the subject skeleton → joints, virtual markers, sole points;
5. shift z so the lowest sole point (or heel/toe marker) over the sequence is at z = 0.

Subject defaults: unknown height → ``CanonicalConfig.default_height_m[gender]`` (or the SMPL
mesh height when a model skeleton is used); unknown mass → ``default_bmi_kg_m2 × height²``
(BMI 23 kg/m² ≈ a typical adult).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline

from pipeline import markers as mk
from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.records import CanonicalMotion, RawMotion, SubjectInfo

GENDERS = ("male", "female", "neutral")

Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation (+90° about x) taking a y-up source world to the z-up canonical world."""

_GROUND_MARKERS = ("LHEE", "RHEE", "LTOE", "RTOE")


def _default_heights() -> dict[str, float]:
    return {"male": 1.75, "female": 1.62, "neutral": 1.70}


@dataclass(frozen=True)
class CanonicalConfig:
    """Settings of the canonicalize stage.

    Attributes:
        fps_hz: canonical frame rate, Hz.
        translation_interp: ``"cubic"`` (not-a-knot cubic spline) or ``"linear"``.
        default_height_m: standing height by gender when the subject's is unknown, metres.
        default_bmi_kg_m2: body-mass index used for unknown mass: ``mass = BMI × height²``, kg/m².
        smpl_model_dir: folder (or file) with SMPL-family ``.npz`` models; ``None`` uses the built-in
            anthropometric skeleton scaled to the subject's height.
    """

    fps_hz: float = 30.0
    translation_interp: str = "cubic"
    default_height_m: dict[str, float] = field(default_factory=_default_heights)
    default_bmi_kg_m2: float = 23.0
    smpl_model_dir: str | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.fps_hz) or self.fps_hz <= 0:
            raise ValueError(f"canonical fps_hz must be finite and > 0, got {self.fps_hz!r}")
        if self.translation_interp not in ("cubic", "linear"):
            raise ValueError(f"translation_interp must be 'cubic' or 'linear', got {self.translation_interp!r}")
        missing = [g for g in GENDERS if g not in self.default_height_m]
        if missing:
            raise ValueError(f"default_height_m lacks genders {missing}")
        if not np.isfinite(self.default_bmi_kg_m2) or self.default_bmi_kg_m2 <= 0:
            raise ValueError(f"default_bmi_kg_m2 must be > 0, got {self.default_bmi_kg_m2!r}")


def target_times(n_src: int, fps_src: float, fps_dst: float) -> np.ndarray:
    """(N,) canonical frame times ``k / fps_dst``, s, covering the source without extrapolating.

    ``N = floor((n_src − 1) / fps_src · fps_dst + 1e-9) + 1``; the source spans
    ``[0, (n_src − 1) / fps_src]`` s.
    """
    if int(n_src) < 1:
        raise ValueError(f"need at least one source frame, got {n_src}")
    for name, f in (("fps_src", fps_src), ("fps_dst", fps_dst)):
        if not np.isfinite(f) or f <= 0:
            raise ValueError(f"{name} must be finite and > 0, got {f!r}")
    n = int(np.floor((int(n_src) - 1) / float(fps_src) * float(fps_dst) + 1e-9)) + 1
    return np.arange(n, dtype=np.float64) / float(fps_dst)


def resample(
    times_src: np.ndarray,
    quats: np.ndarray,
    positions: np.ndarray,
    times_dst: np.ndarray,
    translation_interp: str = "cubic",
) -> tuple[np.ndarray, np.ndarray]:
    """Resample joint rotations by slerp and positions by spline/linear interpolation.

    Args:
        times_src: (T,) increasing source times, s.
        quats: (T, J, 4) joint quaternions (w, x, y, z).
        positions: (T, 3) positions, metres (the pelvis).
        times_dst: (N,) target times within the source span, s.
        translation_interp: ``"cubic"`` (not-a-knot) or ``"linear"``.

    Returns:
        (N, J, 4) unit quaternions and (N, 3) positions.
    """
    ts = np.asarray(times_src, dtype=np.float64)
    td = np.asarray(times_dst, dtype=np.float64)
    q_out = rot.resample_quats(ts, quats, td)
    td_c = np.clip(td, ts[0], ts[-1])  # resample_quats already rejected real extrapolation
    pos = np.asarray(positions, dtype=np.float64)
    if translation_interp == "cubic" and ts.shape[0] >= 3:
        p_out = CubicSpline(ts, pos, axis=0, bc_type="not-a-knot")(td_c)
    elif translation_interp in ("cubic", "linear"):
        idx = np.clip(np.searchsorted(ts, td_c, side="right") - 1, 0, ts.shape[0] - 2)
        u = ((td_c - ts[idx]) / (ts[idx + 1] - ts[idx]))[:, None]
        p_out = (1.0 - u) * pos[idx] + u * pos[idx + 1]
    else:
        raise ValueError(f"translation_interp must be 'cubic' or 'linear', got {translation_interp!r}")
    return q_out, p_out


def up_rotation(up_axis: str) -> np.ndarray:
    """(3, 3) rotation from the source world to the z-up canonical world (see module docstring)."""
    if up_axis == "z":
        return np.eye(3)
    if up_axis == "y":
        return Y_UP_TO_Z_UP.copy()
    raise ValueError(f"unknown up axis {up_axis!r} (expected 'z' or 'y')")


def _check_gender(gender: str) -> str:
    if gender not in GENDERS:
        raise ValueError(f"unknown gender {gender!r} (expected one of {GENDERS})")
    return gender


def subject_skeleton(subject: SubjectInfo, cfg: CanonicalConfig, model_type: str = "smpl") -> sk.Skeleton:
    """Rest skeleton of ``subject``: from the SMPL model files when ``cfg.smpl_model_dir`` is set
    (``betas``, ``gender``, ``model_type``), else the anthropometric skeleton scaled to the
    subject's height (or the gender default height)."""
    gender = _check_gender(subject.gender)
    if cfg.smpl_model_dir is not None:
        from pipeline import smpl_model

        return smpl_model.model_skeleton(cfg.smpl_model_dir, gender, np.asarray(subject.betas), model_type)
    height = subject.height_m if subject.height_m is not None else cfg.default_height_m[gender]
    return sk.anthropometric_skeleton(float(height))


def _validate(raw: RawMotion, cfg: CanonicalConfig) -> None:
    fps = raw.fps_hz
    if fps is None or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"source fps must be finite and > 0, got {fps!r}")
    n = raw.n_frames
    shapes = {
        "root_orient_aa_rad": (n, 3),
        "body_pose_aa_rad": (n, sk.N_JOINTS - 1, 3),
        "trans_m": (n, 3),
    }
    for name, shape in shapes.items():
        arr = np.asarray(getattr(raw, name))
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ValueError(f"{name} has {bad} non-finite values")
    if n < 2:
        raise ValueError(f"need at least 2 frames, got {n}")
    duration = (n - 1) / fps
    if target_times(n, fps, cfg.fps_hz).shape[0] < 2:
        raise ValueError(
            f"sequence lasts {duration:.4f} s, shorter than one canonical frame interval "
            f"({1.0 / cfg.fps_hz:.4f} s at {cfg.fps_hz} Hz)"
        )
    for name in ("height_m", "mass_kg"):
        v = getattr(raw.subject, name)
        if v is not None and (not np.isfinite(v) or v <= 0):
            raise ValueError(f"subject {name} must be finite and > 0, got {v!r}")
    betas = np.asarray(raw.subject.betas)
    if betas.size and not np.all(np.isfinite(betas)):
        raise ValueError(f"subject betas has {int(betas.size - np.count_nonzero(np.isfinite(betas)))} non-finite values")


def canonicalize(raw: RawMotion, cfg: CanonicalConfig) -> CanonicalMotion:
    """Canonical motion (z up, ground at z = 0, ``cfg.fps_hz``) from a source motion.

    Raises ``ValueError`` for fewer than 2 frames, non-finite values, bad fps, wrong array shapes,
    or a sequence shorter than one canonical frame interval.
    """
    _validate(raw, cfg)
    gender = _check_gender(raw.subject.gender)
    skel = subject_skeleton(raw.subject, cfg, model_type=raw.model_type)
    n = raw.n_frames
    fps_src = float(raw.fps_hz)

    # source → canonical world
    up = up_rotation(raw.up_axis)
    aa = np.concatenate(
        [np.asarray(raw.root_orient_aa_rad, np.float64)[:, None], np.asarray(raw.body_pose_aa_rad, np.float64)],
        axis=1,
    )  # (T, 24, 3)
    quats = rot.aa_to_quat(aa)
    quats[:, 0] = rot.quat_mul(rot.rotmat_to_quat(up), quats[:, 0])
    pelvis_src = np.asarray(raw.trans_m, np.float64) + skel.rest_joints_m[0]
    pelvis = pelvis_src @ up.T

    # resample
    t_src = np.arange(n, dtype=np.float64) / fps_src
    t_dst = target_times(n, fps_src, cfg.fps_hz)
    q_c, pelvis_c = resample(t_src, quats, pelvis, t_dst, cfg.translation_interp)

    # forward kinematics, markers, sole points
    local = rot.quat_to_rotmat(q_c)
    glob, joints = sk.forward_kinematics(local, pelvis_c, skel.offsets_m)
    markers = mk.marker_positions(glob, joints, skel)
    feet = sk.sole_points(glob, joints, skel)

    # ground alignment
    ground_idx = [mk.MARKER_NAMES.index(m) for m in _GROUND_MARKERS]
    lowest = min(float(feet[..., 2].min()), float(markers[:, ground_idx, 2].min()))
    shift = -lowest
    dz = np.array([0.0, 0.0, shift])
    pelvis_c = pelvis_c + dz
    joints = joints + dz
    markers = markers + dz
    feet = feet + dz

    height = float(raw.subject.height_m) if raw.subject.height_m is not None else float(skel.height_m)
    mass = (
        float(raw.subject.mass_kg)
        if raw.subject.mass_kg is not None
        else float(cfg.default_bmi_kg_m2 * height**2)
    )
    return CanonicalMotion(
        provenance=raw.provenance,
        gender=gender,
        height_m=height,
        mass_kg=mass,
        betas=np.asarray(raw.subject.betas, dtype=np.float64).copy(),
        fps_hz=float(cfg.fps_hz),
        source_fps_hz=fps_src,
        time_s=t_dst,
        root_pos_m=pelvis_c,
        joint_rot_aa_rad=rot.quat_to_aa(q_c),
        joint_pos_m=joints,
        marker_pos_m=markers,
        foot_points_m=feet,
        bone_length_m=skel.bone_lengths_m,
        ground_offset_m=shift,
        skeleton_origin=skel.origin,
    )
