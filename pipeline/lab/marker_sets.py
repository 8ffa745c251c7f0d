"""Which SMPL segment a lab marker is on, for any marker set (pure; docs/marker_sets.md).

The marker IK (``pipeline.lab.marker_ik``) fits two kinds of targets:

* **named** targets — anatomical landmarks it knows a template position for (Plug-in Gait / Helen Hayes
  names and their aliases, ``marker_ik.TARGET_ALIASES``: ``LASI``, ``R.ASIS``, ``r_knee_study``, ``LLEPI``);
* **segment** targets — any other marker whose segment is known; its body-fixed offset is unknown and is
  calibrated from the data (``marker_ik.fit_markers``). This module says which segment, from

  1. an OpenSim model's MarkerSet (``segments_from_bodies``: each marker's ``socket_parent_frame`` /
     ``body`` mapped by ``OSIM_BODY_SEGMENTS`` — pelvis, femur, tibia/fibula, talus/calcn, toes, torso,
     head, humerus, ulna/radius, hand);
  2. the cluster name table (``segment_from_name``): side + segment code + index, e.g. ``RTH1`` (thigh),
     ``LSK3``/``L.SH2``/``LTB1`` (shank), ``RFT2`` (foot), ``PV1``/``RPV2`` (pelvis), ``LAR1`` (upper arm),
     ``LFA3`` (forearm) — CAST clusters and the numbered technical-marker sets of BTK's samples;
  3. rigidity (``assign_by_rigidity``): an unknown marker joins the segment whose markers keep the most
     constant distance to it (median over the segment's markers of the distance's standard deviation
     ≤ ``max_std_m``, 1 cm by default).

Segments are named after SMPL joints: a segment's markers move with that joint's rotation (``SEGMENT_JOINT``).
"""

from __future__ import annotations

import re

import numpy as np

from pipeline.lab.foot_assignment import split_label

SEGMENT_JOINT: dict[str, int] = {
    "pelvis": 0, "left_thigh": 1, "right_thigh": 2, "left_shank": 4, "right_shank": 5, "left_foot": 7,
    "right_foot": 8, "left_toes": 10, "right_toes": 11, "trunk": 9, "head": 15, "left_upper_arm": 16,
    "right_upper_arm": 17, "left_forearm": 18, "right_forearm": 19, "left_hand": 20, "right_hand": 21,
}
"""Segment name → SMPL joint whose rotation moves it (the segment's proximal joint)."""

OSIM_BODY_SEGMENTS: dict[str, str] = {
    "pelvis": "pelvis", "sacrum": "pelvis", "femur": "thigh", "patella": "thigh", "tibia": "shank",
    "fibula": "shank", "talus": "foot", "calcn": "foot", "calcaneus": "foot", "foot": "foot", "toes": "toes",
    "toe": "toes", "torso": "trunk", "thorax": "trunk", "trunk": "trunk", "back": "trunk", "lumbar": "trunk",
    "head": "head", "skull": "head", "humerus": "upper_arm", "ulna": "forearm", "radius": "forearm",
    "hand": "hand", "lunate": "hand",
}
"""OpenSim body name (without its ``_r``/``_l`` side suffix) → segment (sided where the body is)."""

CLUSTER_CODES: dict[str, str] = {
    "PV": "pelvis", "PEL": "pelvis", "PELVIS": "pelvis", "SACR": "pelvis",
    "TH": "thigh", "THI": "thigh", "THIGH": "thigh", "FEM": "thigh",
    "SK": "shank", "SH": "shank", "SHK": "shank", "SHANK": "shank", "TB": "shank", "TIB": "shank", "LEG": "shank",
    "FT": "foot", "FOOT": "foot", "FO": "foot", "CAL": "foot",
    "AR": "upper_arm", "UA": "upper_arm", "ARM": "upper_arm", "HUM": "upper_arm",
    "FA": "forearm", "FRM": "forearm",
    "HA": "hand", "HND": "hand",
    "TR": "trunk", "TRK": "trunk", "TRUNK": "trunk", "BK": "trunk",
    "HD": "head",
}
"""Cluster segment codes of the name table: a label ``[side]<code><index>`` (index = digits)."""

JOINT_SEGMENT: dict[int, str] = {j: name for name, j in SEGMENT_JOINT.items()}
"""SMPL joint → segment (inverse of ``SEGMENT_JOINT``)."""

_UNSIDED = ("pelvis", "trunk", "head")


def _sided(segment: str, side: str | None) -> str | None:
    if segment in _UNSIDED:
        return segment
    if side is None:
        return None
    return f"{side}_{segment}"


def segment_of_body(body: str) -> str | None:
    """Segment of an OpenSim body name (``femur_r`` → ``right_thigh``, ``torso`` → ``trunk``), else ``None``."""
    b = body.strip().split("/")[-1].lower()
    m = re.match(r"^(.*?)[_\s]?([rl])$", b)
    side = None
    if m and m.group(1) in OSIM_BODY_SEGMENTS:
        b, side = m.group(1), ("right" if m.group(2) == "r" else "left")
    seg = OSIM_BODY_SEGMENTS.get(b)
    return None if seg is None else _sided(seg, side)


def segments_from_bodies(marker_bodies: dict[str, str]) -> dict[str, str]:
    """Marker label → segment for an OpenSim MarkerSet (label → body); bodies outside the table are left out."""
    out = {}
    for label, body in marker_bodies.items():
        seg = segment_of_body(body)
        if seg is not None:
            out[label] = seg
    return out


def segment_from_name(label: str) -> str | None:
    """Segment of a cluster-marker label from the name table (module docstring), else ``None``."""
    side, base = split_label(label)
    m = re.match(r"^([A-Z]+?)(\d+)$", base)
    if m is None:
        return None
    seg = CLUSTER_CODES.get(m.group(1))
    return None if seg is None else _sided(seg, side)


def assign_by_rigidity(markers_m: np.ndarray, known: dict[int, str], unknown: list[int],
                       max_std_m: float = 0.01, min_frames: int = 10) -> dict[int, str]:
    """Segment of each ``unknown`` marker index that moves rigidly with a known segment.

    ``markers_m`` (T, M, 3) metres, NaN where missing; ``known`` marker index → segment. For every segment
    with ≥ 2 known markers, the score of an unknown marker is the median, over those markers, of the standard
    deviation over frames (both visible, ≥ ``min_frames``) of their distance; the best-scoring segment is taken
    when its score ≤ ``max_std_m``. Returns only the assigned markers.
    """
    m = np.asarray(markers_m, dtype=np.float64)
    groups: dict[str, list[int]] = {}
    for i, seg in known.items():
        groups.setdefault(seg, []).append(i)
    out = {}
    for u in unknown:
        best, best_score = None, np.inf
        for seg, idx in groups.items():
            if len(idx) < 2:
                continue
            stds = []
            for i in idx:
                d = np.linalg.norm(m[:, u] - m[:, i], axis=-1)
                d = d[np.isfinite(d)]
                if d.size >= min_frames:
                    stds.append(float(np.std(d)))
            if len(stds) >= 2:
                score = float(np.median(stds))
                if score < best_score:
                    best, best_score = seg, score
        if best is not None and best_score <= max_std_m:
            out[u] = best
    return out
