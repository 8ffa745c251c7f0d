"""Imitation engine: simulate canonical motions with the tracking controller and record dynamics.

Timing: output frame ``i`` (the motion's ``fps_hz``, 30 FPS) is the state at ``t_i = i/fps``;
its *interval* quantities (torques, contact forces, residual) cover ``[t_i, t_{i+1})``:
``control_hz/fps`` control ticks (4 at 120 Hz), each held (zero-order hold) over
``1/(control_hz·physics_dt)`` physics steps (4 at 1/480 s). The last frame's interval tracks the
reference spline extrapolated by one frame, so every frame has defined values.

See docs/simulation.md for every recorded convention.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from dataclasses import dataclass, field

import mujoco
import numpy as np

from pipeline import markers as mk
from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.dynamics import DynamicsConfig, DynamicsResult, dynamics_pass
from pipeline.records import CanonicalMotion
from pipeline.simulate.anchor import FlightAnchor
from pipeline.simulate.controller import ContactQP, Gains, TrackingController, cross
from pipeline.simulate.humanoid import GRAVITY_MPS2, Humanoid, HumanoidParams, build_humanoid, skeleton_from_motion
from pipeline.simulate.initial_state import contact_equilibrium_offset, vertical_load_n
from pipeline.simulate.reference import Reference, build_reference

LEFT_FOOT_BODIES = (7, 10)
RIGHT_FOOT_BODIES = (8, 11)
COP_MIN_FZ_N = 20.0
"""Centre of pressure / free moment are NaN and the foot is not in contact below this |Fz|, N."""


@dataclass(frozen=True)
class SimConfig:
    """Settings of the imitation engine (all deterministic).

    Attributes:
        control_hz: control rate, Hz (integer multiple of the motion's fps).
        physics_dt_s: physics step, s (``1/control_hz`` must be an integer number of steps).
        gains: PD natural frequencies / damping (``controller.Gains``).
        contact: contact-force distribution settings (``controller.ContactQP``).
        residual: apply the root residual wrench (residual force control); off = pure torques.
        residual_force_limit_bw: the applied residual force is capped at this × body weight
            (the uncapped demand is recorded in the metrics); ``inf`` = uncapped.
        residual_torque_limit_nm_per_kg: cap of the applied residual torque, N·m per kg (1.0: 50–
            100 N·m for a 50–100 kg subject; balance comes from the contact forces; ``inf`` = uncapped).
        torque_limits: clip joint torques to ``humanoid.TORQUE_LIMIT_NM_PER_KG × mass``.
        reset_root_height_err_m: reset when |z_pelvis − z_pelvis,ref| exceeds this, m.
        reset_mpjpe_m: reset when the mean joint position error (world) exceeds this, m.
        passes: how many passes (``pass_index`` 0..passes−1) the build runs per motion.
        pass_gain_range: pass ``p ≥ 1`` scales all ω by a log-uniform factor in this range.
        pass_joint_noise_rad: pass ``p ≥ 1`` perturbs the initial ball-joint rotations (σ, rad).
        pass_root_vel_noise_mps: pass ``p ≥ 1`` perturbs the initial pelvis velocity (σ, m/s).
        humanoid: MJCF contact/joint parameters.
        stiff_joints: ball joints that also get a physics-rate spring toward the reference
            (MuJoCo joint stiffness, ``qpos_spring`` set to the reference at every control tick)
            plus at least ``stiff_joint_damping`` of implicit damping. Default: the toes, whose
            ≈0.2 kg segment carries up to ~1 BW at push-off; a zero-order-hold P-term alone lets
            them fold under the load. The spring and damper torques are part of the recorded
            joint torque.
        stiff_joint_stiffness_nm_per_rad_per_kg: spring stiffness, N·m/rad per kg body mass
            (× gain scale² on passes ≥ 1).
        stiff_joint_damping_nms_per_rad_per_kg: minimum damping of those joints, N·m·s/rad per kg
            (× gain scale); with implicit damping the spring is stable when
            ``damping > physics_dt · stiffness / 2``.
        dynamics: the dynamics pass (``pipeline.dynamics``) run before tracking: the motion is
            conditioned and its pelvis translation corrected so that contact forces inside
            friction cones explain it; the controller tracks that motion and shares the load
            between the feet as its force plan says (default). ``None`` tracks the canonical
            motion as it is, the previous engine (``dynaset build --no-dynamics-pass``);
            docs/simulation.md has the measured effect on the lab walks and the demo corpus.
        plan_target_weight: weight of the plan's load sharing between the feet in the per-tick
            contact distribution (``TrackingController.compute``); 0 = ignore it.
        plan_gate_n: with a dynamics pass, a foot's contacts are planned over a control interval
            only if the plan's vertical force on it exceeds this at both ends (replaces the
            sole-height stance gate), N.
        swing_clearance: with a dynamics pass, a foot the plan leaves unloaded does not collide
            with the floor from its lift-off until ``swing_landing_lead_s`` before the plan loads
            it again. Real swing feet clear the floor by 1–3 cm (the lab walks' lowest swing corner:
            0.6–2.6 cm); a centimetre of tracking error would otherwise make the simulated swing foot
            scuff and carry up to half the body weight the plate never saw, which tips the body
            over. How deep a cleared foot went below the floor is recorded
            (``metrics["swing_penetration_max_m"]``); its recorded floor force is zero then.
        swing_landing_lead_s: collisions of a landing foot are back on this long before the plan
            loads it, s. 0 (default): at the tick the plan loads it. The previous 67 ms let a
            running foot touch down while still moving forward (demo 3.5 m/s runs: foot-skating
            p95 0.55–0.90 m/s → 0.43–0.49) and made no difference on the lab walks but
            PiG_Motion3_FF (λ 0.93/0.63 → 0.82/0.54 N/kg, 3-pass means).
        reanchor_after_flight_s: with a dynamics pass, after a flight (the plan loads neither
            foot) at least this long the tracked reference is shifted horizontally to where the
            simulated feet landed (``pipeline.simulate.anchor``); 0 = never. Walks and runs
            (flights ≤ 0.13 s) are not affected.
        landing_seat: with a dynamics pass, a walking touch-down — the plan starts loading a foot
            while the other foot has carried load for at least ``landing_seat_support_s`` — whose
            simulated sole is still above the floor (lowest sole corner > ``landing_seat_margin_m``)
            is brought down: that leg's hip and knee accelerations are corrected (damped least
            squares) so that its ankle's vertical acceleration follows a PD of natural frequency
            ``landing_seat_omega`` (rad/s, critically damped) toward the height at which the lowest
            corner touches the floor, until it first does (``TrackingController.seat_landing_feet``).
            The plates load a landing foot ≈ 1.5 frames before the reference foot reaches the floor
            (Gait, walking2): without it the tracked foot lands late and the weight transfer comes
            as an impact. Touch-downs after a flight (runs, jumps) are left alone. Measured effect
            in docs/simulation.md (fifth round).
        initial_contact_seat: start each pass moved vertically (within
            ``initial_state.SEAT_RANGE_M``) to where the soft floor contacts, at rest, carry the
            vertical force the reference's first acceleration needs (feet the swing clearance lifts
            do not count; ``initial_state.contact_equilibrium_offset``). Without it the first
            interval reads the contacts' spring-back (1.22 BW on the demo stand, 1.00 seated). Off by
            default: on 100 real runs (10 lab trials × 10 passes) it was no better (paired median
            change of λ 0, mean +0.03 N/kg, 18 runs better and 28 worse by > 0.02; docs/simulation.md).
    """

    control_hz: float = 120.0
    physics_dt_s: float = 1.0 / 480.0
    gains: Gains = field(default_factory=Gains)
    contact: ContactQP = field(default_factory=ContactQP)
    residual: bool = True
    residual_force_limit_bw: float = 0.05
    residual_torque_limit_nm_per_kg: float = 1.0
    torque_limits: bool = True
    reset_root_height_err_m: float = 0.25
    reset_mpjpe_m: float = 0.30
    passes: int = 1
    pass_gain_range: tuple[float, float] = (0.8, 1.25)
    pass_joint_noise_rad: float = 0.02
    pass_root_vel_noise_mps: float = 0.03
    humanoid: HumanoidParams = field(default_factory=HumanoidParams)
    stiff_joints: tuple[str, ...] = ("left_foot", "right_foot")
    stiff_joint_stiffness_nm_per_rad_per_kg: float = 6.0
    stiff_joint_damping_nms_per_rad_per_kg: float = 0.03
    dynamics: DynamicsConfig | None = field(default_factory=DynamicsConfig)
    plan_target_weight: float = 3.0
    plan_gate_n: float = 20.0
    swing_clearance: bool = True
    swing_landing_lead_s: float = 0.0
    reanchor_after_flight_s: float = 0.2
    landing_seat: bool = True
    landing_seat_support_s: float = 0.1
    landing_seat_margin_m: float = 0.005
    landing_seat_omega: float = 25.0
    initial_contact_seat: bool = False

    def __post_init__(self) -> None:
        if not self.control_hz > 0 or not self.physics_dt_s > 0:
            raise ValueError("control_hz and physics_dt_s must be > 0")
        sub = 1.0 / (self.control_hz * self.physics_dt_s)
        if abs(sub - round(sub)) > 1e-6 or round(sub) < 1:
            raise ValueError(f"1/control_hz must be a whole number of physics steps, got {sub:.4f}")
        if self.passes < 1:
            raise ValueError("passes must be >= 1")
        if not (self.landing_seat_support_s >= 0 and self.landing_seat_margin_m >= 0 and self.landing_seat_omega > 0):
            raise ValueError("landing_seat_support_s and landing_seat_margin_m must be >= 0, landing_seat_omega > 0")

    @property
    def substeps(self) -> int:
        return int(round(1.0 / (self.control_hz * self.physics_dt_s)))


@dataclass(frozen=True)
class SimulationResult:
    """What one pass over one motion recorded (N output frames at ``fps_hz``).

    States at ``t_i`` (simulated; the reference is the ``CanonicalMotion`` itself):
        sim_root_pos_m (N, 3), sim_joint_rot_aa_rad (N, 24, 3) (joint 0 global, others local),
        sim_joint_pos_m (N, 24, 3), sim_marker_pos_m (N, M, 3), sim_com_pos_m (N, 3),
        sim_com_vel_mps (N, 3) — world frame.
    Interval quantities over ``[t_i, t_{i+1})``:
        joint_torque_nm (N, 23, 3): mean torque of ball joints 1..23, child-body (joint-local)
            frame, applied by the parent on the child.
        imposed_angmom_nms (N, 23, 3): torque summed over the physics steps × step length
            (= mean × 1/fps; ImDy's τ_am), N·m·s.
        body_contact_force_n (N, 24, 3): mean floor force on each body, world frame.
        grf_n (N, 2, 3): per foot (left, right = ankle + foot bodies), world, mean.
        cop_m (N, 2, 3): centre of pressure on the floor plane (z = 0), NaN when Fz < 20 N.
        free_moment_nm (N, 2): vertical moment about the COP, NaN when Fz < 20 N.
        grm_nm (N, 2, 3): moment of the foot's floor forces about its ankle joint centre at t_i.
        grf_total_n (N, 3): sum of the floor forces on all bodies.
        foot_contact (N, 2): mean Fz ≥ 20 N.
        residual_wrench (N, 6): mean root residual [force N, world; torque N·m about the
            pelvis joint, world].
        residual_demand_wrench (N, 6): the root wrench the contacts could not supply (same frames);
            the applied residual is this capped by ``SimConfig.residual_*_limit``.
        mpjpe_m (N,): mean joint position error vs the reference at ``t_i`` (world, not aligned).
        mpjpe_root_relative_m (N,): the same after subtracting each pose's pelvis position.
        reset (N,): a reset to the reference happened in ``[t_i, t_{i+1})``.
    Plus ``metrics`` (see ``sequence_metrics``), ``pass_index``, ``sequence_id``, ``fps_hz``,
    ``mass_kg``.
    """

    sequence_id: str
    pass_index: int
    fps_hz: float
    mass_kg: float
    sim_root_pos_m: np.ndarray
    sim_root_quat: np.ndarray
    sim_joint_rot_aa_rad: np.ndarray
    sim_joint_pos_m: np.ndarray
    sim_marker_pos_m: np.ndarray
    sim_com_pos_m: np.ndarray
    sim_com_vel_mps: np.ndarray
    joint_torque_nm: np.ndarray
    imposed_angmom_nms: np.ndarray
    body_contact_force_n: np.ndarray
    grf_n: np.ndarray
    cop_m: np.ndarray
    free_moment_nm: np.ndarray
    grm_nm: np.ndarray
    grf_total_n: np.ndarray
    foot_contact: np.ndarray
    residual_wrench: np.ndarray
    residual_demand_wrench: np.ndarray
    mpjpe_m: np.ndarray
    mpjpe_root_relative_m: np.ndarray
    reset: np.ndarray
    metrics: dict
    dyn_root_correction_m: np.ndarray | None = None
    """(N, 3) pelvis translation the dynamics pass added to the tracked reference, m (world);
    ``None`` without a dynamics pass."""
    swing_penetration_m: np.ndarray | None = None
    """(N,) depth below the floor of the lowest sole point of a foot whose floor collisions were off
    (``SimConfig.swing_clearance``), m; 0 elsewhere; ``None`` without swing clearance."""

    @property
    def n_frames(self) -> int:
        return int(self.mpjpe_m.shape[0])


def _seed(sequence_id: str, pass_index: int) -> list[int]:
    h = int.from_bytes(hashlib.sha256(sequence_id.encode()).digest()[:8], "little")
    return [h, int(pass_index)]


def pass_variation(cfg: SimConfig, sequence_id: str, pass_index: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(gain scale, initial ball-joint rotation-vector noise (23, 3), root velocity noise (3,)).

    Pass 0 is nominal (1, 0, 0). Pass ``p ≥ 1`` draws from ``numpy.random.default_rng([sha256(
    sequence_id)[:8], p])``: a log-uniform gain scale in ``cfg.pass_gain_range`` and Gaussian
    initial-state noise — deterministic per (sequence, pass).
    """
    if pass_index == 0:
        return 1.0, np.zeros((23, 3)), np.zeros(3)
    rng = np.random.default_rng(_seed(sequence_id, pass_index))
    lo, hi = cfg.pass_gain_range
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    jn = rng.normal(0.0, cfg.pass_joint_noise_rad, size=(23, 3))
    rv = rng.normal(0.0, cfg.pass_root_vel_noise_mps, size=3)
    return s, jn, rv


def _ref_joint_positions(ref: Reference, offsets: np.ndarray) -> np.ndarray:
    q = ref.qpos[:, 3:].reshape(-1, 24, 4)
    _, pos = sk.forward_kinematics(rot.quat_to_rotmat(q), ref.qpos[:, :3], offsets)
    return pos


def _set_state(m: mujoco.MjModel, d: mujoco.MjData, qpos: np.ndarray, qvel: np.ndarray) -> None:
    d.qpos[:] = qpos
    d.qvel[:] = qvel
    d.qacc_warmstart[:] = 0.0
    d.warning[mujoco.mjtWarning.mjWARN_BADQACC].number = 0
    mujoco.mj_forward(m, d)


@dataclass(frozen=True)
class PreparedSequence:
    """Everything the control loop of one (motion, pass) needs, computed on the host before it
    starts (shared by the CPU engine and the batched GPU backend, ``pipeline.simulate.warp``).

    Arrays are float64, MuJoCo layouts (``Humanoid.qpos_to_mj``); K = ``n_frames·spf + 1`` control
    ticks (the last one is the state after the last interval).

    Attributes:
        motion: the canonical motion (the recorded reference).
        skel, hum: its skeleton and humanoid.
        model: private ``MjModel`` copy with this pass's ``dof_damping`` (b = 2ζωM_ii at the
            initial state, toe minimum) and toe ``jnt_stiffness`` set.
        data: ``MjData`` at the initial state (``mj_forward`` done).
        ctrl: the ``TrackingController`` bound to ``model`` (its ``damping`` set).
        dyn: the dynamics pass (or ``None``).
        ref: the tracked reference (``Reference`` at the control rate).
        rq, rv, ra: (K, 99), (K, 75), (K, 75) reference qpos/qvel/qacc, MuJoCo layout.
        ref_pos: (K, 24, 3) reference joint positions, world, m (fall check).
        gate: (K−1, nbody) bool: bodies whose floor contacts may carry planned force per interval
            (``None``: all plannable bodies).
        plan: (K, 2, 3) planned per-foot force at the ticks, world, N (``None`` without dynamics).
        swing: (K−1, 2) bool: the foot's floor collisions are off over the interval (``None``).
        swing_geoms: per foot (left, right), geom ids of its bodies (``None``).
        spring_q: qpos addresses of the stiff joints' quaternions (their ``qpos_spring`` follows
            the reference at every tick).
        scale: this pass's gain scale.
        pass_index: the pass (``pass_variation``) it was prepared for.
    """

    motion: CanonicalMotion
    skel: sk.Skeleton
    hum: Humanoid
    model: mujoco.MjModel
    data: mujoco.MjData
    ctrl: TrackingController
    dyn: DynamicsResult | None
    ref: Reference
    rq: np.ndarray
    rv: np.ndarray
    ra: np.ndarray
    ref_pos: np.ndarray
    gate: np.ndarray | None
    plan: np.ndarray | None
    swing: np.ndarray | None
    swing_geoms: list[np.ndarray] | None
    spring_q: np.ndarray
    scale: float
    pass_index: int = 0

    @property
    def steps_per_frame(self) -> int:
        return self.ref.steps_per_frame


DYNAMICS_FORMAT = 1
"""Version of a precomputed dynamics pass's key (``dynamics_key``): bump it when the dynamics pass,
the humanoid or their inputs change meaning, so that files written before are never reused."""


def motion_dynamics(motion: CanonicalMotion, cfg: SimConfig, humanoid: Humanoid | None = None
                    ) -> DynamicsResult | None:
    """The dynamics pass of ``motion`` under ``cfg`` (``None`` when ``cfg.dynamics`` is): what
    ``prepare_sequence`` computes when it is not given one. It does not depend on the pass, so the
    build computes it once per motion in the per-file task (``pipeline.dataset.simulation``)."""
    if cfg.dynamics is None:
        return None
    if humanoid is None:
        humanoid = build_humanoid(skeleton_from_motion(motion), motion.mass_kg, motion.gender, cfg.humanoid,
                                  cfg.physics_dt_s)
    return dynamics_pass(motion, humanoid, cfg.dynamics)


def dynamics_config_key(cfg: SimConfig) -> str:
    """16 hex digits naming what a dynamics pass depends on besides the motion: ``DYNAMICS_FORMAT``,
    the package version and code fingerprint, ``cfg.dynamics``, ``cfg.humanoid`` and the physics
    step."""
    from pipeline import __version__
    from pipeline.fingerprint import code_fingerprint

    text = repr((DYNAMICS_FORMAT, __version__, code_fingerprint(), cfg.dynamics, cfg.humanoid, float(cfg.physics_dt_s)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dynamics_key(motion: CanonicalMotion, cfg: SimConfig) -> str:
    """Key of ``motion_dynamics(motion, cfg)``: ``dynamics_config_key`` and a hash of every array
    and subject/timing field of the motion (the skeleton and humanoid follow from them)."""
    h = hashlib.sha256(dynamics_config_key(cfg).encode())
    for f in dataclasses.fields(motion):
        if f.name == "provenance":  # the sequence id names the pass variation, not the dynamics pass
            continue
        v = getattr(motion, f.name)
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            h.update(f"{f.name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(f"{f.name}={v!r}".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ReferenceKinematics:
    """The pure-numpy bulk of a motion's pass-independent preparation (``reference_kinematics``):
    the reference at the control rate and its forward kinematics (≈ 70 % of
    ``prepare_sequence``'s host time once the dynamics pass is staged). Small inputs, no MuJoCo
    objects: a batched backend computes it for many motions in a process pool
    (``pipeline.simulate.prep_pool``) and hands it to ``prepare_sequence(reference=...)``."""

    ref: Reference
    ref_pos: np.ndarray
    """(K, 24, 3) reference joint positions, world, m."""
    ref_glob: np.ndarray | None
    """(K, 24, 3, 3) reference global rotations; ``None`` where the stance gates do not need them
    (with a dynamics pass, or without stance gates)."""


def reference_kinematics(motion: CanonicalMotion, cfg: SimConfig, dyn_motion: CanonicalMotion | None = None,
                         skel: sk.Skeleton | None = None) -> ReferenceKinematics:
    """The reference ``prepare_sequence`` tracks (``dyn_motion``: the dynamics pass's corrected
    motion, when there is one) and its forward kinematics on ``motion``'s skeleton (``skel``:
    ``skeleton_from_motion(motion)``, computed here without it)."""
    skel = skel if skel is not None else skeleton_from_motion(motion)
    ref = build_reference(dyn_motion if dyn_motion is not None else motion, cfg.control_hz)
    ref_glob, ref_pos = sk.forward_kinematics(rot.quat_to_rotmat(ref.qpos[:, 3:].reshape(-1, 24, 4)), ref.qpos[:, :3],
                                              skel.offsets_m)  # (K, 24, 3)
    need_glob = dyn_motion is None and np.isfinite(cfg.contact.stance_gate_height_m)
    return ReferenceKinematics(ref, ref_pos, ref_glob if need_glob else None)


def prepare_sequence(motion: CanonicalMotion, cfg: SimConfig, pass_index: int = 0,
                     humanoid: Humanoid | None = None, like: PreparedSequence | None = None,
                     dynamics: DynamicsResult | None = None,
                     reference: ReferenceKinematics | None = None) -> PreparedSequence:
    """Humanoid, dynamics pass, reference, contact gates/plan, swing clearance and the initial
    state of one (motion, pass): everything before the control loop (``PreparedSequence``).

    ``like``: this motion prepared for another pass with the same ``cfg``: everything that does not
    depend on the pass (skeleton, humanoid, dynamics pass, reference, plan, gates, swing clearance)
    is reused instead of recomputed; only the pass's gains, damping and initial state are new.
    ``dynamics``: ``motion_dynamics(motion, cfg)`` computed beforehand (the build's per-file task
    stages it); without it (and ``like``) the dynamics pass is computed here. ``reference``:
    ``reference_kinematics(motion, cfg, dyn.motion)`` computed beforehand (elsewhere: a process
    pool), same result; ignored with ``like``."""
    if like is not None:
        skel, hum = like.skel, like.hum
    else:
        skel = skeleton_from_motion(motion)
        hum = humanoid or build_humanoid(skel, motion.mass_kg, motion.gender, cfg.humanoid, cfg.physics_dt_s)
    # private copy: dof_damping is set per run (gains vary per pass); the cached model stays pristine
    # and concurrent runs (threads of a Dask worker) never share mutable model fields
    m = copy.copy(hum.model)
    d = mujoco.MjData(m)
    if like is not None:
        dyn = like.dyn
    elif dynamics is not None:
        if cfg.dynamics is None:
            raise ValueError("a precomputed dynamics pass was given but cfg.dynamics is None")
        if dynamics.foot_force_n.shape[0] != motion.n_frames:
            raise ValueError(f"precomputed dynamics pass has {dynamics.foot_force_n.shape[0]} frames, "
                             f"the motion {motion.n_frames}")
        dyn = dynamics
    else:
        dyn = motion_dynamics(motion, cfg, hum)
    seq_id = motion.provenance.sequence_id
    scale, jnoise, rvnoise = pass_variation(cfg, seq_id, pass_index)
    ctrl = TrackingController(
        hum, cfg.gains.scaled(scale), cfg.contact, cfg.residual, cfg.torque_limits, model=m,
        residual_force_max_n=cfg.residual_force_limit_bw * hum.weight_n,
        residual_torque_max_nm=cfg.residual_torque_limit_nm_per_kg * hum.mass_kg,
        seat_omega=cfg.landing_seat_omega, seat_margin_m=cfg.landing_seat_margin_m)
    if like is not None:
        ref, rq, rv, ra, ref_pos, gate, plan, swing, swing_geoms = (
            like.ref, like.rq, like.rv, like.ra, like.ref_pos, like.gate, like.plan, like.swing, like.swing_geoms)
    else:
        ref, rq, rv, ra, ref_pos, gate, plan, swing, swing_geoms = _tracking_targets(
            motion, cfg, skel, hum, dyn, ctrl._plannable, m, reference)

    # initial state: reference at t0 (+ pass perturbation)
    q0 = ref.qpos[0].copy()
    if pass_index:
        balls = q0[7:].reshape(23, 4)
        q0[7:] = rot.quat_mul(balls, rot.aa_to_quat(jnoise)).reshape(-1)
    v0 = ref.qvel[0].copy()
    v0[:3] += rvnoise
    _set_state(m, d, hum.qpos_to_mj(q0), hum.dof_to_mj(v0))
    if cfg.initial_contact_seat:
        cleared = None if swing is None else [swing_geoms[f] for f in range(2) if swing[0, f]]
        dz = contact_equilibrium_offset(m, d, vertical_load_n(m, d, ra[0]),
                                        exclude_geoms=np.concatenate(cleared) if cleared else None)
        if dz:
            qpos0 = np.array(d.qpos)
            qpos0[2] += dz
            _set_state(m, d, qpos0, np.array(d.qvel))
    # joint D-term as MuJoCo dof damping (integrated implicitly by the Euler integrator); the
    # damper torque is part of the recorded joint torque
    b = ctrl.joint_damping(d)
    spring_q = np.zeros(0, dtype=int)
    if cfg.stiff_joints:
        jids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, nme) for nme in cfg.stiff_joints]
        for jid in jids:
            m.jnt_stiffness[jid] = cfg.stiff_joint_stiffness_nm_per_rad_per_kg * hum.mass_kg * scale**2
            da = int(m.jnt_dofadr[jid])
            b[da:da + 3] = np.maximum(b[da:da + 3], cfg.stiff_joint_damping_nms_per_rad_per_kg * hum.mass_kg * scale)
        spring_q = np.concatenate([np.arange(m.jnt_qposadr[j], m.jnt_qposadr[j] + 4) for j in jids])
    ctrl.damping = b
    m.dof_damping[:] = b

    return PreparedSequence(motion, skel, hum, m, d, ctrl, dyn, ref, rq, rv, ra, ref_pos, gate, plan, swing,
                            swing_geoms, spring_q, scale, int(pass_index))


def _tracking_targets(motion: CanonicalMotion, cfg: SimConfig, skel: sk.Skeleton, hum: Humanoid,
                      dyn: DynamicsResult | None, plannable: np.ndarray, m: mujoco.MjModel,
                      kin: ReferenceKinematics | None = None) -> tuple:
    """The pass-independent part of ``prepare_sequence`` after the dynamics pass: reference (and its
    MuJoCo layouts, joint positions), contact gates, plan and swing clearance. ``kin``: the
    reference and its kinematics computed beforehand (``reference_kinematics``)."""
    if kin is None:
        kin = reference_kinematics(motion, cfg, dyn.motion if dyn is not None else None, skel)
    ref, ref_pos, ref_glob = kin.ref, kin.ref_pos, kin.ref_glob
    spf = ref.steps_per_frame
    n = motion.n_frames
    body_ids_all = hum.body_ids
    gate = None
    plan = None
    if dyn is not None:
        # the plan's per-foot forces at the control ticks (linear between frames, held after the last)
        tf = np.arange(n)
        tk = np.arange(n * spf + 1) / spf
        plan = np.stack([np.interp(tk, tf, dyn.foot_force_n[:, f, a]) for f in range(2) for a in range(3)],
                        axis=-1).reshape(-1, 2, 3)
        loaded = plan[..., 2] > cfg.plan_gate_n
        st = loaded[:-1] & loaded[1:]
        gate = np.repeat(plannable[None], st.shape[0], 0)
        for f, bodies in enumerate((LEFT_FOOT_BODIES, RIGHT_FOOT_BODIES)):
            for j in bodies:
                gate[:, body_ids_all[j]] &= st[:, f]
    elif np.isfinite(cfg.contact.stance_gate_height_m):
        sole_z = sk.sole_points(ref_glob, ref_pos, skel)[..., 2]  # (K, 4): l heel, l toe, r heel, r toe
        st = np.stack([sole_z[:, :2].min(1), sole_z[:, 2:].min(1)], 1) < cfg.contact.stance_gate_height_m
        st = st[:-1] & st[1:]
        gate = np.repeat(plannable[None], st.shape[0], 0)
        for f, bodies in enumerate((LEFT_FOOT_BODIES, RIGHT_FOOT_BODIES)):
            for j in bodies:
                gate[:, body_ids_all[j]] &= st[:, f]
    swing = swing_geoms = None
    if plan is not None and cfg.swing_clearance:
        # a foot is clear of the floor from its lift-off until `swing_landing_lead_s` before the
        # plan loads it again: it lands with collisions on, at its simulated height
        lead = int(round(cfg.swing_landing_lead_s * cfg.control_hz))
        soon = loaded.copy()
        for j in range(1, lead + 1):
            soon[:-j] |= loaded[j:]
        swing = ~(soon[:-1] | soon[1:])
        swing_geoms = [np.flatnonzero(np.isin(m.geom_bodyid, body_ids_all[list(b)]))
                       for b in (LEFT_FOOT_BODIES, RIGHT_FOOT_BODIES)]

    rq, rv, ra = hum.qpos_to_mj(ref.qpos), hum.dof_to_mj(ref.qvel), hum.dof_to_mj(ref.qacc)  # MuJoCo layout
    return ref, rq, rv, ra, ref_pos, gate, plan, swing, swing_geoms


def landing_seat_targets(loaded: np.ndarray, ankle_z_m: np.ndarray, control_hz: float,
                         support_s: float) -> np.ndarray:
    """Per control tick and foot, the reference ankle's downward vertical velocity (m/s, ≤ 0)
    where ``SimConfig.landing_seat`` may seat that foot, NaN elsewhere.

    ``loaded`` (K+1, 2): the plan loads the foot at tick k (left, right); ``ankle_z_m`` (K+1, 2):
    the reference ankle heights at the ticks. A foot's stance is the ticks loaded at both ends; a
    stance qualifies when, at its first tick, the other foot has been loaded for at least
    ``support_s`` (a walking touch-down; not a landing from a flight). Returns (K, 2).
    """
    loaded = np.asarray(loaded, dtype=bool)
    stance = loaded[:-1] & loaded[1:]
    vz = np.gradient(np.asarray(ankle_z_m, dtype=np.float64), 1.0 / control_hz, axis=0)[:-1]
    need = support_s * control_hz
    n = stance.shape[0]
    idx = np.arange(n)
    out = np.full(stance.shape, np.nan)
    for f in range(2):
        other = loaded[:n, 1 - f]
        run = idx - np.maximum.accumulate(np.where(other, -1, idx))  # ticks the other foot has been loaded, to k
        st = stance[:, f]
        begins = st & ~np.concatenate([[False], st[:-1]])  # a stance begins
        stance_no = np.cumsum(begins) - 1  # the stance each tick belongs to (-1: before the first)
        qualifies = (run >= need)[begins]
        seat = st & (stance_no >= 0)
        seat[seat] = qualifies[stance_no[seat]]
        out[seat, f] = np.minimum(vz[seat, f], 0.0)
    return out


def simulate_motion(motion: CanonicalMotion, cfg: SimConfig, pass_index: int = 0,
                    humanoid: Humanoid | None = None, dynamics: DynamicsResult | None = None) -> SimulationResult:
    """Imitate one motion (one pass) on the CPU with MuJoCo; see the module docstring.
    ``dynamics``: its dynamics pass computed beforehand (``motion_dynamics``), else computed here."""
    p = prepare_sequence(motion, cfg, pass_index, humanoid, dynamics=dynamics)
    skel, hum, m, d, ctrl, dyn = p.skel, p.hum, p.model, p.data, p.ctrl, p.dyn
    rq, rv, ra, ref_pos, gate, plan, swing, swing_geoms, spring_q = (
        p.rq, p.rv, p.ra, p.ref_pos, p.gate, p.plan, p.swing, p.swing_geoms, p.spring_q)
    spf, nsub = p.steps_per_frame, cfg.substeps
    n = motion.n_frames
    root_body = int(hum.body_ids[0])
    body_ids = hum.body_ids
    nsens = m.nsensordata
    qpos_rec = np.empty((n + 1, m.nq))
    com_rec = np.empty((n + 1, 3))
    comv_rec = np.empty((n + 1, 3))
    # per control tick: joint torque, applied residual and residual demand (force world, torque
    # rotated to world at the tick), summed per frame after the loop in tick order
    tau_tick = np.empty((n * spf, 69))
    res_tick = np.empty((n * spf, 6))
    dem_tick = np.empty((n * spf, 6))
    f_sum = np.zeros((n, 24, 3))
    mo_sum = np.zeros((n, 24, 3))  # moment about the world origin of each body's floor forces
    reset = np.zeros(n, dtype=bool)
    # per physics step: floor contact sensors and passive joint torques (damper + toe spring);
    # reduced to interval means after the loop (cheaper than per tick)
    buf = np.zeros((n, spf * nsub, nsens))
    damp = np.zeros((n, spf * nsub, m.nv - 6))
    buf_steps = buf.reshape(-1, nsens)  # row k·nsub + s: physics step s of control tick k
    damp_steps = list(damp.reshape(-1, m.nv - 6))  # row views (np.add writes into them)
    total_steps = n * spf
    anchor = np.zeros(3)  # horizontal shift of the tracked reference after flights, world, m
    flight_anchor = None if plan is None else FlightAnchor(
        1, int(round(cfg.reanchor_after_flight_s * cfg.control_hz)), cfg.control_hz)
    ankle_bodies = body_ids[[7, 8]]
    q_ref = np.empty(m.nq)
    # the per-tick inputs that do not depend on the simulated state, for all ticks at once (the
    # same element-wise operations as tick by tick)
    a_ff_all = 0.5 * (ra[:-1] + ra[1:])
    plan_mid = None if plan is None else 0.5 * (plan[:-1] + plan[1:])
    loaded = None if plan is None else (plan[..., 2] > cfg.plan_gate_n)[:, None]  # (K, W=1, 2)
    ref_ankle = ref_pos[:, None, [7, 8]]  # (K, 1, 2, 3)
    ankle_rows = ankle_bodies[None]  # xpos[ankle_rows]: (1, 2, 3)
    spring_ref = rq[:, spring_q]
    pelvis_z_ref = rq[:, 2].tolist()
    seat = None
    if cfg.landing_seat and plan is not None:
        seat = landing_seat_targets(loaded[:, 0], ref_pos[:, [7, 8], 2], cfg.control_hz, cfg.landing_seat_support_s)
        if np.isnan(seat).all():
            seat = None
    if swing_geoms is not None:  # ticks whose swing clearance differs from the previous tick's
        swing_change = np.ones(total_steps, dtype=bool)
        swing_change[1:] = (swing[1:] != swing[:-1]).any(axis=1)
    # MjData/MjModel arrays are views of buffers MuJoCo allocates once (its resets included)
    qpos, xpos, xmat = d.qpos, d.xpos, d.xmat
    subtree_com, subtree_linvel, qfrc_applied = d.subtree_com, d.subtree_linvel, d.qfrc_applied
    sensordata, damper, spring = d.sensordata, d.qfrc_damper[6:], d.qfrc_spring[6:]
    qpos_spring, geom_contype, geom_conaffinity = m.qpos_spring, m.geom_contype, m.geom_conaffinity
    for k in range(total_steps + 1):
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_comVel(m, d)
        # fall / divergence check against the reference at t_k
        if k < total_steps:
            if flight_anchor is not None:
                anchor = flight_anchor.update(loaded[k], xpos[ankle_rows], ref_ankle[k])[0]
            pelvis_z = float(qpos[2])
            reset_now = abs(pelvis_z - pelvis_z_ref[k]) > cfg.reset_root_height_err_m
            if not reset_now:
                x = xpos[body_ids] - ref_pos[k] - anchor
                s = np.sqrt(np.add.reduce(x * x, axis=-1))  # np.linalg.norm(x, axis=-1)
                err = float(np.add.reduce(s)) / s.shape[0]  # .mean()
                reset_now = err > cfg.reset_mpjpe_m or not math.isfinite(pelvis_z)
            if reset_now:
                _set_state(m, d, rq[k], rv[k])
                reset[k // spf] = True
                if flight_anchor is not None:
                    flight_anchor.reset(np.array([0]), xpos[ankle_bodies][None])
                    anchor = flight_anchor.anchor[0]
        if k % spf == 0:
            i = k // spf
            qpos_rec[i] = qpos
            com_rec[i] = subtree_com[0]
            mujoco.mj_subtreeVel(m, d)
            comv_rec[i] = subtree_linvel[0]
        if k == total_steps:
            break
        q_ref[:] = rq[k]
        q_ref[:3] += anchor
        tau, residual = ctrl.compute(d, q_ref, rv[k], a_ff_all[k], None if gate is None else gate[k],
                                     None if plan is None else plan_mid[k], cfg.plan_target_weight,
                                     None if seat is None else seat[k])
        i = k // spf
        tau_tick[k] = tau
        # pelvis-frame generalized torque → world (orientation at the tick; held over the tick)
        Rr = xmat[root_body].reshape(3, 3)
        res_tick[k] = residual
        res_tick[k, 3:] = Rr @ residual[3:]
        dem = ctrl.last_residual_demand
        dem_tick[k] = dem
        dem_tick[k, 3:] = Rr @ dem[3:]
        qfrc_applied[6:] = tau
        if spring_q.size:
            qpos_spring[spring_q] = spring_ref[k]
        qfrc_applied[:6] = residual
        if swing_geoms is not None and swing_change[k]:
            for f in range(2):
                on = 0 if swing[k, f] else 1
                geom_contype[swing_geoms[f]] = 2 * on
                geom_conaffinity[swing_geoms[f]] = on
        t_before = d.time
        j = k * nsub
        for _ in range(nsub):
            mujoco.mj_step(m, d)  # (looked up on the module: benchmarks/sim_bench.py times it)
            buf_steps[j] = sensordata
            np.add(damper, spring, out=damp_steps[j])
            j += 1
        if d.time < t_before + 0.5 * nsub * cfg.physics_dt_s:
            # MuJoCo detected a diverging acceleration and reset the data itself (time → 0): flag
            # the interval and restart from the reference at the next tick
            reset[i] = True
            _set_state(m, d, rq[k + 1], rv[k + 1])
            d.time = t_before + nsub * cfg.physics_dt_s
            if flight_anchor is not None:
                flight_anchor.reset(np.array([0]), xpos[ankle_bodies][None])
                anchor = flight_anchor.anchor[0]

    tau_sum = np.zeros((n, 69))
    res_sum = np.zeros((n, 6))
    dem_sum = np.zeros((n, 6))
    for s in range(spf):  # 0 + tick 0 + tick 1 + …: the order of the per-tick accumulation it replaces
        tau_sum += tau_tick[s::spf]
        res_sum += res_tick[s::spf]
        dem_sum += dem_tick[s::spf]
    tau_sum += damp.sum(axis=1) / nsub
    sd = buf.reshape(n, spf * nsub, 24, 10)
    F = sd[..., 1:4]
    f_sum += F.sum(axis=1) / nsub
    mo_sum += (sd[..., 4:7] + cross(sd[..., 7:10], F)).sum(axis=1) / nsub
    result = _finish(motion, cfg, pass_index, hum, skel, qpos_rec, com_rec, comv_rec, tau_sum / spf,
                     res_sum / spf, dem_sum / spf, f_sum / spf, mo_sum / spf, reset, dyn,
                     None if swing_geoms is None else swing.reshape(n, spf, 2).any(axis=1))
    if flight_anchor is not None:
        result.metrics["reanchor_max_m"] = float(flight_anchor.max_shift[0])
    return result


def _finish(motion, cfg, pass_index, hum, skel, qpos_rec, com_rec, comv_rec, tau, res, dem, fbody, mbody, reset,
            dyn: DynamicsResult | None = None, swing: np.ndarray | None = None) -> SimulationResult:
    n = motion.n_frames
    fps = float(motion.fps_hz)
    qp = hum.qpos_from_mj(qpos_rec[:n])
    tau75 = np.zeros((n, 75))
    tau75[:, 6:] = tau
    tau = hum.dof_from_mj(tau75)[:, 6:]
    quats = qp[:, 3:].reshape(n, 24, 4)
    glob, joints = sk.forward_kinematics(rot.quat_to_rotmat(quats), qp[:, :3], skel.offsets_m)
    markers = mk.marker_positions(glob, joints, skel)
    torque = tau.reshape(n, 23, 3)
    angmom = torque / fps
    grf = np.stack([fbody[:, list(LEFT_FOOT_BODIES)].sum(1), fbody[:, list(RIGHT_FOOT_BODIES)].sum(1)], axis=1)
    mo = np.stack([mbody[:, list(LEFT_FOOT_BODIES)].sum(1), mbody[:, list(RIGHT_FOOT_BODIES)].sum(1)], axis=1)
    fz = grf[..., 2]
    contact = fz >= COP_MIN_FZ_N
    safe = np.where(contact, fz, 1.0)
    cop = np.stack([-mo[..., 1] / safe, mo[..., 0] / safe, np.zeros_like(fz)], axis=-1)
    free = mo[..., 2] - (cop[..., 0] * grf[..., 1] - cop[..., 1] * grf[..., 0])
    cop = np.where(contact[..., None], cop, np.nan)
    free = np.where(contact, free, np.nan)
    ankle = joints[:, [7, 8]]
    grm = mo - np.cross(ankle, grf)
    grf_total = fbody.sum(axis=1)
    mpjpe = np.linalg.norm(joints - motion.joint_pos_m, axis=-1).mean(axis=1)
    rel_sim = joints - joints[:, :1]
    rel_ref = motion.joint_pos_m - motion.joint_pos_m[:, :1]
    mpjpe_rel = np.linalg.norm(rel_sim - rel_ref, axis=-1).mean(axis=1)
    result_arrays = dict(
        sim_root_pos_m=qp[:, :3].copy(), sim_root_quat=qp[:, 3:7].copy(),
        sim_joint_rot_aa_rad=rot.quat_to_aa(quats), sim_joint_pos_m=joints, sim_marker_pos_m=markers,
        sim_com_pos_m=com_rec[:n].copy(), sim_com_vel_mps=comv_rec[:n].copy(),
        joint_torque_nm=torque, imposed_angmom_nms=angmom, body_contact_force_n=fbody, grf_n=grf, cop_m=cop,
        free_moment_nm=free, grm_nm=grm, grf_total_n=grf_total, foot_contact=contact, residual_wrench=res,
        residual_demand_wrench=dem, mpjpe_m=mpjpe, mpjpe_root_relative_m=mpjpe_rel, reset=reset,
    )
    metrics = sequence_metrics(result_arrays, comv_rec, hum.mass_kg, fps)
    if dyn is not None:  # how far the dynamics pass moved the motion, and what it left unexplained
        metrics.update(dyn.metrics)
        metrics["dyn_mpjpe_median_mm"] = float(np.median(np.linalg.norm(
            dyn.motion.joint_pos_m - motion.joint_pos_m, axis=-1).mean(axis=1)) * 1000.0)
    swing_pen = None
    if swing is not None:  # (N, 2): a foot's floor collisions were off in part of the interval
        sole_z = sk.sole_points(glob, joints, skel)[..., 2]  # (N, 4): l heel, l toe, r heel, r toe
        low = np.stack([sole_z[:, :2].min(1), sole_z[:, 2:].min(1)], axis=1)
        swing_pen = np.where(swing, np.maximum(-low, 0.0), 0.0).max(axis=1)
        metrics["swing_clear_frac"] = float(swing.mean())
        metrics["swing_penetration_max_m"] = float(swing_pen.max())
    for v in result_arrays.values():
        v.setflags(write=False)
    return SimulationResult(
        sequence_id=motion.provenance.sequence_id, pass_index=int(pass_index), fps_hz=fps, mass_kg=hum.mass_kg,
        metrics=metrics, dyn_root_correction_m=None if dyn is None else dyn.root_correction_m,
        swing_penetration_m=swing_pen, **result_arrays,
    )


def newton_euler_imbalance(grf_total: np.ndarray, residual_force: np.ndarray, com_vel: np.ndarray, mass_kg: float,
                           fps: float) -> np.ndarray:
    """(N,) |Σ floor forces + residual force + m·g − m·Δv_com·fps| per interval, N.

    ``com_vel`` has N + 1 rows (the state after the last interval included): over an interval the
    mean external force equals the momentum change divided by its duration.
    """
    g = np.array([0.0, 0.0, -GRAVITY_MPS2])
    ma = mass_kg * np.diff(com_vel, axis=0) * fps
    return np.linalg.norm(grf_total + residual_force + mass_kg * g - ma, axis=-1)


def sequence_metrics(a: dict, com_vel_full: np.ndarray, mass_kg: float, fps: float) -> dict:
    """Per-sequence quality metrics (plain floats/ints/bools; see docs/simulation.md)."""
    bw = mass_kg * GRAVITY_MPS2
    reset = a["reset"]
    rf = np.linalg.norm(a["residual_wrench"][:, :3], axis=-1) / bw
    rt = np.linalg.norm(a["residual_wrench"][:, 3:], axis=-1)
    imb = newton_euler_imbalance(a["grf_total_n"], a["residual_wrench"][:, :3], com_vel_full, mass_kg, fps) / bw
    ok = ~reset
    imb_ok = imb[ok] if ok.any() else imb
    mp = a["mpjpe_m"] * 1000.0
    rd = np.linalg.norm(a["residual_demand_wrench"][:, :3], axis=-1) / bw
    return {
        "success": bool(not reset.any()),
        "reset_count": int(reset.sum()),
        "frames_without_reset_frac": float(ok.mean()),
        "mpjpe_median_mm": float(np.median(mp)),
        "mpjpe_p95_mm": float(np.percentile(mp, 95)),
        "residual_force_le_5pct_bw_frac": float(np.mean(rf <= 0.05)),
        "residual_force_median_bw": float(np.median(rf)),
        "residual_force_p95_bw": float(np.percentile(rf, 95)),
        "residual_force_demand_le_5pct_bw_frac": float(np.mean(rd <= 0.05)),
        "residual_force_demand_median_bw": float(np.median(rd)),
        "residual_force_saturated_frac": float(np.mean(rd > rf + 1e-9)),
        "residual_torque_median_nm": float(np.median(rt)),
        "residual_torque_p95_nm": float(np.percentile(rt, 95)),
        "mpjpe_root_relative_median_mm": float(np.median(a["mpjpe_root_relative_m"]) * 1000.0),
        "newton_euler_imbalance_median_bw": float(np.median(imb_ok)),
        "newton_euler_imbalance_p95_bw": float(np.percentile(imb_ok, 95)),
        "body_weight_n": float(bw),
    }
