"""One sequence through the pure stages: canonicalize → contact → fit → split.

``process_motion`` is what a per-file task runs between reading (``pipeline.sources``) and
staging (``pipeline.store``); ``stage_payload`` names its arrays as the subset schemas do.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import fit
from pipeline.canonical import CanonicalConfig, canonicalize
from pipeline.contact import ContactConfig, contact_labels
from pipeline.lab.completeness import mask_incomplete
from pipeline.lab.measured import GRF_SOURCE_SIMULATION
from pipeline.records import CanonicalMotion, RawMotion
from pipeline.rotations import aa_continuous
from pipeline.simulate import SimConfig, SimulationResult
from pipeline.split import Availability, SplitConfig, assign_split, subsets_for

N_BETAS = 16
"""Width of the stored ``seq_betas`` array; shorter vectors are NaN-padded, longer truncated."""


@dataclass(frozen=True)
class BuildConfig:
    """Every knob of the pure stages; part of a build's recorded configuration."""

    canonical: CanonicalConfig = field(default_factory=CanonicalConfig)
    contact: ContactConfig = field(default_factory=ContactConfig)
    windows: fit.WindowConfig = field(default_factory=fit.WindowConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    simulate: SimConfig | None = field(default_factory=SimConfig)
    """Imitation engine settings; ``None`` skips simulation (no ground_reaction/torque data)."""
    sim_backend: str = "cpu"
    """``cpu`` (MuJoCo), ``gpu`` (MuJoCo Warp/MJX on a GPU worker) or ``isaacgym``."""


@dataclass(frozen=True)
class ProcessedSequence:
    """A canonical motion with its contact labels, polynomial windows and split.

    Attributes:
        motion: canonical motion (N frames).
        contact: (N, 4) bool contact per sole point (``skeleton.FOOT_POINT_NAMES``).
        window_start: (W,) first frame of each window, relative to the sequence.
        joint_pos_fit: cubic fit of ``joint_pos_m``: coef (W, 4, 24, 3) m, rmse (W,) m.
        joint_rot_fit: cubic fit of continuous joint axis-angles: coef (W, 4, 24, 3) rad, rmse (W,) rad.
        split: ``train`` | ``val`` | ``test``.
        subsets: subsets the sequence belongs to.
        measured: measured data at the canonical frames (``pipeline.lab.measured.MeasuredGroundReaction``
            for C3D files: per-foot force-plate GRF, IK marker residuals); ``None`` otherwise.
    """

    motion: CanonicalMotion
    contact: np.ndarray
    window_start: np.ndarray
    joint_pos_fit: fit.FitResult
    joint_rot_fit: fit.FitResult
    split: str
    subsets: tuple[str, ...]
    measured: Any = None
    measured_fits: tuple[fit.FitResult, fit.FitResult] | None = None
    """Cubic window fits of the measured ``grf_n`` (N) and ``grm_nm`` (N·m) when ``measured`` has GRF."""
    inverse_dynamics: Any = None
    """``pipeline.inverse_dynamics.IDResult`` of a sequence with measured GRF (joint torques with the
    plate forces on the simulator's humanoid; NaN where a foot's force is unknown), else ``None``."""
    torque_fit: fit.FitResult | None = None
    """Linear window fit (``fit.TORQUE_DEGREE``) of the inverse-dynamics torques, N·m."""
    source_torques: Any = None
    """``pipeline.lab.measured.SourceTorques``: the source's own ID generalized forces at the canonical frames
    (AddBiomechanics' ``tau``), else ``None``; staged with the sequence when it joins the torque subset, and
    handed to its simulated passes."""

    def metric_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for the quality metrics beyond the staged payload (IK residuals, plate conflicts)."""
        m = self.measured
        if m is None:
            return {}
        out = {"marker_residual_m": m.marker_residual_m}
        if m.has_grf:
            out["plate_foot_conflict"] = m.plate_foot_conflict
        # a source's own per-sequence figures (AddBiomechanics: marker RMS, residuals) as 0-d arrays
        for k, v in (getattr(m, "extra_metrics", None) or {}).items():
            out[k] = np.asarray(float(v))
        return out


def process_motion(raw: RawMotion, cfg: BuildConfig, seconds: dict | None = None) -> ProcessedSequence:
    """Run canonicalize, contact, fit and split on one raw motion.

    If ``seconds`` is given, the wall time of each stage is added to it under
    ``canonicalize``, ``contact``, ``fit`` and (sequences with measured GRF)
    ``inverse_dynamics`` (seconds).

    A side-car with ``source_torques(motion)`` (AddBiomechanics) gives the source's own ID generalized
    forces at the canonical frames (``ProcessedSequence.source_torques``).

    A sequence with measured ground reactions (C3D force plates) also gets joint torques by
    inverse dynamics (``pipeline.inverse_dynamics.measured_inverse_dynamics`` on the simulator's
    humanoid, ``cfg.simulate.humanoid`` parameters) and joins the torque subset when some frame has
    both feet's forces known.
    """
    seconds = {} if seconds is None else seconds
    t0 = time.perf_counter()
    measured = source_tau = None
    if raw.measured is not None:
        # the marker IK fitted the anthropometric skeleton: canonicalize on the same one
        motion = canonicalize(raw, dataclasses.replace(cfg.canonical, smpl_model_dir=None))
        measured = _measured(raw.measured, motion, cfg)
        has_grf = getattr(measured, "has_grf", False)  # KIT's side-car has joint fits, no forces
        if has_grf:
            # frames whose plates cannot have measured the whole load become unknown (docstring of
            # pipeline.lab.completeness)
            measured = mask_incomplete(measured, motion)
        if hasattr(raw.measured, "source_torques"):
            source_tau = raw.measured.source_torques(motion)
        if has_grf and measured.mass_kg != motion.mass_kg:
            # no stated mass (or only a model's): the plates' fit (pipeline.lab.body_mass)
            motion = dataclasses.replace(motion, mass_kg=measured.mass_kg)
    else:
        motion = canonicalize(raw, cfg.canonical)
    t1 = time.perf_counter()
    contact = contact_labels(motion.foot_points_m, motion.fps_hz, cfg.contact)
    t2 = time.perf_counter()
    length, stride = cfg.windows.length, cfg.windows.stride
    starts = fit.window_starts(motion.n_frames, length, stride)
    pos_fit = fit.fit_windows(motion.joint_pos_m, starts, length, fit.KINEMATICS_DEGREE)
    rot_fit = fit.fit_windows(aa_continuous(motion.joint_rot_aa_rad, axis=0), starts, length, fit.KINEMATICS_DEGREE)
    t3 = time.perf_counter()
    for key, dt in (("canonicalize", t1 - t0), ("contact", t2 - t1), ("fit", t3 - t2)):
        seconds[key] = seconds.get(key, 0.0) + dt
    split = assign_split(motion.provenance.subject_id, cfg.split)
    has_grf = measured is not None and measured.has_grf
    fits = idr = tau_fit = None
    if has_grf:
        fits = (fit.fit_windows(measured.grf_n, starts, length, fit.GRF_DEGREE),
                fit.fit_windows(measured.grm_nm, starts, length, fit.GRF_DEGREE))
        t4 = time.perf_counter()
        idr = _inverse_dynamics(motion, measured, cfg)
        tau_fit = fit.fit_windows(idr.joint_torque_nm, starts, length, fit.TORQUE_DEGREE)
        seconds["inverse_dynamics"] = seconds.get("inverse_dynamics", 0.0) + time.perf_counter() - t4
    has_torque = idr is not None and bool(idr.known.any())
    subsets = subsets_for(Availability(has_contact=True, has_grf=has_grf, has_torque=has_torque))
    return ProcessedSequence(
        motion=motion, contact=contact, window_start=starts, joint_pos_fit=pos_fit,
        joint_rot_fit=rot_fit, split=split, subsets=subsets, measured=measured, measured_fits=fits,
        inverse_dynamics=idr if has_torque else None, torque_fit=tau_fit if has_torque else None,
        source_torques=source_tau,
    )


def _inverse_dynamics(motion: CanonicalMotion, measured: Any, cfg: BuildConfig) -> Any:
    """Inverse dynamics with the measured forces on the simulator's humanoid (its contact/joint
    parameters from ``cfg.simulate`` when set; they only matter through the armature, which is
    left out: ``pipeline.inverse_dynamics``)."""
    from pipeline.inverse_dynamics import measured_inverse_dynamics

    params = cfg.simulate.humanoid if cfg.simulate is not None else None
    return measured_inverse_dynamics(motion, measured, params=params)


def _measured(side_car: Any, motion: CanonicalMotion, cfg: BuildConfig) -> Any:
    """Measured data of a source's side-car at the canonical frames: a lab source's force plates
    (``pipeline.lab.measured.LabMeasurement.ground_reaction``) or a side-car's own ``at_canonical``
    (KIT: joint-fit residuals, ``pipeline.sources.kit.source.KITMeasurement``)."""
    if hasattr(side_car, "ground_reaction"):
        return side_car.ground_reaction(motion, cfg.canonical.default_bmi_kg_m2)
    if hasattr(side_car, "at_canonical"):
        return side_car.at_canonical(motion, cfg)
    raise TypeError(f"unknown measured side-car {type(side_car).__name__}")


def measured_payload(p: ProcessedSequence) -> tuple[dict, dict, dict]:
    """Ground_reaction arrays of a sequence with measured forces (frame, window, sequence values):
    the schema's GRF arrays (NaN where unknown), their cubic window fits and ``seq_grf_source``;
    with inverse dynamics also the torque subset's arrays: ``joint_torque_nm`` (NaN where a foot's
    force is unknown), its linear window fit, the root residual (``residual_force_n``,
    ``residual_torque_nm``) and ``seq_torque_source`` = ``inverse_dynamics``."""
    m = p.measured
    f32 = np.float32
    frame = {
        "grf_n": m.grf_n.astype(f32),
        "grm_nm": m.grm_nm.astype(f32),
        "cop_m": m.cop_m.astype(f32),
        "grf_total_n": m.grf_total_n.astype(f32),
        "free_moment_nm": m.free_moment_nm.astype(f32),
        "foot_contact": m.foot_contact.astype(np.uint8),
        "marker_fit_rmse_m": m.marker_fit_rmse_m.astype(f32),
    }
    grf, grm = p.measured_fits
    window = {"grf_coef_n": grf.coef.astype(f32), "grm_coef_nm": grm.coef.astype(f32),
              "grf_fit_rmse_n": grf.rmse.astype(f32)}
    seq = {"seq_grf_source": m.grf_source, "seq_mass_source": m.mass_source, "seq_pass": -1, "seq_sim_resets": -1}
    idr = p.inverse_dynamics
    if idr is not None:
        frame["joint_torque_nm"] = idr.joint_torque_nm.astype(f32)
        frame["residual_force_n"] = idr.residual_wrench[:, :3].astype(f32)
        frame["residual_torque_nm"] = idr.residual_wrench[:, 3:].astype(f32)
        window["torque_coef_nm"] = p.torque_fit.coef.astype(f32)
        window["torque_fit_rmse_nm"] = p.torque_fit.rmse.astype(f32)
        seq["seq_torque_source"] = TORQUE_SOURCE_ID
    return frame, window, seq


def _padded_betas(betas: np.ndarray) -> np.ndarray:
    out = np.full(N_BETAS, np.nan, dtype=np.float32)
    b = np.asarray(betas, dtype=np.float32).reshape(-1)[:N_BETAS]
    out[: b.size] = b
    return out


def stage_payload(p: ProcessedSequence) -> tuple[dict, dict, dict]:
    """(frame arrays, window arrays, sequence values) named as in the subset schemas.

    ``window_start`` is relative to the sequence here; the store writer makes it global. A sequence of the
    torque subset with source torques also stages ``source_tau_opensim`` and ``seq_source_dofs``.
    """
    m = p.motion
    f32 = np.float32
    frame_arrays = {
        "time_s": m.time_s.astype(f32),
        "root_pos_m": m.root_pos_m.astype(f32),
        "joint_rot_aa_rad": m.joint_rot_aa_rad.astype(f32),
        "joint_pos_m": m.joint_pos_m.astype(f32),
        "marker_pos_m": m.marker_pos_m.astype(f32),
        "contact": p.contact.astype(np.uint8),
    }
    window_arrays = {
        "window_start": p.window_start.astype(np.int64),
        "joint_pos_coef_m": p.joint_pos_fit.coef.astype(f32),
        "joint_pos_fit_rmse_m": p.joint_pos_fit.rmse.astype(f32),
        "joint_rot_coef_rad": p.joint_rot_fit.coef.astype(f32),
        "joint_rot_fit_rmse_rad": p.joint_rot_fit.rmse.astype(f32),
    }
    prov = m.provenance
    sequence_values = {
        "seq_id": prov.sequence_id,
        "seq_source": prov.source,
        "seq_dataset": prov.dataset,
        "seq_subject": prov.subject,
        "seq_name": prov.name,
        "seq_path": prov.path,
        "seq_source_sha256": prov.sha256,
        "seq_licence": prov.licence,
        "seq_split": p.split,
        "seq_gender": m.gender,
        "seq_skeleton": m.skeleton_origin,
        "seq_height_m": float(m.height_m),
        "seq_mass_kg": float(m.mass_kg),
        "seq_ground_offset_m": float(m.ground_offset_m),
        "seq_source_fps_hz": float(m.source_fps_hz),
        "seq_duration_s": float(m.n_frames / m.fps_hz),
        "seq_betas": _padded_betas(m.betas),
        "seq_bone_length_m": m.bone_length_m.astype(f32),
    }
    if p.measured is not None and p.measured.has_grf:
        frame, window, seq = measured_payload(p)
        frame_arrays.update(frame)
        window_arrays.update(window)
        sequence_values.update(seq)
    if p.source_torques is not None and "torque" in p.subsets:
        frame, seq = p.source_torques.payload()
        frame_arrays.update(frame)
        sequence_values.update(seq)
    return frame_arrays, window_arrays, sequence_values


TORQUE_SOURCE_ID = "inverse_dynamics"
TORQUE_SOURCE_SIMULATION = "simulation"
"""``seq_torque_source`` values: measured sequences' inverse dynamics / simulated passes."""

SIM_CONTACT_THRESHOLD_N = 20.0
"""Vertical floor force on a body above which its sole point counts as in contact, N."""


def sample_contact(body_fz_n: np.ndarray, threshold_n: float = SIM_CONTACT_THRESHOLD_N) -> np.ndarray:
    """(N, P) bool contact labels *at the frames* from (N, P) vertical forces that are interval
    means over t_i → t_{i+1} (N): a point is in contact at t_i when its body carries at least
    ``threshold_n`` over both intervals around t_i (t_{i−1} → t_i and t_i → t_{i+1}; the first
    frame has only the second). The states are samples at t_i; labelling t_i from the interval
    after it alone marks a landing foot in contact one frame early, while it is still centimetres
    up and moving (demo 3.5 m/s runs: heels 4 cm above the floor at ≈ 2 m/s).
    """
    loaded = np.asarray(body_fz_n) >= threshold_n
    out = loaded.copy()
    out[1:] &= loaded[:-1]
    return out


_SOLE_BODIES = (7, 10, 8, 11)  # left_heel→left_ankle, left_toe→left_foot, right_heel→right_ankle, right_toe→right_foot


def simulated_key(sequence_id: str, pass_index: int) -> str:
    """Staging/metrics key of a simulated pass: ``<sequence id>#pass<k>``."""
    return f"{sequence_id}#pass{int(pass_index)}"


def simulated_payload(
    motion: CanonicalMotion, result: SimulationResult, split: str, windows: fit.WindowConfig,
    source_torques: Any = None,
) -> tuple[dict, dict, dict]:
    """(frame arrays, window arrays, sequence values) of one simulated pass, named as in the
    ground_reaction/torque schemas (2.0.0).

    The observed arrays (``root_pos_m``, ``joint_*``, ``marker_pos_m``) are the simulator's
    states, so torques and forces are consistent with them; ``ref_*`` hold the tracked canonical
    motion. ``contact`` comes from the simulator's floor forces: a heel (toe) point is in contact
    at a frame when its ankle (foot) body carries ≥ ``SIM_CONTACT_THRESHOLD_N`` vertically over
    both intervals around it (``sample_contact``; ``foot_contact`` is the per-interval label). Windows: cubic
    for kinematics and GRF/moments, linear for torques. ``source_torques``
    (``pipeline.lab.measured.SourceTorques`` of the tracked motion, e.g. AddBiomechanics' ID): staged
    beside the pass as ``source_tau_opensim`` / ``seq_source_dofs``.
    """
    from pipeline.simulate.engine import GRAVITY_MPS2

    f32 = np.float32
    n = motion.n_frames
    if result.n_frames != n:
        raise ValueError(f"simulation of {motion.provenance.sequence_id} has {result.n_frames} frames, motion {n}")
    body_fz = result.body_contact_force_n[:, list(_SOLE_BODIES), 2]
    frame_arrays = {
        "time_s": motion.time_s.astype(f32),
        "root_pos_m": result.sim_root_pos_m.astype(f32),
        "joint_rot_aa_rad": result.sim_joint_rot_aa_rad.astype(f32),
        "joint_pos_m": result.sim_joint_pos_m.astype(f32),
        "marker_pos_m": result.sim_marker_pos_m.astype(f32),
        "contact": sample_contact(body_fz).astype(np.uint8),
        "grf_n": result.grf_n.astype(f32),
        "grm_nm": result.grm_nm.astype(f32),
        "cop_m": result.cop_m.astype(f32),
        "grf_total_n": result.grf_total_n.astype(f32),
        "joint_torque_nm": result.joint_torque_nm.astype(f32),
        "ref_root_pos_m": motion.root_pos_m.astype(f32),
        "ref_joint_rot_aa_rad": motion.joint_rot_aa_rad.astype(f32),
        "ref_joint_pos_m": motion.joint_pos_m.astype(f32),
        "ref_marker_pos_m": motion.marker_pos_m.astype(f32),
        "body_contact_force_n": result.body_contact_force_n.astype(f32),
        "free_moment_nm": result.free_moment_nm.astype(f32),
        "foot_contact": np.asarray(result.foot_contact).astype(np.uint8),
        "residual_force_n": result.residual_wrench[:, :3].astype(f32),
        "residual_torque_nm": result.residual_wrench[:, 3:].astype(f32),
        "mpjpe_m": result.mpjpe_m.astype(f32),
        "reset": np.asarray(result.reset).astype(np.uint8),
        "imposed_angmom_nms": result.imposed_angmom_nms.astype(f32),
    }
    starts = fit.window_starts(n, windows.length, windows.stride)
    L = windows.length
    pos = fit.fit_windows(result.sim_joint_pos_m, starts, L, fit.KINEMATICS_DEGREE)
    rot = fit.fit_windows(aa_continuous(result.sim_joint_rot_aa_rad, axis=0), starts, L, fit.KINEMATICS_DEGREE)
    grf = fit.fit_windows(result.grf_n, starts, L, fit.GRF_DEGREE)
    grm = fit.fit_windows(result.grm_nm, starts, L, fit.GRF_DEGREE)
    tau = fit.fit_windows(result.joint_torque_nm, starts, L, fit.TORQUE_DEGREE)
    window_arrays = {
        "window_start": starts.astype(np.int64),
        "joint_pos_coef_m": pos.coef.astype(f32),
        "joint_pos_fit_rmse_m": pos.rmse.astype(f32),
        "joint_rot_coef_rad": rot.coef.astype(f32),
        "joint_rot_fit_rmse_rad": rot.rmse.astype(f32),
        "grf_coef_n": grf.coef.astype(f32),
        "grm_coef_nm": grm.coef.astype(f32),
        "grf_fit_rmse_n": grf.rmse.astype(f32),
        "torque_coef_nm": tau.coef.astype(f32),
        "torque_fit_rmse_nm": tau.rmse.astype(f32),
    }
    _, _, seq = stage_payload(
        ProcessedSequence(motion, np.zeros((n, 4), bool), starts, pos, rot, split, ())
    )
    m = result.metrics
    seq.update({
        "seq_grf_source": GRF_SOURCE_SIMULATION,
        "seq_torque_source": TORQUE_SOURCE_SIMULATION,
        "seq_pass": int(result.pass_index),
        "seq_sim_resets": int(m["reset_count"]),
        "seq_sim_mpjpe_median_m": float(m["mpjpe_median_mm"]) / 1000.0,
        "seq_sim_mpjpe_p95_m": float(m["mpjpe_p95_mm"]) / 1000.0,
        "seq_sim_residual_force_p95_bw": float(np.percentile(
            np.linalg.norm(result.residual_demand_wrench[:, :3], axis=-1) / (motion.mass_kg * GRAVITY_MPS2), 95
        )),
        "seq_sim_residual_le_5pct_bw_frac": float(m["residual_force_demand_le_5pct_bw_frac"]),
        "seq_sim_newton_euler_imbalance_p95_bw": float(m["newton_euler_imbalance_p95_bw"]),
    })
    if source_torques is not None:
        if source_torques.tau.shape[0] != n:
            raise ValueError(f"source torques of {motion.provenance.sequence_id} have {source_torques.tau.shape[0]} "
                             f"frames, motion {n}")
        more_frame, more_seq = source_torques.payload()
        frame_arrays.update(more_frame)
        seq.update(more_seq)
    return frame_arrays, window_arrays, seq
