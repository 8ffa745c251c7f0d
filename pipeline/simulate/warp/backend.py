"""``MjWarpBackend``: the imitation engine batched over worlds with MuJoCo Warp.

One batch = up to ``max_worlds`` (motion, pass) sequences of similar length (bucketed by length,
padded to the longest: a finished world keeps stepping on its last reference tick, unrecorded).
Per sequence the host prepares everything the CPU engine prepares (``engine.prepare_sequence``:
humanoid, dynamics pass — in the build computed beforehand by the per-file task and passed in —,
reference, contact gates, plan, swing clearance, damping, initial state with the pass
perturbation; the passes of one motion share all but the last three); the batch then runs one loop over control ticks for all worlds:

1. ``kinematics``, ``com_pos``, ``com_vel`` on the device; fall check per world (pelvis height
   error, mean joint position error, non-finite state) → reset masks: those worlds restart from
   the reference at that tick.
2. Recording ticks (one per output frame): qpos, whole-body COM, COM velocity (``subtree_vel``).
3. Controller (the CPU controller's math batched over worlds; ``pipeline.simulate.warp.kernels``
   on the device by default, ``pipeline.simulate.warp.control`` on the host as the reference):
   desired accelerations; inverse dynamics with MuJoCo Warp's ``rne`` (plus the armature term);
   MuJoCo Warp's ``collision`` for the floor contacts, gated per world by the dynamics plan, into
   a fixed contact budget per world; the force plan (dual semismooth-Newton NNLS, fixed
   iterations); ``Σ Jᵀf`` from ``cdof``; residual caps; shortfall correction with ``M[:, :6]``
   (``crb`` + ``mul_m``); net-torque limits.
4. ``qfrc_applied``, per-world ``qpos_spring`` (toe springs) and ``geom_margin`` (swing feet: a
   margin of −10 m switches their floor contacts off, the batched equivalent of the CPU engine's
   ``contype``/``conaffinity`` = 0), then ``substeps`` × ``step``; after every step the floor
   contact sensors (force, and torque + pos × force about the world origin) and the passive joint
   torques are summed into the interval, exactly as the CPU engine sums them.
5. ``Data.overflow`` (and the controller's contact budget) are checked after every tick: a world
   that overflowed is re-run in a new batch with twice the buffers; if it overflows again its
   sequences raise ``SimulationOverflowError`` (the build then retries motions one by one and
   quarantines the failing one) — never silently wrong.

With ``WarpBatchSettings.device_controller`` (default) every step above is a Warp kernel or a
MuJoCo Warp call that reads the control tick from a device counter: a tick needs no host round
trip, the recordings stay on the device until the batch ends, and on CUDA one tick (controller
kernels + substeps) is captured as one CUDA graph and replayed (``_device_loop``). With
``device_controller=False`` the controller math is vectorised numpy on the host (float64), one
device round trip per control tick — the reference the kernels are tested against. Both run the
controller in float64 on MuJoCo Warp's float32 state (docs/simulation.md "GPU backend").
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from pipeline.records import CanonicalMotion
from pipeline.simulate.anchor import FlightAnchor
from pipeline.simulate.backends import Backend
from pipeline.simulate.batching import length_buckets
from pipeline.simulate.warp import control as bc
from pipeline.simulate.warp.runtime import cuda_available, init_warp, warp_installed

SWING_MARGIN_M = -10.0
"""``geom_margin`` of a cleared swing foot's geoms: with the floor's margin summed it is far below
any penetration, so no contact is generated (MuJoCo Warp sums the two geoms' margins)."""


class SimulationOverflowError(RuntimeError):
    """A world overflowed MuJoCo Warp's contact/constraint buffers (or the controller's contact
    budget) even after a re-run with doubled buffers."""


@dataclass(frozen=True)
class WarpBatchSettings:
    """Sizes of one batch.

    Attributes:
        max_worlds: sequences simulated together (one world each).
        nconmax: contacts allocated per world (MuJoCo Warp ``nconmax``).
        njmax: constraint rows per world (``njmax``).
        contact_budget: floor contacts per world the controller can plan on (columns 4×budget).
        nnls_iterations: semismooth Newton iterations of the force plan (fixed).
        device_controller: run the controller's per-tick math as Warp kernels on the device
            (``pipeline.simulate.warp.kernels``, no host round trip per tick); ``False``: the numpy
            reference on the host (``pipeline.simulate.warp.control``), one round trip per tick.
        cuda_graph: with the device controller on a CUDA device, capture one control tick
            (controller kernels + substeps) as a CUDA graph and replay it.
    """

    max_worlds: int = 1024
    nconmax: int = 48
    njmax: int = 192
    contact_budget: int = 24
    nnls_iterations: int = 12
    device_controller: bool = True
    cuda_graph: bool = True

    def doubled(self) -> WarpBatchSettings:
        return dataclasses.replace(self, nconmax=2 * self.nconmax, njmax=2 * self.njmax,
                                   contact_budget=2 * self.contact_budget)


@dataclass(frozen=True)
class BatchStats:
    """What one batch did (diagnostics; ``MjWarpBackend.last_stats``)."""

    worlds: int
    ticks: int
    wall_s: float
    overflow_worlds: tuple[int, ...]
    force_plan_kkt_max: float
    device_bytes: int = 0
    """Bytes of the batch's MuJoCo Warp ``Model`` + ``Data`` arrays on the device."""
    device_controller: bool = False
    """The controller ran as Warp kernels on the device (``WarpBatchSettings.device_controller``)."""
    cuda_graph: bool = False
    """The control ticks were replayed as one captured CUDA graph."""
    controller_bytes: int = 0
    """Bytes of the device controller's arrays (float64 references, scratch, recordings)."""


def _subtree_matrix(parent: np.ndarray) -> np.ndarray:
    """(nbody, nbody) bool: ``[a, b]`` = body b is in body a's subtree."""
    nb = parent.shape[0]
    sub = np.zeros((nb, nb), bool)
    for b in range(nb):
        a = b
        while True:
            sub[a, b] = True
            if a == 0:
                break
            a = int(parent[a])
    return sub


class MjWarpBackend(Backend):
    """MuJoCo Warp, a batch of sequences per device launch (module docstring).

    ``device``: a Warp device (``"cuda"``, ``"cuda:1"``, ``"cpu"``); ``None`` = the default CUDA
    device, and ``RuntimeError("GPU backend unavailable ...")`` without one. Warp's ``"cpu"``
    device runs the same kernels on the CPU (tests, benchmarks without a GPU).
    """

    name = "gpu"

    def __init__(self, device: str | None = None, settings: WarpBatchSettings | None = None) -> None:
        if not warp_installed():
            raise RuntimeError(
                "GPU backend unavailable: mujoco_warp/warp are not installed (pip install 'dynaset[gpu]'); "
                "use backend='cpu'")
        if device is None:
            if not cuda_available():
                raise RuntimeError("GPU backend unavailable: no CUDA device visible; use backend='cpu'")
            device = "cuda"
        self.device = device
        self.settings = settings or WarpBatchSettings()
        self.last_stats: list[BatchStats] = []

    @property
    def needs_gpu(self) -> bool:
        return self.device != "cpu"

    def simulate(self, motions: Sequence[CanonicalMotion], cfg, pass_index: int = 0, dynamics=None) -> list:
        return self.simulate_jobs([(m, pass_index) for m in motions], cfg, dynamics)

    def simulate_jobs(self, jobs: Sequence[tuple[CanonicalMotion, int]], cfg, dynamics=None) -> list:
        """(motion, pass) sequences of any passes, batched together: bucketed by length
        (``batching.length_buckets``, ``max_worlds`` per batch), one control rate per batch. Jobs
        of the same motion object share its host preparation's pass-independent part (humanoid,
        dynamics pass, reference, plan: ``prepare_sequence(like=...)``). ``dynamics``: per job, its
        motion's dynamics pass computed beforehand (the build's per-file task) or ``None``.

        In one process: prepare (``prepare_jobs``), pack (``packed.pack_prepared``), simulate
        (``run_packed``), finish (``packed.finish_world``); the build runs the same steps in a CPU
        prepare task, the GPU task and CPU finish tasks (``pipeline.dataset.simulation``)."""
        from pipeline.simulate.packed import finish_world, pack_prepared

        preps = prepare_jobs(jobs, cfg, dynamics)
        packed = pack_prepared(preps)
        rec = self.run_packed(packed, cfg)
        return [finish_world(rec, w, p.motion, cfg, p.hum, p.skel, p.dyn) for w, p in enumerate(preps)]

    def run_packed(self, packed, cfg):
        """Simulate every world of ``packed`` (``packed.PackedWorlds``): one control rate per batch,
        bucketed by length (``length_buckets``, ``max_worlds`` per batch, worlds in the order the
        buckets give); worlds that overflowed are re-run once with doubled buffers. Returns
        ``packed.WorldRecordings`` of all worlds, in ``packed``'s order; raises
        ``SimulationOverflowError`` naming the worlds that overflowed twice."""
        from pipeline.simulate.packed import place_recordings

        self.last_stats = []
        settings = self.settings
        spf, frames = packed.world_spf, packed.world_frames
        todo = list(range(packed.worlds))
        done: list = []
        for _ in range(2):
            again: list[int] = []
            rates = sorted({int(spf[i]) for i in todo})
            groups = [[i for i in todo if spf[i] == r] for r in rates]  # one rate per batch
            batches = [[g[j] for j in b] for g in groups
                       for b in length_buckets([int(frames[i]) for i in g], settings.max_worlds)]
            for idx in batches:
                rec, stats = simulate_batch(packed.take(idx), cfg, settings, self.device)
                self.last_stats.append(stats)
                ok = [j for j in range(len(idx)) if j not in stats.overflow_worlds]
                again += [idx[j] for j in stats.overflow_worlds]
                if ok:
                    done.append((np.asarray(idx)[ok], rec.take(ok)))
            todo = again
            if not todo:
                break
            settings = settings.doubled()
        if todo:
            ids = ", ".join(f"{packed.seq_id[packed.motion[i]]} (pass {int(packed.pass_index[i])})" for i in todo)
            raise SimulationOverflowError(f"MuJoCo Warp buffers overflowed twice for: {ids}")
        return place_recordings(done, packed.worlds)


def prepare_jobs(jobs: Sequence[tuple[CanonicalMotion, int]], cfg, dynamics=None) -> list:
    """``engine.prepare_sequence`` of each (motion, pass) job, in order: the passes of one motion
    object share its pass-independent part (``like=``); ``dynamics``: per job its motion's dynamics
    pass computed beforehand, or ``None``. For many motions their reference kinematics run in a
    process pool (``prep_pool``; bit-identical)."""
    from pipeline.simulate.engine import prepare_sequence
    from pipeline.simulate.prep_pool import reference_kinematics_many

    dyns = list(dynamics) if dynamics is not None else [None] * len(jobs)
    if len(dyns) != len(jobs):
        raise ValueError(f"{len(dyns)} dynamics passes for {len(jobs)} jobs")
    # the reference kinematics of each motion (once for all its passes), in a process pool for a
    # large batch (prep_pool); motions whose dynamics pass is still to compute prepare it here
    pooled: dict[int, int] = {}
    for i, ((m, _), dyn) in enumerate(zip(jobs, dyns)):
        if id(m) not in pooled and (dyn is not None or cfg.dynamics is None):
            pooled[id(m)] = i
    kins = reference_kinematics_many(
        [(jobs[i][0], None if dyns[i] is None else dyns[i].motion) for i in pooled.values()], cfg)
    preps, first = [], {}
    for (m, p), dyn in zip(jobs, dyns):  # the passes of one motion share its pass-independent part
        like = first.get(id(m))
        kin = next(kins) if kins is not None and like is None and id(m) in pooled else None  # in job order
        preps.append(prepare_sequence(m, cfg, p, like=like, dynamics=dyn, reference=kin))
        first.setdefault(id(m), preps[-1])
    return preps


def simulate_batch(packed, cfg, settings: WarpBatchSettings, device: str):
    """Simulate the worlds of ``packed`` (``packed.PackedWorlds``, one control rate) as one batch.

    Returns (``packed.WorldRecordings``, ``BatchStats``); the recordings of an overflowed world
    (``BatchStats.overflow_worlds``) are not valid.
    """
    wp = init_warp()
    import mujoco_warp as mjw

    with wp.ScopedDevice(device):
        return _simulate_batch(wp, mjw, packed, cfg, settings)


def _f64(a) -> np.ndarray:
    return np.asarray(a.numpy(), dtype=np.float64)


def initial_model_data(packed):
    """World 0's ``MjModel`` copy (its pass's ``dof_damping``/``jnt_stiffness``) and ``MjData`` at its
    initial state, as ``engine.prepare_sequence`` left them: the template of the batch's device
    data (``put_data``); the state is set with the model's own damping and stiffness, as there."""
    from pipeline.simulate.engine import _set_state

    m = packed.subject_model(0)
    d = mujoco.MjData(m)
    _set_state(m, d, packed.qpos0[0], packed.qvel0[0])
    m.jnt_stiffness[:] = packed.jnt_stiffness[0]
    m.dof_damping[:] = packed.dof_damping[0]
    return m, d


def _simulate_batch(wp, mjw, pk, cfg, settings: WarpBatchSettings):
    from pipeline.simulate.controller import cross
    from pipeline.simulate.packed import WorldRecordings, cached_model

    t0 = time.perf_counter()
    nw = pk.worlds
    spfs = pk.world_spf
    spf = int(spfs[0])
    nsub = cfg.substeps
    if (spfs != spf).any():
        raise ValueError("a batch needs one control rate per frame rate")
    n_frames = pk.world_frames
    total = n_frames * spf  # control intervals per world
    kmax = int(total.max())
    base, d0 = initial_model_data(pk)
    nq, nv, nbody = base.nq, base.nv, base.nbody
    floor = mujoco.mj_name2id(base, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    geom_body = np.asarray(base.geom_bodyid)
    dof_body = np.asarray(base.dof_bodyid)
    subtree = _subtree_matrix(np.asarray(base.body_parentid))
    body_ids = pk.body_ids  # (W, 24)
    root_body = int(body_ids[0, 0])
    root_tree = int(base.body_rootid[root_body])
    armature = np.asarray(base.dof_armature, float)

    # --- per-world constants and padded references (K = kmax + 1 ticks) ------------------------
    refs = pk.batch_inputs(kmax)
    rq, rv, ra, ref_pos = refs["rq"], refs["rv"], refs["ra"], refs["ref_pos"]  # (W, K, ...)
    gate, plan, swing, has_plan = refs["gate"], refs["plan"], refs["swing"], refs["has_plan"]
    kp, kd, damping, limit = pk.kp, pk.kd, pk.damping, pk.limit
    res_f_max, res_t_max = pk.res_f_max, pk.res_t_max
    right_bodies = pk.right_bodies
    edges = pk.edges[0]
    w6 = pk.w6[0]
    qp_cfg = cfg.contact
    implicit = bool(pk.implicit[0])

    # --- device model and data ------------------------------------------------------------------
    base_margin = np.asarray(base.geom_margin, float)
    smask, gmask = pk.spring_mask, pk.swing_geom_mask
    qpos_spring = np.array(pk.qpos_spring)  # (W, nq)
    m, _ = batched_model([cached_model(b) for b in pk.subjects], pk.subject, {
        "dof_damping": pk.dof_damping,
        "jnt_stiffness": pk.jnt_stiffness,
        "qpos_spring": qpos_spring,
        "geom_margin": np.repeat(base_margin[None], nw, 0),
    })
    d = mjw.put_data(base, d0, nworld=nw, nconmax=settings.nconmax, njmax=settings.njmax)
    d.qpos.assign(pk.qpos0.astype(np.float32))
    d.qvel.assign(pk.qvel0.astype(np.float32))
    d.qacc_warmstart.zero_()
    qacc_buf = wp.zeros((nw, nv), dtype=float)
    unit = wp.zeros((nw, nv), dtype=float)
    mcol = wp.zeros((nw, nv), dtype=float)

    # --- recording buffers (padded to the longest sequence) ------------------------------------
    nmax = int(n_frames.max())
    qpos_rec = np.zeros((nw, nmax + 1, nq))
    com_rec = np.zeros((nw, nmax + 1, 3))
    comv_rec = np.zeros((nw, nmax + 1, 3))
    tau_sum = np.zeros((nw, nmax, 69))
    res_sum = np.zeros((nw, nmax, 6))
    dem_sum = np.zeros((nw, nmax, 6))
    f_sum = np.zeros((nw, nmax, 24, 3))
    mo_sum = np.zeros((nw, nmax, 24, 3))
    passive_sum = np.zeros((nw, nmax, nv - 6))
    reset = np.zeros((nw, nmax), bool)
    overflow = np.zeros(nw, bool)
    kkt_max = 0.0
    worlds = np.arange(nw)
    budget = settings.contact_budget
    # after flights the reference follows where the feet landed (pipeline.simulate.anchor)
    flight_anchor = FlightAnchor(nw, int(round(cfg.reanchor_after_flight_s * cfg.control_hz)), cfg.control_hz)
    ankle_ids = body_ids[:, [7, 8]]  # (W, 2)
    ref_ankles = ref_pos[:, :, [7, 8]]  # (W, K, 2, 3)
    seat = seat_inputs(cfg, base, pk, plan, ref_pos, has_plan, total, kmax)

    def forward_kinematics():
        mjw.kinematics(m, d)
        mjw.com_pos(m, d)
        mjw.com_vel(m, d)

    def set_state(mask: np.ndarray, q: np.ndarray, v: np.ndarray) -> None:
        qpos = d.qpos.numpy().copy()
        qvel = d.qvel.numpy().copy()
        warm = d.qacc_warmstart.numpy().copy()
        qpos[mask], qvel[mask], warm[mask] = q[mask], v[mask], 0.0
        d.qpos.assign(qpos)
        d.qvel.assign(qvel)
        d.qacc_warmstart.assign(warm)

    graph_used, ctrl_bytes = False, 0
    if settings.device_controller:
        kkt_max, graph_used, ctrl_bytes = _device_loop(
            wp, mjw, m, d, cfg=cfg, settings=settings, kmax=kmax, total=total, spf=spf, nsub=nsub,
            rq=rq, rv=rv, ra=ra, ref_pos=ref_pos, body_ids=body_ids, gate=gate, has_plan=has_plan, plan=plan,
            swing=swing, kp=kp, kd=kd, damping=damping, limit=limit, res_f_max=res_f_max, res_t_max=res_t_max,
            right_bodies=right_bodies, edges=edges, w6=w6, implicit=implicit, armature=armature, floor=floor,
            geom_body=geom_body, dof_body=dof_body, subtree=subtree, root_body=root_body, root_tree=root_tree,
            qpos_spring=qpos_spring, base_margin=base_margin, smask=smask, gmask=gmask, seat=seat,
            out=dict(qpos_rec=qpos_rec, com_rec=com_rec, comv_rec=comv_rec, tau_sum=tau_sum, res_sum=res_sum,
                     dem_sum=dem_sum, f_sum=f_sum, mo_sum=mo_sum, passive_sum=passive_sum, reset=reset,
                     overflow=overflow, max_shift=flight_anchor.max_shift))
    else:
        for k in range(kmax + 1):
            live = k <= total  # worlds still inside their sequence (k == total: final state)
            kk = np.minimum(k, total)  # each world's reference tick (held after its end)
            forward_kinematics()
            qpos = _f64(d.qpos)
            xpos = _f64(d.xpos)
            if k < kmax:
                loaded = ((plan[worlds, kk, :, 2] > cfg.plan_gate_n) & has_plan[:, None]
                          & (k < total)[:, None])
                anchor = flight_anchor.update(loaded, xpos[worlds[:, None], ankle_ids], ref_ankles[worlds, kk]).copy()
            err = np.linalg.norm(xpos[worlds[:, None], body_ids] - ref_pos[worlds, kk] - anchor[:, None],
                                 axis=-1).mean(1)
            bad = ((np.abs(qpos[:, 2] - rq[worlds, kk, 2]) > cfg.reset_root_height_err_m)
                   | (err > cfg.reset_mpjpe_m) | ~np.isfinite(qpos).all(1))
            do_reset = bad & (k < total)
            if do_reset.any():
                set_state(do_reset, rq[worlds, kk], rv[worlds, kk])
                reset[do_reset, kk[do_reset] // spf] = True
                forward_kinematics()
                qpos = _f64(d.qpos)
                flight_anchor.reset(do_reset, _f64(d.xpos)[worlds[:, None], ankle_ids])
                anchor[do_reset] = 0.0
            rec = live & (k % spf == 0)
            if rec.any():
                mjw.subtree_vel(m, d)
                i_rec = kk // spf
                qpos_rec[rec, i_rec[rec]] = qpos[rec]
                com_rec[rec, i_rec[rec]] = _f64(d.subtree_com)[rec, 0]
                comv_rec[rec, i_rec[rec]] = _f64(d.subtree_linvel)[rec, 0]
            if k == kmax:
                break
            active = k < total
            kc = np.minimum(k, total - 1)  # interval index per world (held after the end)
            i_int = kc // spf

            # --- controller: desired accelerations and inverse dynamics ----------------------------
            qvel = _f64(d.qvel)
            a_ff = 0.5 * (ra[worlds, kc] + ra[worlds, kc + 1])
            q_ref, v_ref = rq[worlds, kc].copy(), rv[worlds, kc]
            q_ref[:, :3] += anchor
            a_star = bc.desired_acceleration(qpos, qvel, q_ref, v_ref, a_ff, kp, kd)
            cdof, xmat = _f64(d.cdof), _f64(d.xmat)  # this tick's kinematics (rne and collision keep them)
            if seat is not None:
                seat_now = np.where(active[:, None], seat.targets[worlds, kc], np.nan)
                seat.apply(a_star, qvel, seat_now, _f64(d.xpos), xmat, _f64(d.subtree_com), _f64(d.cvel), cdof)
            d.qacc.assign(a_star.astype(np.float32))
            mjw.rne(m, d, flg_acc=True)
            tau = _f64(d.qfrc_bias) + armature * a_star
            # --- floor contacts of the tick, gated, into the contact budget ------------------------
            mjw.collision(m, d)
            nacon = int(d.nacon.numpy()[0])
            cgeom = d.contact.geom.numpy()[:nacon]
            cworld = d.contact.worldid.numpy()[:nacon]
            cdist = _f64(d.contact.dist)[:nacon]
            cpos = _f64(d.contact.pos)[:nacon]
            floor_first = cgeom[:, 0] == floor
            other = np.where(floor_first, cgeom[:, 1], cgeom[:, 0])
            keep = (floor_first | (cgeom[:, 1] == floor)) & (cdist < qp_cfg.contact_dist_m)
            cbody = geom_body[other]
            keep &= gate[cworld, kc[cworld], cbody]
            kw, kb, kpnt = cworld[keep], cbody[keep], cpos[keep]
            order = np.argsort(kw, kind="stable")
            kw, kb, kpnt = kw[order], kb[order], kpnt[order]
            start = np.searchsorted(kw, worlds)
            slot = np.arange(kw.size) - start[kw]
            over = slot >= budget
            if over.any():
                overflow[np.unique(kw[over])] = True
            fit = ~over
            pts = np.zeros((nw, budget, 3))
            bodies = np.zeros((nw, budget), int)
            valid = np.zeros((nw, budget), bool)
            pts[kw[fit], slot[fit]] = kpnt[fit]
            bodies[kw[fit], slot[fit]] = kb[fit]
            valid[kw[fit], slot[fit]] = True
            right = right_bodies[worlds[:, None], bodies]
            root_R = xmat[:, root_body].reshape(nw, 3, 3)
            foot_target = np.where(has_plan[:, None, None], 0.5 * (plan[worlds, kc] + plan[worlds, kc + 1]), 0.0)
            A, b = bc.force_plan_system(pts, valid, right, qpos[:, :3], root_R, tau[:, :6], edges, w6,
                                        foot_target if has_plan.any() else None, cfg.plan_target_weight)
            beta, kkt = bc.solve_force_plan_batched(A, b, qp_cfg.regularization, settings.nnls_iterations)
            kkt_max = max(kkt_max, float((kkt * active).max()))
            forces = beta.reshape(nw, budget, 4) @ edges  # (W, C, 3) world
            root_com = _f64(d.subtree_com)[:, root_tree]
            qfrc_c = bc.contact_generalized_force(cdof, dof_body, subtree, root_com, bodies, pts, forces, valid)
            # --- joint torques, residual, shortfall, limits ----------------------------------------
            joint = tau[:, 6:] - qfrc_c[:, 6:]
            if implicit:
                joint = joint + damping[:, 6:] * v_ref[:, 6:]
            demand = tau[:, :6] - qfrc_c[:, :6]
            residual = np.zeros((nw, 6))
            if cfg.residual:
                residual[:, :3] = bc.cap_norm(demand[:, :3], res_f_max)
                residual[:, 3:] = bc.cap_norm(demand[:, 3:], res_t_max)
            shortfall = demand - residual
            short = np.any(shortfall != 0.0, axis=1)
            if short.any():
                mjw.crb(m, d)
                cols = np.empty((nw, nv, 6))
                for j in range(6):
                    e = np.zeros((nw, nv), np.float32)
                    e[:, j] = 1.0
                    unit.assign(e)
                    mjw.mul_m(m, d, mcol, unit)
                    cols[:, :, j] = _f64(mcol)
                da = -np.linalg.solve(cols[:, :6, :], shortfall[..., None])[..., 0]
                da[~short] = 0.0
                joint = joint + np.einsum("wjr,wr->wj", cols[:, 6:, :], da)
            if cfg.torque_limits:
                passive = damping[:, 6:] * qvel[:, 6:] if implicit else 0.0
                jt = bc.cap_norm((joint - passive).reshape(nw, 23, 3), limit)
                joint = jt.reshape(nw, -1) + passive
            # --- record the tick's command ----------------------------------------------------------
            aw = worlds[active]
            ia = i_int[active]
            tau_sum[aw, ia] += joint[active]
            res_sum[aw, ia, :3] += residual[active, :3]
            res_sum[aw, ia, 3:] += np.einsum("wij,wj->wi", root_R, residual[:, 3:])[active]
            dem_sum[aw, ia, :3] += demand[active, :3]
            dem_sum[aw, ia, 3:] += np.einsum("wij,wj->wi", root_R, demand[:, 3:])[active]
            # --- apply: torques, toe-spring reference, swing clearance ------------------------------
            qfrc = np.concatenate([residual, joint], axis=1)
            d.qfrc_applied.assign(qfrc.astype(np.float32))
            spring = np.where(smask, rq[worlds, kc], qpos_spring)
            m.qpos_spring.assign(spring.astype(np.float32))
            cleared = (gmask & swing[worlds, kc][:, :, None]).any(1)  # (W, ngeom)
            margin = np.where(cleared, SWING_MARGIN_M, base_margin[None])
            m.geom_margin.assign(margin.astype(np.float32))
            # --- physics substeps; contact sensors and passive torques summed per interval ----------
            diverged = np.zeros(nw, bool)
            for _ in range(nsub):
                mjw.step(m, d)
                sd = _f64(d.sensordata).reshape(nw, 24, 10)
                pas = _f64(d.qfrc_damper)[:, 6:] + _f64(d.qfrc_spring)[:, 6:]
                qacc = _f64(d.qacc)
                diverged |= ~np.isfinite(qacc).all(1) | (np.abs(qacc).max(1) > 1e10) | ~np.isfinite(sd).all((1, 2))
                ok = active & ~diverged
                F = sd[..., 1:4]
                mom = sd[..., 4:7] + cross(sd[..., 7:10], F)
                f_sum[worlds[ok], i_int[ok]] += F[ok]
                mo_sum[worlds[ok], i_int[ok]] += mom[ok]
                passive_sum[worlds[ok], i_int[ok]] += pas[ok]
            ov = d.overflow.numpy() != 0
            overflow |= ov & active
            if ov.any():
                d.overflow.zero_()
            fix = diverged & active
            if fix.any():
                # MuJoCo's CPU step resets a diverging world itself; here: flag the interval and restart
                # from the reference at the next tick (same as the CPU engine)
                reset[fix, i_int[fix]] = True
                set_state(fix, rq[worlds, kc + 1], rv[worlds, kc + 1])
                forward_kinematics()
                flight_anchor.reset(fix, _f64(d.xpos)[worlds[:, None], ankle_ids])

    wp.synchronize()
    rec = WorldRecordings(n_frames=np.asarray(n_frames, np.int64), spf=np.asarray(spfs, np.int64), substeps=nsub,
                          qpos=qpos_rec, com=com_rec, comv=comv_rec, tau_sum=tau_sum, passive_sum=passive_sum,
                          res_sum=res_sum, dem_sum=dem_sum, f_sum=f_sum, mo_sum=mo_sum, reset=reset,
                          max_shift=np.array(flight_anchor.max_shift, float), pass_index=pk.pass_index,
                          has_plan=has_plan, swing=swing.reshape(nw, nmax, spf, 2).any(axis=2),
                          has_swing=pk.has_swing[pk.motion])
    stats = BatchStats(nw, kmax, time.perf_counter() - t0, tuple(int(i) for i in np.flatnonzero(overflow)), kkt_max,
                       _array_bytes(wp, m) + _array_bytes(wp, d), settings.device_controller, graph_used,
                       ctrl_bytes)
    return rec, stats


@dataclass
class SeatInputs:
    """The landing seat (``SimConfig.landing_seat``) of one batch: per world and control interval
    the reference ankle's downward velocity where a foot may be seated (``targets`` (W, kmax, 2),
    NaN elsewhere; ``engine.landing_seat_targets`` on each world's plan), the static chain of
    ``control.seat_chain``, each world's sole corners and the per-foot touched state."""

    targets: np.ndarray
    ankle: np.ndarray  # (W, 2) ankle body ids
    root_tree: int
    chain: np.ndarray
    quat: np.ndarray
    leg_pos: np.ndarray
    dof_body: np.ndarray
    sole_local: np.ndarray  # (W, 12, 3)
    sole_body: np.ndarray  # (W, 12)
    kp: float
    kd: float
    margin: float
    touched: np.ndarray  # (W, 2) bool

    def sole_z(self, xpos: np.ndarray, xmat: np.ndarray) -> np.ndarray:
        """(W, 2) each foot's lowest sole corner height, m (``xmat`` (W, nbody, 3, 3))."""
        w = np.arange(xpos.shape[0])[:, None]
        pts = xpos[w, self.sole_body] + np.einsum("wkij,wkj->wki", xmat[w, self.sole_body], self.sole_local)
        return np.stack([pts[:, :6, 2].min(1), pts[:, 6:, 2].min(1)], 1)

    def apply(self, a_star, qvel, seat_now, xpos, xmat, subtree_com, cvel, cdof) -> None:
        """``control.landing_seat`` on the host arrays of one tick (edits ``a_star``)."""
        from pipeline.simulate.warp import control as bc

        w = np.arange(xpos.shape[0])
        xmat = xmat.reshape(xmat.shape[0], xmat.shape[1], 3, 3)
        bc.landing_seat(a_star, qvel, seat_now, self.touched, self.sole_z(xpos, xmat),
                        xpos[w[:, None], self.ankle], subtree_com[:, self.root_tree], cvel[w[:, None], self.ankle],
                        cvel[:, self.dof_body[self.chain]], cdof[:, self.chain], self.chain, self.quat, self.leg_pos,
                        self.kp, self.kd, self.margin)


def seat_inputs(cfg, base, pk, plan, ref_pos, has_plan, total, kmax) -> SeatInputs | None:
    """``SeatInputs`` of a batch, or ``None`` when no world is ever seated (the seat off, no
    dynamics plan, no walking touch-down)."""
    from pipeline.simulate.engine import landing_seat_targets
    from pipeline.simulate.warp import control as bc

    if not getattr(cfg, "landing_seat", False):
        return None
    nw = plan.shape[0]
    targets = np.full((nw, kmax, 2), np.nan)
    motion = np.asarray(pk.motion)
    for mi in np.unique(motion[np.asarray(has_plan, bool)]):  # the passes of a motion share its targets
        ws = np.flatnonzero(motion == mi)
        w, t = ws[0], int(total[ws[0]])
        loaded = plan[w, :t + 1, :, 2] > cfg.plan_gate_n
        targets[ws, :t] = landing_seat_targets(loaded, ref_pos[w, :t + 1][:, [7, 8], 2], cfg.control_hz,
                                               cfg.landing_seat_support_s)
    if np.isnan(targets).all():
        return None
    from pipeline.skeleton import JOINT_NAMES

    body_ids = pk.body_ids
    if (body_ids != body_ids[:1]).any():
        raise ValueError("a batch's worlds must share one humanoid topology")
    b0 = body_ids[0]
    ankle = [int(b0[JOINT_NAMES.index(f"{s}_ankle")]) for s in ("left", "right")]
    legs = [np.concatenate([int(base.body_dofadr[b0[JOINT_NAMES.index(f"{s}_{j}")]]) + np.arange(3)
                            for j in ("hip", "knee")]) for s in ("left", "right")]
    chain, quat, leg_pos = bc.seat_chain(base, ankle, legs)
    omega = float(cfg.landing_seat_omega)
    return SeatInputs(targets=targets, ankle=body_ids[:, [7, 8]], root_tree=int(base.body_rootid[ankle[0]]),
                      chain=chain, quat=quat, leg_pos=leg_pos, dof_body=np.asarray(base.dof_bodyid),
                      sole_local=np.asarray(pk.sole_local, float), sole_body=np.asarray(pk.sole_body, np.int64),
                      kp=omega * omega, kd=2.0 * omega, margin=float(cfg.landing_seat_margin_m),
                      touched=np.zeros((nw, 2), bool))


def _device_loop(wp, mjw, m, d, *, cfg, settings, kmax, total, spf, nsub, rq, rv, ra, ref_pos, body_ids,
                 gate, has_plan, plan, swing, kp, kd, damping, limit, res_f_max, res_t_max, right_bodies, edges, w6,
                 implicit, armature, floor, geom_body, dof_body, subtree, root_body, root_tree, qpos_spring,
                 base_margin, smask, gmask, out, seat: SeatInputs | None = None) -> tuple[float, bool, int]:
    """The batch loop with the controller on the device (``pipeline.simulate.warp.kernels``).

    Same sequence per tick as the host loop of ``_simulate_batch``, every step a kernel or a MuJoCo
    Warp call reading the tick from a device counter, so no host round trip per tick; on CUDA one
    tick is captured as a CUDA graph after an eager first tick (which loads the modules) and
    replayed. Differences to the host loop that do not change results: the second kinematics
    after the fall check and ``crb`` + ``mul_m`` run every tick (the host loop skips them when no
    world resets / has a shortfall), ``subtree_vel`` on every tick. Fills ``out``'s host arrays
    at the end; returns the largest force-plan KKT residual of the active ticks and whether the
    ticks ran as a CUDA graph (a failed capture warns and runs them eagerly), and the bytes of the
    controller's device arrays (references, scratch, recordings).
    """
    from pipeline.simulate.anchor import STILL_MPS
    from pipeline.simulate.warp import kernels as kn

    f64, i32, f32 = wp.float64, wp.int32, wp.float32
    nw, nk = rq.shape[0], kmax + 1
    nq, nv = rq.shape[2], rv.shape[2]
    ngeom = base_margin.size
    nmax = out["tau_sum"].shape[1]
    budget = settings.contact_budget
    ncol = 4 * budget

    def a64(x):
        return wp.array(np.ascontiguousarray(x, dtype=np.float64), dtype=f64)

    def ai(x):
        return wp.array(np.ascontiguousarray(x, dtype=np.int32), dtype=i32)

    def z64(*shape):
        return wp.zeros(shape, dtype=f64)

    def zi(*shape):
        return wp.zeros(shape, dtype=i32)

    # constants
    total_d = ai(total)
    rq_d, rv_d, ra_d = a64(rq), a64(rv), a64(ra)
    refp_d = a64(ref_pos.reshape(nw, nk, 72))
    bid_d = ai(body_ids)
    gate_d = ai(gate)
    hasp_d = ai(has_plan)
    plan_d = a64(plan.reshape(nw, nk, 6))
    swing_d = ai(swing)
    kp_d, kd_d, damp_d, lim_d = a64(kp), a64(kd), a64(damping), a64(limit)
    rfm_d, rtm_d = a64(res_f_max), a64(res_t_max)
    right_d = ai(right_bodies)
    edges_d, w6_d, arm_d = a64(edges), a64(w6), a64(armature)
    gbody_d, dbody_d, sub_d = ai(geom_body), ai(dof_body), ai(subtree)
    smask_d, gmask_d = ai(smask), ai(gmask)
    sbase_d = wp.array(qpos_spring.astype(np.float32), dtype=f32)
    bmargin_d = wp.array(base_margin.astype(np.float32), dtype=f32)
    units = np.zeros((6, nw, nv), np.float32)
    for j in range(6):
        units[j, :, j] = 1.0
    units_d = wp.array(units, dtype=f32)
    mcols = wp.zeros((6, nw, nv), dtype=f32)
    # state and scratch
    tick = zi(1)
    anchor, max_shift, airborne, landed = z64(nw, 3), z64(nw), zi(nw), wp.array(np.ones(nw, np.int32), dtype=i32)
    prev, fix_pending, do_reset, fix = z64(nw, 6), zi(nw), zi(nw), zi(nw)
    a_star = z64(nw, nv)
    count, pts, bodies, valid, overflow_d = zi(nw), z64(nw, budget, 3), zi(nw, budget), zi(nw, budget), zi(nw)
    A, b = z64(nw, kn.NROWS, ncol), z64(nw, kn.NROWS)
    H, nu, cand, grad, delta = z64(nw, kn.NROWS, kn.NROWS), z64(nw, kn.NROWS), z64(nw, kn.NROWS), \
        z64(nw, kn.NROWS), z64(nw, kn.NROWS)
    zcol, beta, kkt, kkt_max = z64(nw, ncol), z64(nw, ncol), z64(nw), z64(nw)
    qfrc_c, joint = z64(nw, nv), z64(nw, nv - 6)
    demand, residual, shortfall, M6, da = z64(nw, 6), z64(nw, 6), z64(nw, 6), z64(nw, 6, 6), z64(nw, 6)
    diverged = zi(nw)
    # device recordings
    qpos_rec, com_rec, comv_rec = z64(nw, nmax + 1, nq), z64(nw, nmax + 1, 3), z64(nw, nmax + 1, 3)
    tau_sum, res_sum, dem_sum = z64(nw, nmax, nv - 6), z64(nw, nmax, 6), z64(nw, nmax, 6)
    f_sum, mo_sum, passive_sum = z64(nw, nmax, 72), z64(nw, nmax, 72), z64(nw, nmax, nv - 6)
    reset_rec = zi(nw, nmax)
    if seat is not None:  # the landing seat (SeatInputs): its constants and per-foot touched state
        seat_d, touched_d = a64(seat.targets), zi(nw, 2)
        sole_local_d, sole_body_d, ankle_d = a64(seat.sole_local), ai(seat.sole_body), ai(seat.ankle)
        chain_d, quat_d, leg_d = ai(seat.chain), ai(seat.quat), ai(seat.leg_pos)

    ctrl_bytes = sum(int(v.capacity or 0) for v in locals().values() if isinstance(v, wp.array))
    qp = cfg.contact
    min_flight = int(round(cfg.reanchor_after_flight_s * cfg.control_hz))
    launch = wp.launch

    def kinematics():
        mjw.kinematics(m, d)
        mjw.com_pos(m, d)
        mjw.com_vel(m, d)

    def tick_start():
        kinematics()
        launch(kn.anchor_fall_kernel, dim=nw, inputs=[
            tick, total_d, kmax, spf, d.qpos, d.xpos, rq_d, refp_d, bid_d, plan_d, hasp_d, float(cfg.plan_gate_n),
            min_flight, float(cfg.control_hz), float(STILL_MPS), float(cfg.reset_root_height_err_m),
            float(cfg.reset_mpjpe_m), anchor, max_shift, airborne, landed, prev, fix_pending, do_reset, reset_rec])
        launch(kn.restore_kernel, dim=nw, inputs=[tick, total_d, do_reset, 0, rq_d, rv_d, d.qpos, d.qvel,
                                                  d.qacc_warmstart])
        kinematics()
        launch(kn.anchor_after_reset_kernel, dim=nw, inputs=[do_reset, d.xpos, bid_d, anchor, airborne, landed, prev])
        mjw.subtree_vel(m, d)
        launch(kn.record_kernel, dim=nw, inputs=[tick, total_d, spf, d.qpos, d.subtree_com, d.subtree_linvel,
                                                 qpos_rec, com_rec, comv_rec])

    def tick_control():
        launch(kn.desired_acceleration_kernel, dim=(nw, 24), inputs=[
            tick, total_d, d.qpos, d.qvel, rq_d, rv_d, ra_d, kp_d, kd_d, anchor, a_star, d.qacc])
        if seat is not None:
            launch(kn.landing_seat_kernel, dim=nw, inputs=[
                tick, total_d, seat_d, touched_d, d.xpos, d.xmat, d.subtree_com, d.cvel, d.cdof, d.qvel,
                sole_local_d, sole_body_d, ankle_d, int(seat.root_tree), chain_d, quat_d, leg_d, dbody_d,
                float(seat.kp), float(seat.kd), float(seat.margin), a_star, d.qacc])
        mjw.rne(m, d, flg_acc=True)
        mjw.collision(m, d)
        count.zero_()
        valid.zero_()
        launch(kn.gather_contacts_kernel, dim=d.naconmax, inputs=[
            tick, total_d, d.nacon, d.contact.geom, d.contact.worldid, d.contact.dist, d.contact.pos, int(floor),
            float(qp.contact_dist_m), gbody_d, gate_d, count, pts, bodies, valid, overflow_d])
        launch(kn.plan_system_kernel, dim=nw, inputs=[
            tick, total_d, pts, bodies, valid, right_d, d.qpos, d.xmat, int(root_body), d.qfrc_bias, a_star, arm_d,
            plan_d, hasp_d, float(cfg.plan_target_weight), edges_d, w6_d, A, b])
        launch(kn.solve_force_plan_kernel, dim=nw, inputs=[
            A, b, float(qp.regularization), int(settings.nnls_iterations), 10, H, nu, cand, grad, delta, zcol,
            beta, kkt])
        launch(kn.contact_force_kernel, dim=(nw, nv), inputs=[
            d.cdof, dbody_d, sub_d, d.subtree_com, int(root_tree), bodies, pts, valid, beta, edges_d, qfrc_c])
        launch(kn.residual_kernel, dim=nw, inputs=[
            tick, total_d, d.qfrc_bias, a_star, arm_d, qfrc_c, damp_d, rv_d, int(implicit), int(cfg.residual),
            rfm_d, rtm_d, joint, demand, residual, shortfall])
        mjw.crb(m, d)
        for j in range(6):
            mjw.mul_m(m, d, mcols[j], units_d[j])
        launch(kn.apply_kernel, dim=nw, inputs=[
            tick, total_d, spf, mcols, shortfall, M6, da, joint, residual, demand, d.qvel, damp_d, int(implicit),
            int(cfg.torque_limits), lim_d, d.xmat, int(root_body), kkt, d.qfrc_applied, tau_sum, res_sum, dem_sum,
            kkt_max])
        launch(kn.spring_margin_kernel, dim=nw, inputs=[
            tick, total_d, rq_d, smask_d, sbase_d, swing_d, gmask_d, bmargin_d, float(SWING_MARGIN_M),
            m.qpos_spring, m.geom_margin])

    def tick_steps():
        for _ in range(nsub):
            mjw.step(m, d)
            launch(kn.substep_sums_kernel, dim=nw, inputs=[
                tick, total_d, spf, d.sensordata, d.qacc, d.qfrc_damper, d.qfrc_spring, diverged, f_sum, mo_sum,
                passive_sum])
        launch(kn.end_tick_kernel, dim=nw, inputs=[tick, total_d, spf, d.overflow, diverged, overflow_d, fix,
                                                   fix_pending, reset_rec])
        launch(kn.restore_kernel, dim=nw, inputs=[tick, total_d, fix, 1, rq_d, rv_d, d.qpos, d.qvel,
                                                  d.qacc_warmstart])
        launch(kn.advance_tick_kernel, dim=1, inputs=[tick])

    def one_tick():
        tick_start()
        tick_control()
        tick_steps()

    graph = None
    done = 0
    if wp.get_device().is_cuda and settings.cuda_graph and kmax > 1:
        one_tick()  # eager: loads every module before the capture
        done = 1
        try:
            with wp.ScopedCapture() as capture:
                one_tick()  # recorded, not run: the tick counter stays
            graph = capture.graph
        except Exception as exc:  # pragma: no cover - needs CUDA
            warnings.warn(f"CUDA graph capture of a control tick failed ({exc!r}); running ticks eagerly",
                          RuntimeWarning, stacklevel=2)
    for _ in range(done, kmax):
        if graph is not None:
            wp.capture_launch(graph)
        else:
            one_tick()
    tick_start()  # k = kmax: the final state is recorded
    wp.synchronize()

    out["qpos_rec"][:] = qpos_rec.numpy()
    out["com_rec"][:] = com_rec.numpy()
    out["comv_rec"][:] = comv_rec.numpy()
    out["tau_sum"][:] = tau_sum.numpy()
    out["res_sum"][:] = res_sum.numpy()
    out["dem_sum"][:] = dem_sum.numpy()
    out["f_sum"][:] = f_sum.numpy().reshape(out["f_sum"].shape)
    out["mo_sum"][:] = mo_sum.numpy().reshape(out["mo_sum"].shape)
    out["passive_sum"][:] = passive_sum.numpy()
    out["reset"][:] |= reset_rec.numpy() != 0
    out["overflow"][:] |= overflow_d.numpy() != 0
    out["max_shift"][:] = max_shift.numpy()
    return float(kkt_max.numpy().max(initial=0.0)), graph is not None, ctrl_bytes


def _array_bytes(wp, obj, seen: set | None = None) -> int:
    """Bytes of the Warp arrays held by a MuJoCo Warp dataclass (recursively)."""
    import dataclasses

    seen = set() if seen is None else seen
    total = 0
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name, None)
        if isinstance(v, wp.array):
            if id(v) not in seen:
                seen.add(id(v))
                total += int(v.capacity or 0)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            total += _array_bytes(wp, v, seen)
    return total


def batched_model(subjects: list, subject: np.ndarray, per_world: dict[str, np.ndarray]):
    """``batch_model.batched_model`` of the distinct subject models ``subjects`` (world w takes
    ``subjects[subject[w]]``)."""
    from pipeline.simulate.warp.batch_model import batched_model as _batched

    return _batched(subjects, subject, per_world)
