"""C3D record -> canonical markers and per-plate ground reactions (pure; docs/c3d.md).

Order: plates at the analog rate (calibrated, baseline-subtracted, SI, lab frame) -> zero-phase
low-pass of force and moment-about-centre -> linear interpolation at t_k = k/fps -> rotation to z-up
-> COP and free moment (NaN where |F·up| ≤ threshold). Markers: mm -> m, gaps ≤ ``max_gap`` filled,
spline-resampled at t_k, rotated to z-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.lab import foot_assignment as fa
from pipeline.lab import forceplate as fp
from pipeline.lab import markers as ml
from pipeline.sources.c3d.reader import C3DRecord


@dataclass(frozen=True)
class C3DCanonical:
    time_s: np.ndarray  # (N,)
    fps: float
    marker_labels: tuple[str, ...]
    markers_m: np.ndarray  # (N, M, 3) z-up
    gaps: tuple[ml.GapReport, ...]
    up_axis: str
    up_method: str
    plates: tuple[fp.ResampledPlate, ...]
    cutoff_hz: float | None
    warnings: tuple[str, ...]
    feet: fa.FootGRF | None = None  # per-foot/total GRF and body mass (None: no plates or feet=False)


def process_c3d(rec: C3DRecord, *, fps: float = 30.0, max_gap: int = ml.DEFAULT_MAX_GAP_FRAMES,
                up_axis: str | None = None, cutoff_hz: float | None = None,
                filter_order: int = fp.DEFAULT_FILTER_ORDER, cop_threshold_n: float = fp.DEFAULT_COP_THRESHOLD_N,
                subtract_baseline: bool = True, feet: bool = True,
                foot_config: fa.FootConfig | None = None, skeleton_feet_m: np.ndarray | None = None,
                com_z_m: np.ndarray | None = None, height_m: float | None = None) -> C3DCanonical:
    """Canonical markers and plates; ``up_axis`` None = detect; ``cutoff_hz`` None = 0.4 × fps.

    ``skeleton_feet_m`` (N, 2, 3, 3): heel/toe/ankle of the fitted skeleton per side at the canonical
    frames (lab z-up frame), for sides without named foot markers (``foot_assignment.foot_grf``).

    ``feet``: also assign plates to feet (``pipeline.lab.foot_assignment.foot_grf``) with ``foot_config``
    (its ``threshold_n`` defaults to ``cop_threshold_n``); body mass from ``record.subject['mass_kg']``, else
    quiet standing, else (given the fitted motion's ``com_z_m`` at the canonical frames and ``height_m``)
    the vertical Newton fit during gait (``foot_assignment.estimate_body_mass``).
    """
    warnings = list(rec.warnings)
    wrenches = [fp.compute_plate(rec, p, subtract_baseline=subtract_baseline) for p in rec.plates]
    for w in wrenches:
        warnings.extend(w.warnings)
    markers = np.asarray(rec.markers) * rec.point_unit_to_m
    if up_axis is None:
        up_axis, method = ml.detect_up_axis(markers, [w.geometry.up for w in wrenches])
    else:
        method = "configured"
    R = ml.UP_ROTATIONS[up_axis]
    filled, gaps = ml.fill_gaps(markers, max_gap)
    t = fp.canonical_times(markers.shape[0], rec.point_rate_hz, fps)
    mk = ml.to_z_up(ml.resample_markers(filled, rec.point_rate_hz, t), up_axis)
    cut = fp.DEFAULT_CUTOFF_FRACTION_OF_FPS * fps if cutoff_hz is None else cutoff_hz
    plates = tuple(fp.resample_plate(w, rec.analog_rate_hz, t, cutoff_hz=cut, order=filter_order,
                                     cop_threshold_n=cop_threshold_n, rotation=R) for w in wrenches)
    foot = None
    if feet and plates:
        cfg = foot_config if foot_config is not None else fa.FootConfig(threshold_n=cop_threshold_n)
        loads = [fa.PlateLoad(force_n=p.force_n, moment_centre_nm=p.moment_centre_nm, centre_m=p.centre_m,
                              corners_m=ml.to_z_up(np.asarray(spec.corners, dtype=float) * rec.point_unit_to_m, up_axis))
                 for p, spec in zip(plates, rec.plates, strict=True)]
        mass = rec.subject.get("mass_kg")
        foot = fa.foot_grf(mk, rec.marker_labels, loads, fps, subject_mass_kg=None if mass is None else float(mass),
                           cfg=cfg, skeleton_feet_m=skeleton_feet_m, com_z_m=com_z_m, height_m=height_m)
        warnings.extend(f"feet: {w}" for w in foot.warnings)
    return C3DCanonical(time_s=t, fps=fps, marker_labels=rec.marker_labels, markers_m=mk, gaps=tuple(gaps),
                        up_axis=up_axis, up_method=method, plates=plates, cutoff_hz=cut, warnings=tuple(warnings),
                        feet=foot)
