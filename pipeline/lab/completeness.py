"""Frames whose plates cannot have measured the whole load (pure numpy/scipy).

A foot that lands partly off a plate, or pushes off from the unmeasured floor while the markers call it
swinging, leaves a frame whose per-foot forces are *known* but incomplete. Newton's law in the vertical
finds them without the simulator: ``F_z,total = m (g + z̈_com)`` must hold on every frame where every
foot's force is known. The check uses the same model and filtering as the body-mass fit
(``pipeline.lab.body_mass``: ``com_height_m`` of the fitted motion, both signals low-passed at
``CUTOFF_HZ``, zero-phase) and the plates' own fitted mass, so a stated mass that disagrees with the
plates (kineticstoolkit walk: 73.4 kg stated, 81.3 kg fitted) does not flag every frame. A frame
the model misses by more than ``OUTLIER_BW`` × body weight is *incomplete*: its per-foot forces,
moments and centres of pressure become unknown (NaN, ``foot_contact`` 255) like a foot on the
unmeasured floor, and ``grf_incomplete_frames`` counts them.

The check needs the 6 Hz Newton model to explain the trial as a whole: when its median miss over the
known frames exceeds ``CHECK_MAX_MEDIAN_BW`` (running and sprinting at 30 FPS: JA1Gait35's 4-frame
stances miss by a median 0.42 BW) nothing is flagged and ``grf_incomplete_frames`` is NaN (not
checked). On the shared trials: opensim-core walking2 frames 23–26 at 30 FPS (the left foot landing on a
plate while the right, taken for a swing foot, still pushes off beside it: the plates read 0.19, 0.55,
0.80, 0.89 BW where the motion needs about 1.1 BW; the model misses them by 0.97–0.27 BW), none on
PiG_Motion3_FF, Gait, the kineticstoolkit walk and the AddBiomechanics tutorial walk; JA1Gait35 (a
sprint) is not checked. With plates as targets, the dynamics pass had to move walking2's pelvis by
3.9 cm to explain those four frames, 0.8 cm without them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.signal import butter, filtfilt

from pipeline.lab.body_mass import CUTOFF_HZ, FIT_MAX_MEDIAN_BW, GRAVITY_MPS2, OUTLIER_BW, com_height_m, mass_from_gait

CHECK_MAX_MEDIAN_BW = FIT_MAX_MEDIAN_BW
"""The check runs only when the Newton model misses the known frames by at most this median (× BW)."""

UNKNOWN_CONTACT = 255
"""``foot_contact`` value of a frame whose force is unknown."""


def newton_miss_bw(total_fz_n: np.ndarray, all_known: np.ndarray, com_z_m: np.ndarray, fps: float,
                   mass_kg: float) -> np.ndarray:
    """(T,) ``(F_z − m (g + z̈_com)) / (m g)``, both low-passed at ``CUTOFF_HZ`` (zero-phase, 2nd order);
    unknown frames are bridged by linear interpolation before filtering (their values mean nothing).
    ``total_fz_n`` (T,) N, ``com_z_m`` (T,) m at ``fps`` Hz."""
    fz = np.asarray(total_fz_n, dtype=float)
    known = np.asarray(all_known, dtype=bool) & np.isfinite(fz)
    n = fz.shape[0]
    b, a = butter(2, min(CUTOFF_HZ / (0.5 * fps), 0.95))
    acc = np.gradient(np.gradient(filtfilt(b, a, np.asarray(com_z_m, dtype=float)))) * fps * fps
    ff = filtfilt(b, a, np.where(known, fz, np.interp(np.arange(n), np.flatnonzero(known), fz[known])))
    weight = mass_kg * GRAVITY_MPS2
    return (ff - mass_kg * (GRAVITY_MPS2 + acc)) / weight


def incomplete_frames(grf_n: np.ndarray, joint_pos_m: np.ndarray, fps: float, height_m: float,
                      gender: str = "neutral") -> np.ndarray | None:
    """(T,) bool: frames whose known per-foot forces miss the vertical Newton model by more than
    ``OUTLIER_BW`` (module docstring); ``None`` when the trial cannot be checked (too few known frames
    for the mass fit, or the model misses the whole trial by a median above ``CHECK_MAX_MEDIAN_BW``).
    ``grf_n`` (T, 2, 3) N per foot (NaN unknown), ``joint_pos_m`` (T, 24, 3) m."""
    grf = np.asarray(grf_n, dtype=float)
    known = np.isfinite(grf).all(axis=(1, 2))
    if not known.any():
        return None
    total = grf[..., 2].sum(axis=1)
    com_z = com_height_m(joint_pos_m, gender)
    if not np.isfinite(com_z).all():
        return None
    fit = mass_from_gait(total, known, com_z, fps, height_m)
    if fit is None:
        return None
    miss = newton_miss_bw(total, known, com_z, fps, fit[0])
    if np.median(np.abs(miss[known])) > CHECK_MAX_MEDIAN_BW:
        return None
    return known & (np.abs(miss) > OUTLIER_BW)


def mask_incomplete(measured, motion):
    """``measured`` (``pipeline.lab.measured.MeasuredGroundReaction``) with its incomplete frames unknown
    (NaN forces, moments, centres of pressure and totals; ``foot_contact`` 255) and
    ``extra_metrics["grf_incomplete_frames"]`` set (count; NaN when not checked)."""
    bad = incomplete_frames(measured.grf_n, motion.joint_pos_m, float(motion.fps_hz), float(motion.height_m),
                            motion.gender)
    extra = dict(measured.extra_metrics or {})
    extra["grf_incomplete_frames"] = float("nan") if bad is None else float(bad.sum())
    if bad is None or not bad.any():
        return dataclasses.replace(measured, extra_metrics=extra)

    def unknown(a: np.ndarray, fill) -> np.ndarray:
        out = np.array(a, copy=True)
        out[bad] = fill
        return out

    return dataclasses.replace(
        measured, grf_n=unknown(measured.grf_n, np.nan), grm_nm=unknown(measured.grm_nm, np.nan),
        cop_m=unknown(measured.cop_m, np.nan), free_moment_nm=unknown(measured.free_moment_nm, np.nan),
        grf_total_n=unknown(measured.grf_total_n, np.nan),
        foot_contact=unknown(measured.foot_contact, UNKNOWN_CONTACT), extra_metrics=extra)


__all__ = ["CHECK_MAX_MEDIAN_BW", "incomplete_frames", "mask_incomplete", "newton_miss_bw"]
