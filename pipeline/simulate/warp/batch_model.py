"""One MuJoCo Warp model for a batch of subjects (all humanoids share one topology).

MuJoCo Warp model arrays whose spec starts with ``*`` may carry one row per world
(``put_model(..., batch_sizes=...)``; a world reads row ``worldid % rows``). A batch of W worlds
gets W rows for

* every such field that differs between the subjects' own compiled models (body_pos, body_ipos,
  body_iquat, body_mass, body_inertia, body_subtreemass, body_invweight0, dof_invweight0,
  geom_size, geom_pos, geom_quat, geom_aabb, geom_rbound, ...): each world takes them from its
  subject's ``MjModel``, compiled by MuJoCo itself, so every derived constant is what
  ``mj_setConst`` computes for that subject (no ``set_const`` on the device is needed). The rows
  are the ``MjModel`` arrays themselves (MuJoCo Warp 4.0's layout of every batchable field is
  MuJoCo's, cast to float32; checked per batch): one ``put_model`` per batch, not one per subject
  (≈ 130 ms each on the host, the largest host cost of a batch of many subjects); and
* the per-pass/per-tick fields the engine sets (``per_world``): ``dof_damping`` (b = 2ζωM_ii),
  ``jnt_stiffness`` (toe springs), ``qpos_spring`` (spring reference, every tick) and
  ``geom_margin`` (swing clearance, every tick).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np


def batchable_fields() -> list[str]:
    """Names of the MuJoCo Warp ``Model`` arrays that accept a per-world leading dimension."""
    from mujoco_warp._src import types

    out = []
    for f in dataclasses.fields(types.Model):
        shape = getattr(f.type, "shape", None)
        if shape and shape[0] == "*":
            out.append(f.name)
    return out


_SUBJECT_CACHE: dict[int, tuple[mujoco.MjModel, object]] = {}


def _device_model(mjm: mujoco.MjModel):
    """``put_model`` of one subject's model (cached per model object for this process)."""
    import mujoco_warp as mjw

    hit = _SUBJECT_CACHE.get(id(mjm))
    if hit is None or hit[0] is not mjm:
        if len(_SUBJECT_CACHE) > 256:
            _SUBJECT_CACHE.clear()
        hit = (mjm, mjw.put_model(mjm))
        _SUBJECT_CACHE[id(mjm)] = hit
    return hit[1]


def subject_rows(subjects: list[mujoco.MjModel], names: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per subject, the ``MjModel`` array of each MuJoCo Warp field in ``names`` (float64/int, MuJoCo's
    layout; MuJoCo Warp's own is the same values cast to its dtype and reshaped, which
    ``batched_model`` checks): ({name: (S, ...) array}, the names ``MjModel`` has no array for)."""
    rows, missing = {}, []
    for name in names:
        vals = [getattr(s, name, None) for s in subjects]
        if any(v is None or not isinstance(v, np.ndarray) for v in vals):
            missing.append(name)
            continue
        rows[name] = np.stack([np.asarray(v) for v in vals])
    return rows, missing


def batched_model(subjects: list[mujoco.MjModel], subject: np.ndarray, per_world: dict[str, np.ndarray]):
    """MuJoCo Warp ``Model`` of ``len(subject)`` worlds (module docstring), world w of subject
    model ``subjects[subject[w]]``; the base model (every field not batched) is world 0's.

    The per-world rows of the fields that differ between the subjects are their ``MjModel`` arrays
    (``subject_rows``: no ``put_model`` per subject; a field ``MjModel`` lacks is taken from a
    ``put_model`` of each subject, the previous way). The first world's rows are checked against
    what ``put_model`` itself wrote for that subject: a MuJoCo Warp whose layout of a field is not
    ``MjModel``'s raises instead of simulating other subjects.

    Args:
        subjects: distinct subject ``MjModel``s (same topology).
        subject: (W,) index into ``subjects`` per world.
        per_world: field name → (W, ...) array (MuJoCo layout of that field) set per world.

    Returns:
        (the batched ``Model``, the names of the fields batched because the subjects differ).

    Raises:
        ValueError: when the subjects' topologies differ.
        RuntimeError: when MuJoCo Warp's layout of a batched field is not ``MjModel``'s.
    """
    import mujoco_warp as mjw

    subject = np.asarray(subject, dtype=np.int64)
    used = sorted({int(i) for i in subject})
    base = subjects[int(subject[0])]
    for s in (subjects[i] for i in used):
        if (s.nq, s.nv, s.nbody, s.ngeom, s.njnt, s.nsensordata) != (base.nq, base.nv, base.nbody, base.ngeom,
                                                                   base.njnt, base.nsensordata):
            raise ValueError("a batched model needs subjects of one topology")
    w = subject.shape[0]
    rows, missing = subject_rows([subjects[i] for i in used], batchable_fields())
    where = np.searchsorted(used, subject)  # world → row of ``rows``
    varying = [name for name, r in rows.items() if not (r == r[where[0]]).all()]
    if missing and len(used) > 1:  # no MjModel array: compare MuJoCo Warp's own (put_model per subject)
        dev = {i: _device_model(subjects[i]) for i in used}
        for name in missing:
            a = [getattr(dev[i], name).numpy()[0] for i in used]
            if any(not np.array_equal(x, a[where[0]]) for x in a):
                varying.append(name)
                rows[name] = np.stack(a)
    sizes = {name: w for name in set(varying) | set(per_world)}
    mb = mjw.put_model(base, batch_sizes=sizes)
    for name in varying:
        target = getattr(mb, name)
        own = target[0:1].numpy()[0]
        mine = np.asarray(rows[name][where[0]], dtype=own.dtype).reshape(own.shape)
        if not np.array_equal(own, mine):
            raise RuntimeError(f"MuJoCo Warp's layout of Model.{name} is not MjModel.{name}'s: per-subject rows "
                               "cannot be copied (pipeline.simulate.warp.batch_model)")
        target.assign(np.asarray(rows[name][where], dtype=own.dtype).reshape((w,) + own.shape))
    for name, arr in per_world.items():
        target = getattr(mb, name)
        target.assign(np.asarray(arr, dtype=target.numpy().dtype).reshape(target.shape))
    return mb, varying
