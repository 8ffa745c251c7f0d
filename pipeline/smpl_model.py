"""Subject-specific rest skeletons from SMPL / SMPL-H / SMPL-X model files (optional extra).

Needs ``torch`` and ``smplx`` (``pip install dynaset[smpl]``); both are imported lazily.

Safety: model files are only accepted as ``.npz`` and are read with ``np.load(allow_pickle=False)``;
files with object (pickled) arrays and ``.pkl`` files are refused. The validated arrays are handed
to ``smplx.SMPL`` as its ``data_struct``, so smplx never opens (or unpickles) the file itself.

Only the shaped template is needed: at zero pose SMPL's joints are exactly
``J_regressor @ v_shaped`` with ``v_shaped = v_template + shapedirs @ betas`` (smplx's
``forward_shape`` + ``lbs.vertices2joints``), so one ``smplx.SMPL`` module serves all three model
types (their hand/face parts do not affect body joints at zero pose).

Hand joints: SMPL's joints 22/23 (``left_hand``/``right_hand``, near the knuckles) do not exist in
SMPL-H/SMPL-X, whose hands are articulated. We use the base joint of the index finger
(``left_index1``/``right_index1``: SMPL-H joints 22/37, SMPL-X joints 25/40), which lies at
the metacarpophalangeal joint like SMPL's hand joint.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from pipeline import skeleton as sk

_INSTALL_HINT = "pip install dynaset[smpl]"

_PREFIX = {"smpl": "SMPL", "smplh": "SMPLH", "smplx": "SMPLX"}

# Rows of J_regressor used as SMPL joints 0..23 for each model type.
_JOINT_ROWS = {
    "smpl": tuple(range(24)),
    "smplh": tuple(range(22)) + (22, 37),  # left_index1, right_index1
    "smplx": tuple(range(22)) + (25, 40),  # after jaw 22, eyes 23/24: left_index1, right_index1
}
_MIN_JOINTS = {"smpl": 24, "smplh": 52, "smplx": 55}

_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def _import_smplx():
    try:
        import torch  # noqa: F401
        import smplx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"subject-specific SMPL skeletons need the optional torch/smplx extra: {_INSTALL_HINT} "
            f"({exc})"
        ) from exc
    return smplx


def find_model_file(model_dir: str | os.PathLike, gender: str, model_type: str = "smpl") -> Path:
    """Locate the ``.npz`` model file for ``gender`` and ``model_type``.

    ``model_dir`` may be the file itself, or a folder in smplx's layout
    (``<dir>/<type>/<PREFIX>_<GENDER>.npz``, e.g. ``smpl/SMPL_NEUTRAL.npz``), or a folder holding
    ``<PREFIX>_<GENDER>.npz`` directly, or AMASS's layout (``<dir>/<type>/<gender>/model.npz``).
    Raises ``ValueError`` for ``.pkl`` files (never unpickled) and ``FileNotFoundError`` otherwise.
    """
    model_type = model_type.lower()
    if model_type not in _PREFIX:
        raise ValueError(f"unknown SMPL model type {model_type!r} (expected one of {sorted(_PREFIX)})")
    gender = gender.lower()
    root = Path(model_dir)
    if root.is_file():
        candidates = [root]
    else:
        stem = f"{_PREFIX[model_type]}_{gender.upper()}"
        candidates = [
            root / model_type / f"{stem}.npz",
            root / f"{stem}.npz",
            root / model_type / gender / "model.npz",
            root / gender / "model.npz",
        ]
    for c in candidates:
        if c.is_file():
            if c.suffix.lower() == ".pkl":
                raise ValueError(
                    f"refusing pickled SMPL model file {c.name}: convert it to .npz "
                    "(pickles are never loaded from data)"
                )
            return c
    pkls = [c.with_suffix(".pkl") for c in candidates if c.with_suffix(".pkl").is_file()]
    if pkls:
        raise ValueError(
            f"only a pickled model file was found ({pkls[0].name}); refusing .pkl — convert it to .npz"
        )
    raise FileNotFoundError(
        f"no {model_type} model file for gender {gender!r} under {root}; tried: "
        + ", ".join(str(c) for c in candidates)
    )


def load_model_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an SMPL-family ``.npz`` with ``allow_pickle=False``.

    Raises ``ValueError`` naming the file if it is not an npz archive, holds object (pickled)
    arrays, or lacks a required key.
    """
    path = Path(path)
    if path.suffix.lower() == ".pkl":
        raise ValueError(f"refusing pickled SMPL model file {path.name}: convert it to .npz")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"SMPL model file {path.name} is not an .npz archive")
    arrays: dict[str, np.ndarray] = {}
    object_keys: list[str] = []
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError:  # numpy refuses object arrays when allow_pickle=False
                object_keys.append(key)
    if object_keys:
        raise ValueError(
            f"SMPL model file {path.name} contains object (pickled) arrays {sorted(object_keys)}; "
            "refusing to load it — re-save it without them"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"SMPL model file {path.name} lacks required arrays {missing}")
    return arrays


def model_skeleton(
    model_dir: str | os.PathLike,
    gender: str,
    betas: np.ndarray,
    model_type: str = "smpl",
) -> sk.Skeleton:
    """Rest skeleton of a subject from an SMPL-family model file and shape coefficients.

    Args:
        model_dir: model folder or file (see ``find_model_file``).
        gender: ``"male"``, ``"female"`` or ``"neutral"``.
        betas: (B,) shape coefficients; zero-length means the mean shape. Coefficients beyond the
            model's shape space are dropped with a warning.
        model_type: ``"smpl"``, ``"smplh"`` or ``"smplx"``.

    Returns:
        ``Skeleton`` with the 24 zero-pose joints (template frame, metres; hand joints per the
        module docstring), height = vertical (y) extent of the shaped template mesh, and
        ``origin="smpl-model:<file name>"``.
    """
    smplx = _import_smplx()
    import torch
    from smplx.lbs import vertices2joints
    from smplx.utils import Struct

    model_type = model_type.lower()
    path = find_model_file(model_dir, gender, model_type)
    arrays = load_model_arrays(path)
    n_joints = arrays["J_regressor"].shape[0]
    if n_joints < _MIN_JOINTS[model_type]:
        raise ValueError(
            f"{path.name}: J_regressor has {n_joints} joints, a {model_type} model needs {_MIN_JOINTS[model_type]}"
        )
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(betas)):
        raise ValueError("betas contain non-finite values")
    n_shape = int(arrays["shapedirs"].shape[-1])
    if model_type == "smplx":
        n_shape = min(n_shape, 300)  # SMPL-X stores 300 shape + 100 expression directions
    if betas.size > n_shape:
        if np.any(betas[n_shape:] != 0):
            warnings.warn(
                f"{path.name} has {n_shape} shape directions; dropping betas[{n_shape}:]", stacklevel=2
            )
        betas = betas[:n_shape]
    n_betas = max(int(betas.size), 1)
    betas_t = np.zeros((1, n_betas))
    betas_t[0, : betas.size] = betas

    data_struct = Struct(**arrays)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # smplx prints notices
        warnings.simplefilter("ignore")
        model = smplx.SMPL(
            model_path=str(path),
            data_struct=data_struct,
            gender=gender,
            num_betas=n_betas,
            dtype=torch.float64,
        )
    # smplx.SMPL caps models with < 300 shape directions at 10 betas; use all that were given.
    shapedirs = np.asarray(arrays["shapedirs"], dtype=np.float64)[:, :, :n_betas]
    model.register_buffer("shapedirs", torch.from_numpy(np.ascontiguousarray(shapedirs)))
    with torch.no_grad():
        out = model.forward_shape(betas=torch.from_numpy(betas_t))
        v_shaped = out.v_shaped
        joints = vertices2joints(model.J_regressor, v_shaped)[0].numpy()
    v = v_shaped[0].numpy()
    rest = joints[list(_JOINT_ROWS[model_type])].astype(np.float64)
    height = float(v[:, 1].max() - v[:, 1].min())
    return sk.Skeleton(rest_joints_m=rest, height_m=height, origin=f"smpl-model:{path.name}")
