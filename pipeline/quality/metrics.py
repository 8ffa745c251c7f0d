"""Per-sequence data-quality metrics: a registry of providers and a metric catalog.

A *provider* is a pure function ``f(arrays, meta) -> dict[str, float]`` registered with
``@metric_provider(name, requires=(array names...), metrics={metric: (unit, description)})``.
``arrays`` is a read-only mapping of one sequence's arrays, named as in the store schemas
(``time_s``, ``joint_pos_m`` (N, 24, 3), ``contact`` (N, 4), ``joint_pos_fit_rmse_m`` (W,), and
when a stage provides them ``grf_n`` (N, 2, 3), ``cop_m``, ``joint_torque_nm``, ``residual_wrench``
(N, 6), ``mpjpe_m`` (N,), ``reset`` (N,) ...); ``meta`` holds the per-sequence values (``seq_id``,
``source``, ``subject``, ``fps_hz``, ``source_fps_hz``, ``mass_kg``, ``height_m``, ``duration_s``,
...). ``compute_metrics`` runs every provider whose required arrays (and meta keys) are present
and skips the others, so simulation and force-plate metrics appear by themselves once a stage
writes those arrays: a new metric needs a provider and its catalog entries (declared in the
decorator), nothing else — flags (``flags.py``) and the report (``report.py``) are driven by the
catalog.

*Derived arrays* (``@derived_array``) are computed on first access when a sequence lacks them,
e.g. ``foot_points_m`` (the four sole points) from ``joint_rot_aa_rad`` + ``joint_pos_m`` + the
subject's height when metrics are recomputed from a store (the build passes the exact ones).

All metrics are floats in the unit of their catalog entry; NaN means "not measurable for this
sequence" (e.g. no contact frames). Units follow docs/conventions.md; a few are scaled for
reading (``mm``, ``BW`` = body weight ``mass_kg · 9.81 N``, ``1`` = fraction or count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import markers as mk
from pipeline import rotations as rot
from pipeline import skeleton as sk
# from the records, not ``pipeline.lab.measured``: that module costs ≈ 1.3 s of imports (SciPy's
# signal package, the marker IK) in every process that only reads metrics, such as the report's
from pipeline.records import GRF_SOURCE_SIMULATION

G_MPS2 = 9.81
"""Gravitational acceleration used for body weight, m/s²."""

FOOT_MARKERS: tuple[str, ...] = ("LHEE", "LTOE", "RHEE", "RTOE")
"""Foot markers matching the sole points (left heel, left toe, right heel, right toe)."""

GROUND_MARKERS: tuple[str, ...] = ("LHEE", "LTOE", "LMT5", "RHEE", "RTOE", "RMT5")
"""Markers on the soles' level used for ground penetration (plus the sole points)."""

SKATE_SPEED_MPS = 0.1
"""A sole point in contact moving faster than this horizontally counts as skating, m/s."""

LOADED_FORCE_N = 20.0
"""A foot carries load when its vertical GRF exceeds this, N (COP checks use loaded frames)."""

ZERO_FORCE_N = 10.0
"""Total vertical GRF below this is a zero-force frame, N."""

NE_SMOOTH_FRAMES = 5
"""Moving-average length (frames) applied to force and mass × acceleration before comparing them."""

FOOT_HALF_WIDTH_M = 0.06
"""Radius around the heel–toe line of a foot inside which the COP counts as under the foot, m."""

MAIN_JOINTS: tuple[str, ...] = (
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "spine1",
)
"""Joints shown in per-sequence plots (angles and torques)."""


# --- catalog -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """One catalog entry.

    Attributes:
        name: column name in ``metrics.parquet``.
        unit: display unit (``s``, ``Hz``, ``m``, ``mm``, ``m/s``, ``rad/s``, ``rad/s²``, ``BW``, ``1`` ...).
        description: what it measures, one sentence.
        provider: name of the provider computing it.
        stage: pipeline stage it reports on (``source``, ``kinematics``, ``contact``, ``fit``,
            ``simulation``, ``force_plates``, ``torques``).
        worse: ``"high"`` if larger values are worse, ``"low"`` if smaller are, ``""`` if neither.
    """

    name: str
    unit: str
    description: str
    provider: str
    stage: str
    worse: str = "high"


@dataclass(frozen=True)
class Provider:
    """A registered metric provider (see ``metric_provider``)."""

    name: str
    func: Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], dict[str, float]]
    requires: tuple[str, ...]
    requires_meta: tuple[str, ...]
    stage: str
    metrics: tuple[str, ...]


PROVIDERS: dict[str, Provider] = {}
"""Registered providers by name, in registration order."""

CATALOG: dict[str, MetricSpec] = {}
"""Every metric any provider can produce: name → ``MetricSpec``."""


def metric_provider(
    name: str,
    requires: Iterable[str] = (),
    metrics: Mapping[str, tuple[str, str] | tuple[str, str, str]] | None = None,
    stage: str = "kinematics",
    requires_meta: Iterable[str] = (),
) -> Callable:
    """Register ``func(arrays, meta) -> dict[str, float]`` as a metric provider.

    Args:
        name: unique provider name.
        requires: array names that must all be present (or derivable) for it to run.
        metrics: the metrics it returns: ``{name: (unit, description[, worse])}``; they are added
            to ``CATALOG``. A provider may return a subset (missing ones become NaN).
        stage: pipeline stage the metrics report on (groups them in the report).
        requires_meta: ``meta`` keys that must be present and not None.
    """
    metrics = dict(metrics or {})

    def register(func: Callable) -> Callable:
        if name in PROVIDERS:
            raise ValueError(f"metric provider {name!r} is already registered")
        for mname, spec in metrics.items():
            if mname in CATALOG and CATALOG[mname].provider != name:
                raise ValueError(f"metric {mname!r} is already provided by {CATALOG[mname].provider!r}")
            unit, descr, *rest = spec
            CATALOG[mname] = MetricSpec(mname, unit, descr, name, stage, rest[0] if rest else "high")
        PROVIDERS[name] = Provider(name, func, tuple(requires), tuple(requires_meta), stage, tuple(metrics))
        return func

    return register


def unregister_provider(name: str) -> None:
    """Remove a provider and its catalog entries (tests, plug-ins)."""
    prov = PROVIDERS.pop(name)
    for m in prov.metrics:
        CATALOG.pop(m, None)


# --- derived arrays and the read-only view -------------------------------------------------------

_DERIVED: dict[str, tuple[Callable, tuple[str, ...], tuple[str, ...]]] = {}


def derived_array(name: str, requires: Iterable[str], requires_meta: Iterable[str] = ()) -> Callable:
    """Register ``func(arrays, meta) -> np.ndarray`` computing array ``name`` when it is absent."""

    def register(func: Callable) -> Callable:
        _DERIVED[name] = (func, tuple(requires), tuple(requires_meta))
        return func

    return register


def _readonly(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.flags.writeable:
        arr = arr.view()
        arr.flags.writeable = False
    return arr


class ArrayView(Mapping):
    """Read-only mapping over one sequence's arrays; derived arrays are computed on demand."""

    def __init__(self, arrays: Mapping[str, Any], meta: Mapping[str, Any]):
        self._arrays = {k: v for k, v in arrays.items() if v is not None}
        self._meta = meta
        self._cache: dict[str, np.ndarray] = {}

    def _derivable(self, name: str, seen: frozenset = frozenset()) -> bool:
        if name not in _DERIVED or name in seen:
            return False
        _, req, req_meta = _DERIVED[name]
        return all(self._has(r, seen | {name}) for r in req) and all(
            self._meta.get(k) is not None for k in req_meta
        )

    def _has(self, name: str, seen: frozenset = frozenset()) -> bool:
        return name in self._arrays or name in self._cache or self._derivable(name, seen)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._has(name)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._cache:
            return self._cache[name]
        if name in self._arrays:
            arr = _readonly(self._arrays[name])
        elif self._derivable(name):
            arr = _readonly(_DERIVED[name][0](self, self._meta))
        else:
            raise KeyError(name)
        self._cache[name] = arr
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


@derived_array("foot_points_m", requires=("joint_rot_aa_rad", "joint_pos_m"), requires_meta=("height_m",))
def _derive_foot_points(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> np.ndarray:
    """Sole points from stored rotations and joint positions on the anthropometric skeleton of the
    subject's height (exact for ``seq_skeleton == 'anthropometric'``, approximate otherwise)."""
    aa = np.asarray(arrays["joint_rot_aa_rad"], dtype=np.float64)
    local = rot.aa_to_rotmat(np.nan_to_num(aa))
    glob = np.empty_like(local)
    glob[:, 0] = local[:, 0]
    for j in range(1, sk.N_JOINTS):
        glob[:, j] = glob[:, sk.PARENTS[j]] @ local[:, j]
    skel = sk.anthropometric_skeleton(float(meta["height_m"]))
    return sk.sole_points(glob, np.asarray(arrays["joint_pos_m"], dtype=np.float64), skel)


# --- running providers ---------------------------------------------------------------------------


def applicable_providers(arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> list[Provider]:
    """Providers whose required arrays and meta keys are all available for this sequence."""
    view = arrays if isinstance(arrays, ArrayView) else ArrayView(arrays, meta)
    return [
        p for p in PROVIDERS.values()
        if all(r in view for r in p.requires) and all(meta.get(k) is not None for k in p.requires_meta)
    ]


def compute_metrics(arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, float]:
    """Every applicable provider's metrics for one sequence, ``{metric: float}`` (NaN if not measurable).

    ``arrays`` is never modified (providers see read-only views). A provider that raises is a bug
    in the provider; the exception propagates with the provider's name.
    """
    view = ArrayView(arrays, meta)
    out: dict[str, float] = {}
    with np.errstate(all="ignore"):
        for prov in applicable_providers(view, meta):
            try:
                values = prov.func(view, meta)
            except Exception as exc:
                raise RuntimeError(f"metric provider {prov.name!r} failed on {meta.get('seq_id')}: {exc}") from exc
            for m in prov.metrics:
                v = values.get(m, math.nan)
                out[m] = float(v) if v is not None else math.nan
            for m, v in values.items():  # undeclared extras are kept but not catalogued
                out.setdefault(m, float(v))
    return out


# --- helpers -------------------------------------------------------------------------------------


def _fps(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> float:
    fps = meta.get("fps_hz")
    if fps:
        return float(fps)
    if arrays is not None and "time_s" in arrays and len(arrays["time_s"]) > 1:
        return float(1.0 / np.nanmedian(np.diff(arrays["time_s"])))
    return 30.0


def _body_weight_n(meta: Mapping[str, Any]) -> float:
    return float(meta["mass_kg"]) * G_MPS2


def _nanmax(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmax(x)) if x.size and np.isfinite(x).any() else math.nan


def _nanpct(x: np.ndarray, q: float) -> float:
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else math.nan


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D bool array."""
    if not mask.any():
        return 0
    m = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max())


def _marker_index(names: Iterable[str]) -> list[int]:
    return [mk.MARKER_NAMES.index(n) for n in names]


# --- providers: source and sequence --------------------------------------------------------------


@metric_provider(
    "sequence", requires=("time_s",), stage="source",
    metrics={
        "duration_s": ("s", "Duration of the sequence at the canonical rate.", ""),
        "n_frames": ("1", "Number of canonical frames.", ""),
        "source_fps_hz": ("Hz", "Frame rate of the source file.", ""),
    },
)
def _sequence(arrays, meta):
    n = int(len(arrays["time_s"]))
    fps = _fps(meta, arrays)
    return {
        "duration_s": float(meta.get("duration_s") or n / fps),
        "n_frames": float(n),
        "source_fps_hz": float(meta.get("source_fps_hz") or math.nan),
    }


_FRAME_FLOAT_ARRAYS = ("root_pos_m", "joint_rot_aa_rad", "joint_pos_m", "marker_pos_m")


@metric_provider(
    "gaps", requires=("time_s",), stage="source",
    metrics={
        "nan_frame_frac": ("1", "Fraction of frames with a NaN in any kinematic array (root, joints, markers)."),
        "gap_max_s": ("s", "Longest run of frames with a NaN in any kinematic array."),
        "marker_nan_frac": ("1", "Fraction of marker samples (frame × marker) with a NaN coordinate."),
        "source_nan_frac": ("1", "Fraction of source samples that were missing before gap filling (from the source reader, when it reports it)."),
    },
)
def _gaps(arrays, meta):
    n = len(arrays["time_s"])
    bad = np.zeros(n, dtype=bool)
    for name in _FRAME_FLOAT_ARRAYS:
        if name in arrays:
            a = np.asarray(arrays[name]).reshape(n, -1)
            bad |= ~np.isfinite(a).all(axis=1)
    out = {
        "nan_frame_frac": float(bad.mean()) if n else math.nan,
        "gap_max_s": _longest_run(bad) / _fps(meta, arrays),
        "source_nan_frac": float(meta["source_nan_frac"]) if meta.get("source_nan_frac") is not None else math.nan,
    }
    if "marker_pos_m" in arrays:
        m = np.asarray(arrays["marker_pos_m"])
        out["marker_nan_frac"] = float((~np.isfinite(m).all(axis=-1)).mean()) if m.size else math.nan
    return out


# --- providers: kinematics -----------------------------------------------------------------------


@metric_provider(
    "joint_angular", requires=("joint_rot_aa_rad",),
    metrics={
        "joint_ang_vel_max_rad_s": ("rad/s", "Largest joint angular speed (relative rotation between consecutive frames, any joint)."),
        "joint_ang_vel_p99_rad_s": ("rad/s", "99th percentile of joint angular speeds (all joints and frames)."),
        "joint_ang_acc_max_rad_s2": ("rad/s²", "Largest joint angular acceleration (finite difference of angular velocity vectors)."),
    },
)
def _joint_angular(arrays, meta):
    aa = np.asarray(arrays["joint_rot_aa_rad"], dtype=np.float64)
    if aa.shape[0] < 2:
        return {}
    fps = _fps(meta, arrays)
    q = rot.aa_to_quat(aa)  # (N, J, 4)
    dq = rot.quat_mul(rot.quat_conj(q[:-1]), q[1:])  # body-frame increment
    dq = np.where(dq[..., :1] < 0, -dq, dq)
    w_vec = rot._quat_to_aa_raw(dq) * fps  # (N-1, J, 3) rad/s
    speed = np.linalg.norm(w_vec, axis=-1)
    out = {"joint_ang_vel_max_rad_s": _nanmax(speed), "joint_ang_vel_p99_rad_s": _nanpct(speed, 99)}
    if w_vec.shape[0] >= 2:
        acc = np.linalg.norm(np.diff(w_vec, axis=0), axis=-1) * fps
        out["joint_ang_acc_max_rad_s2"] = _nanmax(acc)
    return out


@metric_provider(
    "glitch", requires=("joint_pos_m",),
    metrics={
        "joint_jump_max_m": ("m", "Largest frame-to-frame displacement of any joint."),
        "joint_spike_max_m": ("m", "Largest one-frame spike of any joint: |x[t] − (x[t−1] + x[t+1]) / 2| (a one-frame glitch of d metres gives d)."),
        "joint_lin_acc_max_m_s2": ("m/s²", "Largest joint linear acceleration (second difference)."),
    },
)
def _glitch(arrays, meta):
    x = np.asarray(arrays["joint_pos_m"], dtype=np.float64)
    if x.shape[0] < 2:
        return {}
    fps = _fps(meta, arrays)
    out = {"joint_jump_max_m": _nanmax(np.linalg.norm(np.diff(x, axis=0), axis=-1))}
    if x.shape[0] >= 3:
        spike = np.linalg.norm(x[1:-1] - 0.5 * (x[:-2] + x[2:]), axis=-1)
        out["joint_spike_max_m"] = _nanmax(spike)
        out["joint_lin_acc_max_m_s2"] = 2.0 * out["joint_spike_max_m"] * fps * fps
    return out


@metric_provider(
    "marker_cloud", requires=("marker_pos_m",),
    metrics={
        "marker_cloud_dist_max_m": ("m", "Largest distance of any marker from the per-frame median of the marker cloud (AddBiomechanics input outlier check)."),
    },
)
def _marker_cloud(arrays, meta):
    m = np.asarray(arrays["marker_pos_m"], dtype=np.float64)
    if not m.size:
        return {}
    finite = np.isfinite(m).all()
    centre = np.median(m, axis=1, keepdims=True) if finite else np.nanmedian(m, axis=1, keepdims=True)
    return {"marker_cloud_dist_max_m": _nanmax(np.linalg.norm(m - centre, axis=-1))}


@metric_provider(
    "marker_fit", requires=("marker_residual_m",),
    metrics={
        "marker_rms_m": ("m", "RMS distance between measured markers and the fitted model's markers (from a marker-fitting source)."),
        "marker_residual_max_m": ("m", "Largest single marker residual."),
    },
)
def _marker_fit(arrays, meta):
    r = np.asarray(arrays["marker_residual_m"], dtype=np.float64)
    fin = r[np.isfinite(r)]
    if not fin.size:
        return {}
    return {"marker_rms_m": float(np.sqrt(np.mean(fin**2))), "marker_residual_max_m": float(np.abs(fin).max())}


# --- providers: contact --------------------------------------------------------------------------


@metric_provider(
    "foot_skating", requires=("contact", "foot_points_m"), stage="contact",
    metrics={
        "foot_skate_p95_m_s": ("m/s", "95th percentile of the horizontal speed of sole points inside contact (frames in contact with both neighbours)."),
        "foot_skate_max_m_s": ("m/s", "Largest horizontal speed of a sole point inside contact."),
        "foot_skate_frac": ("1", f"Fraction of in-contact sole-point frames sliding faster than {SKATE_SPEED_MPS} m/s."),
        "contact_frac": ("1", "Fraction of frames with at least one sole point in contact.", ""),
    },
)
def _foot_skating(arrays, meta):
    c = np.asarray(arrays["contact"]).astype(bool)  # (N, 4)
    p = np.asarray(arrays["foot_points_m"], dtype=np.float64)[..., :2]  # (N, 4, 2)
    out = {"contact_frac": float(c.any(axis=1).mean()) if len(c) else math.nan}
    if len(c) < 3:
        return out
    fps = _fps(meta, arrays)
    inside = c[:-2] & c[1:-1] & c[2:]
    speed = np.linalg.norm(p[2:] - p[:-2], axis=-1) * (fps / 2.0)  # central differences, (N-2, 4)
    v = speed[inside]
    v = v[np.isfinite(v)]
    if v.size:
        out.update(
            foot_skate_p95_m_s=float(np.percentile(v, 95)),
            foot_skate_max_m_s=float(v.max()),
            foot_skate_frac=float((v > SKATE_SPEED_MPS).mean()),
        )
    return out


@metric_provider(
    "ground", requires=("foot_points_m",), stage="contact",
    metrics={
        "ground_penetration_m": ("m", "Depth of the lowest sole point or foot marker below the ground plane z = 0 (0 if none)."),
        "foot_float_m": ("m", "Height of the lowest sole point over the whole sequence (feet never reach the ground if large)."),
    },
)
def _ground(arrays, meta):
    z = np.asarray(arrays["foot_points_m"], dtype=np.float64)[..., 2]
    lowest = float(np.nanmin(z)) if np.isfinite(z).any() else math.nan
    zmin = lowest
    if "marker_pos_m" in arrays:
        mz = np.asarray(arrays["marker_pos_m"])[:, _marker_index(GROUND_MARKERS), 2]
        if np.isfinite(mz).any():
            zmin = min(zmin, float(np.nanmin(mz))) if math.isfinite(zmin) else float(np.nanmin(mz))
    return {"ground_penetration_m": max(0.0, -zmin) if math.isfinite(zmin) else math.nan, "foot_float_m": lowest}


# --- providers: polynomial fit -------------------------------------------------------------------


@metric_provider(
    "fit_pos", requires=("joint_pos_fit_rmse_m",), stage="fit",
    metrics={
        "pos_fit_rmse_max_m": ("m", "Largest RMS residual of the cubic joint-position window fits."),
        "pos_fit_rmse_p50_m": ("m", "Median RMS residual of the cubic joint-position window fits."),
    },
)
def _fit_pos(arrays, meta):
    r = np.asarray(arrays["joint_pos_fit_rmse_m"], dtype=np.float64)
    return {"pos_fit_rmse_max_m": _nanmax(r), "pos_fit_rmse_p50_m": _nanpct(r, 50)}


@metric_provider(
    "fit_rot", requires=("joint_rot_fit_rmse_rad",), stage="fit",
    metrics={
        "rot_fit_rmse_max_rad": ("rad", "Largest RMS residual of the cubic joint-rotation window fits."),
        "rot_fit_rmse_p50_rad": ("rad", "Median RMS residual of the cubic joint-rotation window fits."),
    },
)
def _fit_rot(arrays, meta):
    r = np.asarray(arrays["joint_rot_fit_rmse_rad"], dtype=np.float64)
    return {"rot_fit_rmse_max_rad": _nanmax(r), "rot_fit_rmse_p50_rad": _nanpct(r, 50)}


# --- providers: simulation (imitation engine) ----------------------------------------------------


@metric_provider(
    "sim_resets", requires=("reset",), stage="simulation",
    metrics={
        "sim_resets": ("1", "Number of simulation resets (the policy fell or drifted and the character was reset to the reference)."),
        "sim_success": ("1", "1 if the imitation ran through without a reset (and MPJPE stayed below 0.5 m when known), else 0 (PHC/ImDy success).", "low"),
    },
)
def _sim_resets(arrays, meta):
    r = np.asarray(arrays["reset"]).astype(bool)
    ok = not r.any()
    if "mpjpe_m" in arrays:
        mp = np.asarray(arrays["mpjpe_m"], dtype=np.float64)
        ok = ok and not (np.nanmax(mp) > 0.5 if np.isfinite(mp).any() else False)
    return {"sim_resets": float(r.sum()), "sim_success": 1.0 if ok else 0.0}


@metric_provider(
    "mpjpe", requires=("mpjpe_m",), stage="simulation",
    metrics={
        "mpjpe_p50_mm": ("mm", "Median per-frame mean joint position error of the simulated character vs the reference."),
        "mpjpe_p95_mm": ("mm", "95th percentile of the per-frame MPJPE."),
        "mpjpe_max_mm": ("mm", "Largest per-frame MPJPE (PHC counts > 500 mm as a failure)."),
    },
)
def _mpjpe(arrays, meta):
    e = np.asarray(arrays["mpjpe_m"], dtype=np.float64) * 1000.0
    return {"mpjpe_p50_mm": _nanpct(e, 50), "mpjpe_p95_mm": _nanpct(e, 95), "mpjpe_max_mm": _nanmax(e)}


@metric_provider(
    "residual_wrench", requires=("residual_wrench",), requires_meta=("mass_kg",), stage="simulation",
    metrics={
        "residual_force_bw_p50": ("BW", "Median root residual force |F_res| / body weight."),
        "residual_force_bw_p95": ("BW", "95th percentile of the root residual force / body weight."),
        "residual_force_le5pct_frac": ("1", "Fraction of frames with root residual force ≤ 5 % of body weight (Hicks et al. 2015).", "low"),
        "residual_moment_bwh_p95": ("BW·H", "95th percentile of the root residual moment / (body weight × height)."),
    },
)
def _residual_wrench(arrays, meta):
    w = np.asarray(arrays["residual_wrench"], dtype=np.float64)  # (N, 6): force N, moment N·m
    bw = _body_weight_n(meta)
    f = np.linalg.norm(w[:, :3], axis=-1) / bw
    out = {
        "residual_force_bw_p50": _nanpct(f, 50),
        "residual_force_bw_p95": _nanpct(f, 95),
        "residual_force_le5pct_frac": float(np.mean(f[np.isfinite(f)] <= 0.05)) if np.isfinite(f).any() else math.nan,
    }
    if w.shape[1] >= 6 and meta.get("height_m"):
        mom = np.linalg.norm(w[:, 3:6], axis=-1) / (bw * float(meta["height_m"]))
        out["residual_moment_bwh_p95"] = _nanpct(mom, 95)
    return out


@metric_provider(
    "addbiomechanics_results", requires=("addb_marker_rms_m",), stage="source",
    metrics={
        "addb_marker_rms_m": ("m", "AddBiomechanics' own marker RMS error for the trial (its last processing pass, median over the kept frames)."),
        "addb_linear_residual_n": ("N", "AddBiomechanics' own root residual force for the trial (its last processing pass, median over the kept frames)."),
        "addb_angular_residual_nm": ("N·m", "AddBiomechanics' own root residual moment for the trial (its last processing pass, median over the kept frames)."),
    },
)
def _addbiomechanics_results(arrays, meta):
    """Per-trial figures an AddBiomechanics ``.b3d`` file carries (0-d arrays from the side-car)."""
    return {k: float(np.asarray(arrays[k])) for k in ("addb_marker_rms_m", "addb_linear_residual_n",
                                                      "addb_angular_residual_nm") if k in arrays}


@metric_provider(
    "dynamics_pass", requires=("dyn_root_correction_m",), stage="simulation",
    metrics={
        "dyn_root_correction_rms_m": ("m", "RMS of the pelvis translation the dynamics pass added to make the reference dynamically consistent."),
        "dyn_root_correction_max_m": ("m", "Largest pelvis translation the dynamics pass added (how far it moved the motion)."),
    },
)
def _dynamics_pass(arrays, meta):
    c = np.linalg.norm(np.asarray(arrays["dyn_root_correction_m"], dtype=np.float64), axis=-1)
    return {"dyn_root_correction_rms_m": float(np.sqrt(np.nanmean(c**2))), "dyn_root_correction_max_m": _nanmax(c)}


@metric_provider(
    "swing_clearance", requires=("swing_penetration_m",), stage="simulation",
    metrics={
        "swing_penetration_max_m": ("m", "Deepest a simulated swing foot went below the floor while its floor collisions were off (SimConfig.swing_clearance)."),
    },
)
def _swing_clearance(arrays, meta):
    return {"swing_penetration_max_m": _nanmax(np.asarray(arrays["swing_penetration_m"], dtype=np.float64))}


# --- providers: ground reaction (force plates or simulation) -------------------------------------

# de Leva (1996) segment masses (fraction of body mass) between SMPL joints: (proximal, distal, fraction,
# COM position from the proximal joint as a fraction of the segment). Head+neck and hands are lumped.
_SEGMENTS: tuple[tuple[int, int, float, float], ...] = (
    (0, 3, 0.1117, 0.5), (3, 9, 0.1633, 0.5), (9, 15, 0.0694, 0.5),  # pelvis, abdomen+thorax, head
    (1, 4, 0.1416, 0.41), (2, 5, 0.1416, 0.41), (4, 7, 0.0433, 0.44), (5, 8, 0.0433, 0.44),
    (7, 10, 0.0137, 0.44), (8, 11, 0.0137, 0.44),
    (16, 18, 0.0271, 0.58), (17, 19, 0.0271, 0.58), (18, 20, 0.0162, 0.46), (19, 21, 0.0162, 0.46),
    (20, 22, 0.0061, 0.79), (21, 23, 0.0061, 0.79),
)


def centre_of_mass(joint_pos_m: np.ndarray) -> np.ndarray:
    """(N, 3) approximate whole-body centre of mass from SMPL joint positions (de Leva 1996 fractions)."""
    x = np.asarray(joint_pos_m, dtype=np.float64)
    total = sum(s[2] for s in _SEGMENTS)
    com = np.zeros(x.shape[:1] + (3,))
    for a, b, frac, r in _SEGMENTS:
        com += frac * (x[:, a] + r * (x[:, b] - x[:, a]))
    return com / total


@metric_provider(
    "grf", requires=("grf_n",), requires_meta=("mass_kg",), stage="force_plates",
    metrics={
        "grf_peak_bw": ("BW", "Peak total vertical ground reaction force / body weight (walking ≈ 1.2, running 2.5–3, > 5 implausible)."),
        "grf_foot_max_n": ("N", "Largest force magnitude on one foot (AddBiomechanics flags plate forces > 2500 N)."),
        "zero_force_frac": ("1", f"Fraction of frames with total vertical GRF < {ZERO_FORCE_N:g} N (flight, or force missing).", ""),
    },
)
def _grf(arrays, meta):
    f = np.asarray(arrays["grf_n"], dtype=np.float64)  # (N, 2, 3)
    fz = np.nansum(f[..., 2], axis=1)
    # a foot's force may be unknown (NaN: measured data where no plate measured it): the total is
    # known only where both feet are; the peak uses whatever is known
    known = np.isfinite(f[..., 2]).all(axis=1)
    return {
        "grf_peak_bw": _nanmax(fz) / _body_weight_n(meta),
        "grf_foot_max_n": _nanmax(np.linalg.norm(f, axis=-1)),
        "zero_force_frac": float(np.mean(fz[known] < ZERO_FORCE_N)) if known.any() else math.nan,
    }


@metric_provider(
    "grf_contact", requires=("grf_n", "contact"), stage="force_plates",
    metrics={
        "zero_force_in_contact_frac": ("1", f"Fraction of frames with a foot in kinematic contact but total vertical GRF < {ZERO_FORCE_N:g} N (AddBiomechanics: contact without force)."),
        "force_without_contact_frac": ("1", f"Fraction of frames where a foot carries > {LOADED_FORCE_N:g} N but none of its sole points is in contact (simulated passes: forces are interval means t→t+1, so at neither end of the interval)."),
    },
)
def _grf_contact(arrays, meta):
    f = np.asarray(arrays["grf_n"], dtype=np.float64)
    c = np.asarray(arrays["contact"]).astype(bool)
    fz_total = np.sum(f[..., 2], axis=1)  # NaN where a foot's force is unknown (measured data)
    foot_contact = np.stack([c[:, 0] | c[:, 1], c[:, 2] | c[:, 3]], axis=1)  # (N, 2)
    if meta.get("grf_source") == GRF_SOURCE_SIMULATION:
        # simulated forces are means over t_i → t_{i+1}, the labels samples at t_i
        # (process.sample_contact): a touch-down interval has its contact at its far end
        foot_contact = foot_contact.copy()
        foot_contact[:-1] |= foot_contact[1:]
    loaded = f[..., 2] > LOADED_FORCE_N
    n = len(fz_total)
    if not n:
        return {}
    known = np.isfinite(fz_total)  # frames where the total is unknown cannot show "contact without force"
    return {
        "zero_force_in_contact_frac": float(np.mean(foot_contact.any(axis=1) & known & (np.nan_to_num(fz_total) < ZERO_FORCE_N))),
        "force_without_contact_frac": float(np.mean((loaded & ~foot_contact).any(axis=1))),
    }


def _dist_to_segments(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Horizontal distance of points p (..., 2) from segments a–b (..., 2)."""
    ab = b - a
    denom = np.maximum(np.sum(ab * ab, axis=-1), 1e-12)
    t = np.clip(np.sum((p - a) * ab, axis=-1) / denom, 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


@metric_provider(
    "cop", requires=("grf_n", "cop_m", "foot_points_m"), stage="force_plates",
    metrics={
        "cop_outside_foot_frac": ("1", f"Fraction of loaded foot-frames whose centre of pressure lies > {FOOT_HALF_WIDTH_M} m from the foot's heel–toe line."),
        "cop_outside_foot_max_m": ("m", "Largest distance of the centre of pressure outside the foot region."),
    },
)
def _cop(arrays, meta):
    f = np.asarray(arrays["grf_n"], dtype=np.float64)
    cop = np.asarray(arrays["cop_m"], dtype=np.float64)[..., :2]  # (N, 2, 2)
    fp = np.asarray(arrays["foot_points_m"], dtype=np.float64)[..., :2]  # (N, 4, 2)
    heel, toe = fp[:, [0, 2]], fp[:, [1, 3]]
    d = _dist_to_segments(cop, heel, toe) - FOOT_HALF_WIDTH_M
    loaded = (f[..., 2] > LOADED_FORCE_N) & np.isfinite(d)
    if not loaded.any():
        return {"cop_outside_foot_frac": math.nan, "cop_outside_foot_max_m": math.nan}
    dl = d[loaded]
    return {"cop_outside_foot_frac": float(np.mean(dl > 0)), "cop_outside_foot_max_m": float(max(0.0, dl.max()))}


@metric_provider(
    "grf_completeness", requires=("grf_incomplete_frames",), stage="force_plates",
    metrics={
        "grf_incomplete_frames": ("1", "Frames whose known per-foot forces miss the vertical Newton model by > 0.25 BW (a foot partly off a plate or on the unmeasured floor); they are stored as unknown. NaN: not checked (the 6 Hz model misses the whole trial, e.g. sprinting at 30 FPS)."),
    },
)
def _grf_completeness(arrays, meta):
    """Count from ``pipeline.lab.completeness.mask_incomplete`` (a 0-d array from the measured side-car)."""
    return {"grf_incomplete_frames": float(np.asarray(arrays["grf_incomplete_frames"]))}


@metric_provider(
    "plate_assignment", requires=("plate_foot_conflict",), stage="force_plates",
    metrics={
        "plate_conflict_frac": ("1", "Fraction of frames where a force plate could not be assigned to one foot (both feet or neither on a loaded plate)."),
    },
)
def _plate_assignment(arrays, meta):
    c = np.asarray(arrays["plate_foot_conflict"]).astype(bool)
    c = c.reshape(len(c), -1).any(axis=1) if c.ndim > 1 else c
    return {"plate_conflict_frac": float(c.mean()) if len(c) else math.nan}


@metric_provider(
    "newton_euler", requires=("grf_n", "joint_pos_m"), requires_meta=("mass_kg",), stage="force_plates",
    metrics={
        "newton_euler_imbalance_bw_p50": ("BW", "Median |ΣGRF − m(a_com + g)| / body weight, both smoothed over 5 frames (COM from joint positions with de Leva segment masses)."),
        "newton_euler_imbalance_bw_p95": ("BW", "95th percentile of the Newton–Euler force imbalance / body weight."),
    },
)
def _newton_euler(arrays, meta):
    from scipy.ndimage import uniform_filter1d

    x = np.asarray(arrays["joint_pos_m"], dtype=np.float64)
    if x.shape[0] < 7:
        return {}
    fps = _fps(meta, arrays)
    com = centre_of_mass(x)
    acc = np.gradient(np.gradient(com, axis=0), axis=0) * fps * fps
    m = float(meta["mass_kg"])
    need = m * (acc + np.array([0.0, 0.0, G_MPS2]))
    f = np.sum(np.asarray(arrays["grf_n"], dtype=np.float64), axis=1)  # NaN where a foot's force is unknown
    # the same low-pass (moving average over NE_SMOOTH_FRAMES) on both sides, as force and kinematics
    # are filtered at a common cut-off in inverse dynamics
    k = NE_SMOOTH_FRAMES
    known = np.isfinite(f).all(axis=-1)  # measured data: NaN where a foot's force is unknown
    diff = uniform_filter1d(np.where(known[:, None], f - need, 0.0), size=k, axis=0, mode="nearest")[k:-k]
    full = uniform_filter1d(known.astype(np.float64), size=k, mode="nearest")[k:-k] > 1.0 - 1e-9
    imb = np.where(full, np.linalg.norm(diff, axis=-1), np.nan) / (m * G_MPS2)
    return {"newton_euler_imbalance_bw_p50": _nanpct(imb, 50), "newton_euler_imbalance_bw_p95": _nanpct(imb, 95)}


# --- providers: torques --------------------------------------------------------------------------


@metric_provider(
    "torques", requires=("joint_torque_nm",), requires_meta=("mass_kg",), stage="torques",
    metrics={
        "torque_peak_nm_kg": ("N·m/kg", "Largest joint torque magnitude / body mass (peak human joint moments ≈ 3–5 N·m/kg)."),
    },
)
def _torques(arrays, meta):
    t = np.asarray(arrays["joint_torque_nm"], dtype=np.float64)
    return {"torque_peak_nm_kg": _nanmax(np.linalg.norm(t, axis=-1)) / float(meta["mass_kg"])}


# --- providers: simulated vs measured (validation.py) ---------------------------------------------
# A simulated pass of a motion with measured forces carries the measured per-foot plate forces
# (``plate_grf_n``) and the inverse-dynamics torques (``id_joint_torque_nm``) as extra arrays
# (flows/build.py ``simulate_motions``). Info only: no rule uses these metrics.


@metric_provider(
    "sim_vs_plate", requires=("grf_n", "plate_grf_n"), requires_meta=("mass_kg",), stage="validation",
    metrics={
        "grf_vs_plate_err_left_n_per_kg": ("N/kg", "Mean over frames with a known plate force of |F_sim − F_plate| / body mass, left foot (ImDy's GRF error; plate averaged to the simulator's intervals)."),
        "grf_vs_plate_err_right_n_per_kg": ("N/kg", "Mean over frames with a known plate force of |F_sim − F_plate| / body mass, right foot."),
        "grf_peak_err_frac": ("1", "|peak vertical F_sim − peak vertical F_plate| / plate peak, the larger over the feet measured in stance."),
        "grf_impulse_err_frac": ("1", "|stance vertical impulse sim − plate| / plate impulse, the largest over the stances on a plate (window ± 0.1 s)."),
    },
)
def _sim_vs_plate(arrays, meta):
    from .validation import grf_validation

    return grf_validation(arrays["grf_n"], arrays["plate_grf_n"], float(meta["mass_kg"]), _fps(meta, arrays))


@metric_provider(
    "sim_vs_plate_cop", requires=("cop_m", "plate_cop_m", "plate_grf_n"), requires_meta=("mass_kg",),
    stage="validation",
    metrics={
        "cop_vs_plate_err_left_m": ("m", "Mean horizontal distance between the simulated and the plate centre of pressure, left foot, over frames where the plate carries ≥ 0.2 BW (plate averaged to the simulator's intervals)."),
        "cop_vs_plate_err_right_m": ("m", "Mean horizontal centre-of-pressure distance, simulation vs plate, right foot (≥ 0.2 BW on the plate)."),
    },
)
def _sim_vs_plate_cop(arrays, meta):
    from .validation import cop_validation

    return cop_validation(arrays["cop_m"], arrays["plate_cop_m"], arrays["plate_grf_n"], float(meta["mass_kg"]))


@metric_provider(
    "sim_vs_id", requires=("joint_torque_nm", "id_joint_torque_nm"), requires_meta=("mass_kg",), stage="validation",
    metrics={
        "torque_vs_id_rmse_nm_per_kg": ("N·m/kg", "RMSE of the sagittal hip, knee and ankle torques (both sides) of the simulation vs inverse dynamics with the measured forces, over frames where it is known, / body mass."),
        "torque_vs_id_rmse_hip_nm_per_kg": ("N·m/kg", "Sagittal hip torque RMSE (both sides), simulation vs inverse dynamics, / body mass."),
        "torque_vs_id_rmse_knee_nm_per_kg": ("N·m/kg", "Sagittal knee torque RMSE (both sides), simulation vs inverse dynamics, / body mass."),
        "torque_vs_id_rmse_ankle_nm_per_kg": ("N·m/kg", "Sagittal ankle torque RMSE (both sides), simulation vs inverse dynamics, / body mass."),
    },
)
def _sim_vs_id(arrays, meta):
    from .validation import torque_validation

    return torque_validation(arrays["joint_torque_nm"], arrays["id_joint_torque_nm"], float(meta["mass_kg"]),
                             arrays["joint_rot_aa_rad"] if "joint_rot_aa_rad" in arrays else None,
                             arrays["ref_joint_rot_aa_rad"] if "ref_joint_rot_aa_rad" in arrays else None)


# --- rows ----------------------------------------------------------------------------------------

ID_COLUMNS: tuple[str, ...] = ("seq_id", "source", "dataset", "subject", "name", "split", "path", "sha256")
"""Identity columns of a metrics row (strings), in table order."""

_META_FROM_SEQ = {
    "seq_id": "seq_id", "source": "seq_source", "dataset": "seq_dataset", "subject": "seq_subject",
    "name": "seq_name", "split": "seq_split", "path": "seq_path", "sha256": "seq_source_sha256", "mass_kg": "seq_mass_kg",
    "height_m": "seq_height_m", "source_fps_hz": "seq_source_fps_hz", "duration_s": "seq_duration_s",
    "gender": "seq_gender", "skeleton": "seq_skeleton", "grf_source": "seq_grf_source",
}


def meta_from_sequence_values(seq_values: Mapping[str, Any], fps_hz: float, **extra: Any) -> dict[str, Any]:
    """``meta`` for ``compute_metrics`` from the store's per-sequence values (``seq_*`` names)."""
    meta: dict[str, Any] = {"fps_hz": float(fps_hz)}
    for key, name in _META_FROM_SEQ.items():
        if name in seq_values:
            v = seq_values[name]
            meta[key] = v.item() if isinstance(v, np.generic) else v
    meta.update(extra)
    return meta


def inputs_from_payload(
    frame_arrays: Mapping[str, Any], window_arrays: Mapping[str, Any], seq_values: Mapping[str, Any],
    fps_hz: float, extras: Mapping[str, Any] | None = None, **meta_extra: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays, meta) from ``pipeline.process.stage_payload`` output plus extra arrays (e.g.
    ``foot_points_m`` from the canonical motion, or simulation/force-plate arrays)."""
    arrays = {**dict(frame_arrays), **{k: v for k, v in window_arrays.items() if k != "window_start"}}
    if extras:
        arrays.update(extras)
    return arrays, meta_from_sequence_values(seq_values, fps_hz, **meta_extra)


def sequence_inputs(processed: Any, extras: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays, meta) of a ``pipeline.process.ProcessedSequence``: its staged arrays plus the exact
    sole points ``foot_points_m`` of the canonical motion."""
    from pipeline.process import stage_payload

    frame, window, values = stage_payload(processed)
    more = {"foot_points_m": processed.motion.foot_points_m}
    if extras:
        more.update(extras)
    return inputs_from_payload(frame, window, values, processed.motion.fps_hz, more)


def metrics_row(arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """One metrics-table row: identity columns from ``meta`` then ``compute_metrics``."""
    row: dict[str, Any] = {c: (str(meta[c]) if meta.get(c) is not None else "") for c in ID_COLUMNS}
    row.update(compute_metrics(arrays, meta))
    return row


__all__ = [
    "CATALOG", "FOOT_MARKERS", "G_MPS2", "ID_COLUMNS", "MAIN_JOINTS", "PROVIDERS", "ArrayView",
    "MetricSpec", "Provider", "applicable_providers", "centre_of_mass", "compute_metrics",
    "derived_array", "inputs_from_payload", "meta_from_sequence_values", "metric_provider",
    "metrics_row", "sequence_inputs", "unregister_provider",
]
