"""Canonical motions for tests and benchmarks, straight from ``pipeline.demo`` (no files).

``demo_motion`` synthesizes one demo sequence (``demo.synthesize``) and canonicalizes it exactly
as the build does (``pipeline.canonical.canonicalize``); ``static_motion`` holds one pose.
"""

from __future__ import annotations

import numpy as np

from pipeline import demo
from pipeline import skeleton as sk
from pipeline.canonical import CanonicalConfig, canonicalize
from pipeline.records import CanonicalMotion, Provenance, RawMotion, SubjectInfo

_ROOT_UPRIGHT = np.array([np.pi / 2, 0.0, 0.0])  # R_x(+90°): template y-up → world z-up, faces −y


def demo_motion(kind: str = "walk", speed_mps: float = 1.2, duration_s: float = 4.0, subject: int = 0,
                seed: int = 0, fps_hz: float = 120.0, heading_rad: float = 0.7) -> CanonicalMotion:
    """A canonical demo motion (``walk``/``run``/``stand``/``squat``/``jump``) of subject ``subject``."""
    s = demo.make_subjects(subject + 1, seed)[subject]
    motion = demo.MotionSpec(kind, speed_mps if kind in ("walk", "run") else 0.0)
    spec = demo.SequenceSpec(
        rel_path=f"SimSynth/{s.subject_id}/{motion.label}_poses.npz", subject=s, motion=motion, fps_hz=fps_hz,
        n_frames=int(round(duration_s * fps_hz)), layout="smplh", n_betas=16, floor_z_m=0.2,
        heading_rad=heading_rad, start_xy_m=(0.5, -0.3), seed=seed * 7919 + subject * 101 + len(kind),
    )
    sm = demo.synthesize(spec)
    n = sm.trans_m.shape[0]
    body = np.concatenate([sm.body_pose_aa_rad, np.zeros((n, 2, 3))], axis=1)
    raw = RawMotion(
        provenance=Provenance("demo", spec.rel_path, "0" * 64, "SimSynth", s.subject_id, motion.label, 0),
        subject=SubjectInfo(gender=s.gender, height_m=s.height_m, mass_kg=s.mass_kg), fps_hz=fps_hz,
        root_orient_aa_rad=sm.root_orient_aa_rad, body_pose_aa_rad=body, trans_m=sm.trans_m,
    )
    return canonicalize(raw, CanonicalConfig())


def static_motion(local_aa_rad: np.ndarray | None = None, duration_s: float = 2.0, height_m: float = 1.75,
                  mass_kg: float = 70.0, lift_m: float = 0.0, gender: str = "neutral") -> CanonicalMotion:
    """A motion holding one pose (default the T-pose, upright) with the soles on the floor + ``lift_m``."""
    local = np.zeros((sk.N_JOINTS, 3)) if local_aa_rad is None else np.asarray(local_aa_rad, float).copy()
    local[0] = _ROOT_UPRIGHT if local_aa_rad is None or not np.any(local[0]) else local[0]
    n = int(round(duration_s * 30.0)) + 1
    t = np.arange(n) / 30.0
    raw = RawMotion(
        provenance=Provenance("demo", "SimSynth/static.npz", "0" * 64, "SimSynth", "S00", "static", 0),
        subject=SubjectInfo(gender=gender, height_m=height_m, mass_kg=mass_kg), fps_hz=30.0,
        root_orient_aa_rad=np.repeat(local[None, 0], n, 0), body_pose_aa_rad=np.repeat(local[None, 1:], n, 0),
        trans_m=np.zeros((n, 3)),
    )
    m = canonicalize(raw, CanonicalConfig())
    if lift_m:
        dz = np.array([0.0, 0.0, lift_m])
        m = CanonicalMotion(**{**m.__dict__, "root_pos_m": m.root_pos_m + dz, "joint_pos_m": m.joint_pos_m + dz,
                               "marker_pos_m": m.marker_pos_m + dz, "foot_points_m": m.foot_points_m + dz})
    del t
    return m
