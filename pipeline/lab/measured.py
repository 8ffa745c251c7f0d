"""Measured ground reactions of a lab sequence at the canonical frames: the record every lab source hands
to ``pipeline.process`` (its ``RawMotion.measured`` side-car turns into one) — pure numpy.

A lab source's side-car (``pipeline.sources.c3d.motion.C3DMeasurement``, the OpenSim and AddBiomechanics
side-cars) implements ``LabMeasurement.ground_reaction(motion, default_bmi_kg_m2)``; ``pipeline.process``
calls it once the motion is canonical and stores the result in the ground_reaction subset
(``seq_grf_source`` = ``MeasuredGroundReaction.grf_source``), runs inverse dynamics with it and compares
simulated passes against it. Everything here is in the canonical frame (z up, ground at z = 0), SI units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.lab import marker_ik as ik
from pipeline.records import GRF_SOURCE_PLATES, GRF_SOURCE_SIMULATION, CanonicalMotion  # noqa: F401 (re-exported)

NORMALIZATION = (
    "Forces in N, moments in N·m (ground reaction on the subject, world frame, z up). Body weight "
    "BW = seq_mass_kg · 9.80665 N: force / BW gives multiples of body weight; moment / (BW · seq_height_m) "
    "is dimensionless, moment / seq_mass_kg gives N·m/kg. seq_mass_source says where seq_mass_kg came from.")


@dataclass(frozen=True)
class MeasuredGroundReaction:
    """Measured ground reaction of one sequence at the canonical frames (canonical frame, SI).

    Attributes:
        grf_n, grm_nm, cop_m: (N, 2, 3) per foot (left, right); moments about the ankle joint centres.
        free_moment_nm: (N, 2). foot_contact: (N, 2) uint8, 1/0, 255 where the force is unknown.
        grf_total_n: (N, 3). marker_fit_rmse_m: (N,) IK marker RMSE. marker_residual_m: (N, K).
        plate_foot_conflict: (N, P) bool, loaded plate not assignable to one foot.
        mass_kg, mass_source: body mass and where it came from. grf_source: ``seq_grf_source`` value
            (``"force_plate"``, ``"addbiomechanics"``), ``""`` without forces.
        feet: the full ``FootGRF`` (intervals, assignment) for diagnostics (C3D plates); ``None`` otherwise.
        extra_metrics: source-specific per-sequence quality figures (name → value, units in the name),
            e.g. AddBiomechanics' own marker RMS and residuals; merged into the quality-metrics row.
    """

    grf_n: np.ndarray
    grm_nm: np.ndarray
    cop_m: np.ndarray
    free_moment_nm: np.ndarray
    foot_contact: np.ndarray
    grf_total_n: np.ndarray
    marker_fit_rmse_m: np.ndarray
    marker_residual_m: np.ndarray
    plate_foot_conflict: np.ndarray
    mass_kg: float
    mass_source: str
    grf_source: str
    feet: Any = None
    extra_metrics: dict | None = None

    @property
    def has_grf(self) -> bool:
        """Some per-foot force is known (the sequence can join the ground_reaction subset)."""
        return bool(self.grf_source) and bool(np.isfinite(self.grf_n).any())


SOURCE_DOF_SEPARATOR = " "
"""Separator of the DOF names in ``seq_source_dofs`` (OpenSim coordinate names hold no whitespace)."""


@dataclass(frozen=True)
class SourceTorques:
    """A source's own inverse-dynamics generalized forces at the canonical frames, in the source model's
    coordinates (AddBiomechanics' ``tau``): stored as ``source_tau_opensim`` / ``seq_source_dofs`` in the torque
    subset (storage_layout.md).

    Attributes:
        dof_names: (D,) coordinate names of the source model, in its order (unique, no whitespace).
        tau: (N, D) generalized force on each coordinate (OpenSim's sign: positive drives the coordinate
            positive), N·m for rotational and N for translational coordinates; NaN where unknown.
    """

    dof_names: tuple[str, ...]
    tau: np.ndarray

    def __post_init__(self) -> None:
        problem = dof_names_problem(self.dof_names)
        if problem:
            raise ValueError(problem)
        if np.ndim(self.tau) != 2 or np.shape(self.tau)[1] != len(self.dof_names):
            raise ValueError(f"source tau has shape {np.shape(self.tau)}, expected (frames, {len(self.dof_names)})")

    def payload(self) -> tuple[dict, dict]:
        """(frame arrays, sequence values) named as in the torque schema (2.3.0)."""
        return ({"source_tau_opensim": np.asarray(self.tau, dtype=np.float32)},
                {"seq_source_dofs": SOURCE_DOF_SEPARATOR.join(self.dof_names)})

    def extras(self) -> dict[str, np.ndarray]:
        """The same as hand-over extras of the canonical motion (``pipeline.store.canonical_io``), for the
        simulated passes: ``source_tau_opensim`` (N, D) and ``source_dofs`` (D,) unicode."""
        return {"source_tau_opensim": np.asarray(self.tau, dtype=np.float64),
                "source_dofs": np.asarray(self.dof_names, dtype=str)}

    @classmethod
    def from_extras(cls, extras: dict) -> SourceTorques | None:
        """The record back from ``extras()`` (``None`` when they hold none)."""
        if "source_tau_opensim" not in extras or "source_dofs" not in extras:
            return None
        return cls(tuple(str(n) for n in np.asarray(extras["source_dofs"]).tolist()),
                   np.asarray(extras["source_tau_opensim"]))


def dof_names_problem(names: tuple[str, ...]) -> str:
    """Why ``names`` cannot label ``source_tau_opensim`` columns (``""`` when they can): empty, duplicated or
    holding whitespace."""
    if not names:
        return "no source DOF names"
    bad = [n for n in names if not n or any(c.isspace() for c in n)]
    if bad:
        return f"source DOF names must be non-empty without whitespace: {bad[:3]}"
    if len(set(names)) != len(names):
        return "source DOF names are not unique"
    return ""


class LabMeasurement(Protocol):
    """A ``RawMotion.measured`` side-car of a lab source."""

    def ground_reaction(self, motion: CanonicalMotion, default_bmi_kg_m2: float) -> MeasuredGroundReaction:
        """The measured ground reaction at ``motion``'s canonical frames."""


def resample_linear(x: np.ndarray, src_rate_hz: float, t_s: np.ndarray) -> np.ndarray:
    """(len(t_s), ...) linear interpolation of per-frame samples ``x`` (T, ...) at ``src_rate_hz`` at times
    ``t_s`` (s from the first sample); NaN outside the samples' span, NaN samples propagate."""
    ts = np.arange(x.shape[0]) / src_rate_hz
    flat = x.reshape(x.shape[0], -1)
    out = np.stack([np.interp(t_s, ts, flat[:, i], left=np.nan, right=np.nan) for i in range(flat.shape[1])], axis=1)
    return out.reshape((len(t_s),) + x.shape[1:])


def ik_residuals(result: ik.IKResult, markers_z_up_m: np.ndarray, src_rate_hz: float,
                 motion: CanonicalMotion) -> tuple[np.ndarray, np.ndarray]:
    """Marker IK quality at the canonical frames: (rmse (N,), residual (N, K)) metres — the distance
    between each measured target (``markers_z_up_m`` (T, M, 3), the lab frame the IK used, resampled to the
    canonical times and shifted by the canonical ground offset) and the canonical skeleton's target."""
    obs = resample_linear(result.targets.positions(markers_z_up_m), src_rate_hz, motion.time_s)
    obs[..., 2] += motion.ground_offset_m
    skel = sk.anthropometric_skeleton(motion.height_m)
    glob, joints = sk.forward_kinematics(rot.aa_to_rotmat(motion.joint_rot_aa_rad), motion.root_pos_m, skel.offsets_m)
    pred = ik.target_positions(glob, joints, result.targets.parents, result.offsets_m)
    residual = np.linalg.norm(pred - obs, axis=-1)
    with np.errstate(invalid="ignore"):
        cnt = np.isfinite(residual).sum(axis=1)
        rmse = np.where(cnt > 0, np.sqrt(np.nansum(residual**2, axis=1) / np.maximum(cnt, 1)), np.nan)
    return rmse, residual


def without_forces(n: int, rmse: np.ndarray, residual: np.ndarray, mass_kg: float, mass_source: str
                   ) -> MeasuredGroundReaction:
    """A ``MeasuredGroundReaction`` with IK residuals only (no force known: ``has_grf`` false)."""
    nan3 = np.full((n, 2, 3), np.nan)
    return MeasuredGroundReaction(
        grf_n=nan3, grm_nm=nan3, cop_m=nan3, free_moment_nm=np.full((n, 2), np.nan),
        foot_contact=np.full((n, 2), 255, np.uint8), grf_total_n=np.full((n, 3), np.nan),
        marker_fit_rmse_m=rmse, marker_residual_m=residual, plate_foot_conflict=np.zeros((n, 0), bool),
        mass_kg=mass_kg, mass_source=mass_source, grf_source="", feet=None)
