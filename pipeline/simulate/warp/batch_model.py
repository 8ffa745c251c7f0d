"""One MuJoCo Warp model for a batch of subjects (all humanoids share one topology).

MuJoCo Warp model arrays whose spec starts with ``*`` may carry one row per world
(``put_model(..., batch_sizes=...)``; a world reads row ``worldid % rows``). A batch of W worlds
gets W rows for

* every such field that differs between the subjects' own compiled models (body_pos, body_ipos,
  body_iquat, body_mass, body_inertia, body_subtreemass, body_invweight0, dof_invweight0,
  geom_size, geom_pos, geom_quat, geom_aabb, geom_rbound, ...): each world takes them from its
  subject's ``MjModel``, compiled by MuJoCo itself, so every derived constant is what
  ``mj_setConst`` computes for that subject (no ``set_const`` on the device is needed); and
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


def batched_model(subjects: list[mujoco.MjModel], per_world: dict[str, np.ndarray]):
    """MuJoCo Warp ``Model`` of ``len(subjects)`` worlds (module docstring).

    Args:
        subjects: each world's subject ``MjModel`` (same topology; repeated objects are fine).
        per_world: field name → (W, ...) array (MuJoCo layout of that field) set per world.

    Raises:
        ValueError: when the subjects' topologies differ.
    """
    import mujoco_warp as mjw

    base = subjects[0]
    for s in subjects[1:]:
        if (s.nq, s.nv, s.nbody, s.ngeom, s.njnt, s.nsensordata) != (base.nq, base.nv, base.nbody, base.ngeom,
                                                                   base.njnt, base.nsensordata):
            raise ValueError("a batched model needs subjects of one topology")
    w = len(subjects)
    distinct = list({id(s): s for s in subjects}.values())
    dev = {id(s): _device_model(s) for s in distinct}
    first = dev[id(base)]
    varying = []
    for name in batchable_fields():
        a0 = getattr(first, name).numpy()
        if any(not np.array_equal(getattr(dev[id(s)], name).numpy(), a0) for s in distinct[1:]):
            varying.append(name)
    sizes = {name: w for name in set(varying) | set(per_world)}
    mb = mjw.put_model(base, batch_sizes=sizes)
    for name in varying:
        getattr(mb, name).assign(np.stack([getattr(dev[id(s)], name).numpy()[0] for s in subjects]))
    for name, arr in per_world.items():
        target = getattr(mb, name)
        target.assign(np.asarray(arr, dtype=target.numpy().dtype).reshape(target.shape))
    return mb, varying
