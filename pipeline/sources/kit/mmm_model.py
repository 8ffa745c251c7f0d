"""The MMM reference model: a Simox robot XML (``<Robot>`` of ``<RobotNode>`` elements), parsed into arrays.

The KIT Master Motor Map (MMM) model is a kinematic tree of nodes. Each node has an optional fixed
``<Transform>`` (a ``<Matrix4x4 units='mm'>``, or ``<Translation>``/``<rollpitchyaw>``) from its parent's
frame, and an optional joint: ``revolute`` (rotation by the joint value about ``<axis>``, rad) or
``prismatic`` (translation by the joint value along ``<translationdirection>``, mm; the MMM uses these
only to carry segment lengths, and motions leave them at 0). Simox composes a node's global pose as

    G_node = G_parent · T_node · J_node(q)        (T: fixed transform, J: joint motion)

The model is *normalised*: translations are in mm for a subject 1000 mm tall and segment masses are fractions
of the body mass (they sum to 1). ``scaled(height_m, mass_kg)`` gives the subject's model (translations ×
height / 1 m, masses × body mass), which is what MMM's ``ModelProcessorWinter`` does.

Model frame: x to the subject's right, y forward, z up (the root node sits between the hip joints).

I/O only in ``load_model`` (reads the file); ``parse_model`` works on the XML text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NORMALISED_HEIGHT_MM = 1000.0
"""Height of the subject the MMM reference model's translations describe, mm."""

_UNIT_TO_MM = {"mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "m": 1000.0, "meter": 1000.0,
               "meters": 1000.0, "cm": 10.0}

JOINT_KINDS = ("fixed", "revolute", "prismatic")


class ModelError(ValueError):
    """A model file that cannot be used; ``str()`` is the problem (the caller names the file)."""


@dataclass(frozen=True)
class MMMModel:
    """A parsed (optionally scaled) MMM model; nodes in parent-before-child order, node 0 is the root.

    Attributes:
        names: (N,) node names (``RobotNode name``), e.g. ``"LKx_joint"``.
        parents: (N,) parent node index, -1 for the root.
        transforms_mm: (N, 4, 4) fixed transform of each node from its parent's frame, translation in mm.
        kinds: (N,) ``"fixed"``, ``"revolute"`` or ``"prismatic"``.
        axes: (N, 3) unit joint axis (revolute) or translation direction (prismatic) in the node frame;
            zero for fixed nodes.
        mass_kg: (N,) segment mass attached to the node (fractions of 1 in the normalised model), kg.
        com_mm: (N, 3) segment centre of mass in the node frame, mm (0 where the node has no mass).
        height_m: subject height the translations are scaled to (1.0 for the normalised model), m.
        source: where the model came from (file name), for provenance.
    """

    names: tuple[str, ...]
    parents: np.ndarray
    transforms_mm: np.ndarray
    kinds: tuple[str, ...]
    axes: np.ndarray
    mass_kg: np.ndarray
    com_mm: np.ndarray
    height_m: float = 1.0
    source: str = ""

    @property
    def n_nodes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Node index of ``name``; ``KeyError`` if the model has no such node."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(name) from None

    @property
    def revolute_names(self) -> tuple[str, ...]:
        """Names of the revolute joints (the degrees of freedom a motion may drive)."""
        return tuple(n for n, k in zip(self.names, self.kinds) if k == "revolute")

    def scaled(self, height_m: float, mass_kg: float | None = None) -> "MMMModel":
        """The model scaled to a subject: translations × ``height_m`` / 1 m (mm), masses × ``mass_kg``.

        Only valid on the normalised model (``height_m == 1``).
        """
        if self.height_m != 1.0:
            raise ValueError(f"model is already scaled to {self.height_m} m")
        if not np.isfinite(height_m) or not 0.5 < height_m < 2.6:
            raise ValueError(f"implausible subject height {height_m!r} m (expected 0.5–2.6 m)")
        s = height_m * 1000.0 / NORMALISED_HEIGHT_MM
        t = self.transforms_mm.copy()
        t[:, :3, 3] *= s
        m = self.mass_kg * (1.0 if mass_kg is None else float(mass_kg))
        return MMMModel(names=self.names, parents=self.parents, transforms_mm=t, kinds=self.kinds, axes=self.axes,
                        mass_kg=m, com_mm=self.com_mm * s, height_m=float(height_m), source=self.source)


def _floats(el: ET.Element, keys: tuple[str, ...], what: str) -> np.ndarray:
    try:
        return np.array([float(el.get(k, "nan")) for k in keys])
    except ValueError:
        raise ModelError(f"{what}: non-numeric attribute in <{el.tag}>") from None


def _rpy_matrix(r: float, p: float, y: float) -> np.ndarray:
    from pipeline.sources.kit.fk import rpy_to_rotmat

    return rpy_to_rotmat(np.array([r, p, y]))


def _transform(node: ET.Element, name: str) -> np.ndarray:
    """(4, 4) fixed transform of a node (identity without ``<Transform>``), translation in mm."""
    out = np.eye(4)
    tr = node.find("Transform")
    if tr is None:
        return out
    for el in tr:
        units = (el.get("units") or el.get("unitsLength") or "mm").strip().lower()
        if el.tag == "Matrix4x4":
            if units not in _UNIT_TO_MM:
                raise ModelError(f"node {name}: unknown length units {units!r} in <Matrix4x4>")
            m = np.eye(4)
            for i in range(4):
                row = el.find(f"row{i + 1}")
                if row is None:
                    raise ModelError(f"node {name}: <Matrix4x4> lacks <row{i + 1}>")
                m[i] = _floats(row, ("c1", "c2", "c3", "c4"), f"node {name}")
            if not np.isfinite(m).all():
                raise ModelError(f"node {name}: <Matrix4x4> has missing or non-finite entries")
            m[:3, 3] *= _UNIT_TO_MM[units]
            out = out @ m
        elif el.tag == "Translation":
            if units not in _UNIT_TO_MM:
                raise ModelError(f"node {name}: unknown length units {units!r} in <Translation>")
            v = _floats(el, ("x", "y", "z"), f"node {name}")
            m = np.eye(4)
            m[:3, 3] = v * _UNIT_TO_MM[units]
            out = out @ m
        elif el.tag.lower() == "rollpitchyaw":
            units = (el.get("units") or el.get("unitsAngle") or "radian").strip().lower()
            rpy = _floats(el, ("roll", "pitch", "yaw"), f"node {name}")
            if units.startswith("deg"):
                rpy = np.deg2rad(rpy)
            m = np.eye(4)
            m[:3, :3] = _rpy_matrix(*rpy)
            out = out @ m
        else:
            raise ModelError(f"node {name}: unsupported transform element <{el.tag}>")
    return out


def _joint(node: ET.Element, name: str) -> tuple[str, np.ndarray]:
    j = node.find("Joint")
    if j is None:
        return "fixed", np.zeros(3)
    kind = (j.get("type") or "fixed").strip().lower()
    if kind == "fixed":
        return "fixed", np.zeros(3)
    tag = {"revolute": "axis", "prismatic": "translationdirection"}.get(kind)
    if tag is None:
        raise ModelError(f"node {name}: unsupported joint type {kind!r}")
    ax_el = j.find(tag)
    if ax_el is None:
        raise ModelError(f"node {name}: {kind} joint without <{tag}>")
    ax = _floats(ax_el, ("x", "y", "z"), f"node {name}")
    norm = float(np.linalg.norm(ax))
    if not np.isfinite(ax).all() or norm < 1e-9:
        raise ModelError(f"node {name}: {kind} joint with zero or invalid <{tag}>")
    return kind, ax / norm


def _mass(node: ET.Element, name: str) -> tuple[float, np.ndarray]:
    ph = node.find("Physics")
    if ph is None or ph.find("Mass") is None:
        return 0.0, np.zeros(3)
    m_el = ph.find("Mass")
    try:
        mass = float(m_el.get("value", "nan"))
    except ValueError:
        raise ModelError(f"node {name}: non-numeric <Mass>") from None
    if not np.isfinite(mass) or mass < 0:
        raise ModelError(f"node {name}: invalid mass {mass}")
    com_el = ph.find("CoM")
    com = np.zeros(3)
    if com_el is not None and (com_el.get("location") or "").lower() == "custom":
        com = _floats(com_el, ("x", "y", "z"), f"node {name}")
        if not np.isfinite(com).all():
            com = np.zeros(3)
    return mass, com


def parse_model(text: str | bytes, source: str = "") -> MMMModel:
    """Parse a Simox robot XML (the MMM reference model, normalised to 1000 mm) into an ``MMMModel``.

    Raises ``ModelError`` (one line) for anything it cannot use: not XML, no ``<Robot>``, no root node,
    a child that is not defined, a cycle, unsupported transforms or joint types.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ModelError(f"not well-formed XML ({exc})") from None
    if root.tag != "Robot":
        raise ModelError(f"not a Simox robot model: root element <{root.tag}>, expected <Robot>")
    nodes = {n.get("name"): n for n in root.findall("RobotNode")}
    if None in nodes:
        raise ModelError("a <RobotNode> has no name")
    root_name = root.get("RootNode")
    if not root_name or root_name not in nodes:
        raise ModelError(f"RootNode {root_name!r} is not a <RobotNode> of the model")
    names: list[str] = []
    parents: list[int] = []
    queue = [(root_name, -1)]
    seen: set[str] = set()
    while queue:  # breadth-first: parents before children
        name, parent = queue.pop(0)
        if name in seen:
            raise ModelError(f"node {name} is reached twice (cycle or shared child)")
        if name not in nodes:
            raise ModelError(f"child node {name!r} is not defined")
        seen.add(name)
        idx = len(names)
        names.append(name)
        parents.append(parent)
        for ch in nodes[name].findall("Child"):
            queue.append((ch.get("name"), idx))
    transforms, kinds, axes, masses, coms = [], [], [], [], []
    for name in names:
        node = nodes[name]
        transforms.append(_transform(node, name))
        k, ax = _joint(node, name)
        kinds.append(k)
        axes.append(ax)
        m, c = _mass(node, name)
        masses.append(m)
        coms.append(c)
    return MMMModel(names=tuple(names), parents=np.asarray(parents, dtype=int), transforms_mm=np.asarray(transforms),
                    kinds=tuple(kinds), axes=np.asarray(axes), mass_kg=np.asarray(masses), com_mm=np.asarray(coms),
                    height_m=1.0, source=source)


_FIRST_ELEMENT = re.compile(rb"<\s*([A-Za-z_][\w.\-]*)")


def first_element(head: bytes) -> str | None:
    """Name of the first element in the beginning of an XML file (declaration, comments, DOCTYPE skipped)."""
    text = re.sub(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", b"", head, flags=re.S)
    m = _FIRST_ELEMENT.search(text)
    return m.group(1).decode("ascii", "replace") if m else None


def is_model_file(path: Path, head_bytes: int = 4096) -> bool:
    """Whether ``path`` is a Simox robot XML (its first element is ``<Robot>``); reads its first bytes."""
    try:
        with open(path, "rb") as f:
            return first_element(f.read(head_bytes)) == "Robot"
    except OSError:
        return False


def load_model(path: Path) -> MMMModel:
    """Read and parse a model file (``ModelError`` for a bad model, ``OSError`` if unreadable)."""
    path = Path(path)
    return parse_model(path.read_bytes(), source=path.name)


REFERENCE_SEGMENTS_MM: dict[str, tuple[float, float, float]] = {
    "LHsegment_joint": (-52.0, 0.0, 0.0), "RHsegment_joint": (52.0, 0.0, 0.0),
    "LKsegment_joint": (0.0, 0.0, -245.0), "RKsegment_joint": (0.0, 0.0, -245.0),
    "LAsegment_joint": (0.0, 0.0, -246.0), "RAsegment_joint": (0.0, 0.0, -246.0),
    "LeftFootHeight_joint": (0.0, 0.0, -39.0), "RightFootHeight_joint": (0.0, 0.0, -39.0),
    "BPSegment_joint": (0.0, 0.0, 40.0), "BTSegment_joint": (0.0, 0.0, 60.0),
    "collarSegment_joint": (0.0, 0.0, 188.0), "BLNsegment_joint": (0.0, 0.0, 22.0),
    "BUNsegment_joint": (0.0, 0.0, 30.0), "HeadSegment_joint": (0.0, 0.0, 130.0),
    "LSCsegment_joint": (-87.0, 0.0, 0.0), "RSCsegment_joint": (87.0, 0.0, 0.0),
    "LSsegment_joint": (-23.0, 0.0, 0.0), "RSsegment_joint": (23.0, 0.0, 0.0),
    "LEsegment_joint": (0.0, 0.0, -188.0), "REsegment_joint": (0.0, 0.0, -188.0),
    "LWsegment_joint": (0.0, 0.0, -145.0), "RWsegment_joint": (0.0, 0.0, -145.0),
    "LeftHandSegment_joint": (0.0, 0.0, -108.0), "RightHandSegment_joint": (0.0, 0.0, -108.0),
}
"""Segment translations of the normalised MMM reference model (mm for a 1000 mm subject, model axes).

Hip 530 mm (= 245 + 246 + 39) and shoulder 818 mm (= 530 + 40 + 60 + 188) above the floor, head top at
1000 mm: Winter's proportions (hip 0.530 H, shoulder 0.818 H, upper arm 0.188 H ...). These are the values
of ``mmm_model/mmm.xml`` (matthiasplappert/motion-classification), whose geometry reproduces the ``<CoM>``
recorded in KIT motion files to 0.1 mm (tests/test_sources_kit.py). docs/kit.md: a model copy whose trunk
or shoulder offsets deviate (``mmm_skeleton.xml`` from language2pose doubles BP/BT/BLN and puts the
shoulders 110 mm out: a 1.82 m subject would be 2.0 m tall with 0.72 m shoulders) is conformed to them."""


def conform_to_reference(model: MMMModel, tol_mm: float = 0.5) -> tuple[MMMModel, tuple[str, ...]]:
    """The normalised ``model`` with its segment translations set to ``REFERENCE_SEGMENTS_MM`` where they
    differ by more than ``tol_mm``, and one line per change (node, file value → reference value)."""
    if model.height_m != 1.0:
        raise ValueError("conform_to_reference needs the normalised model")
    t = model.transforms_mm.copy()
    changes = []
    for name, ref in REFERENCE_SEGMENTS_MM.items():
        if name not in model.names:
            continue
        i = model.index(name)
        if np.abs(t[i, :3, 3] - ref).max() > tol_mm:
            old = ", ".join(f"{v:g}" for v in t[i, :3, 3])
            changes.append(f"{name} ({old}) mm -> reference ({', '.join(f'{v:g}' for v in ref)}) mm")
            t[i, :3, 3] = ref
    if not changes:
        return model, ()
    return MMMModel(names=model.names, parents=model.parents, transforms_mm=t, kinds=model.kinds, axes=model.axes,
                    mass_kg=model.mass_kg, com_mm=model.com_mm, height_m=model.height_m,
                    source=model.source), tuple(changes)
