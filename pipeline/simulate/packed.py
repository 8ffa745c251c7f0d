"""The batched backend's host inputs and recordings as plain arrays (issue 13: the GPU worker's host
must keep up with the GPU).

``PackedWorlds`` holds everything the MuJoCo Warp batch loop (``pipeline.simulate.warp.backend``)
needs of a set of (motion, pass) worlds, packed from their host preparations
(``engine.prepare_sequence``) by ``pack_prepared``: per motion the references at the control rate
(qpos, qvel, qacc, joint positions), contact gates, plan and swing clearance, padded to the longest
motion by repeating the last row (what the batch pads to anyway); per world the pass's gains,
damping, stiffness, torque and residual limits, the initial state; and each distinct subject's
``MjModel`` as MuJoCo's binary model (``mj_saveModel``), from which the batch takes the per-world
model rows and the base model. No MuJoCo objects and no Warp: a CPU task packs and stages them
(``save_packed``, ``allow_pickle=False``), the GPU task only loads, concatenates and uploads them.

``WorldRecordings`` is what the batch loop records per world (states at the recording ticks, the
interval sums of torques, residuals, contact forces and moments, reset flags, anchor shifts);
``finish_world`` turns one world's recordings into the ``SimulationResult`` (``engine._finish``),
so that this runs on CPU workers too. Both backends' results are the same to the bit whichever
process packs, simulates and finishes (``tests/test_simulate_packed.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

MOTION_TIME_FIELDS = ("rq", "rv", "ra", "ref_pos", "gate", "plan", "swing")
"""Per-motion arrays with a control-tick axis (axis 1): K = ticks + 1 rows for the states, K − 1
for the intervals (``gate``, ``swing``)."""
MOTION_FIELDS = ("seq_id", "n_frames", "spf", "has_plan", "has_swing") + MOTION_TIME_FIELDS
WORLD_FIELDS = ("motion", "subject", "pass_index", "kp", "kd", "damping", "dof_damping", "limit", "res_f_max",
                "res_t_max", "right_bodies", "body_ids", "qpos0", "qvel0", "jnt_stiffness", "qpos_spring",
                "spring_mask", "swing_geom_mask", "edges", "w6", "implicit", "sole_local", "sole_body")
_INTERVAL = ("gate", "swing")
_STATES = ("qpos", "com", "comv")


def gather_ticks(a: np.ndarray | tuple[np.ndarray, ...], rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k, ...): motion ``rows[i]``'s rows 0..k−1 along axis 1, its last row repeated
    past its end (what padding each motion's own rows gives, as those were padded the same way),
    in one copy. ``a``: the (M, K, ...) motion array, or a tuple of such blocks of possibly
    different K (``concat_packed``), motion indices running on through the blocks."""
    blocks = a if isinstance(a, tuple) else (a,)
    starts = np.cumsum([0] + [b.shape[0] for b in blocks])
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((rows.shape[0], k) + blocks[0].shape[2:], blocks[0].dtype)
    order = np.argsort(rows, kind="stable")
    cuts = np.flatnonzero(np.diff(rows[order])) + 1
    for group in np.split(order, cuts) if rows.size else ():
        j = int(rows[group[0]])
        b = int(np.searchsorted(starts, j, side="right")) - 1
        src = blocks[b][j - starts[b]]
        n = min(k, src.shape[0])
        out[group, :n] = src[:n]
        if n < k:
            out[group, n:] = src[n - 1]
    return out


def _ticks(a) -> int:
    """K of a motion array or of the longest of its blocks."""
    return max(b.shape[1] for b in a) if isinstance(a, tuple) else a.shape[1]


def _joined(a) -> np.ndarray:
    """A motion array from its blocks (padded to the longest), for writing."""
    if not isinstance(a, tuple):
        return a
    k = _ticks(a)
    return np.concatenate([gather_ticks(b, np.arange(b.shape[0]), k) for b in a])


def _pad(a: np.ndarray, k: int) -> np.ndarray:
    """Rows 0..k−1 of ``a``, the last row repeated past its end."""
    if a.shape[0] >= k:
        return a[:k]
    return np.concatenate([a, np.repeat(a[-1:], k - a.shape[0], 0)], 0)


def model_bytes(m: mujoco.MjModel) -> bytes:
    """MuJoCo's binary model (``mj_saveModel``): an exact copy of every field."""
    buf = np.empty(mujoco.mj_sizeModel(m), np.uint8)
    mujoco.mj_saveModel(m, None, buf)
    return buf.tobytes()


def model_from_bytes(b: bytes) -> mujoco.MjModel:
    """A fresh ``MjModel`` from ``model_bytes`` (≈ 1 ms for the humanoid)."""
    return mujoco.MjModel.from_binary_path("subject.mjb", {"subject.mjb": b})


_MODELS: OrderedDict[bytes, mujoco.MjModel] = OrderedDict()


def cached_model(b: bytes) -> mujoco.MjModel:
    """``model_from_bytes`` shared per content in this process (read-only use: the batch's per-world
    model rows); 256 kept."""
    key = hashlib.sha1(b).digest()
    hit = _MODELS.get(key)
    if hit is None:
        hit = _MODELS[key] = model_from_bytes(b)
        if len(_MODELS) > 256:
            _MODELS.popitem(last=False)
    else:
        _MODELS.move_to_end(key)
    return hit


@dataclass(frozen=True)
class PackedWorlds:
    """Host inputs of W (motion, pass) worlds over M motions (module docstring).

    Per motion (M; K = max ticks + 1 control ticks, m = motion): ``seq_id`` (M,) str;
    ``n_frames``, ``spf`` (M,) frames and control ticks per frame; ``has_plan``, ``has_swing`` (M,)
    bool (a dynamics plan, swing clearance); ``rq`` (M, K, nq), ``rv``/``ra`` (M, K, nv) reference
    qpos/qvel/qacc (MuJoCo layout); ``ref_pos`` (M, K, 24, 3) reference joint positions, m;
    ``gate`` (M, K−1, nbody) bool plannable bodies per interval; ``plan`` (M, K, 2, 3) planned
    foot forces, N (zeros without a plan); ``swing`` (M, K−1, 2) bool cleared feet (False
    without). Rows past a motion's end repeat its last row. After ``concat_packed`` each of these
    is a tuple of the parts' arrays (motion indices running on through them), not copied.

    Per world (W): ``motion``, ``subject`` (indices), ``pass_index``; ``kp``, ``kd``, ``damping``
    (controller), ``dof_damping`` (model) (W, nv); ``limit`` (W, 23) joint torque limits, N·m;
    ``res_f_max``/``res_t_max`` (W,) residual caps, N / N·m; ``right_bodies`` (W, nbody) bool;
    ``body_ids`` (W, 24); ``qpos0`` (W, nq), ``qvel0`` (W, nv) initial state (pass perturbation
    included); ``jnt_stiffness`` (W, njnt); ``qpos_spring`` (W, nq); ``spring_mask`` (W, nq) bool
    (qpos following the reference); ``swing_geom_mask`` (W, 2, ngeom) bool (each foot's geoms);
    ``edges`` (W, 4, 3), ``w6`` (W, 6), ``implicit`` (W,) controller constants; ``sole_local`` (W, 12,
    3) the sole corners in their bodies' frames (m) and ``sole_body`` (W, 12) those bodies' ids
    (left 0–5, right 6–11; the landing seat's lowest-corner heights).

    ``subjects``: each distinct subject's pristine ``MjModel`` (``model_bytes``).
    """

    seq_id: np.ndarray
    n_frames: np.ndarray
    spf: np.ndarray
    has_plan: np.ndarray
    has_swing: np.ndarray
    rq: np.ndarray
    rv: np.ndarray
    ra: np.ndarray
    ref_pos: np.ndarray
    gate: np.ndarray
    plan: np.ndarray
    swing: np.ndarray
    motion: np.ndarray
    subject: np.ndarray
    pass_index: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    damping: np.ndarray
    dof_damping: np.ndarray
    limit: np.ndarray
    res_f_max: np.ndarray
    res_t_max: np.ndarray
    right_bodies: np.ndarray
    body_ids: np.ndarray
    qpos0: np.ndarray
    qvel0: np.ndarray
    jnt_stiffness: np.ndarray
    qpos_spring: np.ndarray
    spring_mask: np.ndarray
    swing_geom_mask: np.ndarray
    edges: np.ndarray
    w6: np.ndarray
    implicit: np.ndarray
    sole_local: np.ndarray
    sole_body: np.ndarray
    subjects: tuple[bytes, ...]

    @property
    def worlds(self) -> int:
        return int(self.motion.shape[0])

    @property
    def world_frames(self) -> np.ndarray:
        """(W,) frames of each world's motion."""
        return self.n_frames[self.motion]

    @property
    def world_spf(self) -> np.ndarray:
        """(W,) control ticks per frame of each world's motion."""
        return self.spf[self.motion]

    @property
    def nbytes(self) -> int:
        size = 0
        for f in MOTION_FIELDS + WORLD_FIELDS:
            v = getattr(self, f)
            size += sum(int(b.nbytes) for b in v) if isinstance(v, tuple) else int(v.nbytes)
        return size + sum(map(len, self.subjects))

    def take(self, idx) -> PackedWorlds:
        """The worlds ``idx`` (in that order); the motion arrays are shared, not copied (the
        references are ≈ 1.4 MB per 4 s motion: a batch's host work is mostly copying them)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = {f: getattr(self, f) for f in MOTION_FIELDS}
        out.update({f: getattr(self, f)[idx] for f in WORLD_FIELDS})
        return PackedWorlds(**out, subjects=self.subjects)

    def subject_model(self, w: int) -> mujoco.MjModel:
        """A fresh ``MjModel`` of world ``w``'s subject (to modify)."""
        return model_from_bytes(self.subjects[int(self.subject[w])])

    def batch_inputs(self, kmax: int) -> dict[str, np.ndarray]:
        """Per-world (W, ...) references padded to ``kmax`` intervals (``kmax + 1`` ticks): ``rq``,
        ``rv``, ``ra``, ``ref_pos``, ``plan`` (W, kmax + 1, ...), ``gate``, ``swing`` (W, kmax, ...),
        ``has_plan`` (W,) (what the batch loop indexes per world)."""
        m = self.motion
        out = {f: gather_ticks(getattr(self, f), m, kmax + (0 if f in _INTERVAL else 1)) for f in MOTION_TIME_FIELDS}
        out["has_plan"] = self.has_plan[m]
        return out


def pack_prepared(preps: list) -> PackedWorlds:
    """``PackedWorlds`` of prepared sequences (``engine.PreparedSequence``, one world each, in
    order). The passes of one motion prepared with ``like=`` share its references (one motion row);
    each distinct subject model is stored once."""
    rows: dict[int, int] = {}
    firsts = []
    for p in preps:
        if id(p.rq) not in rows:
            rows[id(p.rq)] = len(firsts)
            firsts.append(p)
    subj: dict[bytes, int] = {}
    by_model: dict[int, int] = {}
    for p in preps:
        if id(p.hum.model) not in by_model:
            b = model_bytes(p.hum.model)
            by_model[id(p.hum.model)] = subj.setdefault(b, len(subj))
    k = max((p.rq.shape[0] for p in firsts), default=1)
    nbody = preps[0].model.nbody if preps else 0

    def gate(p):
        return _pad(p.gate, k - 1) if p.gate is not None else np.repeat(p.ctrl._plannable[None], k - 1, 0)

    def mask(n: int, where) -> np.ndarray:
        a = np.zeros(n, bool)
        a[where] = True
        return a

    def geoms(p) -> np.ndarray:
        a = np.zeros((2, p.model.ngeom), bool)
        if p.swing_geoms is not None:
            for f in range(2):
                a[f, p.swing_geoms[f]] = True
        return a

    stack = np.stack
    return PackedWorlds(
        seq_id=np.array([p.motion.provenance.sequence_id for p in firsts], dtype=str),
        n_frames=np.array([p.motion.n_frames for p in firsts], dtype=np.int64),
        spf=np.array([p.steps_per_frame for p in firsts], dtype=np.int64),
        has_plan=np.array([p.plan is not None for p in firsts], dtype=bool),
        has_swing=np.array([p.swing is not None for p in firsts], dtype=bool),
        rq=stack([_pad(p.rq, k) for p in firsts]),
        rv=stack([_pad(p.rv, k) for p in firsts]),
        ra=stack([_pad(p.ra, k) for p in firsts]),
        ref_pos=stack([_pad(p.ref_pos, k) for p in firsts]),
        gate=stack([gate(p) for p in firsts]).astype(bool),
        plan=stack([_pad(p.plan, k) if p.plan is not None else np.zeros((k, 2, 3)) for p in firsts]),
        swing=stack([_pad(p.swing, k - 1) if p.swing is not None else np.zeros((k - 1, 2), bool) for p in firsts]),
        motion=np.array([rows[id(p.rq)] for p in preps], dtype=np.int64),
        subject=np.array([by_model[id(p.hum.model)] for p in preps], dtype=np.int64),
        pass_index=np.array([p.pass_index for p in preps], dtype=np.int64),
        kp=stack([p.ctrl._kp for p in preps]),
        kd=stack([p.ctrl._kd for p in preps]),
        damping=stack([p.ctrl.damping for p in preps]),
        dof_damping=stack([np.asarray(p.model.dof_damping, float) for p in preps]),
        limit=stack([p.ctrl._limit for p in preps]),
        res_f_max=np.array([p.ctrl.residual_force_max for p in preps], dtype=float),
        res_t_max=np.array([p.ctrl.residual_torque_max for p in preps], dtype=float),
        right_bodies=stack([mask(nbody, p.ctrl._right_bodies) for p in preps]),
        body_ids=stack([np.asarray(p.hum.body_ids, np.int64) for p in preps]),
        qpos0=stack([np.array(p.data.qpos, float) for p in preps]),
        qvel0=stack([np.array(p.data.qvel, float) for p in preps]),
        jnt_stiffness=stack([np.asarray(p.model.jnt_stiffness, float) for p in preps]),
        qpos_spring=stack([np.asarray(p.model.qpos_spring, float) for p in preps]),
        spring_mask=stack([mask(p.model.nq, p.spring_q) for p in preps]),
        swing_geom_mask=stack([geoms(p) for p in preps]),
        edges=stack([p.ctrl._edges for p in preps]),
        w6=stack([p.ctrl._w for p in preps]),
        implicit=np.array([p.ctrl.implicit_damping for p in preps], dtype=bool),
        sole_local=stack([p.ctrl._sole_local for p in preps]),
        sole_body=stack([np.asarray(p.ctrl._sole_body_ids, np.int64) for p in preps]),
        subjects=tuple(subj),
    )


def concat_packed(parts: list[PackedWorlds]) -> PackedWorlds:
    """The worlds of ``parts`` in order, as one ``PackedWorlds``: the per-motion reference arrays
    are kept as the parts' blocks (no copy; ``gather_ticks`` reads them), the rest concatenated,
    subjects deduplicated by content."""
    if len(parts) == 1:
        return parts[0]
    subj: dict[bytes, int] = {}
    remap = [np.array([subj.setdefault(b, len(subj)) for b in p.subjects] or [0], dtype=np.int64) for p in parts]
    out = {}
    for f in MOTION_FIELDS:
        vals = [getattr(p, f) for p in parts]
        if f in MOTION_TIME_FIELDS:
            out[f] = tuple(b for v in vals for b in (v if isinstance(v, tuple) else (v,)))
        else:
            out[f] = np.concatenate(vals)
    for f in WORLD_FIELDS:
        out[f] = np.concatenate([getattr(p, f) for p in parts])
    offsets = np.cumsum([0] + [p.seq_id.shape[0] for p in parts[:-1]])
    out["motion"] = np.concatenate([p.motion + o for p, o in zip(parts, offsets)])
    out["subject"] = np.concatenate([r[p.subject] for p, r in zip(parts, remap)])
    return PackedWorlds(**out, subjects=tuple(subj))


def save_packed(p: PackedWorlds, path: Path) -> Path:
    """Write ``p`` to ``path`` (``canonical_io.save_bundle``: no pickles)."""
    from pipeline.store.canonical_io import save_bundle

    arrays = {f: _joined(getattr(p, f)) for f in MOTION_FIELDS + WORLD_FIELDS}
    arrays["subject_bytes"] = np.frombuffer(b"".join(p.subjects), np.uint8)
    arrays["subject_sizes"] = np.array([len(b) for b in p.subjects], dtype=np.int64)
    return save_bundle(path, arrays, {"format": 2, "kind": "packed-worlds"})


def load_packed(path: Path) -> PackedWorlds:
    """The ``PackedWorlds`` ``save_packed`` wrote to ``path`` (arrays read-only)."""
    from pipeline.store.canonical_io import load_bundle

    a, meta = load_bundle(path)
    if meta.get("kind") != "packed-worlds" or meta.get("format") != 2:
        raise ValueError(f"{path}: not a packed-worlds file of format 2 (format 1 files, from before the "
                         "landing seat's sole corners were packed, are refused: prepare the batch again)")
    raw = a.pop("subject_bytes").tobytes()
    ends = np.cumsum(a.pop("subject_sizes"))
    subjects = tuple(raw[s:e] for s, e in zip(np.concatenate([[0], ends[:-1]]), ends))
    return PackedWorlds(**a, subjects=subjects)


@dataclass(frozen=True)
class WorldRecordings:
    """What the batch loop recorded for W worlds (N = the longest world's frames; rows past a
    world's own frames are unused).

    ``n_frames``, ``spf`` (W,); ``substeps`` physics steps per control tick; ``qpos`` (W, N + 1,
    nq), ``com``/``comv`` (W, N + 1, 3) states at the frames (MuJoCo layout, world COM position
    and velocity); interval sums over the control ticks (and physics steps for the sensors):
    ``tau_sum`` (W, N, nv − 6) applied joint torques, ``passive_sum`` (W, N, nv − 6) damper +
    spring torques (summed over steps), ``res_sum``/``dem_sum`` (W, N, 6) residual applied /
    demanded (world), ``f_sum``/``mo_sum`` (W, N, 24, 3) floor force per body and its moment about
    the world origin (summed over steps); ``reset`` (W, N) bool; ``max_shift`` (W,) the largest
    flight re-anchoring, m. And what finishing a world needs of its inputs: ``pass_index`` (W,),
    ``has_plan`` (W,) bool, ``swing`` (W, N, 2) bool a foot's floor collisions were off in part of
    the frame's interval, ``has_swing`` (W,) bool (swing clearance on).
    """

    n_frames: np.ndarray
    spf: np.ndarray
    substeps: int
    qpos: np.ndarray
    com: np.ndarray
    comv: np.ndarray
    tau_sum: np.ndarray
    passive_sum: np.ndarray
    res_sum: np.ndarray
    dem_sum: np.ndarray
    f_sum: np.ndarray
    mo_sum: np.ndarray
    reset: np.ndarray
    max_shift: np.ndarray
    pass_index: np.ndarray
    has_plan: np.ndarray
    swing: np.ndarray
    has_swing: np.ndarray

    @property
    def worlds(self) -> int:
        return int(self.n_frames.shape[0])

    def take(self, idx) -> WorldRecordings:
        """The worlds ``idx`` in that order, trimmed to their longest."""
        idx = np.asarray(idx, dtype=np.int64)
        n = int(self.n_frames[idx].max(initial=0))
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "substeps":
                out[f.name] = v
            elif v.ndim == 1:
                out[f.name] = v[idx]
            else:
                out[f.name] = v[idx, : n + (1 if f.name in _STATES else 0)]
        return WorldRecordings(**out)


def place_recordings(parts: list[tuple[np.ndarray, WorldRecordings]], worlds: int) -> WorldRecordings:
    """One ``WorldRecordings`` of ``worlds`` worlds from batches' recordings, each with the world
    indices it holds (every world exactly once)."""
    n = max(int(r.n_frames.max(initial=0)) for _, r in parts)
    first = parts[0][1]
    out = {}
    for f in dataclasses.fields(WorldRecordings):
        v = getattr(first, f.name)
        if f.name == "substeps":
            out[f.name] = v
            continue
        shape = (worlds,) + ((n + (1 if f.name in _STATES else 0),) + v.shape[2:] if v.ndim > 1 else ())
        out[f.name] = np.zeros(shape, v.dtype)
    for idx, r in parts:
        for f in dataclasses.fields(WorldRecordings):
            if f.name == "substeps":
                continue
            v = getattr(r, f.name)
            if v.ndim == 1:
                out[f.name][idx] = v
            else:
                out[f.name][idx, : v.shape[1]] = v
    return WorldRecordings(**out)


def save_recordings(r: WorldRecordings, path: Path, meta: dict | None = None) -> Path:
    """Write ``r`` (and a JSON-able ``meta``) to ``path`` (``canonical_io.save_bundle``)."""
    from pipeline.store.canonical_io import save_bundle

    arrays = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "substeps"}
    return save_bundle(path, arrays, {"format": 1, "substeps": int(r.substeps), **(meta or {})})


def load_recordings(path: Path) -> tuple[WorldRecordings, dict]:
    """(recordings, meta) that ``save_recordings`` wrote to ``path``."""
    from pipeline.store.canonical_io import load_bundle

    a, meta = load_bundle(path)
    if meta.get("format") != 1:
        raise ValueError(f"{path}: not a world-recordings file of format 1")
    return WorldRecordings(**a, substeps=int(meta["substeps"])), meta


def finish_world(rec: WorldRecordings, w: int, motion, cfg, hum, skel, dyn):
    """World ``w``'s ``SimulationResult`` (``engine._finish``, as the CPU engine's loop ends) from its
    recordings; ``motion``, ``hum``, ``skel``, ``dyn``: its canonical motion, humanoid, skeleton and
    dynamics pass (``None`` without)."""
    from pipeline.simulate.engine import _finish

    n, spf, nsub = int(rec.n_frames[w]), int(rec.spf[w]), int(rec.substeps)
    tau = rec.tau_sum[w, :n] + rec.passive_sum[w, :n] / nsub
    res = _finish(
        motion, cfg, int(rec.pass_index[w]), hum, skel, rec.qpos[w, :n + 1], rec.com[w, :n + 1],
        rec.comv[w, :n + 1], tau / spf, rec.res_sum[w, :n] / spf, rec.dem_sum[w, :n] / spf,
        rec.f_sum[w, :n] / (nsub * spf), rec.mo_sum[w, :n] / (nsub * spf), rec.reset[w, :n].copy(), dyn,
        rec.swing[w, :n].copy() if rec.has_swing[w] else None)
    if rec.has_plan[w]:
        res.metrics["reanchor_max_m"] = float(rec.max_shift[w])
    return res
