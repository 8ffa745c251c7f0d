"""Hand a ``CanonicalMotion`` from one task to another through the build's staging folder.

One ``.npz`` per motion (no object arrays; provenance and scalars as a JSON string), read back
with ``allow_pickle=False``. Used between the per-file task and the simulate task so that only
small records travel through the task runner. Optional *extra* numeric (or fixed-width unicode) arrays ride along (stored
as ``extra__<name>``; ``load_extras``): e.g. a measured sequence's plate forces and inverse-dynamics
torques, which the simulate task compares its passes with.

Beside it, the per-file task writes the motion's dynamics pass (``save_dynamics``: the part of the
simulate task's host preparation that does not depend on the pass), keyed by the motion and the
simulation configuration so that a stale one is never used (``load_dynamics``).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from pipeline.records import CanonicalMotion, Provenance

_ARRAYS = tuple(
    f.name for f in fields(CanonicalMotion)
    if f.name not in ("provenance", "gender", "height_m", "mass_kg", "fps_hz", "source_fps_hz",
                      "ground_offset_m", "skeleton_origin")
)


_EXTRA = "extra__"


def save_canonical(motion: CanonicalMotion, path: Path, extras: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``motion`` (and the numeric or unicode ``extras`` arrays) to ``path`` (atomically: temporary
    file, then rename)."""
    path = Path(path)
    more = {}
    for name, value in (extras or {}).items():
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "biufU":
            raise TypeError(f"extra array {name!r} must be numeric, boolean or unicode, got {arr.dtype}")
        more[_EXTRA + name] = arr
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "provenance": asdict(motion.provenance),
        "gender": motion.gender,
        "height_m": motion.height_m,
        "mass_kg": motion.mass_kg,
        "fps_hz": motion.fps_hz,
        "source_fps_hz": motion.source_fps_hz,
        "ground_offset_m": motion.ground_offset_m,
        "skeleton_origin": motion.skeleton_origin,
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                 **{k: np.asarray(getattr(motion, k)) for k in _ARRAYS}, **more)
    os.replace(tmp, path)
    return path


def load_canonical(path: Path) -> CanonicalMotion:
    """Read a motion written by ``save_canonical``."""
    with np.load(Path(path), allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode("utf-8"))
        arrays = {k: z[k] for k in _ARRAYS}
    return CanonicalMotion(provenance=Provenance(**meta.pop("provenance")), **meta, **arrays)


def load_extras(path: Path) -> dict[str, np.ndarray]:
    """The extra arrays saved with a motion by ``save_canonical`` (``{}`` when there are none)."""
    with np.load(Path(path), allow_pickle=False) as z:
        return {k[len(_EXTRA):]: z[k] for k in z.files if k.startswith(_EXTRA)}


# --- a motion's dynamics pass (``pipeline.dynamics.DynamicsResult``), computed by the per-file task ---

_DYN_POSE = ("root_pos_m", "joint_rot_aa_rad", "joint_pos_m", "marker_pos_m", "foot_points_m")
"""Fields of ``DynamicsResult.motion`` that differ from the motion it was computed from (``with_pose``)."""
_DYN_ARRAYS = ("root_correction_m", "foot_force_n", "corner_force_n", "newton_residual_n", "euler_residual_nm")


def save_dynamics(dyn, key: str, path: Path) -> Path:
    """Write a ``DynamicsResult`` computed for ``key`` (``engine.dynamics_key`` of its motion and
    configuration) to ``path`` atomically: its arrays, the corrected motion's pose arrays, and the
    key, cut-off and metrics as a JSON string (no pickles)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "cutoff_hz": dyn.cutoff_hz, "metrics": dyn.metrics}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                 **{"motion__" + k: np.asarray(getattr(dyn.motion, k)) for k in _DYN_POSE},
                 **{k: np.asarray(getattr(dyn, k)) for k in _DYN_ARRAYS})
    os.replace(tmp, path)
    return path


def load_dynamics(path: Path, motion: CanonicalMotion, key: str):
    """The ``DynamicsResult`` saved by ``save_dynamics`` for ``motion``, or ``None`` when the file is
    missing, unreadable, or was written for another key (another motion or configuration) or with
    other frame counts: the caller then computes it."""
    from dataclasses import replace

    from pipeline.dynamics import DynamicsResult

    try:
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            if meta.get("key") != key:
                return None
            pose = {k: z["motion__" + k] for k in _DYN_POSE}
            arrays = {k: z[k] for k in _DYN_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = motion.n_frames
    if any(a.shape[:1] != (n,) for a in (*pose.values(), *arrays.values())):
        return None
    return DynamicsResult(motion=replace(motion, **pose), cutoff_hz=meta["cutoff_hz"], metrics=meta["metrics"],
                          **arrays)


_RESULT_SCALARS = ("sequence_id", "pass_index", "fps_hz", "mass_kg")


def save_result(result, path: Path) -> Path:
    """Write a ``SimulationResult`` (one simulated pass) to ``path`` atomically, as an ``.npz`` of
    two entries (no pickles): every array (the optional ones when present) packed into one byte
    buffer, and a JSON string with the scalars, the metrics dict and the buffer's layout (one zip
    entry per array costs more than the copy). The batched simulate task hands its passes to the
    build's CPU finish tasks this way (``pipeline.dataset.simulation``)."""
    from pipeline.simulate.engine import SimulationResult

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: getattr(result, k) for k in _RESULT_SCALARS}
    meta["metrics"] = result.metrics
    layout, chunks, offset = [], [], 0
    for f in fields(SimulationResult):
        v = getattr(result, f.name)
        if f.name in meta or v is None:
            continue
        a = np.ascontiguousarray(v)
        layout.append([f.name, a.dtype.str, list(a.shape), offset])
        pad = -a.nbytes % 8  # every array starts 8-byte aligned
        chunks += [a.reshape(-1).view(np.uint8), np.zeros(pad, np.uint8)]
        offset += a.nbytes + pad
    meta["layout"] = layout
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                 data=np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))
    os.replace(tmp, path)
    return path


def load_result(path: Path):
    """The ``SimulationResult`` ``save_result`` wrote to ``path`` (arrays read-only, as the
    simulator returns them); raises when it is missing or unreadable."""
    from pipeline.simulate.engine import SimulationResult

    with np.load(Path(path), allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode("utf-8"))
        data = z["data"]
    arrays = {}
    for name, dtype, shape, offset in meta.pop("layout"):
        dt = np.dtype(dtype)
        a = np.frombuffer(data, dt, int(np.prod(shape, dtype=np.int64)), offset).reshape(shape)
        a.setflags(write=False)
        arrays[name] = a
    return SimulationResult(**meta, **arrays)


def save_bundle(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping | None = None) -> Path:
    """Write named arrays (numeric, boolean or fixed-width unicode) and a JSON-able ``meta`` dict to
    ``path`` atomically, as ``save_result`` does: one ``.npz`` of two entries (no pickles), the
    arrays packed 8-byte aligned into one buffer, their names, dtypes, shapes and offsets in the
    JSON string. The batched simulate path's staging files (``pipeline.simulate.packed``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout, chunks, offset = [], [], 0
    for name, value in arrays.items():
        a = np.ascontiguousarray(value)
        if a.dtype == object or a.dtype.kind not in "biufU":
            raise TypeError(f"array {name!r} must be numeric, boolean or unicode, got {a.dtype}")
        layout.append([name, a.dtype.str, list(a.shape), offset])
        pad = -a.nbytes % 8
        chunks += [a.reshape(-1).view(np.uint8), np.zeros(pad, np.uint8)]
        offset += a.nbytes + pad
    head = {"meta": dict(meta or {}), "layout": layout}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(head).encode("utf-8"), dtype=np.uint8),
                 data=np.concatenate(chunks) if chunks else np.zeros(0, np.uint8))
    os.replace(tmp, path)
    return path


def load_bundle(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) that ``save_bundle`` wrote to ``path``; the arrays are read-only views of one
    buffer. Raises when the file is missing or unreadable."""
    with np.load(Path(path), allow_pickle=False) as z:
        head = json.loads(bytes(z["meta"]).decode("utf-8"))
        data = z["data"]
    arrays = {}
    for name, dtype, shape, offset in head["layout"]:
        dt = np.dtype(dtype)
        a = np.frombuffer(data, dt, int(np.prod(shape, dtype=np.int64)), offset).reshape(shape)
        a.setflags(write=False)
        arrays[name] = a
    return arrays, head["meta"]
