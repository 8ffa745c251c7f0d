"""A lab trial given as z-up marker trajectories and (optionally) forces already assigned to feet — the
OpenSim/AddBiomechanics sources' path to a ``RawMotion`` and its measured ground reaction (pure numpy).

``fit_trial``: markers (z up, metres) → targets (names, model segments, rigidity;
``marker_ik.match_targets_in_data``) → the longest run of frames with ≥ 3 pelvis targets visible → marker IK
→ toe tips lifted to the floor. ``LabTrialMeasurement`` is the ``RawMotion.measured`` side-car;
``ground_reaction`` resamples its per-foot forces to the canonical frames: force and moment about the ground
origin low-passed at ``cutoff_fraction`` × fps (zero-phase Butterworth, as the C3D plates), linearly
interpolated at t0 + k / fps, zero at frames whose raw vertical force stays ≤ 20 N throughout
(``forceplate.unloaded_frames``: no filter ringing in swing), shifted by the canonical ground offset; COP and free moment on the floor plane
(NaN where F_z ≤ 20 N); moment about the IK skeleton's ankle joint centre; contact by hysteresis (20/10 N).
A foot that stands on the floor while its force reads no load stands on the *unmeasured* floor (a plate-less
part of the runway: the forces of an OpenSim external-loads file or a .b3d trial are simply 0 there), so its
force is unknown (NaN, ``off_plate_frames``), as the C3D path's ``off_plate`` rule does with plate footprints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.contact import horizontal_speed, hysteresis
from pipeline.lab import foot_assignment as fa
from pipeline.lab import forceplate as fp
from pipeline.lab import marker_ik as ik
from pipeline.lab import markers as ml
from pipeline.lab import measured as lm
from pipeline.lab.body_mass import com_height_m, mass_from_gait, prefer_measured
from pipeline.records import CanonicalMotion

MIN_DURATION_S = 0.2
"""Shortest run of frames with a visible pelvis that is built, seconds."""

OFF_PLATE_HEIGHT_M = 0.05
"""``off_plate_frames``: a sole point (heel or toe) within this height of the floor, m (the height at which
``pipeline.contact`` releases a contact) ..."""
OFF_PLATE_SPEED_MPS = 1.0
"""... and horizontally slower than this, m/s, stands on the floor (the C3D foot assignment's ``max_speed_m_s``:
a swing foot moves at 2–20 m/s; a push-off toe at 30 FPS reads up to ≈ 0.9 m/s by central differences)."""


def off_plate_frames(foot_points_m: np.ndarray, force_z_n: np.ndarray, fps: float, floor_z_m: float,
                     threshold_n: float = 20.0) -> np.ndarray:
    """(T, 2) bool: a foot (left, right) standing on the floor — its heel or toe sole point within
    ``OFF_PLATE_HEIGHT_M`` of ``floor_z_m`` and horizontally slower than ``OFF_PLATE_SPEED_MPS`` — while its
    measured vertical force is at most ``threshold_n`` (N): it stands where nothing measures it.
    ``foot_points_m`` (T, 4, 3): left heel, left toe, right heel, right toe (m); ``force_z_n`` (T, 2) N."""
    pts = np.asarray(foot_points_m, dtype=float)
    speed = horizontal_speed(pts, fps).reshape(-1, 2, 2)  # (T, side, heel/toe)
    low = (pts[..., 2] - floor_z_m).reshape(-1, 2, 2) < OFF_PLATE_HEIGHT_M
    standing = (low & (speed < OFF_PLATE_SPEED_MPS)).any(axis=-1)
    with np.errstate(invalid="ignore"):
        return standing & (np.asarray(force_z_n, dtype=float) <= threshold_n)


def fit_trial(markers_z_up_m: np.ndarray, labels: tuple[str, ...], rate_hz: float,
              segments: dict[str, str] | None = None, floor_z_m: float = 0.0,
              cfg: ik.IKConfig | None = None) -> tuple[ik.IKResult, int, int]:
    """(IK result on frames [a, b), a, b) for z-up markers (T, M, 3) m; ``ValueError`` (one line) without
    enough pelvis and leg markers or without ``MIN_DURATION_S`` of visible pelvis."""
    targets = ik.match_targets_in_data(labels, markers_z_up_m, segments)
    problem = ik.check_targets(targets)
    if problem:
        raise ValueError(problem)
    obs = targets.positions(markers_z_up_m)
    pelvis = targets.pelvis_indices()
    ok = np.isfinite(obs[:, pelvis]).all(axis=-1).sum(axis=1) >= 3
    a, b = ml.longest_run(ok)
    if (b - a - 1) / rate_hz < MIN_DURATION_S:
        raise ValueError(f"the pelvis (3 of {','.join(targets.names[k] for k in pelvis)}) is visible for at most "
                         f"{max(b - a, 0)} consecutive frames (need {MIN_DURATION_S} s)")
    result = ik.fit_markers(markers_z_up_m[a:b], labels, cfg or ik.IKConfig(), targets=targets)
    pose = np.concatenate([result.root_orient_aa_rad[:, None], result.body_pose_aa_rad], axis=1)
    pose = ik.lift_toes(pose, result.root_pos_m, result.height_m, floor_z_m)
    return dataclasses.replace(result, body_pose_aa_rad=pose[:, 1:]), a, b


@dataclass(frozen=True)
class FootForces:
    """Measured forces per foot in the z-up ground frame (SI) at their own rate.

    Attributes:
        rate_hz: sample rate. t0_s: time of sample 0 on the markers' clock (s).
        force_n: (S, 2, 3) (left, right) sum of the forces on each foot.
        moment_origin_nm: (S, 2, 3) their moment about the ground origin (incl. free torques).
        known: (2,) bool, the side has forces assigned (else its force is unknown, NaN).
        grf_source: ``seq_grf_source`` value (``force_plate``, ``addbiomechanics``).
        unknown_frames: (S,) bool, samples whose forces the file marks unknown (NaN there), or ``None``.
    """

    rate_hz: float
    t0_s: float
    force_n: np.ndarray
    moment_origin_nm: np.ndarray
    known: np.ndarray
    grf_source: str
    unknown_frames: np.ndarray | None = None


@dataclass(frozen=True)
class LabTrialMeasurement:
    """``RawMotion.measured`` side-car of a marker trial (``pipeline.lab.measured.LabMeasurement``).

    Attributes:
        ik: marker IK at the trial's kept frames. markers_z_up_m: (T, M, 3) those frames' markers.
        rate_hz: marker rate. t0_s: time of the first kept marker frame (the forces' clock).
        forces: per-foot forces or ``None``. mass_kg/mass_source: body mass and where it came from.
        mass_is_model: ``mass_kg`` is a musculoskeletal model's mass (sum of its bodies), not a stated
            subject mass: the plates' fit replaces it when there is one (a model uploaded unscaled
            carries its generic template's mass, e.g. Rajagopal 2015's 75.337 kg).
        extra_metrics: per-sequence figures of the source (units in the names). warnings: soft problems.
    """

    ik: ik.IKResult
    markers_z_up_m: np.ndarray
    rate_hz: float
    t0_s: float
    forces: FootForces | None
    mass_kg: float | None
    mass_source: str
    extra_metrics: dict = field(default_factory=dict)
    mass_is_model: bool = False
    warnings: tuple[str, ...] = ()
    cutoff_fraction: float = fp.DEFAULT_CUTOFF_FRACTION_OF_FPS
    threshold_n: float = 20.0
    source_results: Any = None
    """The source's own results for the trial (e.g. AddBiomechanics' ID torques), kept for the user: with
    ``dof_names`` and ``tau`` (T, D) at the kept marker frames they are stored (``source_torques``)."""

    def source_torques(self, motion: CanonicalMotion) -> lm.SourceTorques | None:
        """The source's own ID generalized forces (``source_results.tau``, at the kept marker frames) at the
        canonical frames, resampled as the forces are: low-passed at ``cutoff_fraction`` × fps (zero-phase
        Butterworth; NaN samples filtered as 0 and put back), linearly interpolated at ``motion.time_s``;
        ``None`` without them or without model DOF names (``dof_names_from_model`` false)."""
        r = self.source_results
        names, tau = getattr(r, "dof_names", None), getattr(r, "tau", None)
        if names is None or tau is None or not getattr(r, "dof_names_from_model", True):
            return None
        tau = np.asarray(tau, dtype=float)
        if tau.ndim != 2 or tau.shape[1] != len(names) or tau.shape[0] < 1 or lm.dof_names_problem(tuple(names)):
            return None
        unknown = ~np.isfinite(tau)
        out = fp.lowpass(np.where(unknown, 0.0, tau), self.rate_hz, self.cutoff_fraction * motion.fps_hz)
        out[unknown] = np.nan
        return lm.SourceTorques(tuple(names), lm.resample_linear(out, self.rate_hz, motion.time_s))

    def ground_reaction(self, motion: CanonicalMotion, default_bmi_kg_m2: float) -> lm.MeasuredGroundReaction:
        """Per-foot forces at the canonical frames (module docstring)."""
        rmse, residual = lm.ik_residuals(self.ik, self.markers_z_up_m, self.rate_hz, motion)
        n = motion.n_frames
        mass = self.mass_kg if self.mass_kg is not None else motion.mass_kg
        source = self.mass_source if self.mass_kg is not None else f"default (BMI {default_bmi_kg_m2:g} kg/m² × height²)"
        f = self.forces
        if f is None or not f.known.any():
            out = lm.without_forces(n, rmse, residual, mass, source)
            return dataclasses.replace(out, extra_metrics=dict(self.extra_metrics) or None)
        cut = self.cutoff_fraction * motion.fps_hz
        force = fp.lowpass(np.nan_to_num(f.force_n).reshape(len(f.force_n), -1), f.rate_hz, cut).reshape(f.force_n.shape)
        mom = fp.lowpass(np.nan_to_num(f.moment_origin_nm).reshape(len(f.force_n), -1), f.rate_hz, cut
                         ).reshape(f.force_n.shape)
        if f.unknown_frames is not None and f.unknown_frames.any():
            force[f.unknown_frames] = np.nan
            mom[f.unknown_frames] = np.nan
        t = (self.t0_s - f.t0_s) + motion.time_s  # canonical frame times on the forces' clock
        force = lm.resample_linear(force, f.rate_hz, t)
        mom = lm.resample_linear(mom, f.rate_hz, t)
        raw_fz = np.where(f.unknown_frames[:, None], np.nan, f.force_n[..., 2]) if f.unknown_frames is not None \
            else f.force_n[..., 2]
        idle = fp.unloaded_frames(raw_fz, f.rate_hz, t, self.threshold_n)  # the filter's ringing is no load
        force[idle] = 0.0
        mom[idle] = 0.0
        force[:, ~f.known] = np.nan
        mom[:, ~f.known] = np.nan
        off = off_plate_frames(motion.foot_points_m, force[..., 2], motion.fps_hz, motion.ground_offset_m,
                               self.threshold_n)
        force[off] = np.nan
        mom[off] = np.nan
        dz = np.array([0.0, 0.0, motion.ground_offset_m])
        o = np.zeros(3)
        up = np.array([0.0, 0.0, 1.0])
        cop = np.empty((n, 2, 3))
        free = np.empty((n, 2))
        for s in (0, 1):
            cop[:, s], free[:, s] = fp.cop_and_free_moment(force[:, s], mom[:, s], o, up, self.threshold_n)
        ankle = motion.joint_pos_m[:, [7, 8]] - dz
        grm = fa.transfer_moment(mom, o, ankle, force)
        fz = force[..., 2]
        # the vertical Newton fit over the frames both feet's forces are known: the mass without a stated one,
        # or against the stated one (body_mass.prefer_measured)
        fit = mass_from_gait(fz.sum(axis=1), np.isfinite(force).all(axis=(1, 2)),
                             com_height_m(motion.joint_pos_m, motion.gender), motion.fps_hz, motion.height_m)
        if self.mass_kg is not None and not self.mass_is_model:
            better = prefer_measured(float(self.mass_kg), fit)
            if better is not None:
                mass, source = better
        elif fit is not None:
            instead = f"; the model's mass is {self.mass_kg:.1f} kg" if self.mass_kg is not None else ""
            mass, source = fit[0], f"plates_gait (vertical Newton fit over {fit[1]} frames{instead})"
        with np.errstate(invalid="ignore"):
            enter = fz > self.threshold_n
            leave = ~(fz >= 0.5 * self.threshold_n) & ~enter
        contact = hysteresis(enter, leave)
        known = np.isfinite(force).all(axis=-1)
        foot_contact = np.where(known, contact.astype(np.uint8), np.uint8(255)).astype(np.uint8)
        return lm.MeasuredGroundReaction(
            grf_n=force, grm_nm=grm, cop_m=cop + dz, free_moment_nm=free, foot_contact=foot_contact,
            grf_total_n=force.sum(axis=1), marker_fit_rmse_m=rmse, marker_residual_m=residual,
            plate_foot_conflict=np.zeros((n, 0), bool), mass_kg=float(mass), mass_source=source,
            grf_source=f.grf_source, feet=None, extra_metrics=dict(self.extra_metrics) or None)
