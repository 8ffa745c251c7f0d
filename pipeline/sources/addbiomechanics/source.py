"""The ``addbiomechanics`` source: processed AddBiomechanics subjects (``*.b3d``, version 4); every trial of
a file is one sequence (docs/addbiomechanics.md).

Kinematics: the trial's marker observations (OpenSim y-up → z-up) fitted by the lab IK with the embedded
model's MarkerSet (``pipeline.lab.trial.fit_trial``). Forces: the last processing pass's per-contact-body
ground-contact force, centre of pressure and torque (bodies ``calcn_r``/``calcn_l``…, summed per foot),
``seq_grf_source = addbiomechanics``, NaN at frames whose ``missing_GRF_reason`` ≠ 0; a file whose passes
carry no contact force (kinematics-only processing) builds without measured forces. AddBiomechanics' own
quality figures go to the side-car's ``extra_metrics``; its ID torques ``tau`` (N·m / N, OpenSim DOF order,
names from the embedded .osim) are kept on the side-car (``AddBiomechanicsTrial``) and stored in the torque subset
(``source_tau_opensim``, ``seq_source_dofs``; ``LabTrialMeasurement.source_torques``).
Ids: dataset = the root folder's name, subject = the file stem, name = the trial name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.lab import marker_sets as ms
from pipeline.lab import markers as ml
from pipeline.lab import opensim_files as of
from pipeline.lab.trial import FootForces, LabTrialMeasurement, fit_trial
from pipeline.records import Provenance, RawMotion, SubjectInfo
from pipeline.sources.addbiomechanics import b3d
from pipeline.sources.base import SourceError, find_licence, read_source_bytes

GRF_SOURCE = "addbiomechanics"
_SEX = {"male": "male", "female": "female"}


@dataclass(frozen=True)
class AddBiomechanicsTrial:
    """AddBiomechanics' own results for a trial, kept beside the measurement: ``dof_names`` (D,) and ``tau``
    (T, D) inverse-dynamics generalized forces (N·m for rotational, N for translational DOFs) and ``pos`` (T, D)
    (rad / m) at the kept marker frames, OpenSim coordinates of the embedded model."""

    dof_names: tuple[str, ...]
    tau: np.ndarray
    pos: np.ndarray
    dof_names_from_model: bool = True
    """False when the embedded model's DOF count differs from the file's (names are then ``dof_<k>``, and
    ``tau`` is not stored)."""


def contact_forces(trial: b3d.B3DTrial, bodies: tuple[str, ...], t0_s: float) -> FootForces | None:
    """Per-foot z-up forces from the pass's per-contact-body force/COP/torque (y-up world); ``None`` when the
    pass has no non-zero contact force."""
    f = trial.contact_force_n
    if not np.isfinite(f).any() or not np.any(np.abs(np.nan_to_num(f)) > 1e-9):
        return None
    n = f.shape[0]
    force = np.zeros((n, 2, 3))
    mom = np.zeros((n, 2, 3))
    known = np.zeros(2, bool)
    for c, body in enumerate(bodies):
        side = {"left_foot": 0, "left_toes": 0, "right_foot": 1, "right_toes": 1}.get(ms.segment_of_body(body) or "")
        if side is None:
            continue
        fz = ml.to_z_up(trial.contact_force_n[:, c], "y")
        p = ml.to_z_up(trial.contact_cop_m[:, c], "y")
        tq = ml.to_z_up(np.nan_to_num(trial.contact_torque_nm[:, c]), "y")
        force[:, side] += fz
        mom[:, side] += np.cross(np.nan_to_num(p), fz) + tq
        known[side] = True
    if not known.any():
        return None
    unknown = trial.header.missing_grf_reason != 0 if trial.header.missing_grf_reason.size == n else None
    return FootForces(rate_hz=1.0 / trial.header.timestep_s, t0_s=t0_s, force_n=force, moment_origin_nm=mom,
                      known=known, grf_source=GRF_SOURCE, unknown_frames=unknown)


class AddBiomechanicsSource:
    """``get_source("addbiomechanics")``: ``*.b3d`` files, one sequence per trial (module docstring)."""

    name = "addbiomechanics"

    def discover(self, root: Path) -> list[Path]:
        """Every ``*.b3d`` under ``root`` (any case), sorted by relative path, absolute."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"AddBiomechanics source root {root} is not a directory")
        found = [p.absolute() for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".b3d"]
        return sorted(found, key=lambda p: p.relative_to(root.absolute()).as_posix())

    def read(self, path: Path, root: Path) -> list[RawMotion]:
        """Every trial of one .b3d file; ``SourceError`` (one line) for a bad file or a trial that cannot be fitted."""
        path, root = Path(path).absolute(), Path(root).absolute()
        rel = PurePosixPath(path.relative_to(root).as_posix())
        sha, size, data = read_source_bytes(path, rel)
        try:
            hdr = b3d.parse_header(data)
        except b3d.B3DError as exc:
            raise SourceError(rel, str(exc)) from None
        if not hdr.osim_texts or not hdr.osim_texts[-1]:
            raise SourceError(rel, "no embedded OpenSim model: cannot place the markers")
        try:
            model = of.parse_osim(hdr.osim_texts[-1])
        except ValueError as exc:
            raise SourceError(rel, f"embedded model: {exc}") from None
        segments = ms.segments_from_bodies(model.marker_bodies)
        named = len(model.dof_names) == hdr.num_dofs
        dof_names = model.dof_names if named else tuple(f"dof_{k}" for k in range(hdr.num_dofs))
        mass = hdr.mass_kg if np.isfinite(hdr.mass_kg) and hdr.mass_kg > 0 else None
        out = []
        for k, th in enumerate(hdr.trials):
            try:
                trial = b3d.read_trial(data, hdr, k)
            except b3d.B3DError as exc:
                raise SourceError(rel, f"trial {th.name!r}: {exc}") from None
            markers = ml.to_z_up(trial.markers_m, "y")
            rate = 1.0 / th.timestep_s
            try:
                result, a, b = fit_trial(markers, hdr.marker_names, rate, segments)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
                raise SourceError(rel, f"trial {th.name!r}: {' '.join(str(exc).split())}") from None
            forces = contact_forces(trial, hdr.contact_bodies, 0.0)
            warnings = [] if forces is not None else ["no processing pass carries ground-contact forces"]
            extra = {}
            if trial.pass_index >= 0:
                ph = th.passes[trial.pass_index]
                for key, arr in (("addb_marker_rms_m", ph.marker_rms_m), ("addb_linear_residual_n", ph.linear_residual_n),
                                 ("addb_angular_residual_nm", ph.angular_residual_nm)):
                    if arr.size:
                        extra[key] = float(np.nanmedian(arr[a:b]))
            side = LabTrialMeasurement(ik=result, markers_z_up_m=markers[a:b], rate_hz=rate, t0_s=a / rate,
                                       forces=forces, mass_kg=mass, mass_source="file" if mass else "",
                                       extra_metrics=extra, warnings=tuple(warnings),
                                       source_results=AddBiomechanicsTrial(dof_names=dof_names, tau=trial.tau[a:b],
                                                                           pos=trial.pos[a:b],
                                                                           dof_names_from_model=named))
            prov = Provenance(source=self.name, path=rel.as_posix(), sha256=sha, dataset=root.name,
                              subject=path.stem, name=th.name or f"trial{k}", size_bytes=size,
                              licence=find_licence(path, root))
            raw = RawMotion(provenance=prov, subject=SubjectInfo(gender=_SEX.get(hdr.sex.lower(), "neutral"),
                                                                 height_m=result.height_m, mass_kg=mass),
                            fps_hz=rate, root_orient_aa_rad=result.root_orient_aa_rad,
                            body_pose_aa_rad=result.body_pose_aa_rad, trans_m=result.trans_m, up_axis="z",
                            model_type="smpl", measured=side)
            out.append(raw)
        return out
