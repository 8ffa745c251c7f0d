"""Flags from configurable thresholds; the metrics table, exclusions and their files.

A ``Rule`` compares one metric with a threshold (``metric op value``) and has a level:

* ``info``: worth knowing (shown in the report, kept in the data);
* ``warn``: suspicious; the sequence stays in the subsets and carries the flag as metadata
  (``metrics.parquet``, ``flags.json``);
* ``exclude``: the sequence is left out of the subsets and listed in ``exclusions.json`` with
  its reasons.

``Thresholds.default()`` holds the documented defaults (docs/quality.md) with the anchor each
comes from; ``Thresholds.load(path)`` reads a TOML or JSON file that overrides values/levels of
default rules by name, disables them (``enabled = false``) or adds new rules. A rule whose metric
is absent or NaN for a sequence does not fire. When several rules on the same metric fire, only
the most severe one is reported.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .metrics import CATALOG, ID_COLUMNS

LEVELS: tuple[str, ...] = ("info", "warn", "exclude")
"""Flag levels, least to most severe."""

LEVEL_RANK = {"": 0, "info": 1, "warn": 2, "exclude": 3}

_TOL = 1e-6
_OPS = {
    ">": operator.gt,
    "<": operator.lt,
    # inclusive comparisons tolerate float32 rounding of stored arrays (relative 1e-6)
    ">=": lambda v, t: v >= t - _TOL * max(1.0, abs(t)),
    "<=": lambda v, t: v <= t + _TOL * max(1.0, abs(t)),
}

METRICS_FILE = "metrics.parquet"
FLAGS_FILE = "flags.json"
EXCLUSIONS_FILE = "exclusions.json"
PREVIEW_DIR = "quality_previews"


@dataclass(frozen=True)
class Rule:
    """``metric op value`` → a flag of ``level``.

    Attributes:
        name: unique rule name (what overrides refer to, shown in reports).
        metric: metric column (``metrics.CATALOG``).
        op: ``>``, ``>=``, ``<`` or ``<=``.
        value: threshold, in the metric's unit.
        level: ``info`` | ``warn`` | ``exclude``.
        anchor: where the threshold comes from (paper, dataset practice, or a dynaset choice).
        enabled: disabled rules never fire.
    """

    name: str
    metric: str
    op: str
    value: float
    level: str
    anchor: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"rule {self.name}: op must be one of {sorted(_OPS)}, got {self.op!r}")
        if self.level not in LEVELS:
            raise ValueError(f"rule {self.name}: level must be one of {LEVELS}, got {self.level!r}")
        if not isinstance(self.value, (int, float)) or not math.isfinite(float(self.value)):
            raise ValueError(f"rule {self.name}: value must be a finite number, got {self.value!r}")

    def fires(self, value: float) -> bool:
        return self.enabled and value is not None and math.isfinite(value) and _OPS[self.op](value, self.value)


_ADDB = "AddBiomechanics (Werling et al. 2023)"
DEFAULT_RULES: tuple[Rule, ...] = (
    # source / gaps
    Rule("short_sequence", "duration_s", "<", 0.5, "info", "shorter than one 15-frame polynomial window (dynaset)"),
    Rule("low_source_rate", "source_fps_hz", "<", 30.0, "info", "source rate below the canonical 30 FPS: upsampled (dynaset)"),
    Rule("has_gaps", "nan_frame_frac", ">", 0.0, "info", "any missing kinematics (dynaset)"),
    Rule("many_gaps", "nan_frame_frac", ">", 0.10, "warn", "more than 10 % of frames incomplete (dynaset)"),
    Rule("mostly_gaps", "nan_frame_frac", ">", 0.30, "exclude", "more than 30 % of frames incomplete (dynaset)"),
    Rule("long_gap", "gap_max_s", ">", 0.5, "warn", "gap longer than a stance phase (~0.6 s walking) cannot be interpolated reliably (dynaset)"),
    Rule("very_long_gap", "gap_max_s", ">", 2.0, "exclude", "gap longer than a gait cycle ×2 (dynaset)"),
    Rule("source_gaps", "source_nan_frac", ">", 0.10, "warn", "more than 10 % of source samples filled (dynaset)"),
    # kinematics
    Rule("fast_joint", "joint_ang_vel_max_rad_s", ">", 25.0, "warn",
         f"joint velocity check as in {_ADDB}; ≈ 1430 °/s, above knee/hip peaks in sprinting and kicking"),
    Rule("joint_flip", "joint_ang_vel_max_rad_s", ">", 50.0, "exclude",
         "≈ 2860 °/s: a rotation flip or pose discontinuity (at 30 FPS a flip of π per frame reads 94 rad/s) (dynaset)"),
    Rule("joint_ang_acc_spike", "joint_ang_acc_max_rad_s2", ">", 2000.0, "info",
         "3× the largest value on clean generated running (650 rad/s²) (dynaset)"),
    Rule("glitch_suspect", "joint_spike_max_m", ">", 0.15, "warn",
         "one-frame spike ≥ 15 cm ≈ 270 m/s² at 30 FPS; clean jumps/landings ≤ 0.12 m (dynaset)"),
    Rule("glitch", "joint_spike_max_m", ">", 0.25, "exclude",
         "one-frame spike ≥ 25 cm ≈ 450 m/s² (46 g) at 30 FPS: a tracking glitch, not human motion (dynaset)"),
    Rule("marker_outlier", "marker_cloud_dist_max_m", ">", 2.5, "exclude", f"marker > 2.5 m from the cloud, {_ADDB}"),
    Rule("marker_rms", "marker_rms_m", ">", 0.08, "exclude", f"marker RMS error > 8 cm, {_ADDB}"),
    # contact
    Rule("foot_skating", "foot_skate_p95_m_s", ">", 0.10, "warn",
         "planted point slides > 0.1 m/s (3 mm/frame at 30 FPS); clean generated gait p95 ≤ 0.055 m/s (dynaset)"),
    Rule("severe_foot_skating", "foot_skate_p95_m_s", ">", 0.50, "exclude",
         "contact points sliding at walking speed: contact labels unusable for dynamics (dynaset)"),
    Rule("ground_penetration", "ground_penetration_m", ">", 0.03, "warn",
         "below the floor by more than the 3 cm contact band (docs/stages.md contact)"),
    Rule("floating", "foot_float_m", ">", 0.05, "warn", "feet never within 5 cm of the floor (dynaset)"),
    # fit
    Rule("poor_pos_fit", "pos_fit_rmse_max_m", ">", 0.08, "info",
         "cubic windows miss the motion by > 8 cm RMS (clean jumps ≤ 0.05 m) (dynaset)"),
    Rule("poor_rot_fit", "rot_fit_rmse_max_rad", ">", 0.15, "info",
         "cubic rotation windows > 0.15 rad RMS (clean running ≤ 0.06 rad) (dynaset)"),
    # simulation
    Rule("sim_reset", "sim_resets", ">", 0.0, "warn", "imitation needed resets (PHC / ImDy success criterion)"),
    Rule("sim_failed", "sim_success", "<", 1.0, "warn", "imitation failed (PHC: no reset, MPJPE < 0.5 m)"),
    Rule("mpjpe_high", "mpjpe_p95_mm", ">", 100.0, "warn",
         "p95 tracking error > 10 cm; PHC/ImDy report ≈ 30–60 mm on AMASS for successful sequences"),
    Rule("mpjpe_fail", "mpjpe_max_mm", ">", 500.0, "exclude", "PHC failure criterion: mean joint deviation > 0.5 m"),
    Rule("mpjpe_median_high", "mpjpe_p50_mm", ">", 100.0, "exclude",
         "median joint error > 10 cm without a reset: the simulated pass no longer imitates the motion, its "
         "forces and torques belong to another motion (dynaset; 3× PHC/ImDy's 30–37 mm on AMASS)"),
    Rule("residual_high", "residual_force_bw_p95", ">", 0.05, "warn",
         "root residual force > 5 % (Hicks et al. 2015, 'Is my model good enough?'; AddBiomechanics reports residual norms)"),
    Rule("residual_dominant", "residual_force_bw_p50", ">", 0.25, "exclude",
         "half the frames need > 25 % body weight of non-physical root force (dynaset)"),
    Rule("residual_rarely_ok", "residual_force_le5pct_frac", "<", 0.90, "info", "fewer than 90 % of frames within 5 % BW (dynaset)"),
    Rule("dynamics_moved_motion", "dyn_root_correction_max_m", ">", 0.10, "warn",
         "the dynamics pass moved the pelvis by > 10 cm to explain the motion with contact forces: the "
         "kinematics are far from physically consistent (dynset; AddBiomechanics reports its own adjustments)"),
    Rule("swing_through_floor", "swing_penetration_max_m", ">", 0.03, "warn",
         "a simulated swing foot passed > 3 cm below the floor while its collisions were off: its "
         "tracking error exceeds real toe clearance (1–3 cm); contact forces near it are doubtful (dynaset)"),
    Rule("newton_euler_imbalance", "newton_euler_imbalance_bw_p95", ">", 0.5, "warn",
         "GRF inconsistent with the COM acceleration by > 0.5 BW (approximate COM; dynaset)"),
    # force plates
    Rule("grf_high", "grf_peak_bw", ">", 3.0, "info", "above the walking/running range 1.2–3 BW (Nilsson & Thorstensson 1989)"),
    Rule("grf_implausible", "grf_peak_bw", ">=", 5.0, "exclude", "≥ 5 BW is implausible outside drop landings (dynaset, from the 2.5–3 BW running range)"),
    Rule("plate_force_outlier", "grf_foot_max_n", ">", 2500.0, "warn", f"plate force > 2500 N, {_ADDB}"),
    Rule("cop_outside_foot", "cop_outside_foot_frac", ">", 0.05, "warn", f"centre of pressure outside the foot, {_ADDB}"),
    Rule("cop_far_outside", "cop_outside_foot_frac", ">", 0.25, "exclude", "COP off the foot in > 25 % of loaded frames (dynaset)"),
    Rule("zero_force_in_contact", "zero_force_in_contact_frac", ">", 0.10, "warn", f"zero-force frames while a foot is planted, {_ADDB}"),
    Rule("force_without_contact", "force_without_contact_frac", ">", 0.10, "warn", "load on a foot in the air: plate–foot mismatch (dynaset)"),
    Rule("plate_conflict", "plate_conflict_frac", ">", 0.0, "info", f"plate–foot assignment ambiguous, {_ADDB}"),
    Rule("plate_conflicts", "plate_conflict_frac", ">", 0.05, "warn", "ambiguous plate assignment in > 5 % of frames (dynaset)"),
    # torques
    Rule("torque_high", "torque_peak_nm_kg", ">", 6.0, "warn", "peak human joint moments ≈ 3–5 N·m/kg (hip/knee/ankle in sprinting and jumping)"),
)


@dataclass(frozen=True)
class Thresholds:
    """The rule set used to flag sequences (see ``DEFAULT_RULES`` and docs/quality.md)."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    source: str = "default"

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate rule names: {dup}")

    @classmethod
    def default(cls) -> "Thresholds":
        return cls()

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(f"no rule {name!r}; rules: {[r.name for r in self.rules]}")

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any] | float], source: str | None = None) -> "Thresholds":
        """A copy with rules changed by name (``{name: value}`` or ``{name: {value, level, enabled, ...}}``);
        unknown names with a ``metric``, ``op``, ``value`` and ``level`` are added as new rules."""
        rules = {r.name: r for r in self.rules}
        for name, change in overrides.items():
            change = {"value": change} if isinstance(change, (int, float)) else dict(change)
            if "value" in change:
                change["value"] = float(change["value"])
            if name in rules:
                rules[name] = replace(rules[name], **change)
            else:
                missing = {"metric", "op", "value", "level"} - set(change)
                if missing:
                    raise ValueError(f"new rule {name!r} lacks {sorted(missing)}")
                rules[name] = Rule(name=name, **change)
        return Thresholds(tuple(rules.values()), source or self.source)

    @classmethod
    def load(cls, path: str | Path) -> "Thresholds":
        """Defaults overridden by a TOML (``[rules.NAME] value = …``) or JSON (``{"rules": {NAME: {…}}}``) file."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
        return cls.default().with_overrides(data.get("rules", {}), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rules": [asdict(r) for r in self.rules]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Thresholds":
        return cls(tuple(Rule(**r) for r in d["rules"]), d.get("source", "recorded"))


@dataclass(frozen=True)
class Flag:
    """A fired rule for one sequence: ``reason`` names the metric, its value and the threshold."""

    name: str
    level: str
    reason: str
    metric: str = ""
    value: float = math.nan
    threshold: float = math.nan
    anchor: str = ""


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.3g}" if 1e-3 <= a < 1e5 else f"{v:.2e}"


def _unit(metric: str) -> str:
    spec = CATALOG.get(metric)
    return "" if spec is None or spec.unit == "1" else f" {spec.unit}"


def evaluate_flags(metrics_row: Mapping[str, Any], thresholds: Thresholds | None = None) -> list[Flag]:
    """Flags of one sequence, most severe first; per metric only the most severe fired rule."""
    thresholds = thresholds or Thresholds.default()
    best: dict[str, Flag] = {}
    for r in thresholds.rules:
        v = metrics_row.get(r.metric)
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if not r.fires(v):
            continue
        u = _unit(r.metric)
        reason = f"{r.metric} = {_fmt(v)}{u} {r.op} {_fmt(r.value)}{u} [{r.name}, {r.level}]"
        f = Flag(r.name, r.level, reason, r.metric, v, float(r.value), r.anchor)
        if r.metric not in best or LEVEL_RANK[f.level] > LEVEL_RANK[best[r.metric].level]:
            best[r.metric] = f
    return sorted(best.values(), key=lambda f: (-LEVEL_RANK[f.level], f.name))


def max_level(flags: Iterable[Flag]) -> str:
    return max((f.level for f in flags), key=lambda lv: LEVEL_RANK[lv], default="")


def metrics_table(rows: Sequence[Mapping[str, Any]] | Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Rows (``metrics.metrics_row``) → a DataFrame: identity columns (str) first, then metrics
    (float64) in catalog order, then any others; sorted by ``seq_id``. ``rows`` may also be
    DataFrames of consecutive rows (``FlagAccumulator``'s chunks): the same table as their rows."""
    rows = list(rows)
    if rows and all(isinstance(r, pd.DataFrame) for r in rows):
        df = pd.concat(rows, ignore_index=True, sort=False) if len(rows) > 1 else rows[0]
    else:
        df = pd.DataFrame(rows)
    if df.empty:  # no sequences at all: the same columns as a populated table, zero rows
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in ID_COLUMNS})
        df["flag_level"] = pd.Series(dtype=object)
        df["flag_names"] = pd.Series(dtype=object)
        df["excluded"] = pd.Series(dtype=bool)
    ids = [c for c in ID_COLUMNS if c in df.columns]
    flag_cols = [c for c in ("flag_level", "flag_names", "excluded") if c in df.columns]
    metric_cols = [c for c in CATALOG if c in df.columns]
    rest = [c for c in df.columns if c not in ids and c not in metric_cols and c not in flag_cols]
    df = df[ids + flag_cols + metric_cols + rest].copy()
    for c in ids:
        df[c] = df[c].fillna("").astype(str).astype(object)
    for c in metric_cols:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    if "seq_id" in df.columns and len(df):
        df = df.sort_values("seq_id", kind="stable").reset_index(drop=True)
    return df


class FlagAccumulator:
    """``apply_flags`` one row at a time: each row is flagged when added and kept only in a
    columnar chunk (a DataFrame of ``chunk`` rows), so a build's driver never holds every
    sequence's metrics as Python dicts (docs/scaling.md, "Flat memory"). ``finish()`` returns what
    ``apply_flags`` returns for the same rows."""

    def __init__(self, thresholds: Thresholds | None = None, chunk: int = 1024):
        self.thresholds = thresholds or Thresholds.default()
        self.chunk = chunk
        self._pending: list[dict[str, Any]] = []
        self._chunks: list[pd.DataFrame] = []
        self._flags: dict[str, list[Flag]] = {}
        self._exclusions: list[dict[str, Any]] = []

    def add(self, row: Mapping[str, Any]) -> str:
        """Flag one metrics row; returns its level (``exclude``: left out of the subsets)."""
        r = dict(row)
        flags = evaluate_flags(r, self.thresholds)
        lvl = max_level(flags)
        r["flag_level"] = lvl
        r["flag_names"] = ",".join(f.name for f in flags)
        r["excluded"] = lvl == "exclude"
        sid = str(r.get("seq_id", ""))
        if flags:
            self._flags[sid] = flags
        if lvl == "exclude":
            self._exclusions.append({
                "seq_id": sid, "source": str(r.get("source", "")), "path": str(r.get("path", "")),
                "reasons": [f.reason for f in flags if f.level == "exclude"],
                "flags": [f.name for f in flags],
            })
        self._pending.append(r)
        if len(self._pending) >= self.chunk:
            self._flush()
        return lvl

    def _flush(self) -> None:
        if self._pending:
            self._chunks.append(pd.DataFrame(self._pending))
            self._pending = []

    def finish(self) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        self._flush()
        table = metrics_table(self._chunks)
        self._chunks = []
        table.attrs["flags"] = {k: [asdict(f) for f in v] for k, v in self._flags.items()}
        table.attrs["thresholds"] = self.thresholds.to_dict()
        return table, sorted(self._exclusions, key=lambda e: e["seq_id"])


def apply_flags(
    rows: Sequence[Mapping[str, Any]], thresholds: Thresholds | None = None
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Evaluate every row: (metrics table with ``flag_level``/``flag_names``/``excluded`` columns
    and a ``flags`` attribute ``{seq_id: [Flag]}``, exclusions ``[{seq_id, source, path, reasons}]``)."""
    acc = FlagAccumulator(thresholds, chunk=max(1, len(rows)))
    for r in rows:
        acc.add(r)
    return acc.finish()


def excluded_ids(exclusions: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ``seq_id`` set of an exclusion list (what the flow leaves out of the subsets)."""
    return {str(e["seq_id"]) for e in exclusions}


# --- files ---------------------------------------------------------------------------------------


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o).__name__)


def _clean(o: Any) -> Any:
    """NaN/inf → None so the JSON is strict."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_json(path: Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, default=_json_default, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_metrics(path: str | Path, table: pd.DataFrame) -> Path:
    """Write the table as Parquet with the metric catalog and thresholds in the schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    t = pa.Table.from_pandas(table, preserve_index=False)
    catalog = {m: asdict(CATALOG[m]) for m in table.columns if m in CATALOG}
    extra = {"catalog": catalog, "thresholds": table.attrs.get("thresholds")}
    meta = dict(t.schema.metadata or {})
    meta[b"dynaset.quality"] = json.dumps(_clean(extra)).encode()
    t = t.replace_schema_metadata(meta)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(t, tmp)
    tmp.replace(path)
    return path


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read ``metrics.parquet``; ``df.attrs['quality']`` holds the recorded catalog and thresholds."""
    import pyarrow.parquet as pq

    t = pq.read_table(Path(path))
    df = t.to_pandas()
    raw = (t.schema.metadata or {}).get(b"dynaset.quality")
    df.attrs = {"quality": json.loads(raw) if raw else {}}
    for c in ID_COLUMNS:
        if c in df.columns:
            df[c] = df[c].astype(object)
    return df


def write_quality_outputs(
    out_dir: str | Path,
    table: pd.DataFrame,
    exclusions: Sequence[Mapping[str, Any]],
    staged: Iterable[Any] | None = None,
    max_previews: int = 50,
) -> dict[str, Path]:
    """Write ``metrics.parquet``, ``flags.json`` and ``exclusions.json`` into ``out_dir``.

    ``staged`` (optional): ``pipeline.store.StagedSequence`` handles (or any object with ``key``
    and ``frame_array(name)``) of excluded sequences, before the staging folder is deleted; the
    ``max_previews`` worst are saved as small npz previews (``quality_previews/``) so the report
    can plot sequences that are not in the stores.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": write_metrics(out / METRICS_FILE, table)}
    flags = table.attrs.get("flags", {})
    write_json(out / FLAGS_FILE, {"thresholds": table.attrs.get("thresholds"), "sequences": flags})
    paths["flags"] = out / FLAGS_FILE
    write_json(out / EXCLUSIONS_FILE, list(exclusions))
    paths["exclusions"] = out / EXCLUSIONS_FILE
    if staged is not None:
        from .report import save_previews

        paths["previews"] = save_previews(out, staged, table, max_previews)
    return paths
