"""Body mass from force plates during gait (pure numpy/scipy).

A lab file without the subject's mass used to get ``BMI 23 × height²``. When the plates measure the
whole load for a while (every foot's force known: on a plate, or known to be off the floor), Newton's
law in the vertical gives the mass without quiet standing: ``F_z,total = m (g + z̈_com)`` on those
frames, a one-parameter least-squares fit ``m = Σ F_z (g + z̈) / Σ (g + z̈)²`` with ``z_com`` from the
fitted motion (``com_height_m``). Both signals are low-passed alike (``CUTOFF_HZ``, zero-phase) so the
fit compares the same bandwidth; it is refitted up to three times without the frames it misses by
more than ``OUTLIER_BW`` (a foot on the unmeasured floor taken for a swing foot at a plate's edge). On
the shared lab walks whose files state a mass the fit gives 72.5 kg for 74.0 kg (PiG_Motion3_FF, −2 %)
and 81.3 kg for 73.4 kg (kineticstoolkit walk, +11 %; its plates also need a −78 N vertical residual in
inverse dynamics at the stated mass): expect ±10 %. The file's mass wins where there is one, unless the
fit contradicts it by more than ``STATED_MASS_TOLERANCE`` (5 %, ``prefer_measured``): the kineticstoolkit
walk then gets 81.3 kg. Without one it replaces a musculoskeletal model's mass (which may be an unscaled
template's: the AddBiomechanics tutorial walk's model weighs Rajagopal 2015's 75.3 kg, its plates 84.8 kg;
JA1Gait35's scaled model 68.1 kg is kept, a sprint the 6 Hz model cannot explain, ``FIT_MAX_MEDIAN_BW``)
and the BMI default: opensim-core walking2 64.5 kg instead of 75.3 kg (its inverse dynamics at 75.3 kg
needed +162 N of vertical residual on average), Gait 63.8 instead of 63.4.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, filtfilt

GRAVITY_MPS2 = 9.80665
CUTOFF_HZ = 6.0
"""Low-pass of the vertical force and the centre-of-mass height before the fit, Hz."""
MIN_S = 0.5
"""Fewest seconds of fully measured frames the fit needs."""
OUTLIER_BW = 0.25
"""Frames whose force the fitted model misses by more than this × body weight are refitted without."""
BMI_RANGE_KG_M2 = (15.0, 40.0)
"""A fitted mass outside this BMI range (× height²) is not used."""
STATED_MASS_TOLERANCE = 0.05
"""A mass stated by the file that the plates' trusted fit contradicts by more than this fraction gives way to the
fit (``prefer_measured``)."""
FIT_MAX_MEDIAN_BW = 0.1
"""A fit whose model misses the frames it was fitted on by a median above this × body weight is not used: the
6 Hz vertical model cannot explain the trial (sprinting at 30 FPS: JA1Gait35's 4-frame stances)."""


def prefer_measured(stated_kg: float, fit: tuple[float, int] | None) -> tuple[float, str] | None:
    """``(mass, source)`` of the plates' fit when it contradicts the file's stated mass by more than
    ``STATED_MASS_TOLERANCE``, else ``None`` (the stated mass stays). The simulator must carry the weight the
    plates measured for its forces to be comparable with them; AddBiomechanics likewise lets the plates move
    the mass. The kineticstoolkit walk states 73.4 kg, its plates 81.3 kg: at 73.4 kg inverse dynamics needs
    −78 N of mean vertical root residual (−1 N at 81.3 kg) and the simulated forces miss the plates by
    λ 1.01 / 0.99 N/kg (0.67 / 0.70 at 81.3 kg, 3 passes)."""
    if fit is None or abs(fit[0] / stated_kg - 1.0) <= STATED_MASS_TOLERANCE:
        return None
    return fit[0], (f"plates_gait (vertical Newton fit over {fit[1]} frames; the file states {stated_kg:.1f} kg, "
                    f"{100 * (fit[0] / stated_kg - 1):+.0f} %)")


def com_height_m(joint_pos_m: np.ndarray, gender: str = "neutral") -> np.ndarray:
    """(T,) height of the mass-weighted mean of the 24 SMPL joints (de Leva body masses, as the
    simulator's humanoid), m: a centre-of-mass proxy whose vertical acceleration follows the body's."""
    from pipeline.simulate.humanoid import segment_masses
    from pipeline.skeleton import JOINT_NAMES

    masses = segment_masses(1.0, gender)
    w = np.array([masses.get(name, 0.0) for name in JOINT_NAMES])
    return np.asarray(joint_pos_m, dtype=float)[..., 2] @ (w / w.sum())


def mass_from_gait(total_fz_n: np.ndarray, all_known: np.ndarray, com_z_m: np.ndarray, fps: float,
                   height_m: float) -> tuple[float, int] | None:
    """``(mass kg, frames used)`` of the vertical Newton fit (module docstring), or ``None`` with fewer
    than ``MIN_S`` of frames where ``all_known`` (every foot's force known) or a mass outside
    ``BMI_RANGE_KG_M2``. ``total_fz_n`` (T,) N, ``com_z_m`` (T,) m at ``fps``."""
    fz = np.asarray(total_fz_n, dtype=float)
    known = np.asarray(all_known, dtype=bool) & np.isfinite(fz)
    z = np.asarray(com_z_m, dtype=float)
    n = fz.shape[0]
    if known.sum() < max(MIN_S * fps, 3) or n < 13 or not np.isfinite(z).all():
        return None
    b, a = butter(2, min(CUTOFF_HZ / (0.5 * fps), 0.95))
    zf = filtfilt(b, a, z)
    acc = np.gradient(np.gradient(zf)) * fps * fps
    ff = filtfilt(b, a, np.where(known, fz, np.interp(np.arange(n), np.flatnonzero(known), fz[known])))
    x = GRAVITY_MPS2 + acc
    use = known.copy()
    mass = float((x[use] * ff[use]).sum() / (x[use] ** 2).sum())
    for _ in range(3):
        # frames the model misses by more than OUTLIER_BW (a foot on the unmeasured floor taken for a
        # swing foot at a plate's edge: walking2's first known frame read 0.19 BW) leave the fit
        keep = known & (np.abs(ff - mass * x) <= OUTLIER_BW * mass * GRAVITY_MPS2)
        if keep.sum() < max(MIN_S * fps, 3) or (keep == use).all():
            break
        use = keep
        mass = float((x[use] * ff[use]).sum() / (x[use] ** 2).sum())
    lo, hi = (r * height_m**2 for r in BMI_RANGE_KG_M2)
    if not lo <= mass <= hi:
        return None
    if np.median(np.abs(ff[use] - mass * x[use])) > FIT_MAX_MEDIAN_BW * mass * GRAVITY_MPS2:
        return None
    return mass, int(use.sum())


__all__ = ["BMI_RANGE_KG_M2", "CUTOFF_HZ", "FIT_MAX_MEDIAN_BW", "MIN_S", "OUTLIER_BW", "STATED_MASS_TOLERANCE",
           "com_height_m", "mass_from_gait", "prefer_measured"]
