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
from pipeline.process import BuildConfig, process_motion, stage_payload
from pipeline.records import QuarantineEntry
from pipeline.sources.base import SourceError, SourceSpec, get_source
from pipeline.split import SUBSETS
from pipeline.store import (
    Chunking,
    StagedSequence,
    create_store,
    finalize_store,
    load_schema,
    plan_store,
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


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def process_file(spec: SourceSpec, path: str, staging_dir: str, cfg: BuildConfig) -> FileOutcome:
    """Read one source file, run the pure stages, stage its arrays; never raises for bad data."""
    src = get_source(spec.kind)
    root = Path(spec.root)
    rel = Path(path).relative_to(root).as_posix()
    seconds: dict[str, float] = {}
    stage = "ingest"
    try:
        t0 = time.perf_counter()
        raws = src.read(Path(path), root)
        seconds["ingest"] = time.perf_counter() - t0
        staged: list[StagedSequence] = []
        frames_in = frames_out = 0
        for raw in raws:
            stage = "process"
            processed = process_motion(raw, cfg, seconds)
            stage = "stage"
            t0 = time.perf_counter()
            frame_arrays, window_arrays, seq_values = stage_payload(processed)
            staged.append(
                stage_sequence(
                    Path(staging_dir), processed.motion.provenance.sequence_id,
                    frame_arrays, window_arrays, seq_values, subsets=processed.subsets,
                )
            )
            seconds["stage"] = seconds.get("stage", 0.0) + time.perf_counter() - t0
            frames_in += raw.n_frames
            frames_out += processed.motion.n_frames
        return FileOutcome(spec.kind, rel, tuple(staged), None, seconds, frames_in, frames_out)
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
def process_files(jobs: list[tuple[SourceSpec, str]], staging_dir: str, cfg: BuildConfig) -> list[FileOutcome]:
    """ingest → canonicalize → contact → fit → split → stage for a batch of files, one at a time.

    Files are independent: a bad file is quarantined and the batch goes on. Batching only
    amortizes Prefect's per-task-run bookkeeping (several API calls per task run).
    """
    return [process_file(spec, path, staging_dir, cfg) for spec, path in jobs]


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
        return _build(sources, out, cfg, chunking, workers, build_id, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _cleanup_empty(out / ".staging")


def _build(sources, out: Path, cfg: BuildConfig, chunking, workers: int, build_id: str, staging: Path) -> dict:
    t_start = time.perf_counter()

    # discover
    jobs: list[tuple[SourceSpec, str]] = []
    quarantine: list[QuarantineEntry] = []
    for spec in sources:
        src = get_source(spec.kind)
        files = src.discover(Path(spec.root))
        _say(f"[discover] {spec.kind}: {len(files)} files under {spec.root}")
        jobs.extend((spec, str(p)) for p in files)

    # ingest → canonicalize → contact → fit → split → stage, in parallel batches of files
    batches = batch_jobs(jobs, workers)
    futures = [process_files.submit(batch, str(staging), cfg) for batch in batches]
    outcomes: list[FileOutcome] = []
    for fut in as_completed(futures):
        for o in fut.result():
            outcomes.append(o)
            if o.quarantine is not None:
                q = o.quarantine
                _say(f"[quarantine] {q.path} ({q.stage}): {q.reason}")
                quarantine.append(q)
        _say(f"[process] {len(outcomes)}/{len(jobs)} files done, {len(quarantine)} quarantined")
    t_process = time.perf_counter() - t_start

    staged, dup_entries = _dedupe(outcomes)
    for q in dup_entries:
        _say(f"[quarantine] {q.path} ({q.stage}): {q.reason}")
    quarantine.extend(dup_entries)

    # write: every subset's regions in parallel, then finalize each store atomically
    attrs, coords = store_attrs(cfg)
    plans = {}
    region_futures = []
    for subset in SUBSETS:
        members = [s for s in staged if subset in s.subsets]
        declared = load_schema(subset).coords
        plan = plan_store(subset, members, attrs, {k: v for k, v in coords.items() if k in declared}, chunking)
        tmp = out / f".{subset}.zarr.tmp-{build_id}"
        create_store(plan, tmp)
        plans[subset] = (plan, tmp)
        region_futures += [write_frames.submit(plan, str(tmp), i) for i in range(len(plan.frame_regions))]
        region_futures += [write_windows.submit(plan, str(tmp), i) for i in range(len(plan.window_regions))]
    _say(f"[write] {len(region_futures)} shard-aligned regions over {len(SUBSETS)} stores")
    done = wait(region_futures)
    failed = [f for f in done.done if f.state.is_failed()]
    if failed:
        for _, tmp in plans.values():
            shutil.rmtree(tmp, ignore_errors=True)
        failed[0].result()  # re-raise the first failure; earlier stores stay untouched
    write_seconds = sum(f.result() for f in region_futures)
    stores = {}
    for subset, (plan, tmp) in plans.items():
        stores[subset] = str(finalize_store(plan, tmp, out / f"{subset}.zarr"))
        _say(f"[write] {subset}: {plan.n_sequences} sequences, {plan.n_frames} frames -> {stores[subset]}")
    t_total = time.perf_counter() - t_start

    summary = _summary(outcomes, quarantine, stores, plans, cfg, t_process, t_total, build_id)
    summary["task_seconds"]["write_regions"] = write_seconds
    (out / QUARANTINE_FILE).write_text(json.dumps([asdict(q) for q in quarantine], indent=2) + "\n")
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


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
        "frames_in": sum(o.frames_in for o in outcomes),
        "frames_out": sum(o.frames_out for o in outcomes),
        "task_seconds": stage_seconds,
        "wall_seconds": {"process": t_process, "total": t_total},
        "subsets": subsets,
        "quarantine_file": QUARANTINE_FILE,
    }
