"""KIT native MMM motions (``--source kit=DIR``): MMM XML → MMM forward kinematics → SMPL joint fit → ``RawMotion``.

Per motion file (docs/kit.md):

1. ``mmm_motion.parse_motion``: the first ``<Motion>`` (the subject), its JointOrder, frames, subject size;
2. the MMM reference model it refers to, found in the source tree (``find_model``: the motion's
   ``<Model><File>`` relative to the motion, then that file name in the motion's folder, then any Simox
   ``<Robot>`` XML in the motion's folder or a parent folder up to the source root that has every joint the
   motion drives). The model is never embedded in dynaset: its copies carry third-party licences;
   without one the file is quarantined with a line saying where to put it;
3. the model is conformed to the MMM reference segment table (``mmm_model.conform_to_reference``) and scaled
   to the subject's height and mass; forward kinematics gives the MMM joint centres (metres, z up);
4. ``joint_fit.fit_joint_centres``: the canonical SMPL skeleton fitted to them (``pipeline.lab.marker_ik``'s
   solver); the fit's residuals travel in ``RawMotion.measured`` (``KITMeasurement``) and reach the
   quality metrics as ``marker_rms_m``/``marker_residual_max_m`` (joint-centre residuals here).

Ids: ``kit/KIT/<subject>/<name>``: subject = the ``<Motion name>`` (KIT names the subject there, e.g.
``subject_id_4``), else the folder; name = file stem without ``_mmm``. ``seq_source`` is ``kit`` (AMASS's KIT
motions have ``seq_source = amass``, ``seq_dataset = KIT``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipeline.lab import marker_ik as ik
from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.records import CanonicalMotion, Provenance, RawMotion, SubjectInfo
from pipeline.sources.base import SourceError, find_licence, read_source_bytes
from pipeline.sources.kit import fk, joint_fit
from pipeline.sources.kit.mmm_model import MMMModel, ModelError, conform_to_reference, is_model_file, load_model
from pipeline.sources.kit.mmm_motion import MMMMotion, MotionError, parse_motion

DATASET = "KIT"
DEFAULT_HEIGHT_M = sk.REFERENCE_HEIGHT_M
"""Subject height used when the motion has no ``<ModelProcessorConfig><Height>`` (a warning is kept), m."""

IK_CONFIG = ik.IKConfig(max_offset_shift_m=0.06)
"""Joint fit settings: offsets may move 6 cm from their initial value (the MMM and SMPL hips differ by
0.028 H in height: 5 cm at 1.82 m). Measured on the shared files: RMSE 2.3 mm (00001_mmm.xml) and 6.8 mm
(test_motion_mmm.xml) with 6 cm, 3.5 and 6.8 mm with 3 cm, 23 and 18 mm without calibration."""


@dataclass(frozen=True)
class KITMeasurement:
    """Side-car of a KIT ``RawMotion``: the MMM joint centres and the SMPL fit to them.

    Attributes:
        joint_centres_m: (T, K) MMM joint-centre targets at the source frames, (T, K, 3) world, z up, metres.
        fit: the SMPL fit (``pipeline.lab.marker_ik.IKResult``; ``targets.names`` name the joint centres).
        fps_hz: source frame rate, Hz.
        model_path: the model file used, relative to the source root.
        warnings: soft problems (model conformed to the reference table, default height...).
    """

    joint_centres_m: np.ndarray
    fit: ik.IKResult
    fps_hz: float
    model_path: str
    warnings: tuple[str, ...] = ()

    @property
    def rmse_mm(self) -> float:
        """RMS over frames and joint centres of the fit residual at the source frames, mm."""
        return float(np.sqrt(np.nanmean(self.fit.residual_m**2)) * 1e3)

    def at_canonical(self, motion: CanonicalMotion, cfg: Any = None) -> "KITJointFit":
        """The fit residuals of the canonical motion (what is stored) against the MMM joint centres
        resampled to its frames (called by ``pipeline.process.process_motion``)."""
        t_src = np.arange(self.joint_centres_m.shape[0]) / self.fps_hz
        flat = self.joint_centres_m.reshape(len(t_src), -1)
        obs = np.stack([np.interp(motion.time_s, t_src, flat[:, i]) for i in range(flat.shape[1])], axis=1)
        obs = obs.reshape((len(motion.time_s),) + self.joint_centres_m.shape[1:])
        obs[..., 2] += motion.ground_offset_m
        skel = sk.anthropometric_skeleton(motion.height_m)
        glob, joints = sk.forward_kinematics(rot.aa_to_rotmat(motion.joint_rot_aa_rad), motion.root_pos_m,
                                             skel.offsets_m)
        pred = ik.target_positions(glob, joints, self.fit.targets.parents, self.fit.offsets_m)
        return KITJointFit(marker_residual_m=np.linalg.norm(pred - obs, axis=-1), names=self.fit.targets.names)


@dataclass(frozen=True)
class KITJointFit:
    """Joint-fit residuals at the canonical frames (``ProcessedSequence.measured`` of a KIT motion).

    Attributes:
        marker_residual_m: (N, K) distance between each MMM joint centre and its fitted SMPL target, metres
            (named as the marker residuals so the ``marker_fit`` quality metrics see it).
        names: (K,) joint-centre target names.
    """

    marker_residual_m: np.ndarray
    names: tuple[str, ...]
    has_grf: bool = False


def _rel(path: Path, root: Path) -> PurePosixPath:
    try:
        return PurePosixPath(path.relative_to(root).as_posix())
    except ValueError:
        return PurePosixPath(path.name)


def _model_has(model_path: Path, joints: tuple[str, ...]) -> bool:
    try:
        model = load_model(model_path)
    except (ModelError, OSError):
        return False
    return all(j in model.names for j in joints)


def find_model(motion_path: Path, motion: MMMMotion, root: Path) -> Path | None:
    """The model file of a motion (module docstring, step 2), ``None`` if there is none."""
    folder = motion_path.parent
    ref = motion.model_file.replace("\\", "/")
    candidates = []
    if ref:
        candidates += [folder / ref, folder / PurePosixPath(ref).name]
    for c in candidates:
        if c.is_file() and is_model_file(c):
            return c
    chain = [folder, *folder.parents]
    root = Path(root).absolute()
    chain = chain[: chain.index(root) + 1] if root in chain else [folder]
    nearest = None
    for d in chain:
        models = sorted(p for p in d.glob("*") if p.suffix.lower() == ".xml" and p.is_file() and is_model_file(p))
        for p in models:
            if _model_has(p, motion.joint_names):
                return p
        nearest = nearest or (models[0] if models else None)
    return nearest  # lacks some joint: reading names it


def subject_id(motion: MMMMotion, rel: PurePosixPath) -> str:
    """Subject id: the ``<Motion name>`` (sanitised), else the file's folder, else ``unknown``."""
    name = re.sub(r"[^\w.\-]+", "_", motion.name.strip()).strip("_")
    if name:
        return name
    return rel.parts[-2] if len(rel.parts) >= 2 else "unknown"


def sequence_name(rel: PurePosixPath) -> str:
    """File stem without a ``_mmm`` suffix."""
    stem = rel.stem
    return stem[: -len("_mmm")] if stem.lower().endswith("_mmm") and len(stem) > 4 else stem


def mmm_floor_m(joint_centres_m: np.ndarray, names: tuple[str, ...]) -> float:
    """Floor height of the MMM motion: the lowest MMM sole point (``*FootHeight_joint``, under the ankle) over
    the sequence, else 0 (KIT's world floor), metres. SMPL toe tips below it are lifted onto it (the SMPL foot
    is longer than MMM's and its toe joint is not fitted)."""
    k = [i for i, n in enumerate(names) if n in ("LSOLE", "RSOLE")]
    z = joint_centres_m[:, k, 2] if k else np.zeros(1)
    return float(np.nanmin(z)) if np.isfinite(z).any() else 0.0


def raw_from_mmm(motion: MMMMotion, model: MMMModel, provenance: Provenance, model_path: str,
                 warnings: tuple[str, ...] = (), cfg: ik.IKConfig = IK_CONFIG) -> RawMotion:
    """``RawMotion`` of a parsed motion on its (normalised, conformed) model (pure; module docstring).

    ``ValueError`` (one line) when the motion drives joints the model lacks or the fit is impossible.
    """
    kinds = dict(zip(model.names, model.kinds))
    unknown = [j for j in motion.joint_names if j not in kinds]
    if unknown:
        raise ValueError(f"JointOrder names {len(unknown)} joint(s) the model {model.source} does not have: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    fixed = [j for j in motion.joint_names if kinds[j] != "revolute"]
    if fixed:
        raise ValueError(f"JointOrder names non-revolute node(s) of {model.source}: {', '.join(fixed[:5])}")
    warn = list(warnings)
    height = motion.height_m
    if height is None:
        height = DEFAULT_HEIGHT_M
        warn.append(f"no <ModelProcessorConfig><Height>: model scaled to {height} m")
    scaled = model.scaled(height, motion.mass_kg)
    values = {n: motion.joint_pos_rad[:, i] for i, n in enumerate(motion.joint_names)}
    _, pos = fk.forward_kinematics(scaled, motion.root_pos_mm, motion.root_rpy_rad, values)
    ts, nodes = joint_fit.build_targets(scaled, height)
    obs = pos[:, list(nodes)]
    fit = joint_fit.fit_joint_centres(obs, ts, height, cfg, motion.fps_hz)
    pose = np.concatenate([fit.root_orient_aa_rad[:, None], fit.body_pose_aa_rad], axis=1)
    pose = ik.lift_toes(pose, fit.root_pos_m, height, mmm_floor_m(obs, ts.names))
    fit = dataclasses.replace(fit, body_pose_aa_rad=pose[:, 1:])
    side = KITMeasurement(joint_centres_m=obs, fit=fit, fps_hz=motion.fps_hz, model_path=model_path,
                          warnings=tuple(warn))
    subject = SubjectInfo(gender="neutral", height_m=float(height), mass_kg=motion.mass_kg)
    return RawMotion(provenance=provenance, subject=subject, fps_hz=motion.fps_hz,
                     root_orient_aa_rad=fit.root_orient_aa_rad, body_pose_aa_rad=fit.body_pose_aa_rad,
                     trans_m=fit.trans_m, up_axis="z", model_type="smpl", measured=side)


class KITSource:
    """Reads KIT MMM motion XML files (``get_source("kit")``); one file is one sequence (its first motion)."""

    name = "kit"

    def discover(self, root: Path) -> list[Path]:
        """Every ``*.xml`` (any case) under ``root`` that is not a Simox model, sorted by relative path.

        Files that are not MMM motions are returned too: reading quarantines them with the reason.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"KIT source root {root} is not a directory")
        found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".xml" and not is_model_file(p)]
        return sorted((p.absolute() for p in found), key=lambda p: p.relative_to(root.absolute()).as_posix())

    def read(self, path: Path, root: Path) -> list[RawMotion]:
        """Read one MMM motion file into a ``RawMotion``; ``SourceError`` (one line) when it cannot."""
        path, root = Path(path).absolute(), Path(root).absolute()
        rel = _rel(path, root)
        sha, size, data = read_source_bytes(path, rel)
        try:
            motion = parse_motion(data)
        except MotionError as exc:
            raise SourceError(rel, str(exc)) from None
        model_path = find_model(path, motion, root)
        if model_path is None:
            ref = motion.model_file or "mmm.xml"
            raise SourceError(rel, f"no MMM model file: {ref!r} not found next to the motion and no Simox <Robot> "
                                   f"XML in its folder or a parent up to the source root; put the MMM reference "
                                   f"model there (docs/kit.md)")
        model_rel = _rel(model_path, root).as_posix()
        try:
            model, changes = conform_to_reference(load_model(model_path))
        except (ModelError, OSError) as exc:
            raise SourceError(rel, f"model {model_rel}: {exc}") from None
        warnings = [f"model {model_rel}: {c}" for c in changes]
        if motion.n_motions > 1:
            warnings.append(f"{motion.n_motions - 1} further <Motion>(s) ignored (only the first is the subject)")
        prov = Provenance(source=self.name, path=rel.as_posix(), sha256=sha, dataset=DATASET,
                          subject=subject_id(motion, rel), name=sequence_name(rel), size_bytes=size,
                          licence=find_licence(path, root))
        try:
            return [raw_from_mmm(motion, model, prov, model_rel, tuple(warnings))]
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise SourceError(rel, " ".join(str(exc).split())) from None
