"""Per-foot ground reactions from force plates and foot markers (pure numpy; docs/c3d.md, issue 4 item 4).

Zell et al. (ECCV 2020) use F_c = [f_l, f_r, m_l, m_r]: the ground reaction force and moment of each foot.
A plate measures the load of whoever stands on it; this module decides which foot that is and sums the
plates per foot. Everything is in dynaset's canonical frame (z up, metres, N, N·m) at the canonical rate.

* **Foot markers** (``find_foot_markers``): labels are matched after stripping a subject prefix
  (``Name:LHEE``), upper-casing and removing separators (``L.Heel``, ``L_HEEL``, ``Heel_L``,
  ``LeftHeel``); the side comes from a ``L``/``R``/``LEFT``/``RIGHT`` prefix or a separated suffix.
  Each part has an ordered list of alias groups (``HEEL_ALIASES``, ``TOE_ALIASES``, ``ANKLE_ALIASES``);
  the first group whose markers all exist is used and its markers are averaged (e.g. ``LMT1``+``LMT5``,
  lateral+medial malleolus). A side needs a heel or a toe marker; without both it is *missing*: every
  interval that side could be involved in is flagged ``missing_markers`` and nothing is assigned.
* **On a plate** (per frame): a foot's heel or toe marker is below ``max_height_m`` (0.15 m) above the
  plate surface, moves horizontally slower than ``max_speed_m_s`` (1.0 m/s: a swing foot passing over a
  plate moves at 2–5 m/s) and lies inside the plate's CORNERS footprint (``inside``) or within
  ``margin_m`` (0.1 m) of it (``near``; markers sit above the sole edge and heel markers overhang).
* **Assignment** (one decision per contiguous loaded interval of a plate, F·up > ``threshold_n``): a foot
  counts when it is on the plate for at least ``min_on_frames`` of the interval's frames. Both feet inside →
  ``conflict``; one inside → that foot; none inside → the one near (both near: the nearer if its median
  distance is smaller by ``tie_m``, else ``conflict``); none → ``no_foot``. A foot assigned while the other
  side's markers are invisible for more than half of the interval → ``missing_markers`` (cannot exclude
  it). Flagged intervals are never assigned: both feet get NaN at their frames.
* **Per foot**: force = sum of its plates' forces; COP and free moment from the summed wrench
  (``forceplate.cop_and_free_moment``); moment about the **foot point** p = the ankle marker (mean of the
  matched ankle markers) projected vertically onto the floor plane (mean height of the plate surfaces),
  or, without ankle markers, the heel–toe midpoint projected likewise: M_p = Σ_plates [M_C + (C − p) × F]
  with C the plate-surface centre. A foot low and slow but over no plate is on the unmeasured floor:
  its force is NaN there (``off_plate``). Contact: hysteresis on the foot's vertical force (enter above
  ``contact_on_n``, leave below ``contact_off_n``; NaN leaves), as ``pipeline.contact``.
* **Total**: sum over all plates, moment about the floor point below the canonical origin.
* **Body mass** (``estimate_body_mass``): the file's subject parameter when present (unless the vertical
  Newton fit during gait contradicts it by more than 5 %: ``body_mass.prefer_measured``); else quiet standing:
  the longest run of at least ``quiet_min_s`` where both feet are on plates, no foot is on the floor off
  the plates and the total vertical force is steady (centred moving std ≤ max(10 N, 2 %)), mass =
  median F_z / g; else, given the fitted motion's centre-of-mass height, the vertical Newton fit over
  the frames where every foot's force is known (``pipeline.lab.body_mass``: walking trials); else
  ``default_body_mass_kg``. GRF stay in N (``NORMALIZATION_NOTE``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter1d

from pipeline.contact import horizontal_speed, hysteresis
from pipeline.lab.forceplate import cop_and_free_moment

G = 9.80665
SIDES = ("left", "right")
PARTS = ("heel", "toe", "ankle")

HEEL_ALIASES: tuple[tuple[str, ...], ...] = (("HEE",), ("HEEL",), ("HEL",), ("CAL",), ("CALC",), ("FCC",), ("PCAL",))
TOE_ALIASES: tuple[tuple[str, ...], ...] = (
    ("TOE",), ("TOES",), ("MT2",), ("MH2",), ("FM2",), ("MET2",), ("MT1", "MT5"), ("MH1", "MH5"), ("FM1", "FM5"),
    ("MT1",), ("MT5",), ("MH1",), ("MH5",), ("FM1",), ("FM5",), ("D2M",), ("HLX",))
ANKLE_ALIASES: tuple[tuple[str, ...], ...] = (
    ("ANK",), ("ANKLE",), ("AJC",), ("LMAL", "MMAL"), ("LM", "MM"), ("LMAL",), ("MAL",), ("LATMAL",), ("LM",),
    ("MMAL",), ("MM",))
ALIASES = {"heel": HEEL_ALIASES, "toe": TOE_ALIASES, "ankle": ANKLE_ALIASES}

# Per-frame, per-plate assignment codes.
UNLOADED, LEFT, RIGHT, CONFLICT, NO_FOOT, MISSING_MARKERS = -1, 0, 1, 2, 3, 4
STATUS_NAMES = {LEFT: "left", RIGHT: "right", CONFLICT: "conflict", NO_FOOT: "no_foot",
                MISSING_MARKERS: "missing_markers"}

NORMALIZATION_NOTE = (
    "Ground reactions are stored in N and N·m (GRF on the subject, z up). Normalize by body weight: "
    "force / (body_mass_kg · 9.80665) gives multiples of body weight (BW); moments / (body_mass_kg · "
    "9.80665 · height_m) give BW·height, or moments / body_mass_kg gives N·m/kg. body_mass_source says "
    "where body_mass_kg came from (file, quiet_standing, plates_gait or default).")


@dataclass(frozen=True)
class FootConfig:
    """Thresholds of the foot assignment (N, m, m/s, frames, kg)."""

    threshold_n: float = 20.0
    margin_m: float = 0.10
    max_height_m: float = 0.15
    max_speed_m_s: float = 1.0
    min_on_frames: int = 2
    tie_m: float = 0.03
    contact_on_n: float = 20.0
    contact_off_n: float = 10.0
    quiet_min_s: float = 1.0
    default_body_mass_kg: float = 75.0

    def __post_init__(self) -> None:
        if not 0 < self.contact_off_n <= self.contact_on_n:
            raise ValueError("need 0 < contact_off_n <= contact_on_n")
        if self.margin_m < 0 or self.max_height_m <= 0 or self.max_speed_m_s <= 0 or self.min_on_frames < 1:
            raise ValueError("margin_m ≥ 0, max_height_m > 0, max_speed_m_s > 0, min_on_frames ≥ 1 required")


@dataclass(frozen=True)
class PlateLoad:
    """One plate in the canonical frame: wrench about its surface centre and its footprint."""

    force_n: np.ndarray  # (N, 3)
    moment_centre_nm: np.ndarray  # (N, 3) about centre_m
    centre_m: np.ndarray  # (3,)
    corners_m: np.ndarray  # (4, 3) footprint polygon (CORNERS order)


@dataclass(frozen=True)
class FootMarkers:
    """Marker indices used per side and part; ``missing`` says why a side cannot be used."""

    indices: dict[str, dict[str, tuple[int, ...]]]  # side -> part -> marker indices (empty: not found)
    labels: dict[str, dict[str, tuple[str, ...]]]
    missing: dict[str, str]  # side -> reason (absent when the side is usable)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class StanceInterval:
    plate: int  # 0-based
    start: int  # frame, inclusive
    stop: int  # frame, exclusive
    status: str  # left | right | conflict | no_foot | missing_markers
    reason: str


@dataclass(frozen=True)
class FootGRF:
    """Per-foot ground reactions (axis 1 = (left, right)), canonical frame, SI."""

    force_n: np.ndarray  # (N, 2, 3); NaN where unknown (flagged interval, off-plate contact, missing side)
    moment_nm: np.ndarray  # (N, 2, 3) about foot_point_m
    foot_point_m: np.ndarray  # (N, 2, 3) ankle (or heel–toe midpoint) projected on the floor
    foot_point: str  # description of the point per side
    cop_m: np.ndarray  # (N, 2, 3), NaN where the foot's F·up ≤ threshold
    free_moment_nm: np.ndarray  # (N, 2)
    contact: np.ndarray  # (N, 2) bool, hysteresis on the foot's vertical force
    off_plate: np.ndarray  # (N, 2) bool, foot on the floor outside every plate (force unknown)
    assignment: np.ndarray  # (N, P) int8 codes (UNLOADED, LEFT, RIGHT, CONFLICT, NO_FOOT, MISSING_MARKERS)
    conflict: np.ndarray  # (N, P) bool, loaded by both feet
    intervals: tuple[StanceInterval, ...]
    total_force_n: np.ndarray  # (N, 3) sum over all plates
    total_moment_nm: np.ndarray  # (N, 3) about total_point_m
    total_point_m: np.ndarray  # (3,) floor point below the canonical origin
    total_cop_m: np.ndarray  # (N, 3)
    total_free_moment_nm: np.ndarray  # (N,)
    floor_z_m: float
    markers: FootMarkers
    body_mass_kg: float
    body_mass_source: str
    normalization: str = NORMALIZATION_NOTE
    warnings: tuple[str, ...] = field(default=())

    def zell_fc(self) -> np.ndarray:
        """(N, 12) Zell et al.'s F_c = [f_l, f_r, m_l, m_r] (N, N·m; moments about the foot points)."""
        f, m = self.force_n, self.moment_nm
        return np.concatenate([f[:, 0], f[:, 1], m[:, 0], m[:, 1]], axis=1)


# --------------------------------------------------------------------------------------------- markers
_SEP = r"[\s._\-]"


def split_label(label: str) -> tuple[str | None, str]:
    """(side, normalized body name) of a marker label: ``'Bob:L.Heel'`` -> ``('left', 'HEEL')``."""
    s = label.split(":")[-1].strip().upper()
    m = re.match(rf"^(LEFT|RIGHT){_SEP}*(.+)$", s)
    if m is None:
        m2 = re.match(rf"^(.+?){_SEP}+(LEFT|RIGHT|L|R)$", s)
        if m2 is not None:
            side, rest = m2.group(2), m2.group(1)
        else:
            m3 = re.match(rf"^([LR]){_SEP}*(.+)$", s)
            if m3 is None:
                return None, re.sub(_SEP, "", s)
            side, rest = m3.group(1), m3.group(2)
    else:
        side, rest = m.group(1), m.group(2)
    return ("left" if side[0] == "L" else "right"), re.sub(_SEP, "", rest)


def find_foot_markers(labels: tuple[str, ...] | list[str]) -> FootMarkers:
    """Heel, toe and ankle markers of each side (module docstring); first alias group found wins."""
    names: dict[tuple[str, str], list[int]] = {}
    for i, lab in enumerate(labels):
        side, base = split_label(lab)
        if side is not None:
            names.setdefault((side, base), []).append(i)
    idx: dict[str, dict[str, tuple[int, ...]]] = {}
    labs: dict[str, dict[str, tuple[str, ...]]] = {}
    missing: dict[str, str] = {}
    warnings: list[str] = []
    for side in SIDES:
        idx[side], labs[side] = {}, {}
        for part in PARTS:
            found: tuple[int, ...] = ()
            for group in ALIASES[part]:
                if all((side, g) in names for g in group):
                    found = tuple(names[(side, g)][0] for g in group)
                    break
            idx[side][part] = found
            labs[side][part] = tuple(labels[i] for i in found)
        if not idx[side]["heel"] and not idx[side]["toe"]:
            tried = "/".join(dict.fromkeys(n for g in HEEL_ALIASES + TOE_ALIASES for n in g))
            missing[side] = f"{side} foot: no heel or toe marker (looked for {side[0].upper()}+{tried})"
        elif not idx[side]["heel"] or not idx[side]["toe"]:
            warnings.append(f"{side} foot: only a {'toe' if idx[side]['toe'] else 'heel'} marker found")
        if side not in missing and not idx[side]["ankle"]:
            warnings.append(f"{side} foot: no ankle marker; foot point = heel–toe midpoint")
    return FootMarkers(indices=idx, labels=labs, missing=missing, warnings=tuple(warnings))


def _part_position(markers_m: np.ndarray, ix: tuple[int, ...]) -> np.ndarray:
    if not ix:
        return np.full((markers_m.shape[0], 3), np.nan)
    return markers_m[:, list(ix)].mean(axis=1)  # NaN if any member is NaN


# --------------------------------------------------------------------------------------------- geometry
def footprint_distance(points_xy: np.ndarray, corners_m: np.ndarray) -> np.ndarray:
    """Horizontal distance (…,) from points (…, 2) to a convex footprint (4 corners, x-y used); 0 inside."""
    c = np.asarray(corners_m, dtype=float)[:, :2]
    p = np.asarray(points_xy, dtype=float)
    a, b = c, np.roll(c, -1, axis=0)
    e = b - a  # (4, 2)
    d = p[..., None, :] - a  # (…, 4, 2)
    cross = e[:, 0] * d[..., 1] - e[:, 1] * d[..., 0]
    area = np.sum(a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1])  # orientation of the polygon
    inside = np.all(cross * np.sign(area) >= 0, axis=-1)
    t = np.clip(np.sum(d * e, axis=-1) / np.sum(e * e, axis=-1), 0.0, 1.0)
    seg = np.linalg.norm(d - t[..., None] * e, axis=-1).min(axis=-1)
    out = np.where(inside, 0.0, seg)
    return np.where(np.isfinite(p).all(axis=-1), out, np.nan)


def transfer_moment(moment_nm: np.ndarray, from_point_m: np.ndarray, to_point_m: np.ndarray,
                    force_n: np.ndarray) -> np.ndarray:
    """Moment about ``to`` of a wrench (F, M about ``from``): M_to = M_from + (from − to) × F."""
    return np.asarray(moment_nm) + np.cross(np.asarray(from_point_m) - np.asarray(to_point_m), force_n)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


# --------------------------------------------------------------------------------------------- assignment
def _decide(on_in: np.ndarray, on_near: np.ndarray, dist: np.ndarray, visible: np.ndarray,
            usable: tuple[bool, bool], cfg: FootConfig) -> tuple[int, str]:
    """Decision for one loaded interval from (2, L) per-foot arrays."""
    n = on_in.shape[1]
    need = min(cfg.min_on_frames, n)
    n_in, n_near = on_in.sum(axis=1), on_near.sum(axis=1)
    inside = [f for f in (0, 1) if n_in[f] >= need]
    if len(inside) == 2:
        return CONFLICT, f"both feet inside the footprint ({n_in[0]} and {n_in[1]} of {n} loaded frames)"
    if inside:
        foot, how = inside[0], "inside the footprint"
    else:
        near = [f for f in (0, 1) if n_near[f] >= need]
        if not near:
            lost = [SIDES[f] for f in (0, 1) if not usable[f] or visible[f].mean() < 0.5]
            if lost:
                return MISSING_MARKERS, f"no foot on the plate and {'/'.join(lost)} foot markers missing"
            return NO_FOOT, f"no foot marker low and slow within {cfg.margin_m} m of the plate"
        if len(near) == 2:
            with np.errstate(all="ignore"):
                med = [float(np.nanmedian(np.where(on_near[f], dist[f], np.nan))) for f in (0, 1)]
            if abs(med[0] - med[1]) < cfg.tie_m:
                return CONFLICT, f"both feet within the margin (median distance {med[0]:.3f}/{med[1]:.3f} m)"
            foot = int(np.argmin(med))
        else:
            foot = near[0]
        how = f"within {cfg.margin_m} m of the footprint"
    other = 1 - foot
    if not usable[other] or visible[other].mean() < 0.5:
        return MISSING_MARKERS, (f"{SIDES[foot]} foot {how} but {SIDES[other]} foot markers missing for "
                                 f"{1 - visible[other].mean():.0%} of the interval: not assigned")
    return foot, f"{SIDES[foot]} foot {how} ({int(n_in[foot])}/{n} frames inside)"


def assign_plates(plates: list[PlateLoad] | tuple[PlateLoad, ...], ground_points_m: np.ndarray, fps: float,
                  usable: tuple[bool, bool] = (True, True), cfg: FootConfig = FootConfig()
                  ) -> tuple[np.ndarray, tuple[StanceInterval, ...], np.ndarray, np.ndarray]:
    """Assign each plate's loaded intervals to a foot.

    ``ground_points_m`` (N, 2, K, 3): the heel/toe markers of (left, right), NaN where missing.
    Returns (assignment (N, P) int8, intervals, on_any_plate (N, 2) bool, grounded (N, 2) bool).
    """
    pts = np.asarray(ground_points_m, dtype=float)
    n, _, k, _ = pts.shape
    speed = horizontal_speed(pts.reshape(n, 2 * k, 3), fps).reshape(n, 2, k)
    with np.errstate(invalid="ignore"):
        slow = speed < cfg.max_speed_m_s
    visible = np.isfinite(pts).all(axis=-1).any(axis=-1)  # (N, 2)
    code = np.full((n, len(plates)), UNLOADED, dtype=np.int8)
    on_any = np.zeros((n, 2), dtype=bool)
    grounded = np.zeros((n, 2), dtype=bool)
    intervals: list[StanceInterval] = []
    for j, pl in enumerate(plates):
        surf_z = float(np.asarray(pl.centre_m)[2])
        with np.errstate(invalid="ignore"):
            low = (pts[..., 2] - surf_z) < cfg.max_height_m
        ok = low & slow  # (N, 2, K)
        grounded |= ok.any(axis=-1)
        dist = footprint_distance(pts[..., :2], pl.corners_m)  # (N, 2, K)
        dist_ok = np.where(ok, dist, np.inf)
        dmin = dist_ok.min(axis=-1)  # (N, 2)
        on_in = dmin <= 1e-9
        on_near = dmin <= cfg.margin_m
        on_any |= on_near
        fz = np.asarray(pl.force_n, dtype=float)[:, 2]
        with np.errstate(invalid="ignore"):
            loaded = fz > cfg.threshold_n
        for a, b in _runs(loaded):
            c, why = _decide(on_in[a:b].T, on_near[a:b].T, dmin[a:b].T, visible[a:b].T, usable, cfg)
            code[a:b, j] = c
            intervals.append(StanceInterval(plate=j, start=a, stop=b, status=STATUS_NAMES[c],
                                            reason=f"plate {j + 1} frames {a}–{b - 1}: {why}"))
    return code, tuple(intervals), on_any, grounded


# --------------------------------------------------------------------------------------------- body mass
def estimate_body_mass(subject_mass_kg: float | None, total_fz_n: np.ndarray, both_on_plates: np.ndarray,
                       fps: float, cfg: FootConfig = FootConfig(), *, all_known: np.ndarray | None = None,
                       com_z_m: np.ndarray | None = None, height_m: float | None = None) -> tuple[float, str]:
    """(mass kg, source): file parameter (the gait fit instead where it contradicts it by > 5 %), else quiet
    standing, else (with ``com_z_m``, ``all_known`` and ``height_m``) the vertical Newton fit during gait
    (``pipeline.lab.body_mass``), else the default."""
    fz = np.asarray(total_fz_n, dtype=float)
    if subject_mass_kg is not None and np.isfinite(subject_mass_kg) and subject_mass_kg > 0:
        if com_z_m is not None and all_known is not None and height_m is not None:
            from pipeline.lab.body_mass import mass_from_gait, prefer_measured

            better = prefer_measured(float(subject_mass_kg), mass_from_gait(fz, all_known, com_z_m, fps, height_m))
            if better is not None:
                return better
        return float(subject_mass_kg), "file"
    w = max(round(cfg.quiet_min_s * fps), 3)
    if fz.shape[0] >= w:
        filled = np.where(np.isfinite(fz), fz, 0.0)
        mean = uniform_filter1d(filled, w, mode="nearest")
        std = np.sqrt(np.maximum(uniform_filter1d(filled ** 2, w, mode="nearest") - mean ** 2, 0.0))
        with np.errstate(invalid="ignore"):
            ok = (np.isfinite(fz) & (fz > 10 * cfg.threshold_n) & np.asarray(both_on_plates, bool)
                  & (std <= np.maximum(10.0, 0.02 * np.abs(mean))))
        runs = [(a, b) for a, b in _runs(ok) if b - a >= w]
        if runs:
            a, b = max(runs, key=lambda r: r[1] - r[0])
            return float(np.median(fz[a:b]) / G), f"quiet_standing (frames {a}–{b - 1})"
    if com_z_m is not None and all_known is not None and height_m is not None:
        from pipeline.lab.body_mass import mass_from_gait

        fit = mass_from_gait(fz, all_known, com_z_m, fps, height_m)
        if fit is not None:
            return fit[0], f"plates_gait (vertical Newton fit over {fit[1]} frames)"
    return float(cfg.default_body_mass_kg), "default"


# --------------------------------------------------------------------------------------------- main
def foot_grf(markers_m: np.ndarray, labels: tuple[str, ...] | list[str], plates: list[PlateLoad] | tuple[PlateLoad, ...],
             fps: float, *, subject_mass_kg: float | None = None, cfg: FootConfig = FootConfig(),
             skeleton_feet_m: np.ndarray | None = None, com_z_m: np.ndarray | None = None,
             height_m: float | None = None) -> FootGRF:
    """Per-foot and total ground reactions from canonical markers (N, M, 3) and plates (module docstring).

    ``skeleton_feet_m`` (N, 2, 3, 3): per side (left, right) the heel, toe and ankle points of the fitted
    skeleton in the markers' frame, m. A side without named heel/toe markers (cluster marker sets) uses
    them instead of being *missing*. ``com_z_m`` (N,) and ``height_m``: the fitted motion's centre-of-mass
    height and the subject's height, for the body mass during gait (``estimate_body_mass``).
    """
    markers_m = np.asarray(markers_m, dtype=float)
    n = markers_m.shape[0]
    fm = find_foot_markers(labels)
    from_skeleton = tuple(s in fm.missing and skeleton_feet_m is not None for s in SIDES)
    warnings = list(fm.warnings) + [m for s, m in fm.missing.items() if not from_skeleton[SIDES.index(s)]]
    usable = tuple(s not in fm.missing or from_skeleton[f] for f, s in enumerate(SIDES))
    heel = np.stack([_part_position(markers_m, fm.indices[s]["heel"]) for s in SIDES], axis=1)  # (N, 2, 3)
    toe = np.stack([_part_position(markers_m, fm.indices[s]["toe"]) for s in SIDES], axis=1)
    ankle = np.stack([_part_position(markers_m, fm.indices[s]["ankle"]) for s in SIDES], axis=1)
    for f, s in enumerate(SIDES):
        if from_skeleton[f]:
            sk_feet = np.asarray(skeleton_feet_m, dtype=float)
            heel[:, f], toe[:, f], ankle[:, f] = sk_feet[:, f, 0], sk_feet[:, f, 1], sk_feet[:, f, 2]
            warnings.append(f"{s} foot: no heel/toe markers; heel, toe and ankle of the fitted skeleton used")
    ground = np.stack([heel, toe], axis=2)  # (N, 2, 2, 3)
    floor_z = float(np.mean([np.asarray(p.centre_m)[2] for p in plates])) if plates else 0.0

    code, intervals, on_any, grounded = assign_plates(plates, ground, fps, usable, cfg)
    off_plate = grounded & ~on_any

    # Foot point: ankle if mapped, else heel–toe midpoint; projected onto the floor plane.
    point = np.empty((n, 2, 3))
    desc = []
    for f, s in enumerate(SIDES):
        if from_skeleton[f]:
            point[:, f] = ankle[:, f]
            desc.append(f"{s}: ankle joint of the fitted skeleton on the floor")
        elif fm.indices[s]["ankle"]:
            point[:, f] = ankle[:, f]
            desc.append(f"{s}: ankle {'+'.join(fm.labels[s]['ankle'])} on the floor")
        else:
            point[:, f] = 0.5 * (heel[:, f] + toe[:, f])
            desc.append(f"{s}: heel–toe midpoint on the floor")
    point[..., 2] = floor_z

    o = np.array([0.0, 0.0, floor_z])
    up = np.array([0.0, 0.0, 1.0])
    force = np.zeros((n, 2, 3))
    mom_o = np.zeros((n, 2, 3))
    unknown = np.zeros((n, 2), dtype=bool)
    tot_f = np.zeros((n, 3))
    tot_m = np.zeros((n, 3))
    for j, pl in enumerate(plates):
        F = np.asarray(pl.force_n, dtype=float)
        Mo = transfer_moment(pl.moment_centre_nm, pl.centre_m, o, F)
        tot_f += F
        tot_m += Mo
        for f in (0, 1):
            sel = code[:, j] == f
            force[sel, f] += F[sel]
            mom_o[sel, f] += Mo[sel]
        flagged = np.isin(code[:, j], (CONFLICT, NO_FOOT, MISSING_MARKERS))
        unknown |= flagged[:, None]
        unknown |= ~np.isfinite(F).all(axis=1)[:, None]
    unknown |= off_plate
    for f, s in enumerate(SIDES):
        if not usable[f]:
            unknown[:, f] = True
    force[unknown] = np.nan
    mom_o[unknown] = np.nan
    moment = transfer_moment(mom_o, o, point, force)
    cop = np.empty((n, 2, 3))
    free = np.empty((n, 2))
    for f in (0, 1):
        cop[:, f], free[:, f] = cop_and_free_moment(force[:, f], mom_o[:, f], o, up, cfg.threshold_n)
    tot_cop, tot_free = cop_and_free_moment(tot_f, tot_m, o, up, cfg.threshold_n)

    fz = force[..., 2]
    with np.errstate(invalid="ignore"):
        enter = fz > cfg.contact_on_n
        leave = ~(fz >= cfg.contact_off_n) & ~enter  # NaN leaves
    contact = hysteresis(enter, leave)

    both_on = on_any.all(axis=1) & ~off_plate.any(axis=1) if all(usable) else np.zeros(n, bool)
    all_known = np.isfinite(force).all(axis=(1, 2)) & ~off_plate.any(axis=1)
    mass, source = estimate_body_mass(subject_mass_kg, tot_f[:, 2], both_on, fps, cfg, all_known=all_known,
                                      com_z_m=com_z_m, height_m=height_m)
    for iv in intervals:
        if iv.status not in SIDES:
            warnings.append(iv.reason)
    return FootGRF(force_n=force, moment_nm=moment, foot_point_m=point, foot_point="; ".join(desc), cop_m=cop,
                   free_moment_nm=free, contact=contact, off_plate=off_plate, assignment=code,
                   conflict=code == CONFLICT, intervals=intervals, total_force_n=tot_f, total_moment_nm=tot_m,
                   total_point_m=o, total_cop_m=tot_cop, total_free_moment_nm=tot_free, floor_z_m=floor_z,
                   markers=fm, body_mass_kg=mass, body_mass_source=source, warnings=tuple(warnings))
