"""The data-quality report of a build or release: one self-contained HTML file, or JSON.

    build_report(OUT)                  → OUT/report.html (plots embedded as base64 PNG)
    report_json(OUT)                   → dict for machines (``dynaset report OUT --format json``)
    exit_code(summary, max_rate)       → 1 when the exclusion rate exceeds ``max_rate``

Inputs in ``OUT``: ``metrics.parquet``, ``flags.json``, ``exclusions.json`` (written by
``flags.write_quality_outputs``), ``quarantine.json`` and ``build.json`` (the build flow), the
subset stores ``*.zarr`` (read lazily, only for the per-sequence plots of the worst sequences) and
``quality_previews/`` (plots of excluded sequences, which are not in the stores). A folder without
``metrics.parquet`` (an older build) gets its metrics recomputed from the stores with the default
thresholds, and the report says so.

Everything the report shows is driven by the metric catalog (``metrics.CATALOG``) and the rules
(``flags.Thresholds``): a new provider's metrics get their distribution plots, per-source
statistics, threshold lines, worst-sequence ranking and parent diff without changes here.

Corpus-level figures — one histogram per metric, the summary bars — are SVG drawn from their bin
counts (``pipeline.quality.svg``, ≈ 1 ms each): they change with almost every added or removed
sequence, so an incremental build redraws them every time. Per-sequence plots (time series) use
matplotlib (Agg backend, PNG: fixed size however long the sequence). Every figure is an ``<img>``
with a data URL: no JavaScript and no network access needed, the report opens offline in any browser.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import skeleton as sk

from .flags import (
    EXCLUSIONS_FILE,
    FLAGS_FILE,
    LEVEL_RANK,
    METRICS_FILE,
    PREVIEW_DIR,
    Rule,
    Thresholds,
    _clean,
    apply_flags,
    read_metrics,
    write_json,
)
from .metrics import CATALOG, ID_COLUMNS, MAIN_JOINTS, ArrayView, G_MPS2

REPORT_FILE = "report.html"
QUARANTINE_FILE = "quarantine.json"
SUMMARY_FILE = "build.json"

LEVEL_COLOURS = {"info": "#1f77b4", "warn": "#ff7f0e", "exclude": "#d62728", "": "#2ca02c"}
LEVEL_WEIGHT = {"": 0.0, "info": 1.0, "warn": 10.0, "exclude": 100.0}
STAGE_ORDER = ("source", "kinematics", "contact", "fit", "simulation", "force_plates", "torques", "validation")
PREVIEW_ARRAYS = ("time_s", "joint_rot_aa_rad", "joint_pos_m", "contact", "grf_n", "joint_torque_nm", "mpjpe_m",
                  "reset", "residual_wrench")


# --- loading -------------------------------------------------------------------------------------


@dataclass
class BuildQuality:
    """Everything the report reads from one build/release folder."""

    out_dir: Path
    table: pd.DataFrame
    thresholds: Thresholds
    flags: dict[str, list[dict]]
    exclusions: list[dict]
    quarantine: list[dict]
    build: dict
    recomputed: bool = False
    store_members: dict[str, set[str]] = field(default_factory=dict)


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def load_build(out_dir: str | Path, build: Mapping[str, Any] | None = None) -> BuildQuality:
    """Read a build/release folder; recompute metrics from its stores if it has no ``metrics.parquet``.
    ``build``: the build's summary when its ``build.json`` is not written yet (a running build)."""
    from .collect import store_members

    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"no build or release folder at {out}")
    members: dict[str, set[str]] = {}
    readable = False
    try:
        members = store_members(out)
        readable = True
    except Exception:  # no stores / unreadable stores: report from the files alone
        members = {}
    recomputed = False
    flags_doc = _read_json(out / FLAGS_FILE, {})
    if (out / METRICS_FILE).exists():
        table = read_metrics(out / METRICS_FILE)
        recorded = flags_doc.get("thresholds") or table.attrs.get("quality", {}).get("thresholds")
        thresholds = Thresholds.from_dict(recorded) if recorded else Thresholds.default()
        flags = flags_doc.get("sequences", {})
        exclusions = _read_json(out / EXCLUSIONS_FILE, [])
    elif readable:
        from .collect import metrics_from_stores

        thresholds = Thresholds.default()
        table, exclusions = apply_flags(metrics_from_stores(out), thresholds)
        flags = table.attrs["flags"]
        recomputed = True
    else:
        raise FileNotFoundError(f"{out} has neither {METRICS_FILE} nor readable *.zarr stores")
    if "flag_level" not in table.columns:
        table, _ = apply_flags(table.to_dict("records"), thresholds)
    # what was recorded is read above; pandas deep-copies ``attrs`` (catalog, rules, flags) into every
    # column and slice it makes, which was two thirds of a report's time
    table.attrs = {}
    return BuildQuality(
        out_dir=out, table=table, thresholds=thresholds, flags=flags, exclusions=exclusions,
        quarantine=_read_json(out / QUARANTINE_FILE, []),
        build=dict(build) if build is not None else _read_json(out / SUMMARY_FILE, {}),
        recomputed=recomputed, store_members=members,
    )


# --- summary, ranking, diff ----------------------------------------------------------------------


def _f(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def metric_columns(table: pd.DataFrame) -> list[str]:
    """Catalogued metrics with at least one finite value, in catalog order."""
    cols = []
    for m in CATALOG:
        if m in table.columns and np.isfinite(pd.to_numeric(table[m], errors="coerce")).any():
            cols.append(m)
    return cols


def _hours(df: pd.DataFrame) -> float:
    return float(pd.to_numeric(df.get("duration_s", pd.Series(dtype=float)), errors="coerce").fillna(0).sum() / 3600.0)


def _group_stats(df: pd.DataFrame, by: str) -> list[dict]:
    out = []
    if by not in df.columns:
        return out
    for key, g in df.groupby(by, sort=True):
        kept = g[~g["excluded"].astype(bool)]
        out.append({
            by: str(key), "sequences": int(len(kept)), "subjects": int(kept["subject"].nunique()) if "subject" in kept else 0,
            "hours": _hours(kept), "excluded": int(len(g) - len(kept)), "excluded_hours": _hours(g) - _hours(kept),
        })
    return out


def rank_sequences(q: BuildQuality) -> pd.DataFrame:
    """Sequences with flags, worst first: score = Σ level weights (exclude 100, warn 10, info 1),
    ties broken by the largest value/threshold ratio of a fired rule."""
    rows = []
    for sid, flags in q.flags.items():
        score = sum(LEVEL_WEIGHT.get(f["level"], 0.0) for f in flags)
        ratio = 0.0
        for f in flags:
            v, t = _f(f.get("value")), _f(f.get("threshold"))
            if v is not None and t not in (None, 0.0):
                ratio = max(ratio, abs(v / t) if f.get("level") else 0.0)
        level = max((f["level"] for f in flags), key=lambda lv: LEVEL_RANK[lv], default="")
        rows.append({"seq_id": sid, "score": score + min(ratio, 99.0) / 100.0, "level": level,
                     "flags": [f["name"] for f in flags], "reasons": [f["reason"] for f in flags]})
    df = pd.DataFrame(rows, columns=["seq_id", "score", "level", "flags", "reasons"])
    if df.empty:
        return df
    src = q.table.set_index("seq_id")["source"] if "source" in q.table.columns and len(q.table) else pd.Series(dtype=object)
    df["source"] = [src.get(s, "") for s in df["seq_id"]]
    return df.sort_values(["score", "seq_id"], ascending=[False, True]).reset_index(drop=True)


def summarize(q: BuildQuality) -> dict[str, Any]:
    t = q.table
    n = int(len(t))
    excl = t["excluded"].astype(bool) if "excluded" in t.columns else pd.Series(False, index=t.index)
    kept = t[~excl]
    levels = t["flag_level"].fillna("") if "flag_level" in t.columns else pd.Series("", index=t.index)
    subsets = {}
    for name, info in (q.build.get("subsets") or {}).items():
        subsets[name] = {k: info.get(k) for k in ("sequences", "frames", "hours")}
    for name, ids in q.store_members.items():
        sub = t[t["seq_id"].isin(ids)] if "seq_id" in t.columns else t.iloc[:0]
        entry = subsets.setdefault(name, {"sequences": len(ids), "hours": None})
        entry["by_source"] = {str(s): {"sequences": int(len(g)), "hours": _hours(g)} for s, g in sub.groupby("source")}
    rule_counts = {}
    for flags in q.flags.values():
        for f in flags:
            rule_counts[f["name"]] = rule_counts.get(f["name"], 0) + 1
    n_files = q.build.get("files")
    return {
        "out_dir": str(q.out_dir),
        "build_id": q.build.get("build_id"),
        "dynaset_version": q.build.get("dynaset_version"),
        "recomputed_from_stores": q.recomputed,
        "sequences": n,
        "sequences_kept": int(len(kept)),
        "sequences_excluded": int(excl.sum()),
        "exclusion_rate": float(excl.sum() / n) if n else 0.0,
        "hours": _hours(kept),
        "hours_excluded": _hours(t) - _hours(kept),
        "subjects": int(kept["subject"].nunique()) if "subject" in kept.columns else 0,
        "flag_levels": {lv: int((levels == lv).sum()) for lv in ("info", "warn", "exclude")},
        "files": n_files,
        "files_quarantined": len(q.quarantine),
        "quarantine_rate": (len(q.quarantine) / n_files) if n_files else None,
        "by_source": _group_stats(t, "source"),
        "by_split": _group_stats(t, "split"),
        "subsets": subsets,
        "rule_counts": rule_counts,
    }


def metric_stats(t: pd.DataFrame, metrics: Iterable[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for m in metrics:
        v = pd.to_numeric(t[m], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        out[m] = {"n": int(v.size), "min": float(v.min()), "p50": float(np.median(v)),
                  "p95": float(np.percentile(v, 95)), "max": float(v.max())}
    return out


def diff_builds(cur: BuildQuality, par: BuildQuality) -> dict[str, Any]:
    """Sequences added/removed/changed (sha256) and metric shifts (median, p95) against a parent."""
    a, b = cur.table, par.table
    ids_a, ids_b = set(a.get("seq_id", [])), set(b.get("seq_id", []))
    common = sorted(ids_a & ids_b)
    changed = []
    if "sha256" in a.columns and "sha256" in b.columns and common:
        sa, sb = a.set_index("seq_id")["sha256"], b.set_index("seq_id")["sha256"]
        changed = [s for s in common if sa.get(s) and sb.get(s) and sa[s] != sb[s]]
    shifts = []
    ma, mb = metric_stats(a, metric_columns(a)), metric_stats(b, metric_columns(b))
    for m in CATALOG:
        if m not in ma and m not in mb:
            continue
        x, y = ma.get(m, {}), mb.get(m, {})
        p50a, p50b = x.get("p50"), y.get("p50")
        d = None if p50a is None or p50b is None else p50a - p50b
        scale = max(abs(p50b or 0.0), abs(y.get("p95") or 0.0) * 0.1, 1e-12)
        shifts.append({
            "metric": m, "unit": CATALOG[m].unit, "p50": p50a, "p50_parent": p50b, "p95": x.get("p95"),
            "p95_parent": y.get("p95"), "delta_p50": d, "relative_shift": None if d is None else d / scale,
            "status": "new" if not y else ("gone" if not x else ("shifted" if abs(d / scale) > 0.1 else "stable")),
        })
    sa, sb = summarize(cur), summarize(par)
    rules = sorted(set(sa["rule_counts"]) | set(sb["rule_counts"]))
    return {
        "parent": str(par.out_dir),
        "added": sorted(ids_a - ids_b),
        "removed": sorted(ids_b - ids_a),
        "changed": changed,
        "sequences": [sa["sequences"], sb["sequences"]],
        "hours": [sa["hours"], sb["hours"]],
        "exclusion_rate": [sa["exclusion_rate"], sb["exclusion_rate"]],
        "rule_counts": {r: [sa["rule_counts"].get(r, 0), sb["rule_counts"].get(r, 0)] for r in rules},
        "metric_shifts": shifts,
    }


def _json_doc(q: BuildQuality, par: BuildQuality | None, worst: int = 25) -> dict[str, Any]:
    summary = summarize(q)
    ranked = rank_sequences(q)
    doc = {
        "summary": summary,
        "quarantine": q.quarantine,
        "exclusions": q.exclusions,
        "thresholds": q.thresholds.to_dict(),
        "metrics": {m: {"unit": CATALOG[m].unit, "stage": CATALOG[m].stage, "description": CATALOG[m].description,
                        **st} for m, st in metric_stats(q.table, metric_columns(q.table)).items()},
        "worst": ranked.head(worst).to_dict("records"),
    }
    if par is not None:
        doc["diff"] = diff_builds(q, par)
    return _clean(json.loads(json.dumps(doc, default=_jsonable)))


def report_json(out_dir: str | Path, parent: str | Path | None = None, worst: int = 25) -> dict[str, Any]:
    """The report's content for machines: summary, quarantine, exclusions, rules, metric stats,
    worst sequences and (with ``parent``) the diff. NaN becomes null."""
    return _json_doc(load_build(out_dir), load_build(parent) if parent is not None else None, worst)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (set, tuple)):
        return sorted(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def exit_code(summary: Mapping[str, Any], max_exclusion_rate: float | None) -> int:
    """0 if the exclusion rate is within ``max_exclusion_rate`` (or no limit), else 1."""
    if max_exclusion_rate is None:
        return 0
    summary = summary.get("summary", summary)
    return 1 if float(summary.get("exclusion_rate", 0.0)) > float(max_exclusion_rate) else 0


# --- previews of excluded sequences --------------------------------------------------------------


def _safe(seq_id: str) -> str:
    from pipeline.store.staging import safe_key

    return safe_key(seq_id)


def save_previews(out_dir: str | Path, staged: Iterable[Any], table: pd.DataFrame, max_previews: int = 50) -> Path:
    """Save compressed npz previews (``PREVIEW_ARRAYS``) of the worst excluded staged sequences."""
    out = Path(out_dir) / PREVIEW_DIR
    out.mkdir(parents=True, exist_ok=True)
    excl = set(table.loc[table["excluded"].astype(bool), "seq_id"]) if "excluded" in table.columns else set()
    levels = table["flag_level"] if "flag_level" in table.columns else pd.Series("", index=table.index)
    order = {sid: i for i, sid in enumerate(
        table.assign(_r=levels.map(LEVEL_RANK)).sort_values("_r", ascending=False)["seq_id"])} if len(table) else {}
    chosen = sorted((s for s in staged if s.key in excl), key=lambda s: order.get(s.key, 1 << 30))[:max_previews]
    index = {}
    for s in chosen:
        names = set(s.frame_names()) if hasattr(s, "frame_names") else set(PREVIEW_ARRAYS)
        arrays = {n: np.asarray(s.frame_array(n)) for n in PREVIEW_ARRAYS if n in names}
        vals = s.sequence_values() if hasattr(s, "sequence_values") else {}
        for k in ("seq_height_m", "seq_mass_kg"):
            if k in vals:
                arrays[k] = np.asarray(float(vals[k]))
        fname = _safe(s.key) + ".npz"
        np.savez_compressed(out / fname, **arrays)
        index[s.key] = fname
    write_json(out / "index.json", index)
    return out


def _preview(out_dir: Path, seq_id: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    idx = _read_json(out_dir / PREVIEW_DIR / "index.json", {})
    if seq_id not in idx:
        return None
    with np.load(out_dir / PREVIEW_DIR / idx[seq_id], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = {k.removeprefix("seq_"): float(arrays.pop(k)) for k in ("seq_height_m", "seq_mass_kg") if k in arrays}
    return arrays, meta


# --- plotting ------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "figure.dpi": 80, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.formatter.use_mathtext": False,
                         "axes.formatter.useoffset": False, "path.simplify": True})
    return plt


def _img(fig, alt: str, width: int | None = None) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    w = f' width="{width}"' if width else ""
    return f'<img class="plot" alt="{html.escape(alt)}"{w} src="data:image/png;base64,{data}">'


FIGURE_CACHE_DIR = ".cache/figures"
"""Where a dataset root keeps its report's drawn figures (``FigureCache``)."""


def _code_key() -> bytes:
    """What every cached figure also depends on: the plotting code (this module, the metric catalog,
    the skeleton) and the matplotlib version."""
    from importlib.metadata import version

    from pipeline import skeleton
    from pipeline.quality import metrics

    h = hashlib.sha256()
    for mod in (__file__, metrics.__file__, skeleton.__file__):
        h.update(Path(mod).read_bytes())
    h.update(version("matplotlib").encode())
    return h.digest()


def _digest(h: Any, obj: Any) -> None:
    """Feed ``obj`` (what a figure draws) into the hash ``h``: frames and arrays by content, mappings
    by sorted key, sequences item by item, anything else by ``repr``."""
    if isinstance(obj, pd.DataFrame):
        h.update(b"D" + repr([(str(c), str(t)) for c, t in obj.dtypes.items()]).encode() + b"%d" % len(obj))
        h.update(pd.util.hash_pandas_object(obj, index=False).to_numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(b"A" + obj.dtype.str.encode() + repr(obj.shape).encode())
        h.update(repr(obj.tolist()).encode() if obj.dtype.hasobject else np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, Mapping):
        h.update(b"M%d" % len(obj))
        for k in sorted(obj, key=str):
            h.update(repr(str(k)).encode())
            _digest(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for x in obj:
            _digest(h, x)
    else:
        h.update(b"R" + repr(obj).encode() + b"\0")


class FigureCache:
    """The report's figures (their ``<img>`` tags), each kept under a digest of everything it draws,
    so that a report after a small change redraws only the figures whose inputs changed.

    ``folder`` ``None``: every figure is drawn (no cache). ``figure(kind, fn, *inputs)`` returns
    ``fn(*inputs)``, from the cache when a figure of the same kind, inputs and plotting code
    (``_code_key``) was drawn before; ``prune()`` then deletes the figures this report did not use.
    Matplotlib draws the same PNG bytes for the same inputs, so a cached figure is the one a full
    redraw would embed (tests/test_quality_report.py).
    """

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None
        self.drawn = self.reused = 0
        self.seconds: dict[str, float] = {}  # drawing seconds per figure kind
        self._used: set[str] = set()
        self._code: bytes | None = None

    def figure(self, kind: str, fn: Any, *inputs: Any, key: Any = None) -> str:
        """``fn(*inputs)``; cached under the digest of ``inputs``, or of ``key`` when given (everything
        the figure depends on, e.g. a histogram's counts rather than the values counted)."""
        if self.folder is None:
            return self._draw(kind, fn, inputs)
        if self._code is None:
            self._code = _code_key()
        h = hashlib.sha256(self._code + kind.encode())
        _digest(h, inputs if key is None else key)
        name = f"{kind}-{h.hexdigest()[:32]}.html"
        self._used.add(name)
        path = self.folder / name
        try:
            text = path.read_text(encoding="utf-8")
            self.reused += 1
            return text
        except OSError:
            pass
        text = self._draw(kind, fn, inputs)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return text

    def _draw(self, kind: str, fn: Any, inputs: tuple) -> str:
        t0 = time.perf_counter()
        text = fn(*inputs)
        self.drawn += 1
        self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - t0
        return text

    def prune(self) -> int:
        """Delete the cached figures this report did not use; returns how many."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        n = 0
        for p in self.folder.iterdir():
            if p.name not in self._used:
                p.unlink(missing_ok=True)
                n += 1
        return n

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(self.seconds.items()))
        return f"{self.drawn} figures drawn ({kinds or 'none'}), {self.reused} reused from the cache"


def _rules_for(thresholds: Thresholds, metric: str) -> list[Rule]:
    return [r for r in thresholds.rules if r.metric == metric and r.enabled]


def metric_figure(table: pd.DataFrame, metric: str, rules: Sequence[Rule]) -> str:
    """Histogram of one metric per source (step lines), threshold lines coloured by level (SVG)."""
    return metric_svg(metric_figure_key(table, metric, rules))


def metric_svg(key: tuple) -> str:
    """``metric_figure`` drawn from its key (``metric_figure_key``: bin edges and counts, rules):
    SVG text, ≈ 1 ms, so a histogram whose counts changed costs nothing to redraw."""
    from . import svg

    metric, spec, bins, sources, counts, shown, off = key
    series = [(s, c) for s, c in zip(sources or [""], counts)]
    lines = [(r.value, f" {r.level}", LEVEL_COLOURS[r.level]) for r in shown]
    note = [f"{r.level} {r.op} {r.value:g} (off scale)" for r in off]
    doc = svg.histogram([float(x) for x in bins], [(label, [int(v) for v in c]) for label, c in series],
                        f"{metric} [{spec.unit}]", "sequences", lines, note)
    return svg.img(doc, f"distribution of {metric}")


def _metric_bins(table: pd.DataFrame, metric: str, rules: Sequence[Rule]):
    """What ``metric_figure`` draws from: the values, the finite ones, the rules on and off scale,
    the bin edges and the sources."""
    vals = pd.to_numeric(table[metric], errors="coerce")
    finite = vals[np.isfinite(vals)]
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    shown, off = [], []
    for r in rules:
        (shown if lo - 2 * span <= r.value <= hi + 2 * span else off).append(r)
    x0 = min([lo] + [r.value for r in shown])
    x1 = max([hi] + [r.value for r in shown])
    pad = (x1 - x0) * 0.05 or 0.5
    bins = np.linspace(x0 - pad, x1 + pad, 31)
    sources = sorted(table["source"].dropna().unique()) if "source" in table.columns else []
    return vals, finite, shown, off, bins, sources


def metric_figure_key(table: pd.DataFrame, metric: str, rules: Sequence[Rule]) -> tuple:
    """Everything ``metric_figure`` draws, without the values themselves: the bin edges, the count of
    each bin (per source when there are several), the rules on and off scale and the metric's
    catalog entry. A changed file whose values stay in their bins leaves the figure as it was."""
    vals, finite, shown, off, bins, sources = _metric_bins(table, metric, rules)
    if len(sources) <= 1:
        counts = [np.histogram(finite.to_numpy(dtype=float), bins=bins)[0]]
    else:
        counts = [np.histogram(vals[(table["source"] == s) & np.isfinite(vals)].to_numpy(dtype=float), bins=bins)[0]
                  for s in sources]
    return metric, CATALOG[metric], bins, [str(s) for s in sources], counts, shown, off


def _few_ticks(ax, nx: int = 5, ny: int = 4) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nx))
    ax.yaxis.set_major_locator(MaxNLocator(ny))


def summary_panels(table: pd.DataFrame) -> list[tuple[str, str, list[str], list[tuple[str, list[float], str]]]]:
    """What the summary figure draws: hours kept per source, stacked by split; sequences per source,
    stacked by worst flag level (``svg.stacked_bars`` panels)."""
    from .svg import COLOURS

    panels = []
    kept = table[~table["excluded"].astype(bool)] if len(table) else table
    pivot = (kept.assign(h=pd.to_numeric(kept["duration_s"], errors="coerce") / 3600.0)
             .pivot_table(index="source", columns="split", values="h", aggfunc="sum", fill_value=0.0)
             if len(kept) else pd.DataFrame())
    series = []
    if not pivot.empty:
        splits = [c for c in ("train", "val", "test") if c in pivot.columns] + [
            c for c in pivot.columns if c not in ("train", "val", "test")]
        series = [(str(sp), [float(v) for v in pivot[sp].to_numpy()], COLOURS[k % len(COLOURS)])
                  for k, sp in enumerate(splits)]
    panels.append(("hours kept, by source and split", "hours", [str(i) for i in pivot.index], series))
    series, cats = [], []
    if len(table):
        lv = table.assign(lv=table["flag_level"].replace("", "clean"))
        counts = lv.pivot_table(index="source", columns="lv", values="seq_id", aggfunc="count", fill_value=0)
        cats = [str(i) for i in counts.index]
        series = [(level, [float(v) for v in counts[level].to_numpy()], LEVEL_COLOURS["" if level == "clean" else level])
                  for level in ("clean", "info", "warn", "exclude") if level in counts.columns]
    panels.append(("sequences by worst flag level", "sequences", cats, series))
    return panels


def summary_figure(summary: Mapping[str, Any], table: pd.DataFrame) -> str:
    """Hours per source and split; flag levels per source (SVG)."""
    return summary_svg(summary_panels(table))


def summary_svg(panels: list) -> str:
    """The summary figure drawn from ``summary_panels``."""
    from . import svg

    return svg.img(svg.stacked_bars(panels), "summary: hours and flag levels per source")


def sequence_figure(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], title: str) -> str:
    """Per-sequence panels: joint angles, sole heights with contact, joint spikes, and when present
    GRF per foot, main-joint torques and simulation tracking error."""
    plt = _plt()
    view = ArrayView(arrays, meta)
    n = len(arrays["time_s"]) if "time_s" in arrays else len(next(iter(arrays.values())))
    t = np.asarray(arrays["time_s"], dtype=float) if "time_s" in arrays else np.arange(n) / float(meta.get("fps_hz", 30))
    panels = []
    if "joint_rot_aa_rad" in view:
        panels.append("angles")
    if "foot_points_m" in view:
        panels.append("feet")
    if "joint_pos_m" in view:
        panels.append("spike")
    if "grf_n" in view:
        panels.append("grf")
    if "joint_torque_nm" in view:
        panels.append("torque")
    if "mpjpe_m" in view or "residual_wrench" in view:
        panels.append("sim")
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.5, 1.35 * len(panels) + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    joints = [sk.JOINT_NAMES.index(j) for j in MAIN_JOINTS]
    mass = float(meta.get("mass_kg") or 70.0)
    for ax, p in zip(axes, panels):
        if p == "angles":
            ang = np.degrees(np.linalg.norm(np.asarray(view["joint_rot_aa_rad"], float)[:, joints], axis=-1))
            for k, j in enumerate(joints):
                ax.plot(t, ang[:, k], linewidth=0.9, label=sk.JOINT_NAMES[j])
            ax.set_ylabel("joint angle [°]")
            ax.legend(**_LEG)
        elif p == "feet":
            fp = np.asarray(view["foot_points_m"], float)
            for k, name in enumerate(sk.FOOT_POINT_NAMES):
                ax.plot(t, fp[:, k, 2], linewidth=0.9, label=name)
            if "contact" in view:
                c = np.asarray(view["contact"]).astype(bool).any(axis=1)
                ax.fill_between(t, 0, 1, where=c, transform=ax.get_xaxis_transform(), color="#999", alpha=0.15,
                                linewidth=0, label="contact")
            ax.axhline(0, color="k", linewidth=0.6)
            ax.set_ylabel("sole height [m]")
            ax.legend(**_LEG)
        elif p == "spike":
            x = np.asarray(view["joint_pos_m"], float)
            s = np.zeros(len(x))
            if len(x) >= 3:
                s[1:-1] = np.nanmax(np.linalg.norm(x[1:-1] - 0.5 * (x[:-2] + x[2:]), axis=-1), axis=1)
            ax.plot(t, s, color="#444", linewidth=0.9)
            ax.set_ylabel("joint spike [m]")
        elif p == "grf":
            f = np.asarray(view["grf_n"], float)
            for k, side in enumerate(("left", "right")):
                ax.plot(t, f[:, k, 2] / (mass * G_MPS2), linewidth=0.9, label=f"{side} Fz")
            ax.set_ylabel("GRF [BW]")
            ax.legend(**_LEG)
        elif p == "torque":
            tq = np.linalg.norm(np.asarray(view["joint_torque_nm"], float), axis=-1) / mass
            for j in joints:
                if j >= 1:
                    ax.plot(t, tq[:, j - 1], linewidth=0.9, label=sk.JOINT_NAMES[j])
            ax.set_ylabel("|torque| [N·m/kg]")
            ax.legend(**_LEG)
        elif p == "sim":
            if "mpjpe_m" in view:
                ax.plot(t, np.asarray(view["mpjpe_m"], float) * 1000, label="MPJPE [mm]", linewidth=0.9)
            if "residual_wrench" in view:
                w = np.asarray(view["residual_wrench"], float)
                ax.plot(t, np.linalg.norm(w[:, :3], axis=-1) / (mass * G_MPS2) * 1000, label="residual [mBW]",
                        linewidth=0.9)
            if "reset" in view:
                for tr in t[np.asarray(view["reset"]).astype(bool)]:
                    ax.axvline(tr, color=LEVEL_COLOURS["exclude"], linewidth=0.8)
            ax.legend(**_LEG)
    for ax in axes:
        _few_ticks(ax, 8, 3)
    axes[-1].set_xlabel("time [s]")
    fig.subplots_adjust(left=0.08, right=0.8, top=1 - 0.15 / fig.get_figheight(), bottom=0.45 / fig.get_figheight(),
                        hspace=0.15)
    return _img(fig, f"sequence plots of {title}")


_LEG = {"fontsize": 6, "frameon": False, "loc": "upper left", "bbox_to_anchor": (1.01, 1.05), "ncol": 2}


# --- simulated vs measured -----------------------------------------------------------------------

VALIDATION_METRICS = ("grf_vs_plate_err_left_n_per_kg", "grf_vs_plate_err_right_n_per_kg", "grf_peak_err_frac",
                      "grf_impulse_err_frac", "cop_vs_plate_err_left_m", "cop_vs_plate_err_right_m",
                      "torque_vs_id_rmse_nm_per_kg")
"""Columns of the "Simulated vs measured" table (``pipeline.quality.validation``)."""

VALIDATION_PLOTS = 8
"""At most this many sequences get simulated-vs-measured curves."""


def validation_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of simulated passes that carry any validation metric (finite), sorted by sequence id."""
    cols = [c for c in VALIDATION_METRICS if c in table.columns]
    if not cols or not len(table):
        return table.iloc[:0]
    vals = table[cols].apply(pd.to_numeric, errors="coerce")
    return table[np.isfinite(vals.to_numpy(dtype=float)).any(axis=1)].sort_values("seq_id")


def validation_figure(measured: Mapping[str, np.ndarray], simulated: Mapping[str, np.ndarray], mass_kg: float,
                      fps_hz: float, title: str) -> str:
    """Vertical GRF per foot (simulation vs plates, BW) and sagittal knee/ankle torques (simulation
    vs inverse dynamics, N·m/kg). Simulated values are interval means, drawn at the intervals'
    midpoints; measured values are samples at the frames."""
    from pipeline.inverse_dynamics import sagittal

    plt = _plt()
    panels = [p for p, need in (("grf", "grf_n"), ("knee", "joint_torque_nm"), ("ankle", "joint_torque_nm"))
              if need in measured and need in simulated]
    if not panels:
        return '<p class="muted">no arrays to compare in the stores</p>'
    n = len(next(iter(simulated.values())))
    t = np.asarray(measured["time_s"], float) if "time_s" in measured else np.arange(n) / fps_hz
    ts = t + 0.5 / fps_hz
    bw = mass_kg * G_MPS2
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.5, 1.45 * len(panels) + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    tq = {}
    if "joint_torque_nm" in measured and "joint_torque_nm" in simulated:
        tq["id"] = sagittal(measured["joint_torque_nm"], measured.get("joint_rot_aa_rad"))
        tq["sim"] = sagittal(simulated["joint_torque_nm"], simulated.get("joint_rot_aa_rad"))
    colours = {"left": "#1f77b4", "right": "#d62728"}
    for ax, p in zip(axes, panels):
        for k, side in enumerate(("left", "right")):
            c = colours[side]
            if p == "grf":
                ax.plot(t, np.asarray(measured["grf_n"], float)[:, k, 2] / bw, color=c, linestyle="--",
                        linewidth=1.1, label=f"{side} plate")
                ax.plot(ts, np.asarray(simulated["grf_n"], float)[:, k, 2] / bw, color=c, linewidth=0.9,
                        label=f"{side} sim")
                ax.set_ylabel("vertical GRF [BW]")
            else:
                name = f"{side}_{p}"
                ax.plot(t, tq["id"][name] / mass_kg, color=c, linestyle="--", linewidth=1.1, label=f"{side} ID")
                ax.plot(ts, tq["sim"][name] / mass_kg, color=c, linewidth=0.9, label=f"{side} sim")
                ax.set_ylabel(f"{p} sagittal [N·m/kg]", fontsize=7)
                ax.axhline(0, color="k", linewidth=0.5)
        ax.legend(**_LEG)
    axes[0].set_title(title)
    axes[-1].set_xlabel("time [s]")
    fig.subplots_adjust(left=0.08, right=0.82, top=0.9, bottom=0.6 / (1.45 * len(panels) + 0.6), hspace=0.15)
    return _img(fig, f"simulated vs measured: {title}")


def _validation_section(q: BuildQuality, rows: pd.DataFrame, max_plots: int = VALIDATION_PLOTS,
                        figures: FigureCache | None = None) -> str:
    figures = figures or FigureCache(None)
    heads = ["sequence", "λ left [N/kg]", "λ right [N/kg]", "peak err [%]", "impulse err [%]",
             "CoP err left [cm]", "CoP err right [cm]", "torque RMSE [N·m/kg]"]
    body = []
    for _, r in rows.iterrows():
        v = [_f(r.get(c)) for c in VALIDATION_METRICS]
        pct = [None if x is None else 100 * x for x in v[2:4]]
        cm = [None if x is None else 100 * x for x in v[4:6]]
        body.append([r["seq_id"], v[0], v[1], *pct, *cm, v[6]])
    parts = ['<section id="validation"><h2>Simulated vs measured</h2><p class="muted">Simulated passes of '
             "sequences with measured forces, against the force plates (λ: mean |F_sim − F_plate| / body mass over "
             "frames with a known plate force; peak and stance-impulse errors of the vertical force relative to "
             "the plate; CoP err: mean horizontal distance between the simulated and the plate centre of pressure "
             "while the plate carries ≥ 0.2 BW) and against inverse dynamics with the plate forces (RMSE of the "
             "sagittal hip, knee and ankle torques). "
             "Measured values are averaged to the simulator's intervals first. Information only: no rule uses "
             "these metrics (docs/quality.md).</p>", _table(heads, body, num=range(1, 8))]
    reader = None
    shown = rows.head(max_plots)
    if len(shown):
        from .collect import BuildReader

        try:
            reader = BuildReader(q.out_dir)
        except Exception:
            reader = None
    for sid in shown["seq_id"]:
        base = str(sid).split("#pass")[0]
        # from the stores, or for an excluded pass from its quality preview
        meas, sim = _sequence_data(q, reader, base), _sequence_data(q, reader, str(sid))
        if meas is None or sim is None:
            fig = '<p class="muted">not in the stores and no preview saved</p>'
        else:
            mass = float(sim[1].get("mass_kg") or meas[1].get("mass_kg") or 70.0)
            fps = float(sim[1].get("fps_hz") or meas[1].get("fps_hz") or 30.0)
            fig = figures.figure("validation", validation_figure, meas[0], sim[0], mass, fps, str(sid))
        parts.append(f'<div class="seq" id="val-{_safe(str(sid))}"><h3>{_e(sid)}</h3>{fig}</div>')
    if len(rows) > len(shown):
        parts.append(f'<p class="muted">curves of the first {len(shown)} of {len(rows)} sequences</p>')
    parts.append("</section>")
    return "".join(parts)


# --- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cfd8dc;font-size:13px}
nav{padding:8px 24px;background:#eceff1;font-size:13px;position:sticky;top:0;z-index:2}
nav a{margin-right:14px;color:#1565c0;text-decoration:none}
main{padding:8px 24px 40px}section{margin:18px 0}h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px}
h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12px;margin:6px 0;background:#fff}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:12px}
.metric{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.metric p{font-size:12px;margin:2px 0 6px;color:#444}img.plot{max-width:100%;height:auto;display:block}
.lv-exclude{color:#d62728;font-weight:600}.lv-warn{color:#e65100;font-weight:600}.lv-info{color:#1f77b4}
.ok{color:#2e7d32;font-weight:600}.bad{color:#d62728;font-weight:600}.muted{color:#777;font-size:12px}
.seq{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:12px 0}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _num(v: Any, digits: int = 3) -> str:
    v = _f(v)
    if v is None:
        return "–"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}" if 1e-3 <= abs(v) < 1e6 else f"{v:.2e}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], num: Iterable[int] = ()) -> str:
    num = set(num)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            if isinstance(c, _Raw):
                cells.append(f"<td>{c.html}</td>")
            elif i in num:
                cells.append(f'<td class="num">{_num(c) if isinstance(c, float) else _e(c)}</td>')
            else:
                cells.append(f"<td>{_e(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass(frozen=True)
class _Raw:
    html: str


def _anchor(seq_id: str) -> str:
    return "seq-" + _safe(seq_id)


def _level(lv: str) -> _Raw:
    return _Raw(f'<span class="lv-{_e(lv)}">{_e(lv or "clean")}</span>')


def _sequence_data(q: BuildQuality, reader: Any, seq_id: str) -> tuple[dict, dict] | None:
    meta: dict[str, Any] = {}
    if "seq_id" in q.table.columns:
        row = q.table[q.table["seq_id"] == seq_id]
        if len(row):
            meta = {k: row.iloc[0][k] for k in ID_COLUMNS if k in row.columns}
    if reader is not None and any(seq_id in ids for ids in q.store_members.values()):
        from .metrics import meta_from_sequence_values

        arrays, values = reader.sequence(seq_id, names=set(PREVIEW_ARRAYS) | {"marker_pos_m"})
        return arrays, {**meta, **meta_from_sequence_values(values, values["fps_hz"])}
    pv = _preview(q.out_dir, seq_id)
    if pv is not None:
        arrays, m = pv
        return arrays, {**meta, **m, "fps_hz": 30.0}
    return None


def build_report(
    out_dir: str | Path,
    parent: str | Path | None = None,
    path: str | Path | None = None,
    worst: int = 25,
    sequence_plots: int = 12,
    build: Mapping[str, Any] | None = None,
    figures: FigureCache | None = None,
) -> Path:
    """Write the self-contained HTML report of a build/release folder; returns its path
    (``OUT/report.html`` unless ``path``). ``sequence_plots`` = 0 skips per-sequence plots.
    ``build``: the build summary to report instead of ``build.json`` (a build reports while its
    statistics are computed, before it writes ``build.json``; the report reads only its counts).
    ``figures``: where drawn figures are kept and reused (``FigureCache``; default: draw every one)."""
    q = load_build(out_dir, build)
    return _write_html(q, load_build(parent) if parent is not None else None, path, worst, sequence_plots,
                       figures or FigureCache(None))


def _write_html(q: BuildQuality, par: BuildQuality | None, path: str | Path | None, worst: int,
                sequence_plots: int, figures: FigureCache) -> Path:
    t0 = time.perf_counter()
    summary = summarize(q)
    ranked = rank_sequences(q)
    metrics = metric_columns(q.table)
    stats = metric_stats(q.table, metrics)
    diff = diff_builds(q, par) if par is not None else None

    parts: list[str] = []
    s = summary
    rate_cls = "bad" if s["sequences_excluded"] else "ok"
    parts.append(
        f'<header><h1>dynaset data-quality report</h1><p>{_e(q.out_dir)} · build {_e(s["build_id"] or "–")} · '
        f'dynaset {_e(s["dynaset_version"] or "–")} · generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}'
        f' · thresholds: {_e(q.thresholds.source)}</p></header>'
    )
    val_rows = validation_rows(q.table)
    nav = [("summary", "Summary"), ("quarantine", "Quarantine"), ("exclusions", "Exclusions"),
           ("worst", "Worst sequences"), ("rules", "Flags"), ("distributions", "Distributions"), ("sources", "Per source")]
    nav += [("validation", "Simulated vs measured")] if len(val_rows) else []
    nav += [("sequences", "Sequence plots")] + ([("diff", "Diff vs parent")] if diff else [])
    parts.append("<nav>" + "".join(f'<a href="#{a}">{_e(b)}</a>' for a, b in nav) + "</nav><main>")

    # summary
    cards = [
        (f'{s["sequences_kept"]}', "sequences kept"), (f'{s["hours"]:.2f}', "hours kept"),
        (f'{s["subjects"]}', "subjects"),
        (f'<span class="{rate_cls}">{s["sequences_excluded"]} ({100 * s["exclusion_rate"]:.1f} %)</span>', "excluded"),
        (f'{s["flag_levels"]["warn"]}', "with warnings"), (f'{s["files_quarantined"]}', "files quarantined"),
    ]
    parts.append('<section id="summary"><h2>Summary</h2><div class="cards">' + "".join(
        f"<div class=card><b>{v}</b><span>{_e(k)}</span></div>" for v, k in cards) + "</div>")
    if q.recomputed:
        parts.append('<p class="muted">No metrics.parquet in this folder: metrics were recomputed from the stores '
                     'with the default thresholds; sequences the build excluded are not in its stores.</p>')
    if len(q.table):
        parts.append(figures.figure("summary", summary_svg, summary_panels(q.table)))
    parts.append("<h3>Per source</h3>" + _table(
        ["source", "sequences", "subjects", "hours", "excluded", "excluded hours"],
        [[r["source"], r["sequences"], r["subjects"], r["hours"], r["excluded"], r["excluded_hours"]] for r in s["by_source"]],
        num=range(1, 6)))
    parts.append("<h3>Per split</h3>" + _table(
        ["split", "sequences", "subjects", "hours", "excluded"],
        [[r["split"], r["sequences"], r["subjects"], r["hours"], r["excluded"]] for r in s["by_split"]], num=range(1, 5)))
    sub_rows = []
    for name, info in s["subsets"].items():
        by = info.get("by_source") or {}
        detail = ", ".join(f"{k}: {v['sequences']} seq / {v['hours']:.2f} h" for k, v in by.items()) or "–"
        sub_rows.append([name, info.get("sequences"), _f(info.get("hours")), detail])
    parts.append("<h3>Per subset</h3>" + _table(["subset", "sequences", "hours", "by source"], sub_rows, num=(1, 2))
                 + "</section>")

    plotted = list(ranked["seq_id"].head(sequence_plots)) if sequence_plots and len(ranked) else []

    # quarantine and exclusions
    parts.append(f'<section id="quarantine"><h2>Quarantined files ({len(q.quarantine)})</h2>' + (
        _table(["file", "stage", "reason"], [[e.get("path"), e.get("stage"), e.get("reason")] for e in q.quarantine])
        if q.quarantine else '<p class="muted">none</p>') + "</section>")
    parts.append(f'<section id="exclusions"><h2>Excluded sequences ({len(q.exclusions)})</h2>' + (
        _table(["sequence", "source", "reasons"],
               [[_Raw(f'<a href="#{_anchor(e["seq_id"])}">{_e(e["seq_id"])}</a>') if e["seq_id"] in plotted
                 else e["seq_id"], e.get("source"),
                 "; ".join(e.get("reasons", []))] for e in q.exclusions])
        if q.exclusions else '<p class="muted">none</p>') + "</section>")

    # worst sequences
    wrows = []
    for _, r in ranked.head(worst).iterrows():
        link = (_Raw(f'<a href="#{_anchor(r["seq_id"])}">{_e(r["seq_id"])}</a>') if r["seq_id"] in plotted
                else r["seq_id"])
        wrows.append([link, r.get("source", ""), _level(r["level"]), "; ".join(r["reasons"])])
    parts.append(f'<section id="worst"><h2>Worst sequences (top {min(worst, len(ranked))} of {len(ranked)} flagged)</h2>'
                 + (_table(["sequence", "source", "level", "reasons"], wrows) if wrows else '<p class="muted">no flags</p>')
                 + "</section>")

    # rules
    counts = s["rule_counts"]

    def _rule_rows(rules):
        return [[r.name, _level(r.level), r.metric,
                 f"{r.op} {r.value:g} {CATALOG[r.metric].unit if r.metric in CATALOG else ''}",
                 counts.get(r.name, 0), r.anchor] for r in rules]

    heads = ["rule", "level", "metric", "condition", "sequences", "anchor"]
    fired = [r for r in q.thresholds.rules if r.enabled and counts.get(r.name, 0)]
    parts.append('<section id="rules"><h2>Flags</h2><p class="muted">A rule fires when '
                 '<code>metric op threshold</code>; per metric only the most severe fired rule is kept.</p>'
                 + (_table(heads, _rule_rows(fired), num=(4,)) if fired else '<p class="muted">no rule fired</p>')
                 + f"<details><summary>all {len(q.thresholds.rules)} rules (thresholds: {_e(q.thresholds.source)})"
                 "</summary>" + _table(heads, _rule_rows(q.thresholds.rules), num=(4,)) + "</details></section>")

    # distributions
    parts.append('<section id="distributions"><h2>Metric distributions</h2>')
    missing = [m for m in CATALOG if m not in metrics]
    for stage in STAGE_ORDER + tuple(sorted({CATALOG[m].stage for m in metrics} - set(STAGE_ORDER))):
        ms = [m for m in metrics if CATALOG[m].stage == stage]
        if not ms:
            continue
        parts.append(f"<h3>{_e(stage)}</h3><div class=grid>")
        for m in ms:
            st = stats[m]
            rules = _rules_for(q.thresholds, m)
            rtxt = ", ".join(f'<span class="lv-{r.level}">{r.level} {_e(r.op)} {r.value:g}</span>' for r in rules)
            parts.append(
                f'<div class="metric" id="m-{_e(m)}"><b>{_e(m)}</b> <span class="muted">[{_e(CATALOG[m].unit)}]</span>'
                f"<p>{_e(CATALOG[m].description)}<br>median {_num(st['p50'])} · p95 {_num(st['p95'])} · max "
                f"{_num(st['max'])} · n = {st['n']}{' · ' + rtxt if rtxt else ''}</p>"
                + figures.figure("metric", metric_svg, metric_figure_key(q.table, m, rules))
                + "</div>")
        parts.append("</div>")
    if missing:
        parts.append('<p class="muted">Not available in this build (their stage has not produced the arrays yet): '
                     + ", ".join(_e(m) for m in missing) + "</p>")
    parts.append("</section>")

    # per source
    sources = sorted(q.table["source"].dropna().unique()) if "source" in q.table.columns else []
    prow = []
    for m in metrics:
        row: list[Any] = [_Raw(f'<a href="#m-{_e(m)}">{_e(m)}</a>'), CATALOG[m].unit]
        for src in sources:
            v = pd.to_numeric(q.table.loc[q.table["source"] == src, m], errors="coerce").dropna()
            row += [float(v.median()) if len(v) else None, float(v.quantile(0.95)) if len(v) else None]
        prow.append(row)
    heads = ["metric", "unit"] + [f"{src} {k}" for src in sources for k in ("median", "p95")]
    parts.append('<section id="sources"><h2>Per-source comparison</h2>' + _table(heads, prow, num=range(2, len(heads)))
                 + "</section>")

    # simulated vs measured (force plates, inverse dynamics)
    if len(val_rows):
        parts.append(_validation_section(q, val_rows, VALIDATION_PLOTS if sequence_plots else 0, figures))

    # per-sequence plots
    parts.append('<section id="sequences"><h2>Per-sequence plots (worst sequences)</h2>')
    if plotted:
        from .collect import BuildReader

        try:
            reader = BuildReader(q.out_dir)
        except Exception:
            reader = None
        for sid in plotted:
            r = ranked[ranked["seq_id"] == sid].iloc[0]
            data = _sequence_data(q, reader, sid)
            body = (figures.figure("sequence", sequence_figure, data[0], data[1], sid) if data is not None else
                    '<p class="muted">not in the stores and no preview saved (excluded sequence)</p>')
            parts.append(f'<div class="seq" id="{_anchor(sid)}"><h3>{_e(sid)} {_level(r["level"]).html}</h3>'
                         f'<p class="muted">{_e("; ".join(r["reasons"]))}</p>{body}</div>')
    else:
        parts.append('<p class="muted">no flagged sequences to plot</p>' if sequence_plots else
                     '<p class="muted">per-sequence plots disabled</p>')
    parts.append("</section>")

    # diff
    if diff is not None:
        parts.append(f'<section id="diff"><h2>Diff against {_e(diff["parent"])}</h2>')
        parts.append(_table(["", "this", "parent"], [
            ["sequences", *diff["sequences"]], ["hours", *diff["hours"]],
            ["exclusion rate", *diff["exclusion_rate"]]], num=(1, 2)))
        parts.append(f'<p>{len(diff["added"])} sequences added, {len(diff["removed"])} removed, '
                     f'{len(diff["changed"])} changed (different source file hash).</p>')
        for label in ("added", "removed", "changed"):
            if diff[label]:
                ids = diff[label]
                parts.append(f"<h3>{label}</h3><p class=muted>" + ", ".join(_e(i) for i in ids[:200])
                             + (f" … (+{len(ids) - 200})" if len(ids) > 200 else "") + "</p>")
        parts.append("<h3>Metric shifts (median)</h3>" + _table(
            ["metric", "unit", "median", "parent median", "Δ median", "relative", "p95", "parent p95", "status"],
            [[x["metric"], x["unit"], x["p50"], x["p50_parent"], x["delta_p50"], x["relative_shift"], x["p95"],
              x["p95_parent"], _Raw(f'<span class="{"bad" if x["status"] == "shifted" else "muted"}">{x["status"]}</span>')]
             for x in diff["metric_shifts"]], num=range(2, 8)))
        parts.append("<h3>Flag counts</h3>" + _table(
            ["rule", "this", "parent"], [[k, *v] for k, v in diff["rule_counts"].items()], num=(1, 2)) + "</section>")

    # catalog footer
    parts.append('<section id="catalog"><h2>Metric catalog</h2>' + _table(
        ["metric", "unit", "stage", "provider", "description"],
        [[m.name, m.unit, m.stage, m.provider, m.description] for m in CATALOG.values()]) + "</section>")
    parts.append(f'<p class="muted">report generated in {time.perf_counter() - t0:.1f} s</p></main>')

    doc = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>dynaset quality · {_e(q.out_dir.name)}</title><style>{_CSS}</style></head><body>"
           + "".join(parts) + "</body></html>\n")
    target = Path(path) if path is not None else q.out_dir / REPORT_FILE
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(target)
    return target


# --- command line --------------------------------------------------------------------------------


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report BUILD_OR_RELEASE [--format html|json] [--max-exclusion-rate R] [--parent P]``."""
    p = subparsers.add_parser("report", help="data-quality report of a build or release (HTML or JSON)")
    p.add_argument("path", metavar="BUILD_OR_RELEASE", help="build/release folder (stores, metrics.parquet, ...)")
    p.add_argument("--format", choices=("html", "json"), default="html")
    p.add_argument("--parent", default=None, help="parent build/release folder to diff against")
    p.add_argument("--max-exclusion-rate", type=float, default=None,
                   help="exit 1 when the fraction of excluded sequences exceeds this (CI gate)")
    p.add_argument("--output", default=None, help="HTML: file to write (default BUILD/report.html); JSON: file instead of stdout")
    p.add_argument("--sequence-plots", type=int, default=12, help="worst sequences to plot (0: none)")
    p.set_defaults(func=run_report)
    return p


def run_report(args: argparse.Namespace) -> int:
    """Entry point of ``dynaset report``; returns the exit code (``exit_code``)."""
    q = load_build(args.path)
    par = load_build(args.parent) if args.parent else None
    doc = _json_doc(q, par)
    if args.format == "json":
        text = json.dumps(doc, indent=2)
        if args.output:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        else:
            print(text)
    else:
        path = _write_html(q, par, args.output, 25, args.sequence_plots)
        s = doc["summary"]
        print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB); {s['sequences_kept']} sequences kept, "
              f"{s['sequences_excluded']} excluded ({100 * s['exclusion_rate']:.1f} %), "
              f"{s['files_quarantined']} files quarantined")
    code = exit_code(doc["summary"], args.max_exclusion_rate)
    if code:
        import sys

        print(f"exclusion rate {doc['summary']['exclusion_rate']:.3f} exceeds --max-exclusion-rate "
              f"{args.max_exclusion_rate}", file=sys.stderr)
    return code
