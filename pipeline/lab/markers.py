"""Lab marker processing (pure numpy/scipy): gap filling, vertical-axis detection, rotation to z-up.

* **Gaps**: runs of NaN frames per marker. Interior gaps of at most ``max_gap`` frames (default 10) are
  filled by a cubic spline through all valid samples of that marker; longer gaps and gaps touching the
  start or end (no extrapolation) stay NaN and are reported (count, longest).
* **Vertical axis**: from the force plates when the file has any (the upward surface normal, −plate z,
  snapped to the nearest lab axis; C3D corners order makes plate z point down), else from the markers
  (the axis with the largest median per-frame spread of marker coordinates — a standing/walking person
  is taller than wide — with the sign that puts most marker samples above the lowest ones).
* **Rotation**: a proper rotation taking the detected up axis to +z; +y up uses dynaset's
  ``(x, y, z) -> (x, −z, y)`` (+90° about x, docs/conventions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

DEFAULT_MAX_GAP_FRAMES = 10

UP_ROTATIONS = {
    "z": np.eye(3),
    "y": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),  # +90° about x
    "x": np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),  # −90° about y
    "-z": np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]),  # 180° about x
    "-y": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),  # −90° about x
    "-x": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),  # +90° about y
}
"""Rotation R with R @ up = +z for each lab up axis."""


@dataclass(frozen=True)
class GapReport:
    filled: int  # interior gaps filled by spline
    unfilled: int  # gaps left NaN (too long, or at the start/end)
    longest_unfilled: int  # frames
    missing_after: int  # NaN frames left


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of True runs in a 1-D bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def longest_run(mask: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the longest run of True in a 1-D mask; (0, 0) when there is none."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    if not starts.size:
        return 0, 0
    i = int(np.argmax(stops - starts))
    return int(starts[i]), int(stops[i])


def fill_gaps(markers: np.ndarray, max_gap: int = DEFAULT_MAX_GAP_FRAMES) -> tuple[np.ndarray, list[GapReport]]:
    """Fill interior NaN gaps ≤ ``max_gap`` frames per marker by cubic spline; (filled copy, reports)."""
    x = np.array(markers, dtype=float, copy=True)
    t = np.arange(x.shape[0], dtype=float)
    reports = []
    for m in range(x.shape[1]):
        miss = ~np.isfinite(x[:, m]).all(axis=1)
        x[miss, m] = np.nan
        valid = ~miss
        runs = _runs(miss)
        filled = unfilled = longest = 0
        spline = None
        for a, b in runs:
            interior = a > 0 and b < x.shape[0]
            if interior and b - a <= max_gap and valid.sum() >= 2:
                if spline is None:
                    spline = CubicSpline(t[valid], x[valid, m], axis=0) if valid.sum() >= 4 else None
                if spline is not None:
                    x[a:b, m] = spline(t[a:b])
                else:
                    for k in range(3):
                        x[a:b, m, k] = np.interp(t[a:b], t[valid], x[valid, m, k])
                filled += 1
            else:
                unfilled += 1
                longest = max(longest, b - a)
        reports.append(GapReport(filled, unfilled, longest, int((~np.isfinite(x[:, m]).all(axis=1)).sum())))
    return x, reports


def _snap(v: np.ndarray) -> str | None:
    v = np.asarray(v, dtype=float)
    k = int(np.argmax(np.abs(v)))
    if abs(v[k]) < 0.9 * np.linalg.norm(v):
        return None
    return ("-" if v[k] < 0 else "") + "xyz"[k]


def up_axis_from_plates(up_normals: list[np.ndarray]) -> str | None:
    """Lab up axis from the plates' upward normals (they must agree), or None."""
    axes = {_snap(n) for n in up_normals}
    if len(axes) != 1 or None in axes:
        return None
    return axes.pop()


def up_axis_from_markers(markers: np.ndarray) -> str | None:
    """Lab up axis from marker positions (T, M, 3): largest per-frame spread, sign from the distribution."""
    x = np.asarray(markers, dtype=float)
    if x.shape[1] < 3 or not np.isfinite(x).any():
        return None
    with np.errstate(all="ignore"):
        spread = np.nanmedian(np.nanmax(x, axis=1) - np.nanmin(x, axis=1), axis=0)
    if not np.isfinite(spread).all():
        return None
    k = int(np.argmax(spread))
    c = x[..., k][np.isfinite(x[..., k])]
    lo, hi, med = np.percentile(c, 1), np.percentile(c, 99), np.median(c)
    # Most markers sit on the upper body: the median is nearer the top of the range when +k is up.
    sign = "" if (med - lo) >= (hi - med) else "-"
    return sign + "xyz"[k]


def detect_up_axis(markers: np.ndarray, plate_up_normals: list[np.ndarray]) -> tuple[str, str]:
    """(axis, method): plates first, then markers, else 'z' (assumed)."""
    axis = up_axis_from_plates(plate_up_normals) if plate_up_normals else None
    if axis is not None:
        return axis, "force_plates"
    axis = up_axis_from_markers(markers)
    if axis is not None:
        return axis, "markers"
    return "z", "assumed"


def to_z_up(v: np.ndarray, up: str) -> np.ndarray:
    """Rotate lab vectors/points (..., 3) so that ``up`` becomes +z."""
    if up not in UP_ROTATIONS:
        raise ValueError(f"unknown up axis {up!r}; one of {sorted(UP_ROTATIONS)}")
    return np.asarray(v, dtype=float) @ UP_ROTATIONS[up].T


def resample_markers(x: np.ndarray, src_rate_hz: float, t_s: np.ndarray) -> np.ndarray:
    """Not-a-knot cubic spline per contiguous valid run (linear for runs of 2–3 samples); NaN elsewhere."""
    x = np.asarray(x, dtype=float)
    ts = np.arange(x.shape[0]) / src_rate_hz
    out = np.full((len(t_s),) + x.shape[1:], np.nan)
    for m in range(x.shape[1]):
        valid = np.isfinite(x[:, m]).all(axis=1)
        for a, b in _runs(valid):
            if b - a < 2:
                continue
            sel = (t_s >= ts[a] - 1e-9) & (t_s <= ts[b - 1] + 1e-9)
            if not sel.any():
                continue
            tq = np.clip(t_s[sel], ts[a], ts[b - 1])
            if b - a >= 4:
                out[sel, m] = CubicSpline(ts[a:b], x[a:b, m], axis=0)(tq)
            else:
                out[sel, m] = np.stack([np.interp(tq, ts[a:b], x[a:b, m, k]) for k in range(3)], axis=1)
    return out
