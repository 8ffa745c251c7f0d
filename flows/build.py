"""The ``build`` flow: discover → ingest → canonicalize → contact → fit → split → write.

The flow only wires stages: per-file tasks (read, process, stage to disk) run in parallel on a
Dask cluster; then, per subset, the store skeleton is created and shard-aligned frame/window
regions are written by parallel tasks from the staged sequences; finally each store is
validated and moved into place atomically. Only small records travel back to the flow process,
so its memory does not grow with the corpus.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed, wait

from pipeline import __version__, markers, skeleton
from pipeline.process import (
    BuildConfig, process_motion, simulated_key, simulated_payload, stage_payload,
)
from pipeline.quality import Thresholds, build_report, evaluate_flags
from pipeline.quality.flags import apply_flags, excluded_ids, write_quality_outputs
from pipeline.quality.integration import sequence_metrics
from pipeline.quality.metrics import inputs_from_payload, metrics_row
from pipeline.records import QuarantineEntry
from pipeline.simulate import simulate
from pipeline.store.canonical_io import load_canonical, save_canonical
from pipeline.store.staging import safe_key
from pipeline.sources.base import SourceError, SourceSpec, get_source
from pipeline.split import SUBSETS
from pipeline.store import (
    Chunking,
    StagedSequence,
    create_store,
    finalize_store,
    load_schema,

    plan_store,
    region_plan,
    stage_sequence,
    write_frame_region,
    write_window_region,
)

QUARANTINE_FILE = "quarantine.json"
SUMMARY_FILE = "build.json"


@dataclass(frozen=True)
class FileOutcome:
    """What a per-file task sends back: staged sequences or a quarantine entry, and timings (s)."""

    source: str
    path: str
    staged: tuple[StagedSequence, ...] = ()
    quarantine: QuarantineEntry | None = None
    seconds: dict = field(default_factory=dict)
    frames_in: int = 0
    frames_out: int = 0
    metrics: tuple[dict, ...] = ()
    to_simulate: tuple[tuple[str, str, str], ...] = ()
    """(sequence id, canonical motion file, split) of sequences the simulate stage imitates."""


@dataclass(frozen=True)
class SimOutcome:
    """What a simulate task sends back for one motion: staged passes, metrics rows, or an error."""

    sequence_id: str
    origin: str = ""
    """The canonical motion file it imitated (identifies the source file's sequence)."""
    staged: tuple[StagedSequence, ...] = ()
    metrics: tuple[dict, ...] = ()
    quarantine: QuarantineEntry | None = None
    seconds: float = 0.0
    frames: int = 0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def process_file(
    spec: SourceSpec, path: str, staging_dir: str, cfg: BuildConfig, thresholds: Thresholds | None = None
) -> FileOutcome:
    """Read one source file, run the pure stages and the quality metrics, stage its arrays; never
    raises for bad data. Sequences that a quality rule excludes are not handed to simulation."""
    src = get_source(spec.kind)
    root = Path(spec.root)
    rel = Path(path).relative_to(root).as_posix()
    # every file stages under its own folder: two files claiming one sequence id never collide
    file_staging = Path(staging_dir) / "files" / safe_key(f"{spec.kind}:{rel}")
    seconds: dict[str, float] = {}
    stage = "ingest"
    try:
        t0 = time.perf_counter()
        raws = src.read(Path(path), root)
        seconds["ingest"] = time.perf_counter() - t0
        staged: list[StagedSequence] = []
        rows: list[dict] = []
        to_simulate: list[tuple[str, str, str]] = []
        frames_in = frames_out = 0
        for raw in raws:
            stage = "process"
            processed = process_motion(raw, cfg, seconds)
            key = processed.motion.provenance.sequence_id
            payload = stage_payload(processed)
            stage = "quality"
            t0 = time.perf_counter()
            row = sequence_metrics(processed, payload=payload)
            excluded = any(f.level == "exclude" for f in evaluate_flags(row, thresholds))
            seconds["quality"] = seconds.get("quality", 0.0) + time.perf_counter() - t0
            stage = "stage"
            t0 = time.perf_counter()
            staged.append(stage_sequence(file_staging, key, *payload, subsets=processed.subsets))
            if cfg.simulate is not None and not excluded:
                canon = save_canonical(processed.motion, file_staging / "canonical" / f"{staged[-1].path.name}.npz")
                to_simulate.append((key, str(canon), processed.split))
            seconds["stage"] = seconds.get("stage", 0.0) + time.perf_counter() - t0
            rows.append(row)
            frames_in += raw.n_frames
            frames_out += processed.motion.n_frames
        return FileOutcome(
            spec.kind, rel, tuple(staged), None, seconds, frames_in, frames_out, tuple(rows), tuple(to_simulate)
        )
    except SourceError as exc:
        entry = QuarantineEntry(path=f"{spec.kind}:{rel}", stage=_failed_stage(stage, seconds), reason=exc.problem)
    except (ValueError, FloatingPointError, ArithmeticError) as exc:
        entry = QuarantineEntry(path=f"{spec.kind}:{rel}", stage=_failed_stage(stage, seconds), reason=str(exc))
    except Exception as exc:  # a bug or an unforeseen input: keep the batch going, keep the trace
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        entry = QuarantineEntry(
            path=f"{spec.kind}:{rel}", stage=_failed_stage(stage, seconds), reason=f"unexpected error: {tb}"
        )
    return FileOutcome(spec.kind, rel, (), entry, seconds)


@task(name="ingest-files", cache_policy=NO_CACHE, retries=0)
def process_files(
    jobs: list[tuple[SourceSpec, str]], staging_dir: str, cfg: BuildConfig, thresholds: Thresholds | None = None
) -> list[FileOutcome]:
    """ingest → canonicalize → contact → fit → split → stage for a batch of files, one at a time.

    Files are independent: a bad file is quarantined and the batch goes on. Batching only
    amortizes Prefect's per-task-run bookkeeping (several API calls per task run).
    """
    return [process_file(spec, path, staging_dir, cfg, thresholds) for spec, path in jobs]


def _sim_error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def simulate_motions(items: list[tuple[str, str, str]], cfg: BuildConfig) -> list[SimOutcome]:
    """Imitate a batch of canonical motions ``cfg.simulate.passes`` times.

    Each pass runs the whole batch through the backend at once (a GPU backend batches across
    sequences); if the batch fails, its motions are retried one by one so that a motion the
    simulator cannot handle is quarantined alone. Every pass of every motion is staged as its own
    sequence (ground_reaction + torque subsets) with its quality-metrics row.
    """
    t0 = time.perf_counter()
    loaded, failed = [], {}
    for key, path, split in items:
        try:
            loaded.append((key, path, split, load_canonical(Path(path))))
        except Exception as exc:  # an unreadable hand-over file: quarantine this motion only
            failed[path] = _sim_error(exc)
    staged: dict[str, list] = {path: [] for _, path, _, _ in loaded}
    rows: dict[str, list] = {path: [] for _, path, _, _ in loaded}
    for p in range(cfg.simulate.passes):
        batch = [item for item in loaded if item[1] not in failed]
        try:
            results = simulate([m for *_, m in batch], cfg.simulate, pass_index=p, backend=cfg.sim_backend)
        except Exception:
            results = []
            for key, path, _, motion in batch:
                try:
                    results.append(simulate([motion], cfg.simulate, pass_index=p, backend=cfg.sim_backend)[0])
                except Exception as exc:
                    failed[path] = _sim_error(exc)
                    results.append(None)
        for (key, path, split, motion), result in zip(batch, results):
            if result is None:
                continue
            try:
                frame, window, values = simulated_payload(motion, result, split, cfg.windows)
                sim_key = simulated_key(key, p)
                arrays, meta = inputs_from_payload(
                    frame, window, values, motion.fps_hz, {"residual_wrench": result.residual_wrench}, seq_id=sim_key
                )
                rows[path].append(metrics_row(arrays, meta))
                staged[path].append(stage_sequence(
                    Path(path).parent.parent / "sim", sim_key, frame, window, values,
                    subsets=("ground_reaction", "torque"),
                ))
            except Exception as exc:
                failed[path] = _sim_error(exc)
    share = (time.perf_counter() - t0) / max(1, len(items))
    out = []
    for key, path, _ in items:
        if path in failed:
            out.append(SimOutcome(key, path, quarantine=QuarantineEntry(path=key, stage="simulate", reason=failed[path]),
                                  seconds=share))
        else:
            motion = next(m for k, pth, _, m in loaded if pth == path)
            out.append(SimOutcome(key, path, tuple(staged[path]), tuple(rows[path]), None, share,
                                  motion.n_frames * cfg.simulate.passes))
    return out


@task(name="simulate", cache_policy=NO_CACHE, retries=0)
def simulate_batch(items: list[tuple[str, str, str]], cfg: BuildConfig) -> list[SimOutcome]:
    """The simulate stage for a batch of canonical motions: one Dask task, annotated with a GPU
    resource when the backend needs one (see ``simulate_motions``)."""
    return simulate_motions(items, cfg)


def batch_jobs(jobs: list, workers: int, max_batch: int = 16) -> list[list]:
    """Split jobs into contiguous batches: ~8 batches per worker, at most ``max_batch`` files each."""
    if not jobs:
        return []
    size = max(1, min(max_batch, -(-len(jobs) // (8 * max(1, workers)))))
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def _failed_stage(stage: str, seconds: dict) -> str:
    if stage != "process":
        return stage
    return next((s for s in ("canonicalize", "contact", "fit") if s not in seconds), "split")


@task(name="report", cache_policy=NO_CACHE, retries=0)
def quality_report(out_dir: str) -> str:
    """The build's self-contained HTML data-quality report (on a worker: plotting stays out of
    the flow process)."""
    return str(build_report(Path(out_dir)))


@task(name="stats", cache_policy=NO_CACHE, retries=0)
def store_stats(store_path: str) -> dict:
    """Normalization statistics of one finished store (streamed block by block)."""
    from pipeline.loaders.stats import compute_stats

    return compute_stats(store_path)


@task(name="write-frame-region", cache_policy=NO_CACHE, retries=1)
def write_frames(plan, tmp_path: str, region: int) -> float:
    t0 = time.perf_counter()
    write_frame_region(plan, Path(tmp_path), region)
    return time.perf_counter() - t0


@task(name="write-window-region", cache_policy=NO_CACHE, retries=1)
def write_windows(plan, tmp_path: str, region: int) -> float:
    t0 = time.perf_counter()
    write_window_region(plan, Path(tmp_path), region)
    return time.perf_counter() - t0


def store_attrs(cfg: BuildConfig) -> tuple[dict, dict]:
    """Group attributes and coordinate labels common to every subset store."""
    attrs = {
        "dynaset_version": __version__,
        "fps_hz": float(cfg.canonical.fps_hz),
        "frame_convention": (
            "world frame z up, metres, radians, ground plane z = 0; SMPL joint order; "
            "joint 0 rotation global, others local to the parent; see storage_layout.md"
        ),
        "created_by": "dynaset build",
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


@flow(name="build", log_prints=False, validate_parameters=False)
def build(
    sources: list[SourceSpec],
    out_dir: str,
    cfg: BuildConfig = BuildConfig(),
    chunking: Chunking | None = None,
    workers: int = 2,
    thresholds: Thresholds | None = None,
) -> dict:
    """Build every subset store under ``out_dir`` from the given sources; returns the summary.

    ``workers`` is the number of parallel task slots, used to size the file batches.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_id = uuid.uuid4().hex[:12]
    staging = out / ".staging" / build_id
    staging.mkdir(parents=True)
    try:
        return _build(sources, out, cfg, chunking, workers, build_id, staging, thresholds or Thresholds.default())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _cleanup_empty(out / ".staging")


def _build(
    sources, out: Path, cfg: BuildConfig, chunking, workers: int, build_id: str, staging: Path, thresholds: Thresholds
) -> dict:
    t_start = time.perf_counter()

    # discover
    jobs: list[tuple[SourceSpec, str]] = []
    quarantine: list[QuarantineEntry] = []
    for spec in sources:
        src = get_source(spec.kind)
        files = src.discover(Path(spec.root))
        _say(f"[discover] {spec.kind}: {len(files)} files under {spec.root}")
        jobs.extend((spec, str(p)) for p in files)

    # ingest → canonicalize → contact → fit → split → quality → stage, in parallel batches of
    # files; each finished batch's motions go on to the simulate stage right away
    batches = batch_jobs(jobs, workers)
    futures = [process_files.submit(batch, str(staging), cfg, thresholds) for batch in batches]
    outcomes: list[FileOutcome] = []
    sim_futures = []
    n_sim = 0
    for fut in as_completed(futures):
        batch_items = []
        for o in fut.result():
            outcomes.append(o)
            batch_items.extend(o.to_simulate)
            if o.quarantine is not None:
                q = o.quarantine
                _say(f"[quarantine] {q.path} ({q.stage}): {q.reason}")
                quarantine.append(q)
        _say(f"[process] {len(outcomes)}/{len(jobs)} files done, {len(quarantine)} quarantined")
        if batch_items:
            n_sim += len(batch_items)
            with _annotate(cfg):
                sim_futures.append(simulate_batch.submit(batch_items, cfg))
    t_process = time.perf_counter() - t_start
    sims: list[SimOutcome] = []
    for fut in as_completed(sim_futures):
        for so in fut.result():
            sims.append(so)
            if so.quarantine is not None:
                q = so.quarantine
                _say(f"[quarantine] {q.path} ({q.stage}): {q.reason}")
                quarantine.append(q)
        _say(f"[simulate] {len(sims)}/{n_sim} motions imitated ({cfg.simulate.passes} pass(es) each)")
    t_simulate = time.perf_counter() - t_start - t_process

    staged, dup_entries = _dedupe(outcomes)
    for q in dup_entries:
        _say(f"[quarantine] {q.path} ({q.stage}): {q.reason}")
    quarantine.extend(dup_entries)
    kept_ids = {s.key for s in staged}
    # simulations of the kept files only (a quarantined duplicate's motion may have been imitated too)
    kept_files = {f"{o.source}:{o.path}" for o in outcomes} - {q.path for q in dup_entries}
    kept_origins = {c[1] for o in outcomes if f"{o.source}:{o.path}" in kept_files for c in o.to_simulate}
    sims = [so for so in sims if so.origin in kept_origins]
    sim_staged = [s for so in sims for s in so.staged]
    staged = sorted(staged + sim_staged, key=lambda s: s.key)

    # quality: flag every sequence (motion and simulated passes); excluded ones stay out of the stores
    rows = [r for o in outcomes for r in o.metrics if r.get("seq_id") in kept_ids]
    rows += [r for so in sims for r in so.metrics]
    table, exclusions = apply_flags(rows, thresholds)
    drop = excluded_ids(exclusions)
    # a motion excluded by quality takes its simulated passes with it
    drop |= {s.key for s in sim_staged if s.key.split("#pass")[0] in drop}
    write_quality_outputs(out, table, exclusions, staged=[s for s in staged if s.key in drop])
    if drop:
        _say(f"[quality] {len(drop)} sequences excluded by quality rules (exclusions.json)")

    # write: every subset's regions in parallel, then finalize each store atomically
    attrs, coords = store_attrs(cfg)
    plans = {}
    for subset in SUBSETS:  # plan (and validate) every store before writing any
        members = [s for s in staged if subset in s.subsets and s.key not in drop]
        declared = load_schema(subset).coords
        plan = plan_store(subset, members, attrs, {k: v for k, v in coords.items() if k in declared}, chunking)
        plans[subset] = (plan, out / f".{subset}.zarr.tmp-{build_id}")
    region_futures = []
    try:
        for plan, tmp in plans.values():
            create_store(plan, tmp)
            # each writer gets only its region's sequences (payload ∝ region, not corpus)
            region_futures += [write_frames.submit(region_plan(plan, "frame", i), str(tmp), 0)
                               for i in range(len(plan.frame_regions))]
            region_futures += [write_windows.submit(region_plan(plan, "window", i), str(tmp), 0)
                               for i in range(len(plan.window_regions))]
        _say(f"[write] {len(region_futures)} shard-aligned regions over {len(SUBSETS)} stores")
        done = wait(region_futures)
        failed = [f for f in done.done if f.state.is_failed()]
        if failed:
            failed[0].result()  # re-raise the first failure; earlier stores stay untouched
    except BaseException:
        wait(region_futures)  # no writer may still read the staging folder when it is deleted
        for _, tmp in plans.values():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_seconds = sum(f.result() for f in region_futures)
    stores = {}
    for subset, (plan, tmp) in plans.items():
        stores[subset] = str(finalize_store(plan, tmp, out / f"{subset}.zarr"))
        _say(f"[write] {subset}: {plan.n_sequences} sequences, {plan.n_frames} frames -> {stores[subset]}")
    # normalization statistics per subset, computed once here and shipped with the build
    from pipeline.loaders.stats import STATS_FILE, STATS_FORMAT

    stats_futures = {subset: store_stats.submit(path) for subset, path in stores.items()}
    stats = {"format": STATS_FORMAT, "subsets": {k: f.result() for k, f in stats_futures.items()}}
    (out / STATS_FILE).write_text(json.dumps(stats, indent=1, sort_keys=True, allow_nan=False) + "\n")
    _say(f"[stats] normalization statistics -> {out / STATS_FILE}")
    t_total = time.perf_counter() - t_start

    summary = _summary(outcomes, quarantine, stores, plans, cfg, t_process, t_total, build_id)
    summary["task_seconds"]["write_regions"] = write_seconds
    summary["task_seconds"]["simulate"] = sum(so.seconds for so in sims)
    summary["wall_seconds"]["simulate"] = t_simulate
    summary["frames_simulated"] = sum(so.frames for so in sims)
    summary["sequences_excluded"] = len(drop)
    (out / QUARANTINE_FILE).write_text(json.dumps([asdict(q) for q in quarantine], indent=2) + "\n")
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    try:
        report = quality_report.submit(str(out)).result()
        _say(f"[report] {report}")
    except Exception as exc:  # the stores are complete; a report failure must not hide that
        _say(f"[report] failed: {type(exc).__name__}: {exc}")
    return summary


def _annotate(cfg: BuildConfig):
    """Dask annotation pinning simulate tasks to GPU workers when a GPU backend is selected."""
    import contextlib

    import dask

    if cfg.sim_backend == "gpu":
        return dask.annotate(resources={"GPU": 1})
    return contextlib.nullcontext()


def _dedupe(outcomes: list[FileOutcome]) -> tuple[list[StagedSequence], list[QuarantineEntry]]:
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
                path=f"{o.source}:{o.path}", stage="split",
                reason=f"duplicate sequence id {clash[0]!r} (already built from {owner[clash[0]]})",
            ))
            continue
        for s in o.staged:
            owner[s.key] = f"{o.source}:{o.path}"
            keep.append(s)
    return sorted(keep, key=lambda s: s.key), entries


def _cleanup_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _summary(outcomes, quarantine, stores, plans, cfg, t_process, t_total, build_id) -> dict:
    quarantined = {q.path for q in quarantine}
    stage_seconds: dict[str, float] = {}
    for o in outcomes:
        for k, v in o.seconds.items():
            stage_seconds[k] = stage_seconds.get(k, 0.0) + v
    subsets = {}
    for subset, (plan, _) in plans.items():
        subsets[subset] = {
            "store": stores[subset],
            "sequences": plan.n_sequences,
            "frames": plan.n_frames,
            "windows": plan.n_windows,
            "hours": plan.n_frames / cfg.canonical.fps_hz / 3600.0,
        }
    return {
        "build_id": build_id,
        "dynaset_version": __version__,
        "files": len(outcomes),
        "files_built": len(outcomes) - len(quarantine),
        "files_quarantined": len(quarantine),
        "frames_in": sum(o.frames_in for o in outcomes if f"{o.source}:{o.path}" not in quarantined),
        "frames_out": sum(o.frames_out for o in outcomes if f"{o.source}:{o.path}" not in quarantined),
        "task_seconds": stage_seconds,
        "wall_seconds": {"process": t_process, "total": t_total},
        "subsets": subsets,
        "quarantine_file": QUARANTINE_FILE,
    }
