"""OpenSim text formats read by the lab sources (docs/opensim.md): ``.osim`` models, ``.trc`` markers,
``.mot``/``.sto`` tables and ExternalLoads ``.xml``. Parsers take text and return frozen records; every
problem is a ``ValueError`` with one line that the source wraps in ``SourceError(path, ...)``.

Conventions kept as in the files: OpenSim's ground frame is y-up, x forward, metres; TRC coordinates are in
the file's ``Units`` (``mm``/``m``/``cm``) and converted to metres here; a missing marker sample (empty field
or NaN) is NaN.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

_LENGTH_TO_M = {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "meters": 1.0, "millimeters": 1e-3}


# --------------------------------------------------------------------------------------------- .osim
@dataclass(frozen=True)
class OsimModel:
    """What the lab sources use of an OpenSim model.

    Attributes:
        marker_bodies: marker name → OpenSim body it is fixed to (``femur_r``, ``torso``).
        marker_locations_m: marker name → (3,) location in its body frame, metres.
        coordinates: every ``Coordinate`` in document (JointSet) order.
        dof_names: ``coordinates`` without those a ``CoordinateCouplerConstraint`` drives (AddBiomechanics'
            DOF order: ``knee_angle_r_beta`` is left out).
        mass_kg: sum of the bodies' masses (a scaled model: the subject's mass), NaN if none.
    """

    marker_bodies: dict[str, str]
    marker_locations_m: dict[str, np.ndarray]
    coordinates: tuple[str, ...]
    dof_names: tuple[str, ...]
    mass_kg: float


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_osim(text: str) -> OsimModel:
    """An ``OsimModel`` from the XML text of an ``.osim`` file (OpenSim 3.x ``<body>`` or 4.x
    ``<socket_parent_frame>`` markers; ``..._offset`` frames are resolved to their body by name)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not a valid .osim XML document ({exc})") from None
    if _local(root.tag) != "OpenSimDocument" and root.find(".//Model") is None:
        raise ValueError("not an OpenSim model: no <OpenSimDocument>/<Model>")
    bodies, locs = {}, {}
    for m in root.iter("Marker"):
        name = m.get("name")
        frame = (m.findtext("socket_parent_frame") or m.findtext("body") or "").strip()
        if not name or not frame:
            continue
        body = frame.split("/")[-1]
        body = re.sub(r"_offset$", "", body)
        bodies[name] = body
        try:
            locs[name] = np.asarray([float(v) for v in (m.findtext("location") or "").split()], dtype=float)
        except ValueError:
            raise ValueError(f"marker {name!r}: location is not three numbers") from None
    coords = tuple(c.get("name") for c in root.iter("Coordinate") if c.get("name"))
    coupled = {(c.findtext("dependent_coordinate_name") or "").strip() for c in root.iter("CoordinateCouplerConstraint")}
    masses = []
    for b in root.iter("Body"):
        try:
            masses.append(float(b.findtext("mass") or "nan"))
        except ValueError:
            pass
    mass = float(np.nansum(masses)) if masses and np.isfinite(masses).any() else float("nan")
    return OsimModel(marker_bodies=bodies, marker_locations_m=locs, coordinates=coords,
                     dof_names=tuple(c for c in coords if c not in coupled), mass_kg=mass)


# --------------------------------------------------------------------------------------------- .trc
@dataclass(frozen=True)
class TrcData:
    """Markers of a ``.trc`` file: ``labels`` (M,), ``rate_hz``, ``time_s`` (T,) from the file,
    ``markers_m`` (T, M, 3) in the file's lab frame converted to metres (NaN where missing), ``units``."""

    labels: tuple[str, ...]
    rate_hz: float
    time_s: np.ndarray
    markers_m: np.ndarray
    units: str


def parse_trc(text: str) -> TrcData:
    """Parse TRC text (``PathFileType 4``): header keys on line 2, values on line 3, marker names on line 4
    (each followed by two empty cells), X1/Y1/Z1 on line 5, data after (blank lines skipped)."""
    lines = text.splitlines()
    if len(lines) < 6 or not lines[0].startswith("PathFileType"):
        raise ValueError("not a TRC file: first line does not start with 'PathFileType'")
    keys = [k.strip() for k in lines[1].split("\t")]
    vals = [v.strip() for v in lines[2].split("\t")]
    head = dict(zip([k for k in keys if k], [v for v in vals if v]))
    try:
        rate = float(head.get("DataRate") or head.get("CameraRate"))
        n_markers = int(float(head["NumMarkers"]))
    except (TypeError, ValueError, KeyError):
        raise ValueError("TRC header lacks a numeric DataRate/NumMarkers") from None
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"TRC DataRate {rate} is not a positive rate")
    units = head.get("Units", "").strip().lower()
    if units not in _LENGTH_TO_M:
        raise ValueError(f"unknown TRC Units {units!r} (expected mm, cm or m)")
    names_row = lines[3].split("\t")
    labels = [c.strip() for c in names_row[2:] if c.strip()]
    if len(labels) < n_markers:
        raise ValueError(f"TRC header says {n_markers} markers but line 4 names {len(labels)}")
    labels = labels[:n_markers]
    if len(set(labels)) != len(labels):
        raise ValueError("TRC marker names are not unique")
    rows = []
    for ln in lines[5:]:
        if not ln.strip():
            continue
        cells = ln.split("\t")
        vals_row = np.full(2 + 3 * n_markers, np.nan)
        for i, c in enumerate(cells[: 2 + 3 * n_markers]):
            c = c.strip()
            if c:
                try:
                    vals_row[i] = float(c)
                except ValueError:
                    raise ValueError(f"TRC data row {len(rows) + 1}: {c!r} is not a number") from None
        rows.append(vals_row)
    if len(rows) < 2:
        raise ValueError(f"TRC holds {len(rows)} data row(s); need at least 2")
    data = np.asarray(rows)
    time = data[:, 1]
    if not np.isfinite(time).all():
        time = np.arange(len(rows)) / rate
    xyz = data[:, 2:].reshape(len(rows), n_markers, 3) * _LENGTH_TO_M[units]
    return TrcData(labels=tuple(labels), rate_hz=rate, time_s=time, markers_m=xyz, units=units)


# --------------------------------------------------------------------------------------------- .mot / .sto
@dataclass(frozen=True)
class MotTable:
    """A ``.mot``/``.sto`` table: ``columns`` (C,) incl. ``time``; ``data`` (S, C); ``header`` key=value lines."""

    columns: tuple[str, ...]
    data: np.ndarray
    header: dict[str, str]

    def column(self, name: str) -> np.ndarray:
        return self.data[:, self.columns.index(name)]


def parse_mot(text: str) -> MotTable:
    """Parse an OpenSim storage table: header lines up to ``endheader``, a tab-separated column-name row,
    whitespace-separated numbers; the first column must be ``time`` and increase."""
    lines = text.splitlines()
    try:
        end = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader")
    except StopIteration:
        raise ValueError("not an OpenSim .mot/.sto table: no 'endheader' line") from None
    header = {}
    for ln in lines[:end]:
        if "=" in ln:
            k, _, v = ln.partition("=")
            header[k.strip()] = v.strip()
    body = [ln for ln in lines[end + 1:] if ln.strip()]
    if len(body) < 3:
        raise ValueError(f"table holds {max(len(body) - 1, 0)} row(s); need at least 2")
    columns = tuple(c.strip() for c in re.split(r"\t+|\s{2,}|\s", body[0].strip()) if c.strip())
    if not columns or columns[0].lower() != "time":
        raise ValueError(f"first column is {columns[0] if columns else None!r}, expected 'time'")
    try:
        data = np.asarray([[float(v) for v in ln.split()] for ln in body[1:]], dtype=float)
    except ValueError as exc:
        raise ValueError(f"non-numeric value in the table ({exc})") from None
    if data.ndim != 2 or data.shape[1] != len(columns):
        raise ValueError(f"rows do not all have the {len(columns)} columns the header names")
    t = data[:, 0]
    if not np.all(np.diff(t) > 0):
        raise ValueError("time column does not strictly increase")
    return MotTable(columns=columns, data=data, header=header)


# --------------------------------------------------------------------------------------------- ExternalLoads
@dataclass(frozen=True)
class ExternalForceSpec:
    """One ``<ExternalForce>``: the body it acts on and its column prefixes (``ground_force_1_v`` → columns
    ``ground_force_1_vx/vy/vz``); ``torque_identifier`` may be empty."""

    name: str
    body: str
    force_identifier: str
    point_identifier: str
    torque_identifier: str
    expressed_in: str


def parse_external_loads(text: str) -> tuple[ExternalForceSpec, ...]:
    """The ``ExternalForce`` entries of an ExternalLoads XML document."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not a valid ExternalLoads XML document ({exc})") from None
    out = []
    for ef in root.iter("ExternalForce"):
        out.append(ExternalForceSpec(
            name=ef.get("name", ""), body=(ef.findtext("applied_to_body") or "").strip(),
            force_identifier=(ef.findtext("force_identifier") or "").strip(),
            point_identifier=(ef.findtext("point_identifier") or "").strip(),
            torque_identifier=(ef.findtext("torque_identifier") or "").strip(),
            expressed_in=(ef.findtext("force_expressed_in_body") or "ground").strip()))
    if not out:
        raise ValueError("no <ExternalForce> in the ExternalLoads document")
    return tuple(out)


def _xyz(table: MotTable, prefix: str) -> np.ndarray | None:
    cols = [f"{prefix}{a}" for a in "xyz"]
    if all(c in table.columns for c in cols):
        return np.stack([table.column(c) for c in cols], axis=1)
    return None


@dataclass(frozen=True)
class AppliedForce:
    """One measured force in the ground frame (y-up, SI) at the table's samples: ``force_n``, ``point_m``
    (application point / COP), ``torque_nm`` (about the point; zeros when absent), ``body`` it acts on."""

    body: str
    force_n: np.ndarray
    point_m: np.ndarray
    torque_nm: np.ndarray


def applied_forces(table: MotTable, loads: tuple[ExternalForceSpec, ...] | None) -> tuple[AppliedForce, ...]:
    """The forces of a GRF table. With ExternalLoads: one per ``ExternalForce`` (ground-expressed only).
    Without: AddBiomechanics/OpenSim column conventions — ``ground_force_{r,l}_v*``/``_p*`` with
    ``ground_torque_{r,l}_*`` (body ``calcn_r``/``calcn_l``), or ``ground_force_<k>_v*``/``_p*``/``_m*``,
    ``<k>_ground_force_v*``… whose body is unknown (``""``)."""
    out = []
    if loads is not None:
        for ef in loads:
            if ef.expressed_in not in ("ground", ""):
                raise ValueError(f"ExternalForce {ef.name!r} is expressed in {ef.expressed_in!r}; only 'ground' is supported")
            f = _xyz(table, ef.force_identifier)
            p = _xyz(table, ef.point_identifier)
            if f is None or p is None:
                raise ValueError(f"ExternalForce {ef.name!r}: columns {ef.force_identifier}x/y/z or "
                                 f"{ef.point_identifier}x/y/z missing from the forces table")
            tq = _xyz(table, ef.torque_identifier) if ef.torque_identifier else None
            out.append(AppliedForce(ef.body, f, p, np.zeros_like(f) if tq is None else tq))
        return tuple(out)
    for c in table.columns:
        m = re.fullmatch(r"(.*ground_force_?([a-z0-9]*)_?)vx", c)
        if m is None:
            continue
        stem, key = m.group(1), m.group(2)
        f = _xyz(table, f"{stem}v")
        p = _xyz(table, f"{stem}p")
        if f is None or p is None:
            continue
        tq = None
        for cand in (f"{stem}m", f"{stem.replace('force', 'torque')}", f"{stem.replace('force', 'torque')}_"):
            tq = _xyz(table, cand)
            if tq is not None:
                break
        body = {"r": "calcn_r", "l": "calcn_l"}.get(key, "")
        out.append(AppliedForce(body, f, p, np.zeros_like(f) if tq is None else tq))
    return tuple(out)
