"""Assembly: every live file's outcome → deduplicated, quality-filtered members of each subset →
store plans → shard-aligned region writes → validated stores swapped into place → statistics.

The pure part (``dedupe``, ``select``, ``plan_stores``) decides what goes where; ``write_stores``
runs the region writes through an executor (``pipeline.dataset.executor``) and does the I/O only
through ``pipeline.store``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__, markers, skeleton
from pipeline.process import BuildConfig
from pipeline.quality import Thresholds
from pipeline.quality.flags import apply_flags, excluded_ids
from pipeline.records import QuarantineEntry
from pipeline.split import SUBSETS
from pipeline.store import (
    Chunking,
    StagedSequence,
    StorePlan,
    create_store,
    finalize_store,
    load_schema,
    plan_store,
    region_plan,
    write_frame_region,
    write_window_region,
)

from .executor import Executor
from .records import FileOutcome, SimOutcome

QUARANTINE_FILE = "quarantine.json"


def store_attrs(cfg: BuildConfig, created_by: str = "dynaset build") -> tuple[dict, dict]:
    """Group attributes and coordinate labels common to every subset store."""
    attrs = {
        "dynaset_version": __version__,
        "fps_hz": float(cfg.canonical.fps_hz),
        "frame_convention": (
            "world frame z up, metres, radians, ground plane z = 0; SMPL joint order; "
            "joint 0 rotation global, others local to the parent; see storage_layout.md"
        ),
        "created_by": created_by,
        "window_length_frames": int(cfg.windows.length),
        "window_stride_frames": int(cfg.windows.stride),
        "window_time": "u = k / (length - 1) in [0, 1]; coefficients in increasing powers of u",
        "build_config": json.dumps(asdict(cfg), default=str, sort_keys=True),
    }
    coords = {
        "joint": list(skeleton.JOINT_NAMES),
        "bone": list(skeleton.BONE_NAMES),
        "marker": list(markers.MARKER_NAMES),
        "foot_point": list(skeleton.FOOT_POINT_NAMES),
        "foot": ["left", "right"],
        "actuated_joint": list(skeleton.JOINT_NAMES[1:]),
        "xyz": ["x", "y", "z"],
    }
    return attrs, coords


def dedupe(outcomes: Sequence[FileOutcome]) -> tuple[list[StagedSequence], list[QuarantineEntry]]:
    """Staged sequences sorted by id; a file whose sequence id another file already has is quarantined.

    Files are considered in (source, path) order, so the first file keeps the id.
    """
    owner: dict[str, str] = {}
    keep: list[StagedSequence] = []
    entries: list[QuarantineEntry] = []
    for o in sorted(outcomes, key=lambda o: (o.source, o.path)):
        clash = [s.key for s in o.staged if s.key in owner]
        if clash:
            entries.append(QuarantineEntry(
                path=o.name, stage="split",
                reason=f"duplicate sequence id {clash[0]!r} (already built from {owner[clash[0]]})",
            ))
            continue
        for s in o.staged:
            owner[s.key] = o.name
            keep.append(s)
    return sorted(keep, key=lambda s: s.key), entries


@dataclass(frozen=True)
class Selection:
    """What the stores hold: every kept sequence (motions and simulated passes) in id order, and
    which of them quality rules exclude; the metrics table and exclusions; duplicate-file entries."""

    staged: tuple[StagedSequence, ...]
    drop: frozenset[str]
    duplicates: tuple[QuarantineEntry, ...]
    sims: tuple[SimOutcome, ...]
    table: Any
    exclusions: list

    def members(self, subset: str) -> list[StagedSequence]:
        """The sequences of ``subset``'s store, in store order (sequence id)."""
        return [s for s in self.staged if subset in s.subsets and s.key not in self.drop]

    @property
    def excluded(self) -> list[StagedSequence]:
        return [s for s in self.staged if s.key in self.drop]


def select(outcomes: Sequence[FileOutcome], sims: Sequence[SimOutcome], thresholds: Thresholds | None) -> Selection:
    """Dedupe files, keep the simulations of kept files, flag every sequence (motions and passes):
    excluded ones stay out of the stores, and a motion excluded by quality takes its passes with it."""
    staged, dups = dedupe(outcomes)
    kept_ids = {s.key for s in staged}
    kept_files = {o.name for o in outcomes} - {q.path for q in dups}
    kept_origins = {c[1] for o in outcomes if o.name in kept_files for c in o.to_simulate}
    sims = [so for so in sims if so.origin in kept_origins]
    sim_staged = [s for so in sims for s in so.staged]
    rows = [r for o in outcomes for r in o.metrics if r.get("seq_id") in kept_ids]
    rows += [r for so in sims for r in so.metrics]
    table, exclusions = apply_flags(rows, thresholds)
    drop = set(excluded_ids(exclusions))
    drop |= {s.key for s in sim_staged if s.key.split("#pass")[0] in drop}
    return Selection(tuple(sorted(staged + sim_staged, key=lambda s: s.key)), frozenset(drop), tuple(dups),
                     tuple(sims), table, exclusions)


def plan_stores(selection: Selection, cfg: BuildConfig, chunking: Chunking | None,
                created_by: str = "dynaset build") -> dict[str, StorePlan]:
    """One validated plan per subset (every store planned before any is written)."""
    attrs, coords = store_attrs(cfg, created_by)
    plans = {}
    for subset in SUBSETS:
        declared = load_schema(subset).coords
        plans[subset] = plan_store(subset, selection.members(subset), attrs,
                                   {k: v for k, v in coords.items() if k in declared}, chunking)
    return plans


def write_region(plan: StorePlan, tmp_path: str, dim: str) -> float:
    """Write region 0 of a ``region_plan`` along ``dim`` (``frame``/``window``); returns seconds."""
    t0 = time.perf_counter()
    (write_frame_region if dim == "frame" else write_window_region)(plan, Path(tmp_path), 0)
    return time.perf_counter() - t0


def write_stores(plans: dict[str, StorePlan], out: Path, build_id: str, executor: Executor,
                 say=print) -> tuple[dict[str, str], float]:
    """Create every store under a temporary name, write all their regions through ``executor``
    (each task gets only its region's sequences), then validate and swap each into place.

    Returns (subset → final path, summed region-write seconds). On any failure every temporary
    store is deleted and the existing stores stay as they were.
    """
    tmps = {subset: out / f".{subset}.zarr.tmp-{build_id}" for subset in plans}
    futures = []
    try:
        for subset, plan in plans.items():
            create_store(plan, tmps[subset])
            futures += [executor.submit(write_region, region_plan(plan, "frame", i), str(tmps[subset]), "frame")
                        for i in range(len(plan.frame_regions))]
            futures += [executor.submit(write_region, region_plan(plan, "window", i), str(tmps[subset]), "window")
                        for i in range(len(plan.window_regions))]
        say(f"[write] {len(futures)} shard-aligned regions over {len(plans)} stores")
        executor.wait(futures)
        seconds = sum(f.result() for f in futures)  # re-raises the first failure
    except BaseException:
        executor.wait(futures)  # no writer may still read the staging folder when it is deleted
        for tmp in tmps.values():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    stores = {}
    for subset, plan in plans.items():
        stores[subset] = str(finalize_store(plan, tmps[subset], out / f"{subset}.zarr"))
        say(f"[write] {subset}: {plan.n_sequences} sequences, {plan.n_frames} frames -> {stores[subset]}")
    return stores, seconds


def store_stats(store_path: str) -> dict:
    """Normalization statistics of one finished store (streamed block by block)."""
    from pipeline.loaders.stats import compute_stats

    return compute_stats(store_path)


def write_stats(stores: dict[str, str], out: Path, executor: Executor) -> Path:
    """``stats.json``: every subset's statistics, computed in parallel through ``executor``."""
    from pipeline.loaders.stats import STATS_FILE, STATS_FORMAT
    from pipeline.store.location import write_text_atomic

    futures = {subset: executor.submit(store_stats, path) for subset, path in stores.items()}
    stats = {"format": STATS_FORMAT, "subsets": {k: f.result() for k, f in futures.items()}}
    write_text_atomic(out / STATS_FILE, json.dumps(stats, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return out / STATS_FILE


def write_quarantine(out: Path, quarantine: Sequence[QuarantineEntry]) -> None:
    from pipeline.store.location import write_text_atomic

    write_text_atomic(out / QUARANTINE_FILE, json.dumps([asdict(q) for q in quarantine], indent=2) + "\n")
