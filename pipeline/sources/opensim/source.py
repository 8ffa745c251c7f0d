"""OpenSim / AddBiomechanics upload folders → ``RawMotion`` by marker IK, with the measured forces per foot.

Layout (AddBiomechanics' upload): a subject folder with the model ``*.osim`` (optionally ``_subject.json``:
``massKg``, ``heightM``, ``sex``) and ``trials/<trial>/`` folders holding one markers ``*.trc`` (any name)
and a forces ``*.mot`` beside it (``ground_force_*`` columns), with or without an ExternalLoads ``*.xml``
naming the foot body each force acts on; the model may also sit in the trial folder. Any folder with a
``.trc`` works: one ``.trc`` file is one sequence (``discover``); its model, subject file, forces and loads
are looked up in the ``.trc``'s folder, then each parent up to the source root (``find_trial_files``).

Ids: dataset = the root folder's name; subject = the folder before ``trials/`` (else the folder holding the
model, else the ``.trc``'s folder); name = the trial folder after ``trials/`` (else the ``.trc`` stem).
Frames: OpenSim's ground is y-up (``pipeline.lab.opensim_files``): markers and forces are rotated to z-up
(x forward stays x, y up → z, z right → −y); the floor is OpenSim's y = 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.lab import marker_sets as ms
from pipeline.lab import markers as ml
from pipeline.lab import opensim_files as of
from pipeline.lab.measured import GRF_SOURCE_PLATES
from pipeline.lab.trial import FootForces, LabTrialMeasurement, fit_trial
from pipeline.records import Provenance, RawMotion, SubjectInfo
from pipeline.sources.base import SourceError, find_licence, sha256_of

_SEX = {"male": "male", "female": "female", "m": "male", "f": "female"}


@dataclass(frozen=True)
class TrialFiles:
    """The files of one trial: ``trc`` (markers), ``mot`` (forces) / ``loads`` (ExternalLoads), ``osim``,
    ``subject_json``; ``None`` where absent."""

    trc: Path
    mot: Path | None
    loads: Path | None
    osim: Path | None
    subject_json: Path | None


def _is_grf_table(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(20000)
    except OSError:
        return False
    return "ground_force" in head


def _is_external_loads(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "<ExternalLoads" in f.read(4000)
    except OSError:
        return False


def _pick(cands: list[Path], stem: str) -> Path | None:
    if not cands:
        return None
    same = [p for p in cands if p.stem.startswith(stem)]
    return sorted(same or cands)[0]


def find_trial_files(trc: Path, root: Path) -> TrialFiles:
    """A trial's files (module docstring): forces and loads in the ``.trc``'s folder; the model and
    ``_subject.json`` in that folder or the nearest parent up to ``root``."""
    trc, root = Path(trc), Path(root)
    folder = trc.parent
    mots = [p for p in folder.iterdir() if p.suffix.lower() in (".mot", ".sto") and _is_grf_table(p)]
    xmls = [p for p in folder.iterdir() if p.suffix.lower() == ".xml" and _is_external_loads(p)]
    osim = subject = None
    chain = [folder, *folder.parents]
    chain = chain[: chain.index(root) + 1] if root in chain else [folder]
    for d in chain:
        if osim is None:
            models = sorted(d.glob("*.osim"))
            if models:
                osim = models[0]
        if subject is None and (d / "_subject.json").is_file():
            subject = d / "_subject.json"
    return TrialFiles(trc=trc, mot=_pick(mots, trc.stem), loads=_pick(xmls, trc.stem), osim=osim, subject_json=subject)


def _ids(rel: PurePosixPath, files: TrialFiles, root: Path) -> tuple[str, str, str]:
    parts = rel.parts
    if "trials" in parts[:-1]:
        k = parts.index("trials")
        subject = parts[k - 1] if k > 0 else root.name
        name = parts[k + 1] if k + 1 < len(parts) - 1 else Path(parts[-1]).stem
        return root.name, subject, name
    if files.osim is not None and files.osim.parent != root:
        subject = files.osim.parent.name
    else:
        subject = files.trc.parent.name if files.trc.parent != root else root.name
    return root.name, subject, files.trc.stem


def _read_text(path: Path, rel: str | PurePosixPath) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SourceError(rel, f"cannot read {path.name} ({exc.strerror or exc})") from None


def _subject(path: Path | None, root: Path) -> dict:
    if path is None:
        return {}
    rel = path.relative_to(root).as_posix() if root in path.parents else path.name
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(rel, f"unreadable _subject.json ({exc})") from None
    if not isinstance(data, dict):
        raise SourceError(rel, "_subject.json must hold a JSON object")
    out = {}
    for key, names in (("mass_kg", ("massKg", "mass_kg", "mass")), ("height_m", ("heightM", "height_m", "height"))):
        for n in names:
            if n in data:
                try:
                    v = float(data[n])
                except (TypeError, ValueError):
                    raise SourceError(rel, f"{n} is not a number: {data[n]!r}") from None
                if not np.isfinite(v) or v <= 0:
                    raise SourceError(rel, f"{n} must be positive, got {v}")
                out[key] = v
                break
    sex = str(data.get("sex", data.get("gender", ""))).strip().lower()
    if sex in _SEX:
        out["gender"] = _SEX[sex]
    return out


def foot_forces(forces: tuple[of.AppliedForce, ...], rate_hz: float, t0_s: float, grf_source: str
                ) -> tuple[FootForces | None, list[str]]:
    """Sum the y-up ground-frame forces per foot (by the body each acts on: calcn/talus/toes/foot of a side)
    into z-up ``FootForces``; forces on other or unknown bodies are left out with a warning."""
    n = forces[0].force_n.shape[0] if forces else 0
    force = np.zeros((n, 2, 3))
    mom = np.zeros((n, 2, 3))
    known = np.zeros(2, bool)
    warnings = []
    for af in forces:
        seg = ms.segment_of_body(af.body) if af.body else None
        side = {"left_foot": 0, "left_toes": 0, "right_foot": 1, "right_toes": 1}.get(seg or "")
        f = ml.to_z_up(af.force_n, "y")
        if side is None:
            if np.nanmax(np.abs(f)) > 20.0:
                warnings.append(f"a measured force on body {af.body or '(unknown)'} is not on a foot; not used")
            continue
        p = ml.to_z_up(af.point_m, "y")
        tq = ml.to_z_up(af.torque_nm, "y")
        force[:, side] += f
        mom[:, side] += np.cross(np.nan_to_num(p), f) + tq
        known[side] = True
    if not known.any():
        return None, warnings
    return FootForces(rate_hz=rate_hz, t0_s=t0_s, force_n=force, moment_origin_nm=mom, known=known,
                      grf_source=grf_source), warnings


class OpenSimSource:
    """``get_source("opensim")``: one ``.trc`` file is one sequence (module docstring)."""

    name = "opensim"

    def discover(self, root: Path) -> list[Path]:
        """Every ``*.trc`` under ``root`` (any case), sorted by relative path, absolute."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"OpenSim source root {root} is not a directory")
        found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".trc"]
        return sorted((p.absolute() for p in found), key=lambda p: p.relative_to(root.absolute()).as_posix())

    def read(self, path: Path, root: Path) -> list[RawMotion]:
        """Read one trial (its ``.trc`` and the files beside it) and fit the skeleton to its markers."""
        path, root = Path(path).absolute(), Path(root).absolute()
        rel = PurePosixPath(path.relative_to(root).as_posix())
        try:
            sha, size = sha256_of(path)
        except OSError as exc:
            raise SourceError(rel, f"cannot read file ({exc.strerror or exc})") from None
        files = find_trial_files(path, root)
        try:
            trc = of.parse_trc(_read_text(path, rel))
        except ValueError as exc:
            raise SourceError(rel, str(exc)) from None
        segments, model = None, None
        if files.osim is not None:
            orel = files.osim.relative_to(root).as_posix()
            try:
                model = of.parse_osim(_read_text(files.osim, orel))
            except ValueError as exc:
                raise SourceError(orel, str(exc)) from None
            segments = ms.segments_from_bodies(model.marker_bodies)
        subj = _subject(files.subject_json, root)
        markers = ml.to_z_up(trc.markers_m, "y")
        try:
            result, a, b = fit_trial(markers, trc.labels, trc.rate_hz, segments)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise SourceError(rel, " ".join(str(exc).split())) from None
        warnings = []
        if (a, b) != (0, markers.shape[0]):
            warnings.append(f"frames {a}–{b - 1} of {markers.shape[0]} kept (pelvis visible)")
        forces = None
        if files.mot is not None:
            mrel = files.mot.relative_to(root).as_posix()
            try:
                table = of.parse_mot(_read_text(files.mot, mrel))
            except ValueError as exc:
                raise SourceError(mrel, str(exc)) from None
            loads = None
            if files.loads is not None:
                lrel = files.loads.relative_to(root).as_posix()
                try:
                    loads = of.parse_external_loads(_read_text(files.loads, lrel))
                except ValueError as exc:
                    raise SourceError(lrel, str(exc)) from None
            try:
                applied = of.applied_forces(table, loads)
            except ValueError as exc:
                raise SourceError(mrel, str(exc)) from None
            t = table.column("time")
            rate = (len(t) - 1) / (t[-1] - t[0])
            forces, w = foot_forces(applied, rate, float(t[0]), GRF_SOURCE_PLATES)
            warnings += w
        if "mass_kg" in subj:
            mass, mass_source = subj["mass_kg"], "file"
        elif model is not None and np.isfinite(model.mass_kg) and model.mass_kg > 0:
            mass, mass_source = model.mass_kg, "model (sum of the .osim body masses)"
        else:
            mass, mass_source = None, ""
        dataset, subject, name = _ids(rel, files, root)
        prov = Provenance(source=self.name, path=rel.as_posix(), sha256=sha, dataset=dataset, subject=subject,
                          name=name, size_bytes=size, licence=find_licence(path, root))
        side = LabTrialMeasurement(ik=result, markers_z_up_m=markers[a:b], rate_hz=trc.rate_hz,
                                   t0_s=float(trc.time_s[a]), forces=forces, mass_kg=mass, mass_source=mass_source,
                                   mass_is_model=mass_source.startswith("model"), warnings=tuple(warnings))
        return [RawMotion(provenance=prov, subject=SubjectInfo(gender=subj.get("gender", "neutral"),
                                                               height_m=result.height_m, mass_kg=mass),
                          fps_hz=float(trc.rate_hz), root_orient_aa_rad=result.root_orient_aa_rad,
                          body_pose_aa_rad=result.body_pose_aa_rad, trans_m=result.trans_m, up_axis="z",
                          model_type="smpl", measured=side)]
