"""C3D files as build sequences: marker IK → ``RawMotion``, measured per-foot GRF at the canonical rate (pure).

``raw_from_c3d`` (called by ``pipeline.sources.c3d.source.C3DSource.read``): markers → z-up metres (up axis
from the plates, else the markers) → gaps ≤ ``max_gap`` frames filled → marker IK
(``pipeline.lab.marker_ik.fit_markers``) at the file's point rate → the record is trimmed to the longest run of
frames where ≥ 3 pelvis targets are visible (a walk-through trial shows the subject only in the middle of
the capture), markers and analog channels alike → ``RawMotion`` (z up, SMPL axis-angles, ``trans``) whose
``measured`` side-car (``C3DMeasurement``) keeps the trimmed record and the IK result.

``measured_ground_reaction`` (called by ``pipeline.process.process_motion`` once the motion is canonical):
``pipeline.sources.c3d.process.process_c3d`` on the trimmed record at the canonical rate (plates filtered at
0.4 × fps, assigned to feet), then into the canonical frame (the canonical ground shift added to z) and
named as the ground_reaction schema: ``grf_n`` per foot (NaN where unknown: unassigned/conflicting plate,
foot on the floor off the plates, side without foot markers), ``grm_nm`` about the IK skeleton's ankle
joint centre (as the simulation's), ``cop_m``, ``free_moment_nm``, ``foot_contact`` (255 where the force is
unknown), ``grf_total_n`` (sum of all plates; NaN where a foot stands off the plates), and the IK's
per-frame marker RMSE resampled to the canonical frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from pipeline.lab import foot_assignment as fa
from pipeline.lab import forceplate as fp
from pipeline.lab import marker_ik as ik
from pipeline.lab import markers as ml
from pipeline.lab import measured as lm
from pipeline.lab.body_mass import com_height_m
from pipeline.lab.trial import fit_trial
from pipeline.records import CanonicalMotion, Provenance, RawMotion, SubjectInfo
from pipeline.sources.c3d.reader import C3DRecord


@dataclass(frozen=True)
class C3DMeasurement:
    """Side-car of a C3D ``RawMotion``: the record trimmed to the IK frames and the IK result.

    Attributes:
        record: the C3D record trimmed to the motion's frames (markers and analog channels).
        ik: marker IK at the record's point rate (frames = the motion's source frames).
        up_axis: the lab's vertical axis (``pipeline.lab.markers.UP_ROTATIONS`` key).
        first_frame: index of the record's first kept frame in the file, 0-based.
        warnings: soft problems (reader, gaps, IK).
    """

    record: C3DRecord
    ik: ik.IKResult
    up_axis: str
    first_frame: int
    warnings: tuple[str, ...] = ()

    def ground_reaction(self, motion: CanonicalMotion, default_bmi_kg_m2: float) -> lm.MeasuredGroundReaction:
        """Plates per foot at the canonical frames (``measured_ground_reaction``)."""
        return measured_ground_reaction(self, motion, default_bmi_kg_m2)


def trim_record(rec: C3DRecord, a: int, b: int) -> C3DRecord:
    """The record restricted to point frames [a, b) (analog samples alike; needs an integer analog ratio)."""
    if (a, b) == (0, rec.markers.shape[0]):
        return rec
    analog = rec.analog
    if analog.size:
        ratio = rec.analog_rate_hz / rec.point_rate_hz
        k = round(ratio)
        if abs(ratio - k) > 1e-6:
            raise ValueError(f"analog rate {rec.analog_rate_hz} Hz is not a multiple of the point rate "
                             f"{rec.point_rate_hz} Hz: cannot trim the plates with the markers")
        analog = analog[:, a * k: b * k]
    return dataclasses.replace(rec, markers=rec.markers[a:b], residuals=rec.residuals[a:b], analog=analog,
                               first_frame=rec.first_frame + a)


def lab_up_axis(rec: C3DRecord, markers_m: np.ndarray) -> str:
    """Vertical lab axis from the plates' normals, else from the markers (``pipeline.lab.markers.detect_up_axis``)."""
    ups = []
    for p in rec.plates:
        try:
            ups.append(fp.plate_geometry(p.corners, p.origin, p.type, rec.point_unit_to_m).up)
        except fp.PlateError:
            continue
    return ml.detect_up_axis(markers_m, ups)[0]


def floor_height(rec: C3DRecord, up: str) -> float:
    """Height of the lab floor in the z-up lab frame: mean height of the plate surfaces, else 0, metres."""
    zs = []
    for p in rec.plates:
        c = ml.to_z_up(np.asarray(p.corners, dtype=float) * rec.point_unit_to_m, up)
        if np.isfinite(c).all():
            zs.append(float(c[:, 2].mean()))
    return float(np.mean(zs)) if zs else 0.0


def raw_from_c3d(rec: C3DRecord, provenance: Provenance, cfg: ik.IKConfig | None = None,
                 max_gap: int = ml.DEFAULT_MAX_GAP_FRAMES) -> RawMotion:
    """``RawMotion`` (z up, SMPL pose, source rate) of a C3D record by marker IK (module docstring).

    Raises ``ValueError`` (one line) without enough named markers or without a long enough run of frames
    where the pelvis is visible.
    """
    markers = np.asarray(rec.markers, dtype=np.float64) * rec.point_unit_to_m
    up = lab_up_axis(rec, markers)
    filled, _ = ml.fill_gaps(markers, max_gap)
    z_up = ml.to_z_up(filled, up)
    result, a, b = fit_trial(z_up, rec.marker_labels, rec.point_rate_hz, floor_z_m=floor_height(rec, up), cfg=cfg)
    trimmed = trim_record(rec, a, b)
    warnings = list(rec.warnings)
    if (a, b) != (0, markers.shape[0]):
        warnings.append(f"frames {a}–{b - 1} of {markers.shape[0]} kept (pelvis visible)")
    mass = rec.subject.get("mass_kg")
    subject = SubjectInfo(gender="neutral", height_m=result.height_m,
                          mass_kg=None if mass is None else float(mass))
    side = C3DMeasurement(record=trimmed, ik=result, up_axis=up, first_frame=a, warnings=tuple(warnings))
    return RawMotion(provenance=provenance, subject=subject, fps_hz=float(rec.point_rate_hz),
                     root_orient_aa_rad=result.root_orient_aa_rad, body_pose_aa_rad=result.body_pose_aa_rad,
                     trans_m=result.trans_m, up_axis="z", model_type="smpl", measured=side)


def measured_ground_reaction(meas: C3DMeasurement, motion: CanonicalMotion, default_bmi_kg_m2: float = 23.0,
                             cfg: fa.FootConfig | None = None) -> lm.MeasuredGroundReaction:
    """Measured per-foot ground reactions at the motion's frames (module docstring). Without plates (or
    without any foot force known) ``has_grf`` is false and only the IK residuals are meaningful."""
    from pipeline.sources.c3d.process import process_c3d

    rec = meas.record
    n = motion.n_frames
    # IK quality at the canonical frames: measured targets vs the canonical skeleton's targets
    markers = ml.to_z_up(ml.fill_gaps(np.asarray(rec.markers, float) * rec.point_unit_to_m)[0], meas.up_axis)
    rmse, residual = lm.ik_residuals(meas.ik, markers, rec.point_rate_hz, motion)
    feet = None
    if rec.plates:
        fcfg = cfg or fa.FootConfig(default_body_mass_kg=float(default_bmi_kg_m2 * motion.height_m**2))
        # the fitted skeleton's heel, toe (sole points) and ankle per side, back in the lab z-up frame:
        # the feet of files whose marker set names no heel/toe markers (cluster sets)
        lab = np.array([0.0, 0.0, motion.ground_offset_m])
        fp_ = np.asarray(motion.foot_points_m, float).reshape(n, 2, 2, 3)  # l heel, l toe, r heel, r toe
        ankles = np.asarray(motion.joint_pos_m, float)[:, [7, 8]][:, :, None]
        skel_feet = np.concatenate([fp_, ankles], axis=2) - lab
        com_z = com_height_m(motion.joint_pos_m, motion.gender)
        c3 = process_c3d(rec, fps=motion.fps_hz, up_axis=meas.up_axis, foot_config=fcfg, skeleton_feet_m=skel_feet,
                         com_z_m=com_z, height_m=float(motion.height_m))
        feet = c3.feet
    if feet is None or not np.isfinite(feet.force_n).any():
        source = "file" if rec.subject.get("mass_kg") else f"default (BMI {default_bmi_kg_m2:g} kg/m² × height²)"
        return lm.without_forces(n, rmse, residual, motion.mass_kg, source)
    if c3.time_s.shape[0] != n:
        raise ValueError(f"force plates resampled to {c3.time_s.shape[0]} frames, motion has {n}")
    dz = np.array([0.0, 0.0, motion.ground_offset_m])
    point = feet.foot_point_m + dz
    ankle = motion.joint_pos_m[:, [7, 8]]
    grm = fa.transfer_moment(feet.moment_nm, point, ankle, feet.force_n)
    known = np.isfinite(feet.force_n).all(axis=-1)
    contact = np.where(known, feet.contact.astype(np.uint8), np.uint8(255)).astype(np.uint8)
    total = feet.total_force_n.copy()
    total[feet.off_plate.any(axis=1)] = np.nan
    source = feet.body_mass_source
    if source == "default":
        source = f"default (BMI {default_bmi_kg_m2:g} kg/m² × height²)" if cfg is None else "default"
    return lm.MeasuredGroundReaction(
        grf_n=feet.force_n, grm_nm=grm, cop_m=feet.cop_m + dz, free_moment_nm=feet.free_moment_nm,
        foot_contact=contact, grf_total_n=total, marker_fit_rmse_m=rmse, marker_residual_m=residual,
        plate_foot_conflict=np.isin(feet.assignment, (fa.CONFLICT, fa.NO_FOOT, fa.MISSING_MARKERS)),
        mass_kg=float(feet.body_mass_kg), mass_source=source, grf_source=lm.GRF_SOURCE_PLATES, feet=feet)
