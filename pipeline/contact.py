"""Foot-ground contact labels from kinematics.

Each sole point (``skeleton.FOOT_POINT_NAMES``: left heel, left toe, right heel, right toe) is
labelled in contact or not per frame from its world trajectory (z up, ground at z = 0, metres):
a point *enters* contact when it is low AND slow, and *leaves* it when it is high OR fast. The
gap between the enter and leave thresholds (hysteresis) keeps a point hovering near a single
threshold from chattering. Afterwards, runs shorter than ``min_duration_frames`` are removed:
short no-contact gaps inside a contact are filled, then short contact blips are dropped.

The hysteresis is evaluated without a frame loop: enter and leave conditions are mutually
exclusive, so the state at frame t is the kind of the latest event (enter/leave) at or before
t, found with a running maximum of event indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from pipeline.skeleton import FOOT_POINT_NAMES

N_FOOT_POINTS = len(FOOT_POINT_NAMES)

# (left, right) × (heel, toe) column indices into FOOT_POINT_NAMES.
_FOOT_COLUMNS = np.array(
    [[FOOT_POINT_NAMES.index(f"{side}_{part}") for part in ("heel", "toe")] for side in ("left", "right")]
)


@dataclass(frozen=True)
class ContactConfig:
    """Thresholds of the contact detector (metres, m/s, frames).

    Sole points sit at z = 0 at rest and the canonical stage puts the lowest sole point on the
    ground, so heights are above the floor plane.

    Attributes:
        height_on_m: enter contact only below this height (0.03 m): covers soft-tissue and
            ground-alignment error of SMPL fits (~1–2 cm) and a toe/heel rolling on the floor,
            while a swing foot clears the floor by well over 3 cm soon after lift-off.
        height_off_m: leave contact above this height (0.05 m); the 2 cm band over
            ``height_on_m`` absorbs per-frame jitter and slow rolling of a loaded foot.
        speed_on_m_s: enter contact only below this horizontal speed (0.25 m/s ≈ 8 mm per
            frame at 30 FPS): a planted heel or toe moves < ~0.1 m/s (rolling, skin sliding),
            whereas a swing foot moves at 1–5 m/s; this also rejects a foot skimming the floor.
        speed_off_m_s: leave contact above this horizontal speed (0.45 m/s); the gap to
            ``speed_on_m_s`` tolerates pivoting/shuffling of a loaded foot and speed noise.
        min_duration_frames: contact and no-contact runs shorter than this are removed (2
            frames: a single-frame flicker is noise, while the shortest real contacts and
            flights — sprinting, ~0.08–0.1 s — last ≥ 3 frames at 30 FPS). Runs touching the
            start or end of the sequence are kept (their true length is unknown). 1 disables.
        speed_smooth_frames: centred moving-average length applied to the speed (1 = none,
            the default: AMASS/MoSh trajectories are already smooth and every extra frame of
            smoothing delays the detected contact onset; use 3–5 for raw marker data). Odd.
    """

    height_on_m: float = 0.03
    height_off_m: float = 0.05
    speed_on_m_s: float = 0.25
    speed_off_m_s: float = 0.45
    min_duration_frames: int = 2
    speed_smooth_frames: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.height_on_m <= self.height_off_m:
            raise ValueError(
                f"need 0 < height_on_m <= height_off_m, got {self.height_on_m!r}, {self.height_off_m!r}"
            )
        if not 0.0 < self.speed_on_m_s <= self.speed_off_m_s:
            raise ValueError(
                f"need 0 < speed_on_m_s <= speed_off_m_s, got {self.speed_on_m_s!r}, {self.speed_off_m_s!r}"
            )
        if int(self.min_duration_frames) != self.min_duration_frames or self.min_duration_frames < 1:
            raise ValueError(f"min_duration_frames must be an integer ≥ 1, got {self.min_duration_frames!r}")
        s = self.speed_smooth_frames
        if int(s) != s or s < 1 or s % 2 == 0:
            raise ValueError(f"speed_smooth_frames must be an odd integer ≥ 1, got {s!r}")


def horizontal_speed(points_m: np.ndarray, fps_hz: float, smooth_frames: int = 1) -> np.ndarray:
    """(T, K) horizontal (x, y) speed of each point, m/s, by central differences (``np.gradient``).

    One-sided differences at the ends; 0 for T = 1. ``smooth_frames`` > 1 applies a centred
    moving average (edges: nearest-value padding).
    """
    xy = np.asarray(points_m, dtype=np.float64)[..., :2]
    if xy.shape[0] < 2:
        return np.zeros(xy.shape[:-1])
    vel = np.gradient(xy, 1.0 / fps_hz, axis=0)
    speed = np.sqrt(np.sum(vel * vel, axis=-1))
    if smooth_frames > 1:
        speed = uniform_filter1d(speed, smooth_frames, axis=0, mode="nearest")
    return speed


def hysteresis(enter: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """(T, ...) bool state of a two-threshold switch, vectorized along the frame axis 0.

    The state turns on at frames where ``enter`` holds, off where ``leave`` holds, and otherwise
    keeps its previous value; it starts off. ``enter`` and ``leave`` must not both hold at a frame.
    """
    enter = np.asarray(enter, dtype=bool)
    leave = np.asarray(leave, dtype=bool)
    if np.any(enter & leave):
        raise ValueError("enter and leave conditions overlap")
    t = np.arange(enter.shape[0]).reshape((-1,) + (1,) * (enter.ndim - 1))
    last_event = np.maximum.accumulate(np.where(enter | leave, t, -1), axis=0)
    state = np.take_along_axis(enter, np.maximum(last_event, 0), axis=0)
    return state & (last_event >= 0)


def _flip_short_runs(labels: np.ndarray, value: bool, min_len: int) -> np.ndarray:
    """(T, K) copy of ``labels`` with interior runs of ``value`` shorter than ``min_len`` inverted.

    Runs touching frame 0 or T-1 are kept. Vectorized over all columns.
    """
    n, k = labels.shape
    if min_len <= 1 or n == 0:
        return labels.copy()
    m = (labels == value).T.astype(np.int8)                        # (K, T)
    edges = np.diff(np.pad(m, ((0, 0), (1, 1))), axis=1)           # (K, T+1)
    col_s, start = np.nonzero(edges == 1)                          # row-major: grouped by column
    _, stop = np.nonzero(edges == -1)                              # run is [start, stop)
    short = (stop - start < min_len) & (start > 0) & (stop < n)
    delta = np.zeros((k, n + 1), dtype=np.int32)
    np.add.at(delta, (col_s[short], start[short]), 1)
    np.add.at(delta, (col_s[short], stop[short]), -1)
    flip = np.cumsum(delta, axis=1)[:, :n].T > 0                   # (T, K)
    return labels ^ flip


def contact_labels(points_m: np.ndarray, fps_hz: float, cfg: ContactConfig = ContactConfig()) -> np.ndarray:
    """(T, 4) bool contact labels of the sole points.

    Args:
        points_m: (T, 4, 3) world sole-point positions (``FOOT_POINT_NAMES`` order), metres,
            z up, ground at z = 0 (``CanonicalMotion.foot_points_m``).
        fps_hz: frame rate, Hz.
        cfg: thresholds (``ContactConfig``).

    Returns:
        (T, 4) bool, True where the point is in contact with the ground. Frame 0 is in contact
        iff the enter condition holds there. A NaN position counts as no contact at its frame
        and, through the central difference, at the two neighbouring frames.
    """
    points_m = np.asarray(points_m, dtype=np.float64)
    if points_m.ndim != 3 or points_m.shape[1:] != (N_FOOT_POINTS, 3):
        raise ValueError(f"points_m must have shape (T, {N_FOOT_POINTS}, 3), got {points_m.shape}")
    if not fps_hz > 0:
        raise ValueError(f"fps_hz must be > 0, got {fps_hz!r}")
    z = points_m[..., 2]
    speed = horizontal_speed(points_m, fps_hz, cfg.speed_smooth_frames)
    enter = (z < cfg.height_on_m) & (speed < cfg.speed_on_m_s)
    leave = ~enter & ~((z <= cfg.height_off_m) & (speed <= cfg.speed_off_m_s))  # NaN → leave
    labels = hysteresis(enter, leave)
    labels = _flip_short_runs(labels, False, cfg.min_duration_frames)  # fill short gaps
    labels = _flip_short_runs(labels, True, cfg.min_duration_frames)   # drop short contacts
    return labels


def foot_contact(labels: np.ndarray) -> np.ndarray:
    """(T, 2) bool per-foot contact (left, right): heel or toe of that foot in contact.

    Args:
        labels: (T, 4) bool sole-point labels in ``FOOT_POINT_NAMES`` order.
    """
    labels = np.asarray(labels, dtype=bool)
    if labels.ndim != 2 or labels.shape[1] != N_FOOT_POINTS:
        raise ValueError(f"labels must have shape (T, {N_FOOT_POINTS}), got {labels.shape}")
    return labels[:, _FOOT_COLUMNS].any(axis=2)
