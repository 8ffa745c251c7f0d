"""Marker inverse kinematics: the SMPL 24-joint skeleton fitted to lab markers (pure numpy).

Input: lab markers in a z-up world frame, metres, (T, M, 3), NaN where missing, with their labels.
Output: per frame the pelvis position, the global pelvis rotation and local rotations of the other
joints (SMPL axis-angle), the subject height that scales the skeleton, and per-frame marker RMSE.

* **Targets** (``match_targets``): a lab label is matched after dropping a ``Subject:`` prefix,
  upper-casing and removing separators (``pipeline.lab.foot_assignment.split_label``); its side comes from an
  ``L``/``R``/``LEFT``/``RIGHT`` prefix or suffix. Each target is a virtual marker of ``pipeline.markers``
  (Plug-in Gait names) or a derived point — ``SACR`` (midpoint of LPSI/RPSI), ``LWRI`` (midpoint of the
  radial and ulnar styloid markers), hip/knee/ankle joint centres ``LHJC``/``LKJC``/``LAJC`` — with lab
  aliases (``TARGET_ALIASES``: e.g. ``CAL`` → HEE, ``MT2`` → TOE, ``LMAL`` → ANK, ``LFC`` → KNE,
  ``SHA`` → TIB, ``VSAC`` → SACR, ``IJ`` → CLAV, ``PX`` → STRN; ``KNE_2``/``ANK_2``, the second marker
  of a duplicated 4-character label, → medial knee/ankle; gait2354, OpenCap and CAST names too). Markers
  whose segment only is known (an .osim MarkerSet, cluster names ``RTH1``/``PV2``, rigidity:
  ``pipeline.lab.marker_sets``, docs/marker_sets.md) become *segment targets* whose offsets are calibrated
  from the data (``_calibrate_with_segments``; cluster-only sets start from functional joint centres,
  ``functional_targets``/``pose_from_centres``, ``pipeline.lab.functional``). ``check_targets`` demands ≥ 3 targets moving with the pelvis
  and per leg ≥ 3 targets, one of them on the foot.
* **Solver** (``solve_poses``): Levenberg–Marquardt, vectorised over frames (every frame solved at once,
  one (P × P) system per frame). Unknowns: pelvis position and a world-frame rotation increment per
  *active* joint (a joint whose rotation moves some target); the marker Jacobian is analytic,
  ∂m/∂ω_j = −[m − p_j]×. Active joints are regularised towards a neutral pose (``REST_POSE``: zero,
  arms down) with ``reg_m_per_rad`` (a soft prior that only fixes unobservable directions, e.g. the twist
  of a segment carrying one marker, and spreads trunk bending over spine1–3); joints moving no target
  (feet, hands, and any limb without markers) keep the neutral pose. NaN targets get zero weight per frame.
  Initialisation: the pelvis rigidly placed on its targets (Kabsch), every other joint neutral.
* **Scale and marker offsets** (``fit_markers``): on a subset of frames (≤ ``calib_frames``) poses are
  solved at an initial height (head markers, else pelvis height, else 1.70 m), then the height is the
  closed-form least-squares scale of all rest offsets with the poses fixed; the poses are re-solved;
  then each target's body-fixed offset is re-estimated as the median over frames of its measured
  position in its parent joint's frame (how far it may move from the template: ``max_offset_shift_m``;
  wand/cluster markers on the thigh, shank, upper arm, forearm and back may move further) and the poses
  re-solved. Finally every frame is solved, started from the calibration frames' poses (slerp), and
  outlier frames (RMSE > max(2 × median, median + 1 cm), a local minimum) are re-solved warm-started
  from their previous or next frame.
* **Quality**: ``IKResult.rmse_m`` (T,) RMS over the frame's visible targets of the distance between the
  measured and the fitted target, metres; ``residual_m`` (T, K) per target (NaN where not visible).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipeline import markers as mk
from pipeline import rotations as rot
from pipeline import skeleton as sk
from pipeline.lab.foot_assignment import split_label

# ------------------------------------------------------------------------------------------- targets
SIDED_ALIASES: dict[str, tuple[str, ...]] = {
    "FHD": ("FHD",), "BHD": ("BHD",), "SHO": ("SHO", "ACR", "SHOULDER"), "UPA": ("UPA",),
    "ELB": ("ELB", "LEL", "ELBOW", "LELBOW"), "FRM": ("FRM",), "WRA": ("WRA", "RSP", "LWRIST"),
    "WRB": ("WRB", "USP", "MWRIST"), "WRI": ("WRI", "WRS", "WRT", "WRIST"), "FIN": ("FIN",),
    "ASI": ("ASI", "ASIS"), "PSI": ("PSI", "PSIS"), "THI": ("THI",),
    "KNE": ("KNE", "LFC", "KNEL", "LFE", "KNEE", "LEPI", "FLE", "LE"),
    "KNM": ("KNM", "MFC", "KNE2", "KNEM", "MFE", "MKNEE", "MEPI", "FME", "ME"), "TIB": ("TIB", "SHA", "SHN"),
    "ANK": ("ANK", "LMAL", "LM", "ANKLE", "LATMAL"), "MED": ("MED", "MMAL", "MM", "ANK2", "MANKLE"),
    "HEE": ("HEE", "HEEL", "CAL", "CALC", "FCC", "CA"), "TOE": ("TOE", "MT2", "MH2", "TOES", "FM2", "P2MT"),
    "MT5": ("MT5", "MH5", "VMH", "5META", "FM5", "P5MT"), "BAK": ("BAK",),
    "HJC": ("HJC",), "KJC": ("KJC",), "AJC": ("AJC",),
}
"""Sided target base name -> lab base names (after the side letter), first found wins."""

MIDLINE_ALIASES: dict[str, tuple[str, ...]] = {
    "C7": ("C7", "CV7"), "T10": ("T10", "TV10"), "CLAV": ("CLAV", "IJ", "JN", "SJN"),
    "STRN": ("STRN", "PX", "XP", "SXS"), "SACR": ("SACR", "VSAC", "SACRUM", "SAC", "S2"),
}
"""Midline target -> lab names."""

TARGET_ALIASES = {**SIDED_ALIASES, **MIDLINE_ALIASES}

_DERIVED: dict[str, tuple[str, ...]] = {"SACR": ("LPSI", "RPSI"), "LWRI": ("LWRA", "LWRB"), "RWRI": ("RWRA", "RWRB")}
_JOINT_CENTRES = {"LHJC": 1, "RHJC": 2, "LKJC": 4, "RKJC": 5, "LAJC": 7, "RAJC": 8}
_WAND = ("THI", "TIB", "UPA", "FRM", "BAK", "T10")
"""Markers placed anywhere along a segment (their offsets are calibrated freely)."""


REST_POSE = np.zeros((sk.N_JOINTS, 3))
REST_POSE[16] = (0.0, 0.0, -1.2)  # left arm down ~70° (template z is forward; +x left arm → −y)
REST_POSE[17] = (0.0, 0.0, 1.2)
"""Neutral local pose (axis-angle, rad): zero except the arms, hanging ~70° down from the T-pose."""


@dataclass(frozen=True)
class TargetSet:
    """Lab markers matched to skeleton-attached targets.

    Attributes:
        names: (K,) target names (virtual marker names, ``SACR``, ``LWRI``, ``LHJC`` ...; a segment target
            is ``@<label>``).
        parents: (K,) SMPL joint each target is attached to.
        offset_frac: (K, 3) rest offset from the parent joint in the template frame, / height (segment
            targets: the segment's midpoint, a start value the calibration replaces).
        indices: per target the lab marker indices averaged (usually one).
        labels: per target the lab labels used.
        wand: (K,) bool, marker placed anywhere along its segment (free offset calibration).
        free: (K,) bool, segment target: only its segment is known (``pipeline.lab.marker_sets``), its
            offset is calibrated from the data without limit.
    """

    names: tuple[str, ...]
    parents: np.ndarray
    offset_frac: np.ndarray
    indices: tuple[tuple[int, ...], ...]
    labels: tuple[tuple[str, ...], ...]
    wand: np.ndarray
    free: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.free is None:
            object.__setattr__(self, "free", np.zeros(len(self.names), dtype=bool))

    def positions(self, markers_m: np.ndarray) -> np.ndarray:
        """(T, K, 3) measured target positions (mean of their lab markers; NaN if any is NaN)."""
        m = np.asarray(markers_m, dtype=np.float64)
        if not self.indices:
            return np.zeros((m.shape[0], 0, 3))
        return np.stack([m[:, list(ix)].mean(axis=1) for ix in self.indices], axis=1)

    def subset(self, keep: np.ndarray | list[int]) -> TargetSet:
        """The targets at indices ``keep`` (in that order)."""
        k = [int(i) for i in keep]
        return TargetSet(names=tuple(self.names[i] for i in k), parents=self.parents[k].copy(),
                         offset_frac=self.offset_frac[k].reshape(-1, 3).copy(),
                         indices=tuple(self.indices[i] for i in k), labels=tuple(self.labels[i] for i in k),
                         wand=self.wand[k].copy(), free=self.free[k].copy())

    def pelvis_indices(self) -> list[int]:
        """Targets that move with the pelvis alone: on the pelvis segment, or the hip joint centres."""
        return [k for k, n in enumerate(self.names) if int(self.parents[k]) == 0 or n in ("LHJC", "RHJC")]


def _virtual_offset_frac(name: str) -> tuple[int, np.ndarray]:
    if name in _JOINT_CENTRES:
        return _JOINT_CENTRES[name], np.zeros(3)
    if name in _DERIVED:
        parts = [_virtual_offset_frac(p) for p in _DERIVED[name]]
        return parts[0][0], np.mean([o for _, o in parts], axis=0)
    i = mk.MARKER_NAMES.index(name)
    return mk.MARKER_PARENTS[i], mk._OFFSET_FRACTIONS[i].copy()


def _target_names() -> tuple[str, ...]:
    names = [n for n in mk.MARKER_NAMES]
    names += ["SACR", "LWRI", "RWRI", *(_JOINT_CENTRES)]
    return tuple(names)


def _base_of(target: str) -> tuple[str | None, str]:
    if target in MIDLINE_ALIASES:
        return None, target
    return ("left" if target[0] == "L" else "right"), target[1:]


_STUDY = re.compile(r"[_.\s-]?study$", re.IGNORECASE)
"""OpenCap's ``_study`` suffix (``r_knee_study``), dropped before matching."""

_SEGMENT_CHILD = {0: None, 1: 4, 2: 5, 4: 7, 5: 8, 7: 10, 8: 11, 10: None, 11: None, 9: None, 15: None,
                  16: 18, 17: 19, 18: 20, 19: 21, 20: 22, 21: 23}


def segment_offset_frac(joint: int) -> np.ndarray:
    """(3,) start offset of a segment target on ``joint``'s segment: half-way to its child joint, / height."""
    child = _SEGMENT_CHILD.get(joint)
    if child is None:
        return np.zeros(3)
    return 0.5 * (sk._REST_FRACTIONS[child] - sk._REST_FRACTIONS[joint])


def match_targets(labels: tuple[str, ...] | list[str], segments: dict[str, str] | None = None) -> TargetSet:
    """Targets found among the lab ``labels`` (module docstring), in ``_target_names`` order, then the
    segment targets: every other label whose segment ``segments`` (label → ``marker_sets.SEGMENT_JOINT``
    key, e.g. from an OpenSim MarkerSet) gives; without ``segments``, the cluster name table
    (``marker_sets.segment_from_name``) — only when the named targets alone cannot support the IK, so that
    files the named landmarks fit keep exactly their named fit."""
    from pipeline.lab import marker_sets as ms

    table: dict[tuple[str | None, str], int] = {}
    for i, lab in enumerate(labels):
        clean = _STUDY.sub("", lab)
        key = split_label(clean)
        table.setdefault(key, i)
        unsided = (None, clean.split(":")[-1].strip().upper().replace("_", "").replace(".", ""))
        table.setdefault(unsided, i)
    names, parents, offs, idx, labs, wand = [], [], [], [], [], []
    for t in _target_names():
        side, base = _base_of(t)
        aliases = TARGET_ALIASES.get(base, (base,))
        found = next(((table[(side, a)],) for a in aliases if (side, a) in table), None)
        if found is None:
            continue
        p, o = _virtual_offset_frac(t)
        names.append(t)
        parents.append(p)
        offs.append(o)
        idx.append(found)
        labs.append(tuple(labels[i] for i in found))
        wand.append(base in _WAND)
    # A derived midpoint is redundant when both of its markers exist (keep the real ones).
    keep = [k for k, n in enumerate(names) if not (n in _DERIVED and all(p in names for p in _DERIVED[n]))]
    used = {i for k in keep for i in idx[k]}
    free = [False] * len(keep)
    named_suffice = segments is None and check_targets(TargetSet(
        names=tuple(names[k] for k in keep), parents=np.asarray([parents[k] for k in keep], dtype=int),
        offset_frac=np.zeros((len(keep), 3)), indices=tuple(idx[k] for k in keep),
        labels=tuple(labs[k] for k in keep), wand=np.zeros(len(keep), bool))) is None
    for i, lab in enumerate(labels):
        if i in used or named_suffice:
            continue
        seg = segments.get(lab) if segments is not None else ms.segment_from_name(_STUDY.sub("", lab))
        if seg is None or seg not in ms.SEGMENT_JOINT:
            continue
        j = ms.SEGMENT_JOINT[seg]
        names.append(f"@{lab}")
        parents.append(j)
        offs.append(segment_offset_frac(j))
        idx.append((i,))
        labs.append((lab,))
        wand.append(True)
        keep.append(len(names) - 1)
        free.append(True)
    return TargetSet(
        names=tuple(names[k] for k in keep), parents=np.asarray([parents[k] for k in keep], dtype=int),
        offset_frac=np.asarray([offs[k] for k in keep], dtype=np.float64).reshape(-1, 3),
        indices=tuple(idx[k] for k in keep), labels=tuple(labs[k] for k in keep),
        wand=np.asarray([wand[k] for k in keep], dtype=bool), free=np.asarray(free, dtype=bool),
    )


def add_segment_targets(ts: TargetSet, labels: tuple[str, ...] | list[str], extra: dict[int, str]) -> TargetSet:
    """``ts`` plus segment targets for lab marker indices ``extra`` (index → segment, e.g. from
    ``marker_sets.assign_by_rigidity``)."""
    from pipeline.lab import marker_sets as ms

    if not extra:
        return ts
    ks = sorted(extra)
    js = [ms.SEGMENT_JOINT[extra[i]] for i in ks]
    return TargetSet(
        names=ts.names + tuple(f"@{labels[i]}" for i in ks),
        parents=np.concatenate([ts.parents, np.asarray(js, dtype=int)]),
        offset_frac=np.concatenate([ts.offset_frac, np.asarray([segment_offset_frac(j) for j in js]).reshape(-1, 3)]),
        indices=ts.indices + tuple((i,) for i in ks), labels=ts.labels + tuple((labels[i],) for i in ks),
        wand=np.concatenate([ts.wand, np.ones(len(ks), bool)]), free=np.concatenate([ts.free, np.ones(len(ks), bool)]),
    )


def match_targets_in_data(labels: tuple[str, ...] | list[str], markers_m: np.ndarray,
                          segments: dict[str, str] | None = None) -> TargetSet:
    """``match_targets``, then — only when those targets cannot support the IK — every remaining marker that
    moves rigidly with a matched segment joins it (``marker_sets.assign_by_rigidity``; ``markers_m`` (T, M, 3)
    metres, NaN where missing)."""
    from pipeline.lab import marker_sets as ms

    ts = match_targets(labels, segments)
    if check_targets(ts) is None:
        return ts
    used = {i for ix in ts.indices for i in ix}
    known = {ix[0]: ms.JOINT_SEGMENT[int(p)] for ix, p in zip(ts.indices, ts.parents)
             if len(ix) == 1 and int(p) in ms.JOINT_SEGMENT}
    unknown = [i for i in range(len(labels)) if i not in used]
    return add_segment_targets(ts, labels, ms.assign_by_rigidity(markers_m, known, unknown))


def check_targets(ts: TargetSet) -> str | None:
    """Why the targets cannot support the IK (one line), or ``None`` when they can: ≥ 3 targets moving with
    the pelvis alone, and per leg ≥ 3 targets on the thigh/shank/foot/toes, one of them on the foot or toes."""
    pelvis = ts.pelvis_indices()
    problems = []
    if len(pelvis) < 3:
        problems.append(f"pelvis has {len(pelvis)} markers (named LASI/RASI/LPSI/RPSI/SACR/HJC or on the pelvis "
                        "segment; need 3)")
    for side in "LR":
        leg = [k for k, n in enumerate(ts.names) if n not in ("LHJC", "RHJC") and ts.parents[k] in _LEG_JOINTS[side]]
        foot = [k for k in leg if ts.parents[k] in _LEG_JOINTS[side][2:]]
        if len(leg) < 3 or not foot:
            problems.append(f"{'left' if side == 'L' else 'right'} leg has {len(leg)} targets"
                            f"{'' if foot else ' and none on the foot'} (need 3 incl. ankle/heel/toe)")
    if problems:
        found = ",".join(ts.names) or "none"
        return f"too few named markers for the marker IK: {'; '.join(problems)} (matched: {found})"
    return None


_LEG_JOINTS = {"L": (1, 4, 7, 10), "R": (2, 5, 8, 11)}


# ------------------------------------------------------------------------------------------- solver
@dataclass(frozen=True)
class IKConfig:
    """Solver settings (m, rad, iterations, frames)."""

    reg_m_per_rad: float = 0.01
    """Prior weight of every active joint's deviation from ``REST_POSE``: 1 rad costs like 1 cm of marker error."""
    trunk_reg_m_per_rad: float = 0.05
    """Stronger prior on spine1, spine2, neck and the collars (few markers, redundant chain)."""
    twist_reg_m_per_rad: float = 0.05
    """Extra prior on the *twist* of the leg's segments (hip and knee rotation, foot roll: the
    rotation-vector component along the segment's rest bone axis). Marker offsets are calibrated, so
    a thigh twisted about its own axis and a knee twisted back can fit the markers as well as the
    anatomical pose; without this prior such 'candy-wrapper' solutions occurred on real files
    (kineticstoolkit walk: hips at 166°, beyond any joint range; PiG_Motion3_FF: feet rolled 70–90°
    onto their sides). Real gait twists stay within ±15°, where this costs < 1.5 cm of marker error."""
    max_offset_shift_m: float = 0.03
    """Largest calibrated move of an anatomical marker's offset from the template."""
    max_wand_shift_m: float = 0.12
    """Largest calibrated move of a wand/cluster marker's offset."""
    calib_frames: int = 150
    iterations: int = 25
    refine_iterations: int = 8
    scale_rounds: int = 4
    segment_rounds: int = 3
    """Rounds of (poses, offsets) once segment targets (markers with only a known segment) join."""
    functional_centres: bool = True
    """Cluster-only marker sets: start the calibration from the functional joint centres
    (``functional_targets``) rather than from a neutral pose under the pelvis cluster."""
    calibrate_offsets: bool = True
    """Re-estimate marker offsets on the calibration frames (off: template offsets ∝ height)."""
    height_m: float | None = None
    """Known standing height (skips the scale fit), metres."""
    min_height_m: float = 1.2
    max_height_m: float = 2.2


_TRUNK = (3, 6, 12, 13, 14)
_TWIST_JOINTS = (1, 2, 4, 5, 7, 8)
"""Hips, knees and ankles: the thigh and the shank twist little in life (hip rotation ±45°, knee ±30°),
the foot rolls little about its long axis (inversion/eversion ±20°), and these directions are nearly
unobservable once offsets are calibrated (``IKConfig.twist_reg_m_per_rad``). The arms are
left out: forearm pronation is large, real motion and its markers (WRA/WRB) observe it."""
_DAMP_FLOOR = 1e-3
"""Added to the Hessian diagonal before the LM damping factor (m² per rad², a 3 cm lever): keeps steps
along nearly unobservable directions short."""


@dataclass(frozen=True)
class IKResult:
    """Fitted poses at the marker frames.

    Attributes:
        root_orient_aa_rad: (T, 3) global pelvis rotation (template → world), axis-angle.
        body_pose_aa_rad: (T, 23, 3) local rotations of joints 1–23.
        root_pos_m: (T, 3) world pelvis joint position, metres.
        height_m: fitted standing height (skeleton scale), metres.
        targets: the matched targets.
        offsets_m: (K, 3) calibrated target offsets from their parent joints (template frame), metres.
        rmse_m: (T,) RMS marker residual over the frame's visible targets, metres (NaN: none visible).
        residual_m: (T, K) per-target residual distance, metres (NaN where not visible).
        solved: (T,) bool, frame had ≥ 3 pelvis targets and was solved (others are interpolated).
    """

    root_orient_aa_rad: np.ndarray
    body_pose_aa_rad: np.ndarray
    root_pos_m: np.ndarray
    height_m: float
    targets: TargetSet
    offsets_m: np.ndarray
    rmse_m: np.ndarray
    residual_m: np.ndarray
    solved: np.ndarray

    @property
    def trans_m(self) -> np.ndarray:
        """(T, 3) SMPL ``trans`` = pelvis position − J0 of the anthropometric skeleton at ``height_m``."""
        return self.root_pos_m - sk.anthropometric_skeleton(self.height_m).rest_joints_m[0]


def _skew(v: np.ndarray) -> np.ndarray:
    out = np.zeros(v.shape + (3,))
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    out[..., 0, 1], out[..., 0, 2] = -z, y
    out[..., 1, 0], out[..., 1, 2] = z, -x
    out[..., 2, 0], out[..., 2, 1] = -y, x
    return out


def _ancestors(j: int) -> list[int]:
    out = []
    while j >= 0:
        out.append(j)
        j = sk.PARENTS[j]
    return out


def active_joints(parents: np.ndarray) -> np.ndarray:
    """Sorted joints whose rotation moves at least one target attached to ``parents``."""
    act = set()
    for p in np.asarray(parents).tolist():
        act.update(_ancestors(int(p)))
    return np.asarray(sorted(act), dtype=int)


def target_positions(glob: np.ndarray, joints: np.ndarray, parents: np.ndarray, offsets_m: np.ndarray) -> np.ndarray:
    """(T, K, 3) world target positions from FK globals (T, 24, 3, 3), joints (T, 24, 3), offsets (K, 3) m."""
    return joints[:, parents] + np.einsum("tkij,kj->tki", glob[:, parents], offsets_m)


def _kabsch(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched weighted rigid fit dst ≈ R src + t; src (K, 3), dst (T, K, 3), w (T, K)."""
    ws = w.sum(axis=1, keepdims=True)
    cs = np.einsum("tk,ki->ti", w, src) / np.maximum(ws, 1e-12)
    cd = np.einsum("tk,tki->ti", w, dst) / np.maximum(ws, 1e-12)
    a = src[None] - cs[:, None]
    b = dst - cd[:, None]
    h = np.einsum("tk,tki,tkj->tij", w, a, b)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("tji,tkj->tik", vt, u)))
    dm = np.zeros((len(d), 3, 3))
    dm[:, 0, 0] = dm[:, 1, 1] = 1.0
    dm[:, 2, 2] = d
    r = np.einsum("tji,tjk,tlk->til", vt, dm, u)
    return r, cd - np.einsum("tij,tj->ti", r, cs)


def initial_root(ts: TargetSet, obs: np.ndarray, w: np.ndarray, skel: sk.Skeleton, offsets_m: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, 3) root rotation and (T, 3) pelvis position placing the pelvis targets rigidly (Kabsch)."""
    pel = np.flatnonzero(ts.parents == 0) if np.any(ts.parents == 0) else np.arange(0)
    jc = [k for k, n in enumerate(ts.names) if n in ("LHJC", "RHJC")]
    pel = np.asarray(sorted(set(pel.tolist()) | set(jc)), dtype=int)
    rest = skel.rest_joints_m[ts.parents[pel]] + offsets_m[pel] - skel.rest_joints_m[0]
    r, t = _kabsch(rest, np.nan_to_num(obs[:, pel]), w[:, pel])
    return r, t


def _forward(local: np.ndarray, root: np.ndarray, skel: sk.Skeleton, ts: TargetSet, offsets_m: np.ndarray):
    glob, joints = sk.forward_kinematics(local, root, skel.offsets_m)
    return glob, joints, target_positions(glob, joints, ts.parents, offsets_m)


def _reg_weights(active: np.ndarray, cfg: IKConfig) -> np.ndarray:
    return np.asarray([cfg.trunk_reg_m_per_rad if j in _TRUNK else cfg.reg_m_per_rad for j in active])


def _twist_axes(active: np.ndarray, skel: sk.Skeleton, cfg: IKConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per active joint: unit rest bone axis of its segment (template = parent frame at rest), (A, 3),
    and the twist prior weight (A,), m/rad (0 for joints without a long bone)."""
    axes = np.zeros((len(active), 3))
    wt = np.zeros(len(active))
    for a, j in enumerate(active.tolist()):
        kids = [c for c in range(sk.N_JOINTS) if sk.PARENTS[c] == j]
        if j in _TWIST_JOINTS and len(kids) == 1:
            off = np.asarray(skel.offsets_m[kids[0]], dtype=np.float64)
            axes[a] = off / max(np.linalg.norm(off), 1e-9)
            wt[a] = cfg.twist_reg_m_per_rad
    return axes, wt


def _cost(pred, obs, w, local, active, wreg, twist=None):
    r = np.where(w[..., None] > 0, pred - obs, 0.0)
    c = np.einsum("tk,tki->t", w, r * r)
    dev = rot.rotmat_to_aa(local[:, active]) - REST_POSE[active]
    c += np.einsum("a,tai->t", wreg**2, dev * dev)
    if twist is not None:
        axes, wt = twist
        c += np.einsum("a,ta->t", wt**2, np.einsum("tai,ai->ta", dev, axes) ** 2)
    return c, r, dev


def solve_poses(ts: TargetSet, obs: np.ndarray, w: np.ndarray, skel: sk.Skeleton, offsets_m: np.ndarray,
                local: np.ndarray, root: np.ndarray, iterations: int, cfg: IKConfig = IKConfig(),
                reg_scale: float = 1.0, root_prior: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg–Marquardt on every frame at once; returns refined (local (T,24,3,3), root (T,3)).

    ``obs`` (T, K, 3) measured targets (NaN allowed where ``w`` is 0), ``w`` (T, K) weights;
    ``reg_scale`` multiplies the pose prior (a stiff prior first avoids local minima from a far start);
    ``root_prior`` false: the pelvis' global rotation has no prior (directions the targets leave open, e.g.
    the pelvis tilt about the hip axis when only joint centres are fitted, stay at the start).
    """
    obs = np.nan_to_num(np.asarray(obs, dtype=np.float64))
    local, root = local.copy(), root.copy()
    n, k = w.shape
    active = active_joints(ts.parents)
    na = len(active)
    npar = 3 + 3 * na
    # mask[k, a]: target k moves with joint active[a]
    mask = np.zeros((k, na))
    for i, p in enumerate(ts.parents.tolist()):
        anc = set(_ancestors(int(p)))
        mask[i] = [1.0 if j in anc else 0.0 for j in active]
    wreg = _reg_weights(active, cfg) * reg_scale
    if not root_prior:
        wreg = np.where(active == 0, 0.0, wreg)
    twist = _twist_axes(active, skel, cfg)
    twist = (twist[0], twist[1] * reg_scale)
    parent_of = np.asarray([max(sk.PARENTS[j], 0) for j in active])
    lam = np.full(n, 0.1)
    glob, joints, pred = _forward(local, root, skel, ts, offsets_m)
    cost, r, dev = _cost(pred, obs, w, local, active, wreg, twist)
    sw = np.sqrt(w)
    eye3 = np.eye(3)
    for _ in range(iterations):
        d = pred[:, :, None, :] - joints[:, None, active, :]  # (T, K, A, 3)
        jr = -_skew(d) * mask[None, :, :, None, None]  # (T, K, A, 3, 3): rows xyz of target, cols ω
        jac = np.empty((n, k, 3, npar))
        jac[..., :3] = eye3
        jac[..., 3:] = jr.transpose(0, 1, 3, 2, 4).reshape(n, k, 3, 3 * na)
        jac *= sw[..., None, None]
        jac = jac.reshape(n, 3 * k, npar)
        res = (r * sw[..., None]).reshape(n, 3 * k)
        hess = np.matmul(jac.transpose(0, 2, 1), jac)
        grad = np.einsum("tpi,tp->ti", jac, res)
        # prior: d dev_a / d ω_a ≈ G_parent(a)^T (world increment expressed in the parent frame)
        gp = glob[:, parent_of]  # (T, A, 3, 3)
        gp = np.where((active == 0)[None, :, None, None], eye3, gp)
        jreg = wreg[None, :, None, None] * gp.transpose(0, 1, 3, 2)  # (T, A, 3, 3)
        for a in range(na):
            s = slice(3 + 3 * a, 6 + 3 * a)
            hess[:, s, s] += np.matmul(jreg[:, a].transpose(0, 2, 1), jreg[:, a])
            grad[:, s] += np.einsum("tji,tj->ti", jreg[:, a], wreg[a] * dev[:, a])
            if twist[1][a] > 0.0:  # twist prior: d(u·dev)/dω = (G_parent u)ᵀ
                row = twist[1][a] * (gp[:, a] @ twist[0][a])  # (T, 3)
                hess[:, s, s] += row[:, :, None] * row[:, None, :]
                grad[:, s] += row * (twist[1][a] * (dev[:, a] @ twist[0][a]))[:, None]
        diag = np.einsum("tii->ti", hess)
        a_mat = hess + (lam[:, None] * (diag + _DAMP_FLOOR))[:, :, None] * np.eye(npar)[None]
        step = -np.linalg.solve(a_mat, grad[..., None])[..., 0]
        new_root = root + step[:, :3]
        om = step[:, 3:].reshape(n, na, 3)
        new_local = local.copy()
        dr = rot.aa_to_rotmat(om)  # (T, A, 3, 3) world-frame increments
        for a, j in enumerate(active.tolist()):
            if j == 0:
                new_local[:, 0] = dr[:, a] @ local[:, 0]
            else:
                g = glob[:, sk.PARENTS[j]]
                new_local[:, j] = g.transpose(0, 2, 1) @ dr[:, a] @ g @ local[:, j]
        g2, j2, p2 = _forward(new_local, new_root, skel, ts, offsets_m)
        c2, r2, dev2 = _cost(p2, obs, w, new_local, active, wreg, twist)
        better = c2 < cost
        lam = np.where(better, lam / 3.0, np.minimum(lam * 5.0, 1e6))
        b = better
        local[b], root[b], glob[b], joints[b], pred[b] = new_local[b], new_root[b], g2[b], j2[b], p2[b]
        cost[b], r[b], dev[b] = c2[b], r2[b], dev2[b]
        if np.all(lam >= 1e6):
            break
    return local, root


# ------------------------------------------------------------------------------------------- driver
def estimate_initial_height(ts: TargetSet, obs: np.ndarray) -> float:
    """Rough standing height (m) from head-marker, named pelvis-marker or pelvis-segment-marker heights above
    z = 0, else 1.70."""
    def med_z(names: tuple[str, ...]) -> tuple[float, float] | None:
        ks = [ts.names.index(n) for n in names if n in ts.names]
        if not ks:
            return None
        z = obs[:, ks, 2]
        if not np.isfinite(z).any():
            return None
        frac = float(np.mean([ts.offset_frac[k, 1] + sk._REST_FRACTIONS[ts.parents[k], 1] for k in ks]))
        return float(np.nanpercentile(z, 75)), frac
    pelvis_segment = tuple(ts.names[k] for k in ts.pelvis_indices())
    for names in (("LFHD", "RFHD", "LBHD", "RBHD"), ("LASI", "RASI", "LPSI", "RPSI", "SACR"), pelvis_segment):
        got = med_z(names)
        if got is not None and got[0] > 0.3:
            return float(np.clip(got[0] / got[1], 1.3, 2.1))
    return sk.REFERENCE_HEIGHT_M


def _fit_scale(ts: TargetSet, obs: np.ndarray, w: np.ndarray, local: np.ndarray, offsets_frac: np.ndarray) -> float:
    """Closed-form height s minimising Σ w |m − r_t − s g| with poses fixed (g at unit height)."""
    rest = sk._REST_FRACTIONS - sk._REST_FRACTIONS[0] + sk._PELVIS_TEMPLATE_FRACTION
    offs = sk.rest_offsets(rest)
    glob, joints = sk.forward_kinematics(local, np.zeros((local.shape[0], 3)), offs)
    g = target_positions(glob, joints, ts.parents, offsets_frac)
    obs = np.nan_to_num(obs)
    ws = np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    gm = np.einsum("tk,tki->ti", w, g) / ws
    om = np.einsum("tk,tki->ti", w, obs) / ws
    dg, do = g - gm[:, None], obs - om[:, None]
    return float(np.einsum("tk,tki,tki->", w, dg, do) / max(np.einsum("tk,tki,tki->", w, dg, dg), 1e-12))


def _calibrate_offsets(ts: TargetSet, obs: np.ndarray, w: np.ndarray, glob: np.ndarray, joints: np.ndarray,
                       template_m: np.ndarray, cfg: IKConfig, only: np.ndarray | None = None) -> np.ndarray:
    """Median body-frame offset of each target, limited to ``max_*_shift_m`` from the template (segment
    targets, ``ts.free``: not limited); ``only`` (K,) bool restricts which targets are re-estimated."""
    rel = np.einsum("tkji,tkj->tki", glob[:, ts.parents], obs - joints[:, ts.parents])
    rel = np.where(w[..., None] > 0, rel, np.nan)
    out = template_m.copy()
    for k in range(len(ts.names)):
        if ts.names[k] in _JOINT_CENTRES or np.isfinite(rel[:, k, 0]).sum() < 5 or (only is not None and not only[k]):
            continue
        med = np.nanmedian(rel[:, k], axis=0)
        if ts.free[k]:
            out[k] = med
            continue
        shift = med - template_m[k]
        lim = cfg.max_wand_shift_m if ts.wand[k] else cfg.max_offset_shift_m
        norm = float(np.linalg.norm(shift))
        out[k] = template_m[k] + (shift * min(1.0, lim / norm) if norm > 0 else 0.0)
    return out


_LEFT_JOINTS = frozenset((1, 4, 7, 10, 13, 16, 18, 20, 22))
_RIGHT_JOINTS = frozenset((2, 5, 8, 11, 14, 17, 19, 21, 23))


def rough_root(ts: TargetSet, obs: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, 3) root rotation and (T, 3) pelvis position from the marker cloud alone, for marker sets without
    named pelvis landmarks: position = centroid of the pelvis targets; template x (left) = horizontal direction
    from the right-side to the left-side targets' centroid (sides from the targets' joints, or an ``L``/``R``
    name of a pelvis landmark); template y = world up (z); template z (forward) = x × y."""
    vis = w > 0
    o = np.where(vis[..., None], obs, np.nan)
    pel = ts.pelvis_indices()
    with np.errstate(all="ignore"):
        c = np.nanmean(o[:, pel], axis=1)
        left = [k for k in range(len(ts.names)) if ts.parents[k] in _LEFT_JOINTS or (not ts.free[k] and ts.parents[k] == 0 and ts.names[k][0] == "L")]
        right = [k for k in range(len(ts.names)) if ts.parents[k] in _RIGHT_JOINTS or (not ts.free[k] and ts.parents[k] == 0 and ts.names[k][0] == "R")]
        lat = np.nanmean(o[:, left], axis=1) - np.nanmean(o[:, right], axis=1)
    lat[:, 2] = 0.0
    lat = np.where(np.isfinite(lat), lat, np.nan)
    fallback = np.nanmedian(lat, axis=0) if np.isfinite(lat).any() else np.array([0.0, 1.0, 0.0])
    lat = np.where(np.isfinite(lat).all(axis=1, keepdims=True), lat, fallback)
    lat /= np.maximum(np.linalg.norm(lat, axis=1, keepdims=True), 1e-9)
    up = np.broadcast_to(np.array([0.0, 0.0, 1.0]), lat.shape)
    r = np.stack([lat, up, np.cross(lat, up)], axis=-1)
    c = np.where(np.isfinite(c), c, np.nanmedian(c, axis=0) if np.isfinite(c).any() else 0.0)
    return r, c


def solve_from_far(ts: TargetSet, obs: np.ndarray, w: np.ndarray, skel: sk.Skeleton, offsets_m: np.ndarray,
                   local: np.ndarray, root: np.ndarray, cfg: IKConfig, root_prior: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``solve_poses`` from a far start: a 30× stiffer prior, then 5×, then the configured one."""
    for scale, iters in ((30.0, cfg.iterations // 2), (5.0, cfg.iterations // 2), (1.0, cfg.iterations)):
        local, root = solve_poses(ts, obs, w, skel, offsets_m, local, root, iters, cfg, reg_scale=scale,
                                  root_prior=root_prior)
    return local, root


def _frame_rmse(ts, obs, w, skel, offsets, local, root) -> np.ndarray:
    _, _, pred = _forward(local, root, skel, ts, offsets)
    d2 = np.where(w > 0, np.sum((pred - np.nan_to_num(obs)) ** 2, axis=-1), 0.0)
    return np.sqrt(d2.sum(axis=1) / np.maximum((w > 0).sum(axis=1), 1))


def _repair(ts: TargetSet, obs: np.ndarray, w: np.ndarray, skel: sk.Skeleton, offsets_m: np.ndarray,
            local: np.ndarray, root: np.ndarray, cfg: IKConfig, passes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Re-solve outlier frames (RMSE > max(2 × median, median + 1 cm)) from a neighbour's pose (warm start
    from the previous, then the next frame); a new solution is kept only where it fits better."""
    err = _frame_rmse(ts, obs, w, skel, offsets_m, local, root)
    for k in range(passes):
        med = float(np.median(err))
        bad = np.flatnonzero(err > max(2.0 * med, med + 0.01))
        if not bad.size:
            break
        nb = bad - 1 if k % 2 == 0 else bad + 1
        ok = (nb >= 0) & (nb < len(err))
        bad, nb = bad[ok], nb[ok]
        if not bad.size:
            continue
        l2, r2 = solve_poses(ts, obs[bad], w[bad], skel, offsets_m, local[nb], root[nb], cfg.iterations, cfg)
        e2 = _frame_rmse(ts, obs[bad], w[bad], skel, offsets_m, l2, r2)
        better = e2 < err[bad]
        idx = bad[better]
        local[idx], root[idx], err[idx] = l2[better], r2[better], e2[better]
    return local, root


def _rest_local(n: int) -> np.ndarray:
    return np.broadcast_to(rot.aa_to_rotmat(REST_POSE), (n, sk.N_JOINTS, 3, 3)).copy()


def _calibrate(ts: TargetSet, oc: np.ndarray, wc: np.ndarray, cfg: IKConfig
               ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Height, offsets (K, 3) m and poses (local, root) on the calibration frames ``oc``/``wc`` (module
    docstring): initial height and poses, (scale, poses) × ``scale_rounds``, then offsets and poses."""
    h = cfg.height_m if cfg.height_m is not None else estimate_initial_height(ts, oc)
    offsets = ts.offset_frac * h
    skel = sk.anthropometric_skeleton(h)
    r0, root = initial_root(ts, oc, wc, skel, offsets)
    local = _rest_local(len(oc))
    local[:, 0] = r0
    local, root = solve_from_far(ts, oc, wc, skel, offsets, local, root, cfg)
    for _ in range(cfg.scale_rounds if cfg.height_m is None else 0):
        h = float(np.clip(_fit_scale(ts, oc, wc, local, ts.offset_frac), cfg.min_height_m, cfg.max_height_m))
        skel, offsets = sk.anthropometric_skeleton(h), ts.offset_frac * h
        local, root = solve_poses(ts, oc, wc, skel, offsets, local, root, cfg.refine_iterations, cfg)
    if cfg.calibrate_offsets:
        glob, joints = sk.forward_kinematics(local, root, skel.offsets_m)
        offsets = _calibrate_offsets(ts, oc, wc, glob, joints, ts.offset_frac * h, cfg)
        local, root = solve_poses(ts, oc, wc, skel, offsets, local, root, cfg.refine_iterations, cfg)
    return h, offsets, local, root


_FUNCTIONAL_NAMES = {1: "LHJC", 2: "RHJC", 4: "LKJC", 5: "RKJC", 7: "LAJC", 8: "RAJC"}


def functional_targets(ts: TargetSet, obs: np.ndarray, w: np.ndarray
                       ) -> tuple[TargetSet | None, np.ndarray | None, np.ndarray | None]:
    """Joint-centre targets from the clusters (``pipeline.lab.functional``): for every joint j whose segment
    and whose parent joint's segment each carry ≥ 3 targets, the SCoRE centre of the two clusters where it is
    usable (enough motion, the clusters agree). Returns (targets with zero offsets on joint j, (T, J, 3)
    centres, (T, J) weights), or ``(None, None, None)`` when no leg has a hip, knee or ankle centre."""
    from pipeline.lab import functional as fn

    vis = w > 0
    o = np.where(vis[..., None], obs, np.nan)
    groups: dict[int, list[int]] = {}
    for k, n in enumerate(ts.names):
        if n not in _JOINT_CENTRES:
            groups.setdefault(int(ts.parents[k]), []).append(k)
    names, parents, cols = [], [], []
    for j in sorted(groups):
        p = sk.PARENTS[j]
        if p < 0 or len(groups[j]) < 3 or len(groups.get(p, ())) < 3:
            continue
        c = fn.score_centre(o[:, groups[p]], o[:, groups[j]])
        if not fn.usable(c):
            continue
        names.append(_FUNCTIONAL_NAMES.get(j, f"JC{j}"))
        parents.append(j)
        cols.append(c.centre_m)
    if not any(j in _FUNCTIONAL_NAMES for j in parents):
        return None, None, None
    m = len(names)
    jts = TargetSet(names=tuple(names), parents=np.asarray(parents, dtype=int), offset_frac=np.zeros((m, 3)),
                    indices=tuple(() for _ in names), labels=tuple(() for _ in names), wand=np.zeros(m, bool))
    jobs = np.stack(cols, axis=1)
    return jts, jobs, np.isfinite(jobs).all(axis=-1).astype(np.float64)


def pose_from_centres(jts: TargetSet, jobs: np.ndarray, jw: np.ndarray, h: float, local: np.ndarray,
                      root: np.ndarray, cfg: IKConfig) -> tuple[float, np.ndarray, np.ndarray]:
    """(height, local, root) of the skeleton fitted to functional joint centres ``jobs`` (T, J, 3) from the
    start (``local``, ``root``): poses from far, then (scale, poses) × ``scale_rounds`` (unless the height
    is given). The pelvis rotation has no prior here: its tilt about the hip axis, which joint centres leave
    open, stays at the start's (upright, ``rough_root``)."""
    zero = np.zeros((len(jts.names), 3))
    skel = sk.anthropometric_skeleton(h)
    local, root = solve_from_far(jts, jobs, jw, skel, zero, local, root, cfg, root_prior=False)
    for _ in range(cfg.scale_rounds if cfg.height_m is None else 0):
        h = float(np.clip(_fit_scale(jts, jobs, jw, local, zero), cfg.min_height_m, cfg.max_height_m))
        skel = sk.anthropometric_skeleton(h)
        local, root = solve_poses(jts, jobs, jw, skel, zero, local, root, cfg.refine_iterations, cfg,
                                  root_prior=False)
    return h, local, root


def _calibrate_with_segments(ts: TargetSet, oc: np.ndarray, wc: np.ndarray, cfg: IKConfig
                             ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``_calibrate`` for a target set with segment targets (``ts.free``).

    If the named targets alone support the IK, they are calibrated first (height, poses, their offsets) and
    the segment targets' offsets are their median positions in their segments under those poses. Otherwise
    (cluster-only sets) the start is the skeleton fitted to the functional joint centres of the clusters
    (``functional_targets``, ``pose_from_centres``: height and poses), else ``rough_root`` with every other
    joint neutral and the height from the pelvis markers' height; the segment offsets are estimated under
    that start. Then ``segment_rounds`` rounds of (poses with every target, every offset).
    """
    free = ts.free
    anchored = np.flatnonzero(~free)
    if len(anchored) and check_targets(ts.subset(anchored)) is None:
        h, off_a, local, root = _calibrate(ts.subset(anchored), oc[:, anchored], wc[:, anchored], cfg)
        skel = sk.anthropometric_skeleton(h)
        offsets = ts.offset_frac * h
        offsets[anchored] = off_a
        first_far = False
    else:
        h = cfg.height_m if cfg.height_m is not None else estimate_initial_height(ts, oc)
        r0, root = rough_root(ts, oc, wc)
        local = _rest_local(len(oc))
        local[:, 0] = r0
        first_far = True
        jts, jobs, jw = functional_targets(ts, oc, wc) if cfg.functional_centres else (None, None, None)
        if jts is not None:
            h, local, root = pose_from_centres(jts, jobs, jw, h, local, root, cfg)
            first_far = False
        skel = sk.anthropometric_skeleton(h)
        offsets = ts.offset_frac * h
    template = offsets.copy()
    glob, joints = sk.forward_kinematics(local, root, skel.offsets_m)
    offsets = _calibrate_offsets(ts, oc, wc, glob, joints, template, cfg, only=free)
    for r in range(cfg.segment_rounds):
        if r == 0 and first_far:
            local, root = solve_from_far(ts, oc, wc, skel, offsets, local, root, cfg)
        else:
            local, root = solve_poses(ts, oc, wc, skel, offsets, local, root, cfg.refine_iterations, cfg)
        glob, joints = sk.forward_kinematics(local, root, skel.offsets_m)
        offsets = _calibrate_offsets(ts, oc, wc, glob, joints, template, cfg)
    local, root = solve_poses(ts, oc, wc, skel, offsets, local, root, cfg.refine_iterations, cfg)
    return h, offsets, local, root


def fit_markers(markers_m: np.ndarray, labels: tuple[str, ...] | list[str], cfg: IKConfig = IKConfig(),
                targets: TargetSet | None = None) -> IKResult:
    """Fit the skeleton to lab markers (T, M, 3) (z up, metres, NaN = missing); see module docstring.

    Raises ``ValueError`` (one line) when the targets cannot support the IK or no frame shows the pelvis.
    """
    ts = match_targets(labels) if targets is None else targets
    problem = check_targets(ts)
    if problem:
        raise ValueError(problem)
    obs = ts.positions(markers_m)  # (T, K, 3)
    n = obs.shape[0]
    vis = np.isfinite(obs).all(axis=-1)
    w = vis.astype(np.float64)
    pel = ts.pelvis_indices()
    solved = vis[:, pel].sum(axis=1) >= 3
    if not solved.any():
        raise ValueError("no frame shows 3 pelvis markers")
    frames = np.flatnonzero(solved)
    calib = frames[np.unique(np.linspace(0, len(frames) - 1, min(cfg.calib_frames, len(frames))).round().astype(int))]

    # calibration frames: height, offsets and poses
    oc, wc = obs[calib], w[calib]
    if ts.free.any():
        h, offsets, local, root = _calibrate_with_segments(ts, oc, wc, cfg)
    else:
        h, offsets, local, root = _calibrate(ts, oc, wc, cfg)
    skel = sk.anthropometric_skeleton(h)

    # all solved frames, started from the calibration poses interpolated in time
    tc = calib.astype(np.float64)
    tf = np.clip(frames.astype(np.float64), tc[0], tc[-1])
    if len(calib) >= 2:
        q = rot.resample_quats(tc, rot.rotmat_to_quat(local), tf)
        local_f = rot.quat_to_rotmat(q)
        root_f = np.stack([np.interp(tf, tc, root[:, i]) for i in range(3)], axis=1)
    else:
        local_f, root_f = np.repeat(local, len(frames), 0), np.repeat(root, len(frames), 0)
    r0, p0 = initial_root(ts, obs[frames], w[frames], skel, offsets)
    local_f[:, 0], root_f = r0, p0  # the pelvis is placed exactly per frame
    local_f, root_f = solve_poses(ts, obs[frames], w[frames], skel, offsets, local_f, root_f, cfg.iterations, cfg)
    local_f, root_f = _repair(ts, obs[frames], w[frames], skel, offsets, local_f, root_f, cfg)

    # every frame: solved ones, others interpolated (nearest at the ends)
    t_all = np.clip(np.arange(n, dtype=np.float64), frames[0], frames[-1])
    if len(frames) >= 2:
        q_all = rot.resample_quats(frames.astype(np.float64), rot.rotmat_to_quat(local_f), t_all)
        root_all = np.stack([np.interp(t_all, frames, root_f[:, i]) for i in range(3)], axis=1)
    else:
        q_all = np.repeat(rot.rotmat_to_quat(local_f), n, 0)
        root_all = np.repeat(root_f, n, 0)
    local_all = rot.quat_to_rotmat(q_all)
    glob, joints, pred = _forward(local_all, root_all, skel, ts, offsets)
    res = np.where(vis, np.linalg.norm(pred - np.nan_to_num(obs), axis=-1), np.nan)
    with np.errstate(invalid="ignore"):
        rmse = np.sqrt(np.nanmean(res**2, axis=1)) if res.size else np.full(n, np.nan)
    aa = rot.quat_to_aa(q_all)
    return IKResult(root_orient_aa_rad=aa[:, 0], body_pose_aa_rad=aa[:, 1:], root_pos_m=root_all, height_m=float(h),
                    targets=ts, offsets_m=offsets, rmse_m=rmse, residual_m=res, solved=solved)


def target_residuals(ik_targets: TargetSet, offsets_m: np.ndarray, markers_m: np.ndarray, glob: np.ndarray,
                     joints: np.ndarray) -> np.ndarray:
    """(T, K) distance between measured targets and the skeleton's targets (FK output), metres; NaN if unseen."""
    obs = ik_targets.positions(markers_m)
    pred = target_positions(glob, joints, ik_targets.parents, offsets_m)
    return np.linalg.norm(pred - obs, axis=-1)


def lift_toes(pose_aa_rad: np.ndarray, root_pos_m: np.ndarray, height_m: float, floor_z_m: float = 0.0,
              max_angle_rad: float = 1.0) -> np.ndarray:
    """(T, 24, 3) poses whose toe tips do not go below ``floor_z_m``: the foot (metatarsophalangeal) joints,
    which no marker observes, are dorsiflexed about their template x axis by the smallest angle (0.33° grid)
    that puts a toe tip below the floor back on it (push-off: the toes bend, the rigid foot would dive into the
    floor). Other frames and joints are unchanged. ``pose_aa_rad``: joint 0 global, others local; metres."""
    pose = np.array(pose_aa_rad, dtype=np.float64, copy=True)
    skel = sk.anthropometric_skeleton(height_m)
    glob, joints = sk.forward_kinematics(rot.aa_to_rotmat(pose), root_pos_m, skel.offsets_m)
    offs = sk.foot_point_offsets(skel)
    for toe, joint in ((1, 10), (3, 11)):
        o = offs[toe]
        g = glob[:, sk.PARENTS[joint]] @ rot.aa_to_rotmat(pose[:, joint])  # foot's global (current local)
        # toe tip height above the joint after an extra flexion θ about the foot's x axis:
        # z(θ) = A + B cos θ + C sin θ
        row = g[:, 2, :]
        a = row[:, 0] * o[0]
        b = row[:, 1] * o[1] + row[:, 2] * o[2]
        c = row[:, 2] * o[1] - row[:, 1] * o[2]
        target = floor_z_m - joints[:, joint, 2]
        below = a + b < target - 1e-9
        if not below.any():
            continue
        # dorsiflexion is θ < 0 about the template x axis (the toe tip's template z turns into +y);
        # the smallest such θ reaching the floor, at most max_angle_rad
        grid = -np.linspace(0.0, max_angle_rad, 181)  # 0.33° steps
        z = a[:, None] + b[:, None] * np.cos(grid) + c[:, None] * np.sin(grid)
        reach = z >= target[:, None]
        first = np.where(reach.any(axis=1), np.argmax(reach, axis=1), len(grid) - 1)
        theta = grid[first]
        extra = np.zeros((len(theta), 3))
        extra[:, 0] = np.where(below, theta, 0.0)
        pose[:, joint] = rot.rotmat_to_aa(rot.aa_to_rotmat(pose[:, joint]) @ rot.aa_to_rotmat(extra))
    return pose
