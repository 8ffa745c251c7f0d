"""AMASS npz reader (SMPL, SMPL-H and SMPL-X layouts).

Files follow AMASS's folder convention ``<dataset>/<subject>/<name>_poses.npz`` (SMPL-H, AMASS
"SMPL+H G") or ``<name>_stageii.npz`` (SMPL-X releases). Keys read:

* ``poses`` (T, 72 | 156 | 165) axis-angle, or ``root_orient`` (T, 3) + ``pose_body`` (T, 63);
* ``trans`` (T, 3) metres; ``betas`` (B,); ``gender`` (str or bytes);
* frame rate under ``mocap_framerate`` (SMPL-H) or ``mocap_frame_rate`` (SMPL-X), Hz.

Only SMPL's 22 body joints are taken from SMPL-H/X (pelvis + 21); SMPL joints 22/23 (left/right
hand) get zero local rotation, i.e. the hand is a rigid extension of the wrist and finger
articulation is dropped (docs/conventions.md). Files are always opened with
``allow_pickle=False``: an npz holding object arrays is rejected, never unpickled.

Optional dynaset extension: ``<dataset>/<subject>/subject.json`` with ``height_m``, ``mass_kg`` and
``gender`` gives body parameters that AMASS files do not carry (the demo corpus writes it).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.records import Provenance, RawMotion, SubjectInfo
from pipeline.sources.base import SourceError, find_licence, sha256_of

SHAPE_FILE_NAMES = frozenset({"shape.npz"})
"""AMASS per-subject shape files (no motion) that discovery skips."""

_POSES_LAYOUTS = {72: "smpl", 156: "smplh", 165: "smplx"}
_GENDERS = {"male": "male", "female": "female", "neutral": "neutral", "m": "male", "f": "female"}


def parse_ids(rel_path: PurePosixPath) -> tuple[str, str, str]:
    """(dataset, subject, name) from ``<dataset>/<subject>/<name>_poses.npz``.

    Deeper trees keep the first folder as the dataset and the last folder as the subject;
    a file directly in a subject folder under the root gets dataset ``"unknown"``.
    """
    parts = rel_path.parts
    stem = rel_path.name[: -len(".npz")] if rel_path.name.endswith(".npz") else rel_path.stem
    for suffix in ("_poses", "_stageii"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if len(parts) >= 3:
        return parts[0], parts[-2], stem
    if len(parts) == 2:
        return "unknown", parts[0], stem
    return "unknown", "unknown", stem


def _is_motion_file(path: Path) -> bool:
    name = path.name
    return (
        name.endswith(".npz")
        and name not in SHAPE_FILE_NAMES
        and not name.endswith("_stagei.npz")
    )


def _decode_str(value: np.ndarray) -> str:
    item = value.item() if value.shape == () else value.reshape(-1)[0]
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    return str(item)


def _read_subject_sidecar(path: Path) -> dict:
    sidecar = path.parent / "subject.json"
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(sidecar, f"unreadable subject.json ({exc})") from None
    if not isinstance(data, dict):
        raise SourceError(sidecar, "subject.json must hold a JSON object")
    return data


def _positive_or_none(value: object, what: str, path: Path) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SourceError(path, f"{what} is not a number: {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise SourceError(path, f"{what} must be positive and finite, got {v}")
    return v


class AmassSource:
    """Reads AMASS-format npz files; one file is one sequence."""

    name = "amass"

    def discover(self, root: Path) -> list[Path]:
        """All motion npz files under ``root`` (shape files skipped), sorted by relative path."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"AMASS source root {root} is not a directory")
        return sorted((p for p in root.rglob("*.npz") if _is_motion_file(p)), key=lambda p: p.relative_to(root).as_posix())

    def read(self, path: Path, root: Path) -> list[RawMotion]:
        """Read one AMASS npz into a ``RawMotion``; ``SourceError`` names the file and problem."""
        return [read_amass(path, root)]


def read_amass(path: Path, root: Path) -> RawMotion:
    """Read one AMASS npz file (see module docstring) into a ``RawMotion``."""
    path = Path(path)
    root = Path(root)
    rel = PurePosixPath(path.relative_to(root).as_posix())
    try:
        sha, size = sha256_of(path)
    except OSError as exc:
        raise SourceError(rel, f"cannot read file ({exc.strerror or exc})") from None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {}
            for key in npz.files:
                try:
                    data[key] = npz[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise SourceError(rel, f"key {key!r} holds a pickled object array; refusing to unpickle data") from None
                    raise SourceError(rel, f"key {key!r} is unreadable ({exc})") from None
    except SourceError:
        raise
    except (zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(rel, f"not a valid npz archive, truncated or corrupt ({exc})") from None
    except (OSError, ValueError) as exc:
        raise SourceError(rel, f"cannot load npz ({exc})") from None
    except Exception as exc:  # zlib errors, malformed headers inside the zip, ...
        raise SourceError(rel, f"corrupt npz member ({type(exc).__name__}: {exc})") from None

    dataset, subject_id, name = parse_ids(rel)
    provenance = Provenance(
        source="amass", path=rel.as_posix(), sha256=sha, dataset=dataset, subject=subject_id,
        name=name, size_bytes=size, licence=find_licence(path, root),
    )

    # Frame rate.
    fps_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in data), None)
    if fps_key is None:
        raise SourceError(rel, "unknown frame rate: neither 'mocap_framerate' nor 'mocap_frame_rate' present")
    try:
        fps = float(np.asarray(data[fps_key]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise SourceError(rel, f"{fps_key!r} is not a number") from None
    if not np.isfinite(fps) or fps <= 0:
        raise SourceError(rel, f"invalid frame rate {fps_key}={fps}")

    # Poses.
    if "root_orient" in data and "pose_body" in data:
        root_orient = np.asarray(data["root_orient"], dtype=np.float64)
        pose_body = np.asarray(data["pose_body"], dtype=np.float64)
        if root_orient.ndim != 2 or root_orient.shape[1] != 3:
            raise SourceError(rel, f"'root_orient' must be (T, 3), got {root_orient.shape}")
        if pose_body.ndim != 2 or pose_body.shape[1] != 63 or pose_body.shape[0] != root_orient.shape[0]:
            raise SourceError(rel, f"'pose_body' must be (T, 63) matching root_orient, got {pose_body.shape}")
        body21 = pose_body.reshape(-1, 21, 3)
        hands = np.zeros((body21.shape[0], 2, 3))
        model_type = "smplx"
    elif "poses" in data:
        poses = np.asarray(data["poses"])
        if poses.dtype.kind not in "fiu":
            raise SourceError(rel, f"'poses' has non-numeric dtype {poses.dtype}")
        poses = poses.astype(np.float64)
        if poses.ndim != 2 or poses.shape[1] not in _POSES_LAYOUTS:
            raise SourceError(
                rel, f"'poses' must be (T, 72|156|165) for SMPL/SMPL-H/SMPL-X, got {poses.shape}"
            )
        model_type = _POSES_LAYOUTS[poses.shape[1]]
        root_orient = poses[:, 0:3]
        body21 = poses[:, 3:66].reshape(-1, 21, 3)
        if model_type == "smpl":
            hands = poses[:, 66:72].reshape(-1, 2, 3)
        else:
            hands = np.zeros((poses.shape[0], 2, 3))
    else:
        raise SourceError(rel, "missing key 'poses' (or 'root_orient' + 'pose_body')")

    if "trans" not in data:
        raise SourceError(rel, "missing key 'trans'")
    trans = np.asarray(data["trans"])
    if trans.dtype.kind not in "fiu" or trans.ndim != 2 or trans.shape[1] != 3:
        raise SourceError(rel, f"'trans' must be numeric (T, 3), got {trans.dtype} {trans.shape}")
    trans = trans.astype(np.float64)
    n = root_orient.shape[0]
    if trans.shape[0] != n:
        raise SourceError(rel, f"'trans' has {trans.shape[0]} frames but poses have {n}")
    if n < 2:
        raise SourceError(rel, f"only {n} frame(s); need at least 2")
    body_pose = np.concatenate([body21, hands], axis=1)
    for what, arr in (("poses", root_orient), ("poses", body_pose), ("trans", trans)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise SourceError(rel, f"{what!r} contains {bad} non-finite values (NaN/inf)")

    # Subject.
    sidecar = _read_subject_sidecar(path)
    gender_raw = sidecar.get("gender")
    if gender_raw is None and "gender" in data:
        gender_raw = _decode_str(np.asarray(data["gender"]))
    gender = _GENDERS.get(str(gender_raw).strip().lower(), "neutral") if gender_raw is not None else "neutral"
    betas = np.asarray(data.get("betas", np.zeros(0)))
    if betas.dtype.kind not in "fiu":
        raise SourceError(rel, f"'betas' has non-numeric dtype {betas.dtype}")
    betas = betas.astype(np.float32).reshape(-1)
    if not np.all(np.isfinite(betas)):
        raise SourceError(rel, "'betas' contains non-finite values")
    subject = SubjectInfo(
        gender=gender,
        height_m=_positive_or_none(sidecar.get("height_m"), "subject.json height_m", path.parent / "subject.json"),
        mass_kg=_positive_or_none(sidecar.get("mass_kg"), "subject.json mass_kg", path.parent / "subject.json"),
        betas=betas,
    )
    return RawMotion(
        provenance=provenance,
        subject=subject,
        fps_hz=fps,
        root_orient_aa_rad=root_orient,
        body_pose_aa_rad=body_pose,
        trans_m=trans,
        up_axis="z",
        model_type=model_type,
    )
