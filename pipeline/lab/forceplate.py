"""Force-platform math (pure numpy/scipy): calibration, baseline, wrench, COP, free moment, resampling.

Conventions (docs/c3d.md):

* **Plate frame** from ``FORCE_PLATFORM:CORNERS`` (C3D spec, as ezc3d/BTK): x = c1 - c2, y ~ c1 - c4
  (orthogonalized), z = x × y, which points *down into* the plate; the surface centre C is the mean of
  the four corners. ``FORCE_PLATFORM:ORIGIN`` is the vector r from the transducer origin O to C in the
  plate frame; its z is negative (O lies below the surface). Files written in the Vicon convention
  (positive z, c3d.org errata) have the whole vector negated, as ezc3d does.
* **Sign**: the plate channels of every sample file give, once rotated into the lab, the force the
  ground exerts on the subject (vertical component up during stance); that is what we report (GRF),
  identical to ezc3d's and OpenSim's ``R · channels``.
* **Units**: forces in N, moments in N·m, positions in m. Channel units come from ``ANALOG:UNITS``
  (``N``/``nt``; ``Nmm``/``ntmm``/``N.mm`` -> 1e-3, ``Nm``/``N.m`` -> 1); unknown unit strings fall back
  to N and N·(point unit), with a warning.
* **Baseline** (ezc3d does not zero): per plate, the trial is cut into windows of ``window_s``; the
  window with the smallest median |Fz| (ties: smallest spread) is the unloaded window, and each plate
  channel's median over it is subtracted — only if that median |Fz| is below ``max(max_unloaded_n,
  max_unloaded_frac × peak |Fz|)``; otherwise the plate is never unloaded and nothing is subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.signal import butter, filtfilt


DEFAULT_COP_THRESHOLD_N = 20.0
DEFAULT_CUTOFF_FRACTION_OF_FPS = 0.4
"""Default low-pass cut-off = 0.4 × target fps (12 Hz at 30 FPS): below the target Nyquist (15 Hz)."""
DEFAULT_FILTER_ORDER = 4

_FORCE_UNITS = {"n": 1.0, "nt": 1.0, "newton": 1.0, "newtons": 1.0, "kn": 1e3}
_MOMENT_UNITS = {"nmm": 1e-3, "ntmm": 1e-3, "n.mm": 1e-3, "n*mm": 1e-3, "n-mm": 1e-3, "n·mm": 1e-3,
                 "nm": 1.0, "n.m": 1.0, "n*m": 1.0, "n-m": 1.0, "n·m": 1.0, "ntm": 1.0,
                 "nmm/kg": None, "nm/kg": None}


@dataclass(frozen=True)
class PlateSpec:
    """One FORCE_PLATFORM entry as stored in the file (lab frame, point length units)."""

    index: int
    type: int
    channels: tuple[int, ...]  # 0-based analog channel indices, in the type's channel order
    corners: np.ndarray  # (4, 3) lab coordinates, POINT:UNITS
    origin: np.ndarray  # (3,) FORCE_PLATFORM:ORIGIN as stored (plate frame), POINT:UNITS
    cal_matrix: np.ndarray | None  # (n, n) for TYPE-4 (None otherwise)
    channel_units: tuple[str, ...]  # ANALOG:UNITS of its channels (e.g. N, Nmm)


class AnalogRecord(Protocol):
    """What ``compute_plate`` reads of a lab record (``pipeline.sources.c3d.reader.C3DRecord``)."""

    point_unit_to_m: float
    point_units: str
    analog: np.ndarray  # (n_channels, S) calibrated channels
    analog_rate_hz: float


class PlateError(ValueError):
    """A plate that cannot be computed (bad geometry, units); the reader wraps it in SourceError."""


@dataclass(frozen=True)
class PlateGeometry:
    rotation: np.ndarray  # (3, 3) columns = plate x, y, z axes in the lab
    centre_m: np.ndarray  # (3,) lab position of the surface centre C
    origin_m: np.ndarray  # (3,) lab position of the transducer origin O
    r_plate_m: np.ndarray  # (3,) r = C - O in the plate frame (z <= 0)
    up: np.ndarray  # (3,) unit upward normal of the surface in the lab (= -plate z)


@dataclass(frozen=True)
class PlateWrench:
    """One plate's ground reaction at the analog rate (lab frame, SI)."""

    force_n: np.ndarray  # (S, 3)
    moment_origin_nm: np.ndarray  # (S, 3) about the transducer origin O
    moment_centre_nm: np.ndarray  # (S, 3) about the surface centre C
    geometry: PlateGeometry
    baseline: np.ndarray  # (n_channels,) subtracted from the calibrated channels (zeros if none)
    baseline_applied: bool
    warnings: tuple[str, ...]


def unit_factor(unit: str, kind: str, point_unit_to_m: float) -> tuple[float, bool]:
    """(factor to SI, known?) for a force ('force') or moment ('moment') channel unit string."""
    u = unit.strip().lower().replace(" ", "")
    if kind == "force":
        return (_FORCE_UNITS[u], True) if u in _FORCE_UNITS else (1.0, False)
    f = _MOMENT_UNITS.get(u)
    return (f, True) if f is not None else (point_unit_to_m, False)


def plate_geometry(corners: np.ndarray, origin: np.ndarray, plate_type: int, length_to_m: float) -> PlateGeometry:
    """Plate axes, centre and transducer origin in the lab (m) from CORNERS (4, 3) and ORIGIN (3,)."""
    c = np.asarray(corners, dtype=float) * length_to_m
    if c.shape != (4, 3) or not np.isfinite(c).all():
        raise PlateError(f"CORNERS must be 4 finite lab points, got {c.shape}")
    x = c[0] - c[1]
    y = c[0] - c[3]
    z = np.cross(x, y)
    if np.linalg.norm(x) < 1e-6 or np.linalg.norm(z) < 1e-9:
        raise PlateError("degenerate FORCE_PLATFORM:CORNERS (zero-area plate)")
    y = np.cross(z, x)
    rot = np.stack([x / np.linalg.norm(x), y / np.linalg.norm(y), z / np.linalg.norm(z)], axis=1)
    r = np.asarray(origin, dtype=float) * length_to_m
    if plate_type == 1:
        r = np.array([0.0, 0.0, 0.0])
    elif plate_type == 3:
        r = np.array([abs(r[0]), abs(r[1]), -abs(r[2])])  # Kistler a, b, az0 (az0 below the surface)
    elif r[2] > 0:
        r = -r  # Vicon-convention ORIGIN (c3d.org errata): whole vector negated
    centre = c.mean(axis=0)
    return PlateGeometry(rotation=rot, centre_m=centre, origin_m=centre - rot @ r, r_plate_m=r, up=-rot[:, 2])


def local_wrench(ch: np.ndarray, plate_type: int, r_plate_m: np.ndarray, cal_matrix: np.ndarray | None,
                 force_si: float, moment_si: float, length_to_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Force, moment about O and moment about C in the plate frame (SI), from calibrated channels.

    ``ch`` is (n_channels, S) in the type's channel order: TYPE-1 Fx Fy Fz Px Py Tz; TYPE-2/4 Fx Fy Fz
    Mx My Mz (TYPE-4 multiplied by CAL_MATRIX first); TYPE-3 fx12 fx34 fy14 fy23 fz1 fz2 fz3 fz4.
    """
    ch = np.asarray(ch, dtype=float)
    if plate_type in (2, 4):
        v = ch[:6]
        if plate_type == 4:
            if cal_matrix is None:
                raise PlateError("TYPE-4 plate without CAL_MATRIX")
            v = np.asarray(cal_matrix, dtype=float) @ v
        f = v[:3].T * force_si
        m_o = v[3:6].T * moment_si
        m_c = m_o + np.cross(f, r_plate_m)
        return f, m_o, m_c
    if plate_type == 3:
        a, b, az0 = r_plate_m
        fx12, fx34, fy14, fy23, fz1, fz2, fz3, fz4 = ch[:8] * force_si
        f = np.stack([fx12 + fx34, fy14 + fy23, fz1 + fz2 + fz3 + fz4], axis=1)
        m_s = np.stack([b * (fz1 + fz2 - fz3 - fz4), a * (-fz1 + fz2 + fz3 - fz4),
                        b * (-fx12 + fx34) + a * (fy14 - fy23)], axis=1)  # about the sensor-plane centre
        m_c = m_s + np.cross(f, np.array([0.0, 0.0, az0]))
        return f, m_s, m_c
    if plate_type == 1:
        f = ch[:3].T * force_si
        cop = np.stack([ch[3], ch[4], np.zeros(ch.shape[1])], axis=1) * length_to_m
        tz = ch[5] * moment_si
        m_c = np.cross(cop, f) + np.stack([np.zeros_like(tz), np.zeros_like(tz), tz], axis=1)
        return f, m_c, m_c
    raise PlateError(f"unsupported plate type {plate_type}")


def baseline_window(fz: np.ndarray, rate_hz: float, window_s: float = 0.25) -> slice:
    """The quietest window where |Fz| is at its minimum (see module docstring)."""
    n = fz.shape[0]
    w = max(int(round(window_s * rate_hz)), 5)
    if n <= w:
        return slice(0, n)
    starts = np.arange(0, n - w + 1, max(w // 2, 1))
    med = np.array([np.median(np.abs(fz[s:s + w])) for s in starts])
    spread = np.array([np.ptp(fz[s:s + w]) for s in starts])
    near = med <= med.min() + max(2.0, 0.01 * med.min())
    cand = np.flatnonzero(near)
    best = cand[np.argmin(spread[cand])]
    return slice(int(starts[best]), int(starts[best]) + w)


def compute_plate(record: AnalogRecord, plate: PlateSpec, *, subtract_baseline: bool = True,
                  window_s: float = 0.25, max_unloaded_n: float = 50.0,
                  max_unloaded_frac: float = 0.05) -> PlateWrench:
    """One plate's lab-frame wrench at the analog rate, baseline-handled (see module docstring)."""
    warnings: list[str] = []
    lt = record.point_unit_to_m
    fu_units = plate.channel_units[:3]
    force_si, known_f = unit_factor(fu_units[0] if fu_units else "", "force", lt)
    if plate.type in (2, 4):
        moment_si, known_m = unit_factor(plate.channel_units[3], "moment", lt)
    elif plate.type == 1:
        moment_si, known_m = unit_factor(plate.channel_units[5], "moment", lt)
    else:
        moment_si, known_m = 1.0, True
    if not known_f:
        warnings.append(f"plate {plate.index + 1}: force unit {fu_units[0]!r} unknown, assumed N")
    if not known_m:
        warnings.append(f"plate {plate.index + 1}: moment unit unknown, assumed N·{record.point_units}")
    geom = plate_geometry(plate.corners, plate.origin, plate.type, lt)
    ch = np.asarray(record.analog[list(plate.channels)], dtype=float)
    if not np.isfinite(ch).all():
        ch = np.where(np.isfinite(ch), ch, 0.0)
        warnings.append(f"plate {plate.index + 1}: non-finite analog samples set to 0")

    base = np.zeros(ch.shape[0])
    applied = False
    if subtract_baseline:
        f_raw, _, _ = local_wrench(ch, plate.type, geom.r_plate_m, plate.cal_matrix, force_si, moment_si, lt)
        fz = f_raw[:, 2]
        win = baseline_window(fz, record.analog_rate_hz, window_s)
        level = float(np.median(np.abs(fz[win])))
        peak = float(np.max(np.abs(fz))) if fz.size else 0.0
        if level <= max(max_unloaded_n, max_unloaded_frac * peak):
            base = np.median(ch[:, win], axis=1)
            if plate.type == 1:
                base[3:5] = 0.0  # COP channels have no zero offset to remove
            applied = True
        else:
            warnings.append(f"plate {plate.index + 1}: never unloaded (min |Fz| {level:.0f} N); no baseline subtracted")
    f, m_o, m_c = local_wrench(ch - base[:, None], plate.type, geom.r_plate_m, plate.cal_matrix,
                               force_si, moment_si, lt)
    R = geom.rotation
    return PlateWrench(force_n=f @ R.T, moment_origin_nm=m_o @ R.T, moment_centre_nm=m_c @ R.T,
                       geometry=geom, baseline=base, baseline_applied=applied, warnings=tuple(warnings))


def cop_and_free_moment(force_n: np.ndarray, moment_nm: np.ndarray, point_m: np.ndarray, up: np.ndarray,
                        threshold_n: float = DEFAULT_COP_THRESHOLD_N) -> tuple[np.ndarray, np.ndarray]:
    """Centre of pressure (S, 3) on the plane through ``point_m`` normal to ``up`` and the free moment
    (S,) about ``up`` at the COP, from a wrench whose moment is about ``point_m`` (a surface point).

    COP = P + (n × M_P) / (F·n); T = (M_P − (COP − P) × F)·n. NaN where |F·n| ≤ threshold.
    """
    n = np.asarray(up, dtype=float) / np.linalg.norm(up)
    fn = force_n @ n
    ok = np.abs(fn) > threshold_n
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.cross(n, moment_nm) / np.where(ok, fn, np.nan)[:, None]
    cop = np.asarray(point_m)[None, :] + d
    free = (moment_nm - np.cross(d, force_n)) @ n
    cop[~ok] = np.nan
    free = np.where(ok, free, np.nan)
    return cop, free


def lowpass(x: np.ndarray, rate_hz: float, cutoff_hz: float, order: int = DEFAULT_FILTER_ORDER) -> np.ndarray:
    """Zero-phase Butterworth low-pass along axis 0 (``filtfilt``: effective order 2 × ``order``)."""
    x = np.asarray(x, dtype=float)
    if cutoff_hz is None or cutoff_hz >= 0.5 * rate_hz:
        return x.copy()
    b, a = butter(order, cutoff_hz / (0.5 * rate_hz))
    padlen = min(3 * max(len(a), len(b)), x.shape[0] - 1)
    if padlen < 1:
        return x.copy()
    return filtfilt(b, a, x, axis=0, padlen=padlen)


def unloaded_frames(vertical_n: np.ndarray, rate_hz: float, t_s: np.ndarray, threshold_n: float) -> np.ndarray:
    """(len(t_s), ...) bool: the raw (unfiltered) vertical force ``vertical_n`` (S, ...) at ``rate_hz`` stays
    within ±``threshold_n`` at every sample within half a frame interval of each time ``t_s`` (s from the
    first sample; the interval is ``t_s``'s spacing). NaN samples count as loaded; a time with no sample
    in its span is not unloaded.

    Where this holds, the plate measured no load over the whole frame: the low-pass's ringing around a
    sharp impact (a 12 Hz Butterworth, forward-backward, puts ±40–170 N lobes before and after a 2400 N
    stance of 0.12 s) is not a load, and callers zero the frame's force and moment there.
    """
    v = np.asarray(vertical_n, dtype=float)
    t = np.asarray(t_s, dtype=float)
    half = 0.5 * float(np.median(np.diff(t))) if t.size > 1 else 0.5 / rate_hz
    loaded = ~(np.abs(v) <= threshold_n)  # NaN → loaded
    csum = np.concatenate([np.zeros((1,) + v.shape[1:], dtype=np.int64), np.cumsum(loaded, axis=0)])
    lo = np.clip(np.ceil((t - half) * rate_hz - 1e-9).astype(np.int64), 0, v.shape[0])
    hi = np.clip(np.floor((t + half) * rate_hz + 1e-9).astype(np.int64) + 1, 0, v.shape[0])
    hi = np.maximum(hi, lo)
    count = csum[hi] - csum[lo]
    return (count == 0) & (hi > lo).reshape((-1,) + (1,) * (v.ndim - 1))


def canonical_times(n_frames: int, src_rate_hz: float, fps: float) -> np.ndarray:
    """t_k = k/fps for N = floor((T−1)/src_rate·fps + 1e-9) + 1 (docs/conventions.md)."""
    n = int(np.floor((n_frames - 1) / src_rate_hz * fps + 1e-9)) + 1
    return np.arange(n) / fps


def resample_linear(x: np.ndarray, src_rate_hz: float, t_s: np.ndarray) -> np.ndarray:
    """Interpolate samples at j/src_rate (axis 0) at times ``t_s``; NaN outside the sampled span."""
    x = np.asarray(x, dtype=float)
    ts = np.arange(x.shape[0]) / src_rate_hz
    flat = x.reshape(x.shape[0], -1)
    out = np.empty((len(t_s), flat.shape[1]))
    for j in range(flat.shape[1]):
        out[:, j] = np.interp(t_s, ts, flat[:, j], left=np.nan, right=np.nan)
    return out.reshape((len(t_s),) + x.shape[1:])


@dataclass(frozen=True)
class ResampledPlate:
    """One plate at the canonical rate (lab frame of the caller, SI)."""

    force_n: np.ndarray  # (N, 3)
    moment_centre_nm: np.ndarray  # (N, 3) about the surface centre
    cop_m: np.ndarray  # (N, 3), NaN where |F·up| ≤ threshold
    free_moment_nm: np.ndarray  # (N,)
    centre_m: np.ndarray
    up: np.ndarray


def resample_plate(w: PlateWrench, analog_rate_hz: float, t_s: np.ndarray, *, cutoff_hz: float | None,
                   order: int = DEFAULT_FILTER_ORDER, cop_threshold_n: float = DEFAULT_COP_THRESHOLD_N,
                   rotation: np.ndarray | None = None) -> ResampledPlate:
    """Low-pass force and moment-about-centre at the analog rate, resample at ``t_s``, zero them at frames
    the plate is unloaded throughout (``unloaded_frames``: raw |F·up| ≤ ``cop_threshold_n``; the filter's
    ringing is no load), then COP and free moment at the canonical rate; ``rotation`` (3×3) maps the lab
    frame to the output frame."""
    both = np.concatenate([w.force_n, w.moment_centre_nm], axis=1)
    both = lowpass(both, analog_rate_hz, cutoff_hz, order) if cutoff_hz else both
    rs = resample_linear(both, analog_rate_hz, t_s)
    up_raw = np.asarray(w.geometry.up, dtype=float) / np.linalg.norm(w.geometry.up)
    rs[unloaded_frames(w.force_n @ up_raw, analog_rate_hz, t_s, cop_threshold_n)] = 0.0
    Rz = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    f = rs[:, :3] @ Rz.T
    m = rs[:, 3:] @ Rz.T
    centre = Rz @ w.geometry.centre_m
    up = Rz @ w.geometry.up
    cop, free = cop_and_free_moment(f, m, centre, up, cop_threshold_n)
    return ResampledPlate(force_n=f, moment_centre_nm=m, cop_m=cop, free_moment_nm=free, centre_m=centre, up=up)
