"""Synthetic human-motion corpus written exactly in AMASS's npz format (``dynaset demo``).

Real AMASS data are licence-gated, so the demo generates procedural, kinematically plausible
motions and writes them as AMASS does, so the very same reader handles real and synthetic files:

* layout ``<root>/<dataset>/<subject>/<name>_poses.npz`` (dataset ``DynasetSynth``, subjects
  ``S01..S0n``) plus the dynaset ``subject.json`` sidecar (``height_m``, ``mass_kg``, ``gender``);
* SMPL-H files: ``poses`` (T, 156) = root 3 | SMPL joints 1..21 (63) | 30 hand joints (90, zero),
  ``trans`` (T, 3), ``betas`` (16,), ``gender`` (unicode), ``mocap_framerate``, ``dmpls`` (T, 8);
* SMPL-X files: ``poses`` (T, 165) = root 3 | body 63 | jaw 3 | eyes 6 | hands 90, with
  ``root_orient``, ``pose_body``, ``pose_hand``, ``pose_jaw``, ``pose_eye``, ``trans``, ``betas``
  (10 or 16), ``gender`` (bytes), ``mocap_frame_rate`` and ``surface_model_type`` = ``'smplx'``.

World frame z up (as AMASS). ``root_orient`` = R_z(heading + 90°) · R_x(+90°) · R_pelvis, which maps
the template's up (+y) to world +z and its facing direction (+z) to the walking direction
(cos heading, sin heading, 0). ``trans`` follows SMPL: world pelvis = ``trans + J0`` with ``J0`` the
(unrotated) template pelvis of ``skeleton.anthropometric_skeleton(height)``.

Motions (``DEFAULT_MOTIONS``; all procedural and deterministic per seed):

* ``walk`` at 0.8/1.2/1.6 m/s and ``run`` at 2.5/3.5 m/s: foot placement + analytic leg IK. Cadence
  from typical values (walk 94/108/120, run 160/170 steps/min at 1.70 m, scaled by
  sqrt(1.70 / height)), step length = speed / step frequency; heel strike with toes up, foot flat,
  heel rise onto the toe tip, swing with ≥ 2 cm toe clearance. The pelvis height makes the stance
  knee follow a loading profile (walk: ≈ 15–20° loading response, ≈ 60–65° swing peak emerges; run:
  20° at touch-down, ≈ 45–55° mid-stance, ≈ 90–100° swing, ballistic flight); walks from 1.2 m/s
  low-pass that height at 1.2 × the step frequency (``_smooth_below``: vertical pelvis acceleration
  ≤ 0.46 g, the floor force a walk needs 1.25–1.51 BW instead of 1.6–2.1). Pelvis rotation,
  obliquity and tilt, lateral sway, trunk counter-rotation and arm swing opposite to the legs.
* ``stand``: quiet standing, slow ankle/hip sway (≈ ±1 cm), breathing, head and arm motion.
* ``squat``: repetitions every 3.2 s, knee ≈ 100°, hip ≈ 107°, dorsiflexion ≈ 28°, feet flat.
* ``jump``: countermovement jumps every 3.2 s: dip (knee 90°), push-off onto the toes, ≈ 0.42 s
  flight, toe-first landing, recovery. The arms swing from −45° (50 ms before the push-off) to their
  top (120°) 50 ms before take-off and hold it through the flight (115°): no segment swings in flight,
  whose angular momentum nothing could change (before: 120° → 60° in flight, a whole-body angular
  momentum change of ≈ 15 N·m·s the simulated humanoid could not follow).

Ground contact. Per frame, forward kinematics gives the sole points relative to the pelvis; the
pelvis height puts the lowest sole point of the feet in contact on the floor, and its horizontal
motion holds that point in place from frame to frame, so a planted foot does not slide. Flight
phases follow a ballistic parabola (g = 9.81 m/s²). Each file's floor then sits at a constant
``floor_z_m`` (0.1–0.3 m), exercising the pipeline's ground alignment.

Measured residual foot sliding (default corpus; horizontal speed of sole points within 2 mm of the
floor in two consecutive frames): walking p99 ≈ 0.2 mm/s, max ≈ 6 mm/s; running p99 ≤ 6 mm/s,
max ≈ 90 mm/s (touch-down / take-off frames); standing, squats and jumps ≤ 1 mm/s. Known
limitation: at 3.5 m/s the swing knee briefly extends fully just before touch-down (IK reach clamp).

Joint conventions (template frame, right-handed x left / y up / z forward): hip and knee flexion
are rotations about +x; hip flexion = R_x(-θ) (leg swings to +z), knee flexion = R_x(+θ) (shank
backwards), ankle dorsiflexion = R_x(-θ) (toes up), trunk flexion = R_x(+θ) (forward lean).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import butter, filtfilt

from pipeline.skeleton import (
    Skeleton,
    anthropometric_skeleton,
    foot_point_offsets,
    forward_kinematics,
    sole_points,
)

G_MPS2 = 9.81
"""Gravitational acceleration for flight phases, m/s²."""

FRAME_RATES_HZ: tuple[float, ...] = (60.0, 100.0, 120.0, 250.0)
"""Source frame rates cycled through across files (file k gets ``FRAME_RATES_HZ[k % 4]``)."""

DEFAULT_DATASET = "DynasetSynth"

_POINT_FOOT = np.array([0, 0, 1, 1])  # sole point index → foot (0 left, 1 right)


@dataclass(frozen=True)
class MotionSpec:
    """One motion of the per-subject protocol.

    Attributes:
        kind: ``"walk"``, ``"run"``, ``"stand"``, ``"squat"`` or ``"jump"``.
        speed_mps: average horizontal speed for walk/run, m/s (0 otherwise).
    """

    kind: str
    speed_mps: float = 0.0

    @property
    def label(self) -> str:
        """File-name label, e.g. ``walk_1p2`` or ``squat``."""
        if self.kind in ("walk", "run"):
            return f"{self.kind}_{self.speed_mps:.1f}".replace(".", "p")
        return self.kind


DEFAULT_MOTIONS: tuple[MotionSpec, ...] = (
    MotionSpec("walk", 0.8), MotionSpec("walk", 1.2), MotionSpec("walk", 1.6),
    MotionSpec("run", 2.5), MotionSpec("run", 3.5),
    MotionSpec("stand"), MotionSpec("squat"), MotionSpec("jump"),
)
"""The 8-motion protocol every subject performs once per trial round."""


@dataclass(frozen=True)
class SubjectSpec:
    """A synthetic subject: ``height_m`` 1.55–1.95 m, ``mass_kg`` from BMI 19–28, betas (16,) |β| < 1.5."""

    subject_id: str
    height_m: float
    mass_kg: float
    gender: str
    betas: tuple[float, ...]


@dataclass(frozen=True)
class SequenceSpec:
    """Everything that determines one file (ground truth for tests).

    Attributes:
        rel_path: path relative to the corpus root, POSIX separators.
        subject: the performing subject.
        motion: motion kind and speed.
        fps_hz: frame rate, Hz.
        n_frames: number of frames (duration = n_frames / fps_hz).
        layout: ``"smplh"`` or ``"smplx"``.
        n_betas: number of betas written (16, or 10 for some SMPL-X files).
        floor_z_m: world height of the floor the feet touch, metres.
        heading_rad: walking/facing direction, angle from world +x about +z, radians.
        start_xy_m: (x, y) world pelvis position at frame 0, metres.
        seed: per-sequence random seed (phases, sway, small variations).
    """

    rel_path: str
    subject: SubjectSpec
    motion: MotionSpec
    fps_hz: float
    n_frames: int
    layout: str
    n_betas: int
    floor_z_m: float
    heading_rad: float
    start_xy_m: tuple[float, float]
    seed: int

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps_hz


@dataclass(frozen=True)
class SynthMotion:
    """A generated motion in SMPL parameters (z-up world).

    Attributes:
        root_orient_aa_rad: (T, 3) global pelvis rotation, axis-angle, rad.
        body_pose_aa_rad: (T, 21, 3) local rotations of SMPL joints 1..21, axis-angle, rad.
        trans_m: (T, 3) SMPL ``trans`` (world pelvis = trans + J0), metres.
        fps_hz: frame rate, Hz.
        cadence_spm: steps per minute for walk/run (0 otherwise).
    """

    root_orient_aa_rad: np.ndarray
    body_pose_aa_rad: np.ndarray
    trans_m: np.ndarray
    fps_hz: float
    cadence_spm: float = 0.0


# --- rotations -----------------------------------------------------------------------------------


def _rot(axis: int, angle_rad: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations about a coordinate axis (0 x, 1 y, 2 z) by ``angle_rad``."""
    a = np.asarray(angle_rad, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[..., axis, axis] = 1.0
    R[..., i, i] = c
    R[..., j, j] = c
    R[..., i, j] = -s
    R[..., j, i] = s
    return R


def aa_to_rotmat(aa: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices from (..., 3) axis-angle vectors (rad), Rodrigues' formula."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1)[..., None, None]
    small = theta < 1e-12
    k = aa / np.where(small[..., 0], 1.0, theta[..., 0])
    K = np.zeros(aa.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    R = np.eye(3) + np.sin(theta) * K + (1.0 - np.cos(theta)) * (K @ K)
    return np.where(small, np.eye(3), R)


def rotmat_to_aa(R: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle vectors (rad, angle in [0, π]) from (..., 3, 3) rotation matrices."""
    R = np.asarray(R, dtype=np.float64)
    # Quaternion (w, x, y, z) by Shepperd's method, robust for all angles.
    tr = np.trace(R, axis1=-2, axis2=-1)
    diag = np.stack([tr, R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]], axis=-1)
    best = np.argmax(diag, axis=-1)
    q = np.empty(R.shape[:-2] + (4,))
    m = best == 0
    s = np.sqrt(np.maximum(1.0 + tr[m], 1e-300)) * 2.0
    q[m] = np.stack([0.25 * s, (R[m][:, 2, 1] - R[m][:, 1, 2]) / s,
                     (R[m][:, 0, 2] - R[m][:, 2, 0]) / s, (R[m][:, 1, 0] - R[m][:, 0, 1]) / s], -1)
    for i in range(3):
        m = best == i + 1
        j, k = (i + 1) % 3, (i + 2) % 3
        Rm = R[m]
        s = np.sqrt(np.maximum(1.0 + Rm[:, i, i] - Rm[:, j, j] - Rm[:, k, k], 1e-300)) * 2.0
        qm = np.empty((Rm.shape[0], 4))
        qm[:, 0] = (Rm[:, k, j] - Rm[:, j, k]) / s
        qm[:, 1 + i] = 0.25 * s
        qm[:, 1 + j] = (Rm[:, j, i] + Rm[:, i, j]) / s
        qm[:, 1 + k] = (Rm[:, k, i] + Rm[:, i, k]) / s
        q[m] = qm
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    sin_half = np.linalg.norm(v, axis=-1)
    angle = 2.0 * np.arctan2(sin_half, q[..., 0])
    scale = np.where(sin_half > 1e-12, angle / np.where(sin_half > 1e-12, sin_half, 1.0), 2.0)
    return v * scale[..., None]


# --- angle channels ------------------------------------------------------------------------------

Channels = dict[str, np.ndarray]
"""Named joint-angle time series, degrees, each (T,). Missing channels are zero."""


def _smooth_keys(t: np.ndarray, times: list[float], values: list[float]) -> np.ndarray:
    """Piecewise smoothstep interpolation through keyframes (zero velocity at each key), (T,)."""
    times_a, values_a = np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64)
    idx = np.clip(np.searchsorted(times_a, t, side="right") - 1, 0, len(times_a) - 2)
    t0, t1 = times_a[idx], times_a[idx + 1]
    u = np.clip((t - t0) / np.maximum(t1 - t0, 1e-9), 0.0, 1.0)
    u = u * u * (3.0 - 2.0 * u)
    return values_a[idx] + (values_a[idx + 1] - values_a[idx]) * u


def _assemble(ch: Channels, n: int, heading_rad: float, foot_pitch_deg: np.ndarray | None = None) -> np.ndarray:
    """(T, 24, 3, 3) local joint rotations from angle channels (degrees).

    With ``foot_pitch_deg`` (T,) the ankles are solved so that both feet keep zero roll/yaw and that
    pitch (toes down positive, 0 = flat) relative to the heading frame; otherwise the ankle channels
    (dorsiflexion positive) are used.
    """

    def g(name: str) -> np.ndarray:
        return np.deg2rad(ch.get(name, np.zeros(n)))

    L = np.broadcast_to(np.eye(3), (n, 24, 3, 3)).copy()
    world = _rot(2, heading_rad + np.pi / 2) @ _rot(0, np.pi / 2)
    pelvis = _rot(1, g("pelvis_rot")) @ _rot(2, g("pelvis_list")) @ _rot(0, g("pelvis_tilt"))
    L[:, 0] = world @ pelvis
    frontal = g("hip_frontal")
    for side, (hip, knee, ankle, sh, elbow) in enumerate(((1, 4, 7, 16, 18), (2, 5, 8, 17, 19))):
        sfx, sign = ("_l", 1.0) if side == 0 else ("_r", -1.0)
        L[:, hip] = _rot(1, sign * g("hip_rot" + sfx)) @ _rot(2, frontal + sign * g("hip_abd" + sfx)) @ _rot(
            0, -g("hip_flex" + sfx))
        L[:, knee] = _rot(0, g("knee" + sfx))
        if foot_pitch_deg is None:
            L[:, ankle] = _rot(0, -g("ankle" + sfx))
        else:
            above = pelvis @ L[:, hip] @ L[:, knee]
            L[:, ankle] = np.swapaxes(above, -1, -2) @ _rot(0, np.deg2rad(foot_pitch_deg))
        down = np.pi / 2 - g("sh_abd" + sfx)
        L[:, sh] = _rot(0, -g("sh_flex" + sfx)) @ _rot(2, -sign * down)
        L[:, elbow] = _rot(1, -sign * g("elbow" + sfx))
    for j in (3, 6, 9):
        L[:, j] = _rot(1, g("spine_rot") / 3) @ _rot(2, g("spine_lat") / 3) @ _rot(0, g("spine_flex") / 3)
    L[:, 12] = _rot(1, g("neck_rot") / 2) @ _rot(2, g("neck_lat") / 2) @ _rot(0, g("neck_flex") / 2)
    L[:, 15] = L[:, 12]
    return L


# --- motions -------------------------------------------------------------------------------------

def _sway(t: np.ndarray, rng: np.random.Generator, amp: float, freqs: tuple[float, ...]) -> np.ndarray:
    """Quasi-random slow sway: sum of sinusoids with random phases, peak ≈ ``amp``, (T,)."""
    out = np.zeros_like(t)
    for f in freqs:
        out += np.sin(2 * np.pi * f * (1 + 0.2 * rng.uniform(-1, 1)) * t + rng.uniform(0, 2 * np.pi))
    return amp * out / len(freqs)


def _flat_foot_body(ch: Channels, u: np.ndarray, knee_deg: float, shank_deg: float, trunk_deg: float) -> None:
    """Sagittal closed-chain posture for feet flat on the floor at depth ``u`` ∈ [0, 1] (in place).

    Knee flexion ``knee_deg·u``, shank forward inclination ``shank_deg·u`` (= ankle dorsiflexion),
    pelvis/trunk forward tilt ``trunk_deg·u``; the hip flexion closes the chain:
    hip = tilt + knee − shank.
    """
    tilt = ch.get("pelvis_tilt", 0.0) + trunk_deg * u
    ch["pelvis_tilt"] = tilt
    for sfx in ("_l", "_r"):
        ch["knee" + sfx] = knee_deg * u
        ch["hip_flex" + sfx] = tilt + knee_deg * u - shank_deg * u


def _stand_channels(t: np.ndarray, rng: np.random.Generator) -> Channels:
    """Quiet standing: ankle/hip sway (≈ ±1 cm), breathing, trunk, arm and head motion; feet flat."""
    ch: Channels = {}
    ch["pelvis_tilt"] = _sway(t, rng, 1.2, (0.08, 0.21, 0.37))
    ch["hip_frontal"] = _sway(t, rng, 1.0, (0.07, 0.18, 0.31))
    hip = ch["pelvis_tilt"] - 1.0 + _sway(t, rng, 0.6, (0.11, 0.23))
    knee = 2.0 + _sway(t, rng, 1.0, (0.09, 0.19))
    for sfx in ("_l", "_r"):  # both legs alike: with both feet flat the chain stays closed
        ch["hip_flex" + sfx] = hip
        ch["knee" + sfx] = knee
        ch["sh_abd" + sfx] = 6.0 + _sway(t, rng, 1.5, (0.1, 0.27))
        ch["sh_flex" + sfx] = 2.0 + _sway(t, rng, 3.0, (0.06, 0.15))
        ch["elbow" + sfx] = 10.0 + _sway(t, rng, 4.0, (0.08, 0.2))
    ch["spine_flex"] = _sway(t, rng, 2.0, (0.25, 0.3))  # breathing
    ch["spine_rot"] = _sway(t, rng, 4.0, (0.05, 0.13))
    ch["neck_flex"] = _sway(t, rng, 6.0, (0.05, 0.12, 0.4))
    ch["neck_rot"] = _sway(t, rng, 10.0, (0.04, 0.09))
    return ch


_SQUAT_CYCLE_S = 3.2


def _squat_channels(t: np.ndarray, rng: np.random.Generator, t_end: float) -> Channels:
    """Repeated squats: knee ≈ 100°, hip ≈ 107°, dorsiflexion ≈ 28°, feet flat, arms forward."""
    depth = rng.uniform(0.95, 1.05)
    u = np.zeros_like(t)
    for start in np.arange(0.5, t_end - 2.9 + 1e-9, _SQUAT_CYCLE_S):  # every repetition ends ≥ 0.2 s before t_end
        u = np.maximum(u, _smooth_keys(t, [start, start + 1.2, start + 1.5, start + 2.7],
                                       [0.0, 1.0, 1.0, 0.0]) * (t >= start) * (t <= start + 2.7))
    ch: Channels = {"pelvis_tilt": np.zeros_like(t)}
    _flat_foot_body(ch, u, 100.0 * depth, 28.0 * depth, 35.0)
    for sfx in ("_l", "_r"):
        ch["sh_flex" + sfx] = 85.0 * u
        ch["sh_abd" + sfx] = 6.0 + 4.0 * u
        ch["elbow" + sfx] = 10.0 - 5.0 * u
    ch["hip_frontal"] = _sway(t, rng, 0.6, (0.1, 0.23))
    ch["spine_flex"] = -12.0 * u
    ch["neck_flex"] = -15.0 * u
    return ch


_JUMP_CYCLE_S = 3.2
_JUMP_FLIGHT_S = 0.42


def _jump_windows(t_end: float) -> list[float]:
    """Start times (s) of the countermovement jumps that end (2.6 s each) ≥ 0.2 s before ``t_end``."""
    return [float(s) for s in np.arange(0.6, t_end - 2.8 + 1e-9, _JUMP_CYCLE_S)]


def _jump_channels(t: np.ndarray, rng: np.random.Generator, t_end: float
                   ) -> tuple[Channels, np.ndarray, np.ndarray]:
    """Countermovement jumps (stand, dip, push-off, flight ≈ 0.42 s, landing, recovery).

    Returns channels, foot pitch (deg, toes down positive) and a (T,) flight mask.
    """
    u = np.zeros_like(t)
    pitch = np.zeros_like(t)
    arms = np.zeros_like(t)
    flight = np.zeros(t.shape, dtype=bool)
    for s in _jump_windows(t_end):
        t_dip, t_push, t_to = s, s + 0.45, s + 0.73
        t_land = t_to + _JUMP_FLIGHT_S
        seg = (t >= t_dip) & (t < t_dip + 2.6)
        uu = np.zeros_like(t)
        m = (t >= t_dip) & (t < t_push)
        uu[m] = _smooth_keys(t[m], [t_dip, t_push], [0.0, 1.0])
        m = (t >= t_push) & (t < t_to)
        uu[m] = np.cos(0.5 * np.pi * (t[m] - t_push) / (t_to - t_push))  # fastest at take-off
        m = (t >= t_to) & (t < t_land)
        uu[m] = _smooth_keys(t[m], [t_to, t_land], [0.0, 0.12])
        m = (t >= t_land) & (t < t_dip + 2.6)
        uu[m] = _smooth_keys(t[m], [t_land, t_land + 0.3, t_land + 0.9, t_dip + 2.6], [0.12, 0.6, 0.0, 0.0])
        u = np.where(seg, uu, u)
        p = _smooth_keys(t, [t_push + 0.12, t_to, t_land, t_land + 0.1], [0.0, 32.0, 22.0, 0.0])
        pitch = np.where(seg & (t >= t_push), p, pitch)
        # the arms swing back in the dip, forward-up through the push-off, and reach their top
        # before take-off: the whole body leaves the floor with little angular momentum and, no
        # segment swinging in flight, keeps it (flight cannot change it)
        a = _smooth_keys(t, [t_dip, t_push - 0.05, t_to - 0.05, t_land, t_land + 0.4, t_dip + 2.6],
                         [0.0, -45.0, 120.0, 115.0, 20.0, 0.0])
        arms = np.where(seg, a, arms)
        flight |= (t >= t_to) & (t < t_land)
    ch: Channels = {"pelvis_tilt": np.zeros_like(t)}
    _flat_foot_body(ch, u, 90.0, 30.0, 40.0)
    for sfx in ("_l", "_r"):
        ch["sh_flex" + sfx] = arms
        ch["sh_abd" + sfx] = np.full_like(t, 8.0)
        ch["elbow" + sfx] = 15.0 + 0.1 * np.abs(arms)
    ch["spine_flex"] = -8.0 * u
    ch["neck_flex"] = -12.0 * u
    ch["hip_frontal"] = _sway(t, rng, 0.4, (0.1, 0.23))
    return ch, pitch, flight


# --- root placement ------------------------------------------------------------------------------


def _place_root(
    L: np.ndarray, contact: np.ndarray, flight_vel_xy: np.ndarray, skel: Skeleton, fps: float
) -> np.ndarray:
    """(T, 3) world pelvis positions (floor at z = 0, start at x = y = 0), metres.

    Args:
        L: (T, 24, 3, 3) local rotations, joint 0 global.
        contact: (T, 2) bool, left/right foot allowed to bear weight.
        flight_vel_xy: (T, 2) horizontal pelvis velocity when no foot is in contact, m/s.
        skel: rest skeleton.
        fps: frame rate, Hz.

    In contact, the lowest sole point of the contact feet is put on the floor, and the lowest
    point of a foot in contact in two consecutive frames is held in place between them; in flight
    the height follows a ballistic parabola between the bounding contact frames and the pelvis
    moves at ``flight_vel_xy``. No sole point ever goes below the floor.
    """
    n = L.shape[0]
    glob, pos = forward_kinematics(L, np.zeros((n, 3)), skel.offsets_m)
    soles = sole_points(glob, pos, skel)  # relative to the pelvis
    z = soles[..., 2]
    cand = contact[:, _POINT_FOOT]
    any_c = cand.any(axis=1)
    k = np.argmin(np.where(cand, z, np.inf), axis=1)
    rows = np.arange(n)
    pelvis = np.zeros((n, 3))
    pz = _ballistic_fill(np.where(any_c, -z[rows, k], np.nan), any_c, fps)
    pelvis[:, 2] = np.maximum(pz, -z.min(axis=1))
    # horizontal: hold the lowest point of a foot that is in contact in both frames in place;
    # from take-off to touch-down move at the flight velocity
    stay = cand[:-1] & cand[1:]
    ks = np.argmin(np.where(stay, z[:-1], np.inf), axis=1)
    step = -(soles[rows[1:], ks, :2] - soles[rows[:-1], ks, :2])
    step = np.where(stay.any(axis=1)[:, None], step, flight_vel_xy[:-1] / fps)
    pelvis[1:, :2] = np.cumsum(step, axis=0)
    return pelvis


# --- gaits: foot placement + leg IK -------------------------------------------------------------


@dataclass(frozen=True)
class _GaitParams:
    """Shape of a gait (walk or run) at one speed; angles in radians, phases as stride fractions.

    Attributes:
        kind: ``"walk"`` or ``"run"``.
        speed_mps: average speed, m/s.
        cadence_spm: steps per minute.
        stance: stance duration as a fraction of the stride (> 0.5 walk, < 0.5 run).
        strike_rad: foot angle at initial contact, toes up.
        toe_off_rad: foot angle at toe off, heel up.
        strike_ahead: heel-strike position ahead of the pelvis, as a fraction of step length.
        foot_flat: stance fraction of the stride at which the foot is flat after strike.
        heel_rise: stance fraction of the stride at which the heel starts to rise.
        knee_keys: (phase, wanted stance-knee flexion in degrees) keys that set the pelvis height
            (running: only the touch-down value is used).
        lift_m: swing-foot ankle arc height, metres.
        sway_m: lateral pelvis sway towards the stance foot (amplitude), metres.
        sag_m: running only: pelvis drop below its touch-down height at mid-stance, metres
            (spring-mass-like stance); walking uses ``knee_keys`` throughout stance.
    """

    kind: str
    speed_mps: float
    cadence_spm: float
    stance: float
    strike_rad: float
    toe_off_rad: float
    strike_ahead: float
    foot_flat: float
    heel_rise: float
    knee_keys: tuple[tuple[float, float], ...]
    lift_m: float
    sway_m: float
    sag_m: float


def _gait_params(kind: str, v: float, height_m: float) -> _GaitParams:
    """Speed-dependent gait parameters; cadence from typical values, scaled by sqrt(1.70 m / height)."""
    scale = np.sqrt(1.70 / height_m)
    if kind == "walk":
        cadence = float(np.interp(v, [0.8, 1.2, 1.6], [94.0, 108.0, 120.0])) * scale
        b = 0.62 - 0.05 * (v - 1.2)
        return _GaitParams(
            kind, v, cadence, stance=b, strike_rad=np.deg2rad(10.0 + 10.0 * v),
            toe_off_rad=np.deg2rad(30.0 + 10.0 * v), strike_ahead=0.45, foot_flat=0.08, heel_rise=0.35,
            knee_keys=((0.0, 4.0), (0.12, 12.0 + 4.0 * v), (0.35, 4.0), (0.45, 8.0), (b, 36.0)),
            lift_m=0.03 + 0.02 * v, sway_m=0.02, sag_m=0.0,
        )
    if kind == "run":
        cadence = float(np.interp(v, [2.5, 3.5, 5.0], [160.0, 170.0, 182.0])) * scale
        b = float(np.clip(0.505 - 0.05 * v, 0.28, 0.42))
        return _GaitParams(
            kind, v, cadence, stance=b, strike_rad=np.deg2rad(8.0), toe_off_rad=np.deg2rad(25.0 + 2.0 * v),
            strike_ahead=0.16, foot_flat=0.15 * b, heel_rise=0.5 * b, knee_keys=((0.0, 20.0),),
            lift_m=0.10 + 0.03 * v, sway_m=0.01, sag_m=0.02 + 0.005 * v,
        )
    raise ValueError(f"not a gait: {kind!r}")


def _upper_channels(phase: np.ndarray, p: _GaitParams, var: np.ndarray) -> Channels:
    """Pelvis, trunk, head and arm angles (deg) at gait phase (0 = left initial contact)."""
    v, w = p.speed_mps, 2 * np.pi * phase
    ch: Channels = {}
    if p.kind == "walk":
        ch["pelvis_rot"] = -(2.5 + 2.0 * v) * np.cos(w) * (0.9 + 0.2 * var[0])
        ch["pelvis_list"] = (1.5 + 1.5 * v) * np.sin(w + 2 * np.pi * 0.15)
        ch["pelvis_tilt"] = 2.0 + 1.5 * np.cos(2 * w)
        ch["spine_flex"] = np.full_like(phase, 1.0 + 1.5 * v + 2.0 * var[1])
        ch["spine_rot"] = -0.5 * ch["pelvis_rot"]
        arm, arm0 = (8.0 + 10.0 * v) * (0.85 + 0.3 * var[2]), 3.0
        elbow0, abd = 15.0 + 8.0 * v, 8.0
    else:
        ch["pelvis_rot"] = -6.0 * np.cos(w) * (0.9 + 0.2 * var[0])
        ch["pelvis_list"] = 5.0 * np.sin(w + 2 * np.pi * 0.1)
        ch["pelvis_tilt"] = 5.0 + 2.0 * np.cos(2 * w)
        ch["spine_flex"] = 5.0 + 2.0 * var[1] + 1.0 * np.cos(2 * w)
        ch["spine_rot"] = -0.8 * ch["pelvis_rot"]
        arm, arm0 = (25.0 + 5.0 * (v - 2.5)) * (0.85 + 0.3 * var[2]), -5.0
        elbow0, abd = 80.0, 12.0
    ch["spine_lat"] = -ch["pelvis_list"]
    ch["neck_flex"] = -ch["spine_flex"] - ch["pelvis_tilt"] + 3.0
    ch["neck_rot"] = -0.5 * ch["pelvis_rot"]
    ch["sh_flex_l"] = -arm * np.cos(w) + arm0  # left arm forward with the right leg
    ch["sh_flex_r"] = arm * np.cos(w) + arm0
    ch["sh_abd_l"] = ch["sh_abd_r"] = np.full_like(phase, abd)
    ch["elbow_l"] = elbow0 + 0.35 * ch["sh_flex_l"]
    ch["elbow_r"] = elbow0 + 0.35 * ch["sh_flex_r"]
    return ch


def _pelvis_rotation(ch: Channels, n: int) -> np.ndarray:
    """(T, 3, 3) pelvis rotation relative to the heading frame, as ``_assemble`` builds it."""
    g = {k: np.deg2rad(ch.get(k, np.zeros(n))) for k in ("pelvis_rot", "pelvis_list", "pelvis_tilt")}
    return _rot(1, g["pelvis_rot"]) @ _rot(2, g["pelvis_list"]) @ _rot(0, g["pelvis_tilt"])


def _leg_length(o_knee: np.ndarray, o_ankle: np.ndarray, knee_rad: np.ndarray) -> np.ndarray:
    """Hip–ankle distance (m) at knee flexion ``knee_rad`` for bone offsets (3,) hip→knee, knee→ankle."""
    return np.linalg.norm(o_knee + np.einsum("...ij,j->...i", _rot(0, knee_rad), o_ankle), axis=-1)


def _leg_ik(d: np.ndarray, o_knee: np.ndarray, o_ankle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analytic leg IK: hip rotation R_z(ab)·R_x(-flex) (T, 3, 3) and knee flexion (T,) rad.

    ``d`` (T, 3) is the wanted hip→ankle vector in the pelvis (template) frame; targets out of
    reach are clamped (straight or fully bent knee).
    """
    a = o_knee[1] * o_ankle[1] + o_knee[2] * o_ankle[2]
    b = o_knee[2] * o_ankle[1] - o_knee[1] * o_ankle[2]
    r, delta = np.hypot(a, b), np.arctan2(b, a)
    target = 0.5 * (np.sum(d * d, axis=-1) - o_knee @ o_knee - o_ankle @ o_ankle) - o_knee[0] * o_ankle[0]
    knee = np.maximum(delta + np.arccos(np.clip(target / r, -1.0, 1.0)), 0.0)
    u = o_knee + np.einsum("...ij,j->...i", _rot(0, knee), o_ankle)
    d = d * (np.linalg.norm(u, axis=-1) / np.linalg.norm(d, axis=-1))[:, None]
    uyz2 = u[:, 1] ** 2 + u[:, 2] ** 2
    wz = np.clip(d[:, 2], -np.sqrt(uyz2), np.sqrt(uyz2))
    wy = -np.sqrt(np.maximum(uyz2 - wz**2, 0.0))
    flex = -(np.arctan2(wz, wy) - np.arctan2(u[:, 2], u[:, 1]))
    ab = np.arctan2(d[:, 1], d[:, 0]) - np.arctan2(wy, u[:, 0])
    return _rot(2, ab) @ _rot(0, -flex), knee


def _pelvis_height_for(ankle: np.ndarray, hip_at_zero: np.ndarray, leg_m: np.ndarray) -> np.ndarray:
    """(T,) pelvis height putting the hip at distance ``leg_m`` above the ankle (heading frame, y up).

    ``hip_at_zero`` (T, 3) is the hip position with the pelvis at height 0; a target closer
    horizontally than ``leg_m`` is always reachable, a farther one gives the hip at ankle height.
    """
    d = hip_at_zero - ankle
    return ankle[:, 1] + np.sqrt(np.maximum(leg_m**2 - d[:, 0] ** 2 - d[:, 2] ** 2, 0.0)) - hip_at_zero[:, 1]


WALK_PELVIS_CUTOFF_STEPS = 1.2
"""A walk's pelvis height is low-passed at this × the step frequency (``_smooth_below``)."""
WALK_SMOOTH_FROM_MPS = 0.8
"""Walks faster than this get the smoothed pelvis height (fully from 0.4 m/s faster), m/s."""


def _smooth_below(z: np.ndarray, bound: np.ndarray, cutoff_hz: float, fps: float) -> np.ndarray:
    """(T,) ``z`` low-passed at ``cutoff_hz`` (zero-phase 2nd-order Butterworth) and lowered by its
    largest excess over ``bound`` (where finite, at least half the padding ``_PAD_S`` from the ends,
    past the filter's edge transients), so it stays reachable.

    A walking pelvis (and centre of mass) rises and falls about once per step, nearly sinusoidally:
    at 1.2–1.6 m/s its vertical acceleration, hence the vertical floor force, then stays within
    ≈ ±0.5 g (people: 0.6–1.3 BW). The lower envelope of the per-frame reach bounds alone dropped
    8 cm in 0.13 s at double support at 1.6 m/s (1.85 g: a near free fall, then ≈ 2 BW at loading
    response).
    """
    b, a = butter(2, min(cutoff_hz / (0.5 * fps), 0.95))
    out = filtfilt(b, a, z, padtype="even")
    finite = np.isfinite(bound)
    edge = int(round(0.5 * _PAD_S * fps))
    finite[:edge] = finite[len(z) - edge:] = False
    excess = float((out - bound)[finite].max()) if finite.any() else 0.0
    return out - max(excess, 0.0)


def _ballistic_fill(pz: np.ndarray, contact: np.ndarray, fps: float) -> np.ndarray:
    """(T,) heights with non-contact gaps replaced by parabolas (g = 9.81 m/s²) between contact frames."""
    pz = pz.copy()
    idx = np.flatnonzero(contact)
    if idx.size == 0:
        raise ValueError("a motion needs at least one contact frame")
    for g_ in np.flatnonzero(np.diff(idx) > 1):
        i0, i1 = idx[g_], idx[g_ + 1]
        tf = (i1 - i0) / fps
        v0 = (pz[i1] - pz[i0]) / tf + 0.5 * G_MPS2 * tf
        tau = np.arange(1, i1 - i0) / fps
        pz[i0 + 1:i1] = pz[i0] + v0 * tau - 0.5 * G_MPS2 * tau**2
    pz[: idx[0]] = pz[idx[0]]
    pz[idx[-1] + 1:] = pz[idx[-1]]
    return pz


def _gait_kinematics(p: _GaitParams, t: np.ndarray, phase0: float, heading: float, var: np.ndarray,
                     skel: Skeleton, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Local rotations (T, 24, 3, 3) and world pelvis positions (T, 3) of a walk or run.

    Foot placement + leg IK in the template-aligned heading frame (x left, y up, z forward): each
    foot strikes heel first with its toes up, rolls flat, rises onto the toe tip and swings to its
    next foothold (step length = speed / step frequency); the pelvis advances at constant speed and
    sways towards the stance foot. Its height lets the weight-bearing knee follow the wanted
    stance profile (walk: ≈ 17° loading response; run: ≈ 45° at mid-stance) and, when walking,
    the swing leg reach its path; running adds ballistic flight. Hips, knees, ankles follow by IK.
    """
    n = t.size
    step_hz = p.cadence_spm / 60.0
    S = p.speed_mps / step_hz  # step length
    b = p.stance
    phase = phase0 + 0.5 * step_hz * t
    ch = _upper_channels(phase, p, var)
    P = _pelvis_rotation(ch, n)
    off, rest, fpo = skel.offsets_m, skel.rest_joints_m, foot_point_offsets(skel)
    half_width = 0.035 * skel.height_m
    pelvis = np.zeros((n, 3))
    pelvis[:, 0] = p.sway_m * np.sin(2 * np.pi * (phase - 0.05))
    pelvis[:, 2] = 2.0 * S * (phase - phase0)
    L = _assemble(ch, n, heading)
    ankles, pitches, stances, knee_want, ankles_td = [], [], [], [], []
    for side, (ankle, foot) in enumerate(((7, 10), (8, 11))):
        heel_o = fpo[2 * side]
        toe_o = rest[foot] - rest[ankle] + fpo[2 * side + 1]
        foot_len = toe_o[2] - heel_o[2]
        x = half_width * (1.0 if side == 0 else -1.0)
        m = np.floor(phase - 0.5 * side)  # foothold index
        psi = phase - 0.5 * side - m  # phase within this foot's stride, 0 = initial contact
        heel_s = 2.0 * S * (m - phase0 + 0.5 * side) + p.strike_ahead * S  # heel position of foothold m

        def ankle_at(pitch: np.ndarray, heel_z: np.ndarray) -> np.ndarray:
            """Ankle position of a foot with pitch (toes down +) touching the floor at heel or toe tip."""
            R = _rot(0, pitch)
            zero = np.zeros_like(pitch)
            on_heel = np.stack([zero + x, zero, heel_z], -1) - R @ heel_o
            on_toe = np.stack([zero + x + toe_o[0], zero, heel_z + foot_len], -1) - R @ toe_o
            return np.where((pitch <= 0)[:, None], on_heel, on_toe)

        stance = psi < b
        pitch_st = _smooth_keys(psi, [0.0, p.foot_flat, p.heel_rise, 0.5 * (p.heel_rise + b), b],
                                [-p.strike_rad, 0.0, 0.0, 0.3 * p.toe_off_rad, p.toe_off_rad])
        a_st = ankle_at(pitch_st, heel_s)
        u = np.clip((psi - b) / (1.0 - b), 0.0, 1.0)
        a0 = ankle_at(np.full(n, p.toe_off_rad), heel_s)
        a1 = ankle_at(np.full(n, -p.strike_rad), heel_s + 2.0 * S)
        su = u * u * (3.0 - 2.0 * u)
        a_sw = a0 + (a1 - a0) * su[:, None]
        pitch_sw = _smooth_keys(u, [0.0, 0.35, 0.8, 1.0], [p.toe_off_rad, 0.7 * p.toe_off_rad, 0.0, -p.strike_rad])
        # lift the swing foot on an arc, and further wherever a sole point would come closer to the
        # floor than the clearance (2 cm at mid-swing, tapering to 0 at toe off and initial contact)
        R_sw = _rot(0, pitch_sw)
        sole_low = a_sw[:, 1] + np.minimum((R_sw @ heel_o)[:, 1], (R_sw @ toe_o)[:, 1])
        clearance = 0.02 * np.sin(np.pi * u) ** 0.5
        a_sw[:, 1] += np.maximum(p.lift_m * np.sin(np.pi * u**0.6), clearance - sole_low)
        ankles_td.append(ankle_at(np.full(n, -p.strike_rad), heel_s))
        ankles.append(np.where(stance[:, None], a_st, a_sw))
        pitches.append(np.where(stance, pitch_st, pitch_sw))
        stances.append(stance)
        want = _smooth_keys(psi, [k[0] for k in p.knee_keys], [k[1] for k in p.knee_keys])
        knee_want.append(np.deg2rad(np.where(stance, want, 4.0)))
    # pelvis height: the lowest that lets every stance leg reach its foot at its wanted knee angle
    # (and, walking, the swing leg reach its path with ≥ 4° knee flexion); then a smooth lower
    # envelope (walk) or ballistic flight between stance phases (run)
    height = np.full(n, np.inf)
    for side, (hip, knee, ankle) in enumerate(((1, 4, 7), (2, 5, 8))):
        hip0 = pelvis + P @ off[hip]
        bound = _pelvis_height_for(ankles[side], hip0, _leg_length(off[knee], off[ankle], knee_want[side]))
        if p.kind == "run":
            # spring-mass-like stance: touch-down height (landing pose at the wanted knee angle),
            # minus a sag, never above what the leg can reach with 5° knee flexion
            m = np.floor(phase - 0.5 * side)
            psi = phase - 0.5 * side - m
            phase_td = m + 0.5 * side
            P_td = _pelvis_rotation(_upper_channels(phase_td, p, var), n)
            pelvis_td = np.stack([p.sway_m * np.sin(2 * np.pi * (phase_td - 0.05)), np.zeros(n),
                                  2.0 * S * (phase_td - phase0)], axis=-1)
            hip_td = pelvis_td + P_td @ off[hip]
            ell_td = _leg_length(off[knee], off[ankle], np.deg2rad(p.knee_keys[0][1]))
            h_td = _pelvis_height_for(ankles_td[side], hip_td, ell_td)
            bound_reach = _pelvis_height_for(
                ankles[side], hip0, _leg_length(off[knee], off[ankle], np.deg2rad(5.0)))
            bound = np.minimum(h_td - p.sag_m * np.sin(np.pi * np.clip(psi / b, 0.0, 1.0)), bound_reach)
            bound = np.where(stances[side], bound, np.inf)
        height = np.minimum(height, bound)
    contact = np.stack(stances, axis=1)
    if p.kind == "walk":
        win = max(3, int(round(0.08 * fps / (0.5 * step_hz))))
        envelope = uniform_filter1d(minimum_filter1d(height, win, mode="nearest"), win, mode="nearest")
        # slow walks keep the envelope (≤ 0.55 g at 0.8 m/s; smoothing it would keep the trailing
        # thigh from extending behind the hip), faster ones blend to the smoothed height by 1.2 m/s
        w = float(np.clip((p.speed_mps - WALK_SMOOTH_FROM_MPS) / 0.4, 0.0, 1.0))
        smooth = _smooth_below(envelope, height, WALK_PELVIS_CUTOFF_STEPS * step_hz, fps) if w > 0 else envelope
        pelvis[:, 1] = envelope + w * (smooth - envelope)
    else:
        pelvis[:, 1] = _ballistic_fill(height, contact.any(axis=1), fps)
    for side, (hip, knee, ankle) in enumerate(((1, 4, 7), (2, 5, 8))):
        d = np.einsum("tji,tj->ti", P, ankles[side] - (pelvis + P @ off[hip]))
        R_hip, k = _leg_ik(d, off[knee], off[ankle])
        L[:, hip] = R_hip
        L[:, knee] = _rot(0, k)
        L[:, ankle] = np.swapaxes(P @ R_hip @ L[:, knee], -1, -2) @ _rot(0, pitches[side])
    direction = np.array([np.cos(heading), np.sin(heading)])
    return L, _place_root(L, contact, np.broadcast_to(p.speed_mps * direction, (n, 2)), skel, fps)


# --- sequences -----------------------------------------------------------------------------------

_PAD_S = 1.0


def synthesize(spec: SequenceSpec) -> SynthMotion:
    """Generate one sequence's SMPL parameters (deterministic in ``spec``)."""
    rng = np.random.default_rng(spec.seed)
    skel = anthropometric_skeleton(spec.subject.height_m)
    fps = spec.fps_hz
    kind, v = spec.motion.kind, spec.motion.speed_mps
    pad = int(round(_PAD_S * fps))
    t = (np.arange(spec.n_frames + 2 * pad) - pad) / fps
    n = t.size
    var = rng.uniform(-1.0, 1.0, size=4)
    cadence = 0.0
    if kind in ("walk", "run"):
        gait = _gait_params(kind, v, skel.height_m)
        cadence = gait.cadence_spm
        L, pelvis = _gait_kinematics(gait, t, float(rng.uniform(0, 1)), spec.heading_rad, var, skel, fps)
    else:
        pitch = np.zeros(n)
        flight = np.zeros(n, dtype=bool)
        if kind == "stand":
            ch = _stand_channels(t, rng)
        elif kind == "squat":
            ch = _squat_channels(t, rng, spec.duration_s)
        elif kind == "jump":
            ch, pitch, flight = _jump_channels(t, rng, spec.duration_s)
        else:
            raise ValueError(f"unknown motion kind {kind!r}")
        L = _assemble(ch, n, spec.heading_rad, foot_pitch_deg=pitch)
        contact = np.repeat(~flight[:, None], 2, axis=1)
        pelvis = _place_root(L, contact, np.zeros((n, 2)), skel, fps)
    L, pelvis = L[pad: pad + spec.n_frames], pelvis[pad: pad + spec.n_frames]
    pelvis = pelvis - [pelvis[0, 0], pelvis[0, 1], 0.0]
    pelvis += [spec.start_xy_m[0], spec.start_xy_m[1], spec.floor_z_m]
    trans = pelvis - skel.rest_joints_m[0]
    return SynthMotion(
        root_orient_aa_rad=rotmat_to_aa(L[:, 0]),
        body_pose_aa_rad=rotmat_to_aa(L[:, 1:22]),
        trans_m=trans,
        fps_hz=fps,
        cadence_spm=float(cadence),
    )


# --- corpus --------------------------------------------------------------------------------------


def make_subjects(n_subjects: int, seed: int = 0) -> list[SubjectSpec]:
    """Deterministic subjects ``S01..``: alternating gender, height 1.55–1.95 m, BMI 19–28."""
    out = []
    for i in range(n_subjects):
        rng = np.random.default_rng([seed, 1000 + i])
        gender = "female" if i % 2 else "male"
        height = rng.uniform(1.55, 1.80) if gender == "female" else rng.uniform(1.65, 1.95)
        bmi = rng.uniform(19.0, 28.0)
        betas = np.clip(rng.normal(0.0, 0.5, size=16), -1.4, 1.4)
        out.append(SubjectSpec(
            subject_id=f"S{i + 1:02d}", height_m=round(float(height), 3), mass_kg=round(float(bmi * height**2), 1),
            gender=gender, betas=tuple(float(b) for b in betas),
        ))
    return out


def plan_corpus(
    n_subjects: int = 4,
    hours: float | None = None,
    seed: int = 0,
    dataset: str = DEFAULT_DATASET,
    duration_s: tuple[float, float] = (4.0, 10.0),
    motions: tuple[MotionSpec, ...] = DEFAULT_MOTIONS,
) -> list[SequenceSpec]:
    """The files ``generate_corpus`` writes, with their ground truth (no I/O).

    One trial round is every subject performing every motion once (default 4 × 8 files, ≈ 3.7 min);
    with ``hours``, trial rounds (``_t01``, ``_t02``, ...) are planned file by file until the total
    duration first reaches ``hours`` (it then exceeds it by less than one file). File ``k`` (in plan
    order) gets frame rate ``FRAME_RATES_HZ[k % 4]``; every third file is written in SMPL-X layout.
    """
    if n_subjects < 1:
        raise ValueError("n_subjects must be >= 1")
    if hours is not None and not hours > 0:
        raise ValueError(f"hours must be positive, got {hours!r}")
    lo, hi = duration_s
    if not 0.5 < lo <= hi:
        raise ValueError(f"invalid duration range {duration_s!r}")
    subjects = make_subjects(n_subjects, seed)
    target_s = None if hours is None else float(hours) * 3600.0
    specs: list[SequenceSpec] = []
    total = 0.0
    trial = 0
    while True:
        trial += 1
        for subj_i, subj in enumerate(subjects):
            for mot_i, motion in enumerate(motions):
                k = len(specs)
                rng = np.random.default_rng([seed, subj_i, mot_i, trial])
                fps = FRAME_RATES_HZ[k % len(FRAME_RATES_HZ)]
                dur = float(rng.uniform(lo, hi))
                if motion.kind in ("squat", "jump"):
                    dur = max(dur, 4.4)  # room for at least one repetition
                n_frames = int(round(dur * fps))
                layout = "smplx" if k % 3 == 2 else "smplh"
                n_betas = 10 if layout == "smplx" and (k // 3) % 2 else 16
                name = f"{motion.label}_t{trial:02d}"
                specs.append(SequenceSpec(
                    rel_path=f"{dataset}/{subj.subject_id}/{name}_poses.npz", subject=subj, motion=motion,
                    fps_hz=fps, n_frames=n_frames, layout=layout, n_betas=n_betas,
                    floor_z_m=round(float(rng.uniform(0.1, 0.3)), 4),
                    heading_rad=float(rng.uniform(-np.pi, np.pi)),
                    start_xy_m=(float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2))),
                    seed=int(rng.integers(0, 2**31 - 1)),
                ))
                total += n_frames / fps
                if target_s is not None and total >= target_s:
                    return specs
        if target_s is None:
            return specs


def _npz_arrays(spec: SequenceSpec, motion: SynthMotion) -> dict[str, np.ndarray]:
    """The arrays of one AMASS file in the spec's layout (no object arrays)."""
    n = spec.n_frames
    betas = np.asarray(spec.subject.betas[: spec.n_betas], dtype=np.float64)
    body = motion.body_pose_aa_rad.reshape(n, 63)
    if spec.layout == "smplh":
        poses = np.concatenate([motion.root_orient_aa_rad, body, np.zeros((n, 90))], axis=1)
        return {
            "trans": motion.trans_m, "gender": np.array(spec.subject.gender), "mocap_framerate": np.array(spec.fps_hz),
            "betas": betas, "dmpls": np.zeros((n, 8)), "poses": poses,
        }
    jaw, eyes, hands = np.zeros((n, 3)), np.zeros((n, 6)), np.zeros((n, 90))
    poses = np.concatenate([motion.root_orient_aa_rad, body, jaw, eyes, hands], axis=1)
    return {
        "gender": np.array(spec.subject.gender.encode()), "surface_model_type": np.array("smplx"),
        "mocap_frame_rate": np.array(spec.fps_hz), "mocap_time_length": np.array(n / spec.fps_hz),
        "betas": betas, "num_betas": np.array(spec.n_betas), "trans": motion.trans_m, "poses": poses,
        "root_orient": motion.root_orient_aa_rad.copy(), "pose_body": body.copy(), "pose_hand": hands,
        "pose_jaw": jaw, "pose_eye": eyes,
    }


def write_sequence(root: Path, spec: SequenceSpec) -> Path:
    """Synthesize one sequence and write it (``np.savez``, deterministic bytes); returns its path."""
    path = Path(root) / spec.rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **_npz_arrays(spec, synthesize(spec)))
    return path


def write_subject_sidecar(folder: Path, subject: SubjectSpec) -> Path:
    """Write ``subject.json`` (height_m, mass_kg, gender) into a subject folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "subject.json"
    body = {"height_m": subject.height_m, "mass_kg": subject.mass_kg, "gender": subject.gender}
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


DEMO_LICENCE = "CC0-1.0 (synthetic demo data generated by dynaset)"
"""Licence line of the demo corpus (``LICENSE.txt`` at its root; stores record it as ``seq_licence``)."""


def write_licence(root: Path) -> Path:
    """Write ``LICENSE.txt`` (``DEMO_LICENCE``) at the corpus root."""
    path = Path(root) / "LICENSE.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEMO_LICENCE + "\n", encoding="utf-8")
    return path


def generate_corpus(
    root: Path,
    n_subjects: int = 4,
    hours: float | None = None,
    seed: int = 0,
    dataset: str = DEFAULT_DATASET,
    duration_s: tuple[float, float] = (4.0, 10.0),
    motions: tuple[MotionSpec, ...] = DEFAULT_MOTIONS,
) -> list[Path]:
    """Write a synthetic AMASS-format corpus under ``root`` (and its ``LICENSE.txt``); returns the
    npz paths in plan order.

    Same arguments → byte-identical files. See ``plan_corpus`` for what is generated.
    """
    root = Path(root)
    specs = plan_corpus(n_subjects, hours, seed, dataset, duration_s, motions)
    write_licence(root)
    for subj in {s.subject.subject_id: s.subject for s in specs}.values():
        write_subject_sidecar(root / dataset / subj.subject_id, subj)
    return [write_sequence(root, s) for s in specs]


# --- deliberately broken inputs ------------------------------------------------------------------

BAD_DATASET = "DynasetBad"


def write_bad_files(root: Path) -> dict[str, str]:
    """Write broken AMASS-like files under ``<root>/DynasetBad/B01``; {relative path: problem keyword}.

    * ``truncated_poses.npz``: the first 60 % of a valid file's bytes (keyword ``truncated``);
    * ``pickled_poses.npz``: ``gender`` and ``poses`` stored as pickled object arrays (``pickled``);
    * ``notrans_poses.npz``: no ``trans`` key (``trans``);
    * ``nan_poses.npz``: NaNs in ``poses`` (``NaN``);
    * ``nofps_poses.npz``: no ``mocap_framerate``/``mocap_frame_rate`` (``frame rate``).
    """
    root = Path(root)
    subj = make_subjects(1, seed=99)[0]
    subj = SubjectSpec("B01", subj.height_m, subj.mass_kg, subj.gender, subj.betas)
    folder = root / BAD_DATASET / subj.subject_id
    write_subject_sidecar(folder, subj)
    spec = SequenceSpec(
        rel_path="", subject=subj, motion=MotionSpec("walk", 1.2), fps_hz=60.0, n_frames=120, layout="smplh",
        n_betas=16, floor_z_m=0.0, heading_rad=0.0, start_xy_m=(0.0, 0.0), seed=7,
    )
    good = _npz_arrays(spec, synthesize(spec))
    rel = f"{BAD_DATASET}/{subj.subject_id}"
    out: dict[str, str] = {}

    buf_path = folder / "truncated_poses.npz"
    np.savez(buf_path, **good)
    data = buf_path.read_bytes()
    buf_path.write_bytes(data[: int(len(data) * 0.6)])
    out[f"{rel}/truncated_poses.npz"] = "truncated"

    pickled = dict(good)
    pickled["gender"] = np.array([subj.gender], dtype=object)
    pickled["poses"] = np.empty(1, dtype=object)
    pickled["poses"][0] = good["poses"]
    np.savez(folder / "pickled_poses.npz", allow_pickle=True, **pickled)
    out[f"{rel}/pickled_poses.npz"] = "pickled"

    np.savez(folder / "notrans_poses.npz", **{k: v for k, v in good.items() if k != "trans"})
    out[f"{rel}/notrans_poses.npz"] = "trans"

    nan = dict(good)
    nan["poses"] = good["poses"].copy()
    nan["poses"][10:15, 5] = np.nan
    np.savez(folder / "nan_poses.npz", **nan)
    out[f"{rel}/nan_poses.npz"] = "NaN"

    np.savez(folder / "nofps_poses.npz", **{k: v for k, v in good.items() if k != "mocap_framerate"})
    out[f"{rel}/nofps_poses.npz"] = "frame rate"
    return out
