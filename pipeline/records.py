"""Frozen records passed between stages. Arrays are numpy; units are in the field names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

GRF_SOURCE_PLATES = "force_plate"
GRF_SOURCE_SIMULATION = "simulation"
"""``seq_grf_source`` of measured plate forces and of simulated ones (``pipeline.lab.measured``
re-exports both)."""


@dataclass(frozen=True)
class Provenance:
    """Where a sequence came from.

    Attributes:
        source: source kind, e.g. ``"amass"``.
        path: file path relative to the source root, POSIX separators.
        sha256: hex digest of the file's bytes.
        dataset: dataset id (AMASS sub-dataset, e.g. ``"CMU"``).
        subject: subject id within the dataset.
        name: sequence name (file stem without the ``_poses`` suffix).
        size_bytes: file size in bytes.
        licence: licence of the source data (``pipeline.sources.base.find_licence``), ``"unknown"``
            when no licence sidecar was found.
    """

    source: str
    path: str
    sha256: str
    dataset: str
    subject: str
    name: str
    size_bytes: int
    licence: str = "unknown"

    @property
    def sequence_id(self) -> str:
        """Globally unique id ``<source>/<dataset>/<subject>/<name>``."""
        return f"{self.source}/{self.dataset}/{self.subject}/{self.name}"

    @property
    def subject_id(self) -> str:
        """Subject key used for subject-wise splits: ``<source>/<dataset>/<subject>``."""
        return f"{self.source}/{self.dataset}/{self.subject}"


@dataclass(frozen=True)
class SubjectInfo:
    """Body parameters of a subject. ``None`` means unknown (defaults documented in docs/conventions.md)."""

    gender: str = "neutral"  # "male" | "female" | "neutral"
    height_m: float | None = None
    mass_kg: float | None = None
    betas: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


@dataclass(frozen=True)
class RawMotion:
    """A motion as read from a source, before canonicalization (SMPL joint convention).

    Attributes:
        provenance: origin of the data.
        subject: body parameters.
        fps_hz: source frame rate, Hz.
        root_orient_aa_rad: (T, 3) global pelvis rotation (template → source world), axis-angle, rad.
        body_pose_aa_rad: (T, 23, 3) local rotations of SMPL joints 1..23, axis-angle, rad.
            Hand joints 22/23 are zero for SMPL-H/SMPL-X input (finger articulation dropped).
        trans_m: (T, 3) SMPL ``trans`` (world pelvis = ``trans + J0``), metres.
        up_axis: vertical axis of the source world frame, ``"z"`` or ``"y"``.
        model_type: ``"smpl"``, ``"smplh"`` or ``"smplx"``.
        measured: optional side-car with measured data that ``pipeline.process.process_motion`` carries
            to the canonical rate, e.g. ``pipeline.sources.c3d.motion.C3DMeasurement`` (force plates, marker IK
            residuals) for C3D files; ``None`` for pose sources such as AMASS.
    """

    provenance: Provenance
    subject: SubjectInfo
    fps_hz: float
    root_orient_aa_rad: np.ndarray
    body_pose_aa_rad: np.ndarray
    trans_m: np.ndarray
    up_axis: str = "z"
    model_type: str = "smplh"
    measured: Any = None

    @property
    def n_frames(self) -> int:
        return int(self.trans_m.shape[0])


@dataclass(frozen=True)
class CanonicalMotion:
    """A motion at the canonical rate in the canonical frame (z up, metres, radians, ground at z = 0).

    Attributes:
        provenance: origin of the data.
        gender, height_m, mass_kg, betas: subject parameters actually used (defaults filled in).
        fps_hz: canonical frame rate, Hz.
        source_fps_hz: original frame rate, Hz.
        time_s: (N,) frame times from the first source frame, seconds (exactly k / fps_hz).
        root_pos_m: (N, 3) world pelvis position, metres.
        joint_rot_aa_rad: (N, 24, 3) joint rotations, axis-angle, rad; joint 0 global, others local.
        joint_pos_m: (N, 24, 3) world joint positions, metres.
        marker_pos_m: (N, M, 3) world virtual-marker positions, metres (``pipeline.markers``).
        foot_points_m: (N, 4, 3) world sole points (left heel, left toe, right heel, right toe), metres.
        bone_length_m: (23,) per-subject bone lengths in ``skeleton.BONES`` order, metres.
        ground_offset_m: vertical shift applied to put the lowest sole point at z = 0, metres.
        skeleton_origin: ``"anthropometric"`` or ``"smpl-model:<file>"``.
    """

    provenance: Provenance
    gender: str
    height_m: float
    mass_kg: float
    betas: np.ndarray
    fps_hz: float
    source_fps_hz: float
    time_s: np.ndarray
    root_pos_m: np.ndarray
    joint_rot_aa_rad: np.ndarray
    joint_pos_m: np.ndarray
    marker_pos_m: np.ndarray
    foot_points_m: np.ndarray
    bone_length_m: np.ndarray
    ground_offset_m: float
    skeleton_origin: str

    @property
    def n_frames(self) -> int:
        return int(self.time_s.shape[0])


@dataclass(frozen=True)
class QuarantineEntry:
    """A file that could not be built: which file, at which stage, and why (one line)."""

    path: str
    stage: str
    reason: str
