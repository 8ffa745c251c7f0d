"""Hand a ``CanonicalMotion`` from one task to another through the build's staging folder.

One ``.npz`` per motion (no object arrays; provenance and scalars as a JSON string), read back
with ``allow_pickle=False``. Used between the per-file task and the simulate task so that only
small records travel through the task runner. Optional *extra* numeric (or fixed-width unicode) arrays ride along (stored
as ``extra__<name>``; ``load_extras``): e.g. a measured sequence's plate forces and inverse-dynamics
torques, which the simulate task compares its passes with.
"""

from __future__ import annotations

import json
import os
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
