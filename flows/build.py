"""The ``build`` flow: discover → ingest → canonicalize → contact → fit → split → write.

The flow only wires stages: per-file tasks (read, process, stage to disk) run in parallel on a
Dask cluster; then, per subset, the store skeleton is created and shard-aligned frame/window
regions are written by parallel tasks from the staged sequences; finally each store is
validated and moved into place atomically. Only small records travel back to the flow process,
so its memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed, wait

from pipeline import __version__, markers, skeleton
from pipeline.dataset import DatasetConfig, processing_key, to_jsonable
from pipeline.process import (
    BuildConfig,
    process_motion,
    simulated_key,
    simulated_payload,
    stage_payload,
)
from pipeline.quality import Thresholds, build_report, evaluate_flags
from pipeline.quality.flags import apply_flags, excluded_ids, write_quality_outputs
from pipeline.quality.integration import sequence_metrics
from pipeline.quality.metrics import inputs_from_payload, metrics_row
from pipeline.records import QuarantineEntry
from pipeline.simulate import simulate
from pipeline.sources.base import SourceError, SourceSpec, get_source, sha256_of
from pipeline.split import SUBSETS
from pipeline.store import (
    Chunking,
    StagedSequence,
    create_store,
    file_cache,
    finalize_store,
    load_schema,
    plan_store,
    region_plan,
    stage_sequence,
    write_frame_region,
    write_window_region,
)
from pipeline.store.canonical_io import load_canonical, load_extras, save_canonical
from pipeline.store.ledger import LEDGER_FILE, FileRecord, Ledger, RunRecord, now_iso
from pipeline.store.location import LocalLocation, write_text_atomic

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
    spec: SourceSpec, path: str, entry_dir: str, cfg: BuildConfig, thresholds: Thresholds | None = None
) -> FileOutcome:
    """Read one source file, run the pure stages and the quality metrics, stage its arrays under
    ``entry_dir`` (its cache entry); never raises for bad data. Sequences that a quality rule
    excludes are not handed to simulation."""
    src = get_source(spec.kind)
    root = Path(spec.root)
    rel = Path(path).relative_to(root).as_posix()
    # every file stages under its own folder: two files claiming one sequence id never collide
    file_staging = Path(entry_dir)
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
                canon = save_canonical(processed.motion, file_staging / "canonical" / f"{staged[-1].path.name}.npz",
                                       extras=measured_extras(processed))
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
    jobs: list[tuple[SourceSpec, str, str]], cfg: BuildConfig, thresholds: Thresholds | None = None
) -> list[FileOutcome]:
    """ingest → canonicalize → contact → fit → split → stage for a batch of files, one at a time.

    Files are independent: a bad file is quarantined and the batch goes on. Batching only
    amortizes Prefect's per-task-run bookkeeping (several API calls per task run).
    """
    return [process_file(spec, path, entry, cfg, thresholds) for spec, path, entry in jobs]


def measured_extras(processed) -> dict:
    """What the simulate task compares a measured sequence's passes with (hand-over extras):
    the plate forces per foot (``plate_grf_n``, ``plate_cop_m``, ``plate_free_moment_nm``) and the
    inverse-dynamics torques (``id_joint_torque_nm``, NaN where unknown); ``{}`` otherwise."""
    m = processed.measured
    if m is None or not m.has_grf:
        return {}
    out = {"plate_grf_n": m.grf_n, "plate_cop_m": m.cop_m, "plate_free_moment_nm": m.free_moment_nm}
    if processed.inverse_dynamics is not None:
        out["id_joint_torque_nm"] = processed.inverse_dynamics.joint_torque_nm
    return out


_VALIDATION_EXTRAS = ("plate_grf_n", "id_joint_torque_nm")
"""Hand-over extras the simulated passes' metrics use (quality providers ``sim_vs_plate``/``sim_vs_id``)."""


def _sim_error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def simulate_motions(items: list[tuple[str, str, str]], cfg: BuildConfig) -> list[SimOutcome]:
    """Imitate a batch of canonical motions ``cfg.simulate.passes`` times.

    Each pass runs the whole batch through the backend at once (a GPU backend batches across
    sequences); if the batch fails, its motions are retried one by one so that a motion the
    simulator cannot handle is quarantined alone. Every pass of every motion is staged as its own
    sequence (ground_reaction + torque subsets) with its quality-metrics row; for a motion with
    measured forces (hand-over extras, ``measured_extras``) the row also holds the validation
    metrics against the plates and the inverse dynamics.
    """
    t0 = time.perf_counter()
    loaded, failed, measured = [], {}, {}
    for key, path, split in items:
        try:
            loaded.append((key, path, split, load_canonical(Path(path))))
            extras = load_extras(Path(path))
            measured[path] = {k: extras[k] for k in _VALIDATION_EXTRAS if k in extras}
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
                # measured sequences: the pass's metrics row also compares it with the plates and
                # the inverse dynamics (pipeline.quality.validation)
                extras = {"residual_wrench": result.residual_wrench, **measured.get(path, {})}
                if result.dyn_root_correction_m is not None:
                    extras["dyn_root_correction_m"] = result.dyn_root_correction_m
                if result.swing_penetration_m is not None:
                    extras["swing_penetration_m"] = result.swing_penetration_m
                arrays, meta = inputs_from_payload(frame, window, values, motion.fps_hz, extras, seq_id=sim_key)
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
    force: bool = False,
) -> dict:
    """Incrementally build every subset store of the dataset root ``out_dir``; returns the summary.

    Only files that are new or whose content changed since the last run are processed (the
    ingestion ledger and the per-file cache say which); the stores are re-assembled from every
    live file's cached output, so they equal a from-scratch build byte for byte. When nothing
    changed the stores are left untouched. ``force`` reprocesses every file. ``workers`` is the
    number of parallel task slots, used to size the file batches. The root is locked for the run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    thresholds = thresholds or Thresholds.default()
    with LocalLocation(out).lock("build"):
        DatasetConfig(tuple(sources), cfg, thresholds).write(out)
        return _build(sources, out, cfg, chunking, workers, thresholds, force)


@dataclass(frozen=True)
class _FileJob:
    """A discovered source file: where it is, what it holds, where its cache entry is."""

    spec: SourceSpec
    path: str
    rel: str
    size: int
    mtime_ns: int
    sha256: str
    entry: Path


def _discover(sources, out: Path, ledger: Ledger, key: str) -> list[_FileJob]:
    jobs = []
    for spec in sources:
        src = get_source(spec.kind)
        files = src.discover(Path(spec.root))
        _say(f"[discover] {spec.kind}: {len(files)} files under {spec.root}")
        for p in files:
            st = Path(p).stat()
            rel = Path(p).relative_to(Path(spec.root)).as_posix()
            sha = ledger.known_sha(spec.kind, rel, st.st_size, st.st_mtime_ns) or sha256_of(Path(p))[0]
            jobs.append(_FileJob(spec, str(p), rel, st.st_size, st.st_mtime_ns, sha,
                                 file_cache.entry_dir(out, spec.kind, rel, sha, key)))
    return jobs


_ENTRY_TYPES = {"file": FileOutcome, "sims": tuple[SimOutcome, ...]}


def _build(sources, out: Path, cfg: BuildConfig, chunking, workers: int, thresholds: Thresholds,
           force: bool) -> dict:
    t_start = time.perf_counter()
    build_id = uuid.uuid4().hex[:12]
    started = now_iso()
    key = processing_key(cfg, thresholds)
    ledger = Ledger(out / LEDGER_FILE)
    try:
        return _build_with_ledger(sources, out, cfg, chunking, workers, thresholds, force, t_start, build_id,
                                  started, key, ledger)
    finally:
        ledger.close()


def _build_with_ledger(sources, out, cfg, chunking, workers, thresholds, force, t_start, build_id, started, key,
                       ledger: Ledger) -> dict:
    previous = ledger.current()
    jobs = _discover(sources, out, ledger, key)
    seen = {(j.spec.kind, j.rel) for j in jobs}
    removed = sorted(k for k in previous if k not in seen)
    cached: dict[str, dict] = {}
    todo: list[_FileJob] = []
    for j in jobs:
        entry = None if force else file_cache.load_entry(j.entry, out, _ENTRY_TYPES)
        if entry is None:
            todo.append(j)
        else:
            cached[j.path] = entry
    n_new = sum(1 for j in todo if (j.spec.kind, j.rel) not in previous)
    n_changed = sum(1 for j in todo if (j.spec.kind, j.rel) in previous)
    _say(f"[ledger] {len(jobs)} files: {len(todo)} to process ({n_new} new, {n_changed} changed or "
         f"reprocessed), {len(cached)} unchanged from cache, {len(removed)} removed")

    fingerprint = _inputs_fingerprint(jobs, key, chunking)
    last = _read_json(out / SUMMARY_FILE) or {}
    if not todo and not removed and last.get("inputs_fingerprint") == fingerprint and all(
            (out / f"{s}.zarr").is_dir() for s in SUBSETS):
        _say("[build] nothing new: stores are up to date and left untouched")
        earlier = [QuarantineEntry(**q) for q in _read_json(out / QUARANTINE_FILE) or []]
        _record_ledger(ledger, jobs, cached, removed, key, build_id, started, stores_written=0,
                       quarantine=earlier)  # keeps files quarantined as duplicates quarantined
        summary = dict(last)
        summary.update(up_to_date=True, files_new=0, files_changed=0, files_unchanged=len(jobs), files_removed=0,
                       ledger_hash=ledger.content_hash(), run_id=build_id)
        return summary

    # ingest → canonicalize → contact → fit → split → quality → stage, in parallel batches of
    # files; each finished batch's motions go on to the simulate stage right away
    for j in todo:
        file_cache.reset_entry(j.entry)
    by_path = {j.path: j for j in todo}
    by_key = {(j.spec.kind, j.rel): j for j in todo}
    batches = batch_jobs([(j.spec, j.path, str(j.entry)) for j in todo], workers)
    futures = [process_files.submit(batch, cfg, thresholds) for batch in batches]
    fresh: dict[str, FileOutcome] = {}
    pending_sims: dict[str, list[SimOutcome]] = {}
    sim_futures = []
    n_sim = n_quarantined = 0
    for fut in as_completed(futures):
        batch_items = []
        for o in fut.result():
            path = by_key[(o.source, o.path)].path
            fresh[path] = o
            batch_items.extend(o.to_simulate)
            if o.quarantine is not None:
                n_quarantined += 1
                q = o.quarantine
                _say(f"[quarantine] {q.path} ({q.stage}): {q.reason}")
            if not o.to_simulate:  # nothing to imitate: the cache entry is complete now
                file_cache.save_entry(by_path[path].entry, out, {"file": o, "sims": ()})
            else:
                pending_sims[path] = []
        _say(f"[process] {len(fresh)}/{len(todo)} files done, {n_quarantined} quarantined")
        if batch_items:
            n_sim += len(batch_items)
            with _annotate(cfg):
                sim_futures.append(simulate_batch.submit(batch_items, cfg))
    t_process = time.perf_counter() - t_start
    origin_file = {c[1]: path for path, o in fresh.items() for c in o.to_simulate}
    n_done = 0
    for fut in as_completed(sim_futures):
        for so in fut.result():
            n_done += 1
            path = origin_file[so.origin]
            pending_sims[path].append(so)
            if so.quarantine is not None:
                _say(f"[quarantine] {so.quarantine.path} ({so.quarantine.stage}): {so.quarantine.reason}")
            o = fresh[path]
            if len(pending_sims[path]) == len(o.to_simulate):
                sims_sorted = tuple(sorted(pending_sims[path], key=lambda x: x.sequence_id))
                file_cache.save_entry(by_path[path].entry, out, {"file": o, "sims": sims_sorted})
        _say(f"[simulate] {n_done}/{n_sim} motions imitated ({cfg.simulate.passes} pass(es) each)")
    t_simulate = time.perf_counter() - t_start - t_process

    # every live file's outcome: fresh ones and cached ones, in (source, path) order
    entries: dict[str, dict] = dict(cached)
    for path, o in fresh.items():
        entries[path] = {"file": o, "sims": tuple(sorted(pending_sims.get(path, []), key=lambda x: x.sequence_id))}
    for path in cached:
        entries[path]["file"] = replace(entries[path]["file"], seconds={})
        entries[path]["sims"] = tuple(replace(so, seconds=0.0) for so in entries[path]["sims"])
    order = sorted(jobs, key=lambda j: (j.spec.kind, j.rel))
    outcomes = [entries[j.path]["file"] for j in order]
    sims = [so for j in order for so in entries[j.path]["sims"]]
    quarantine = [o.quarantine for o in outcomes if o.quarantine is not None]
    quarantine += [so.quarantine for so in sims if so.quarantine is not None]

    summary = _assemble(outcomes, sims, quarantine, out, cfg, chunking, thresholds, build_id)
    summary["task_seconds"]["simulate"] = sum(so.seconds for so in sims)
    summary["wall_seconds"]["process"] = t_process
    summary["wall_seconds"]["simulate"] = t_simulate
    summary["wall_seconds"]["total"] = time.perf_counter() - t_start
    _record_ledger(ledger, jobs, entries, removed, key, build_id, started, stores_written=len(SUBSETS),
                   quarantine=quarantine)
    summary.update(
        up_to_date=False, inputs_fingerprint=fingerprint, run_id=build_id,
        files_new=n_new, files_changed=n_changed, files_unchanged=len(cached), files_removed=len(removed),
        ledger_hash=ledger.content_hash(),
    )
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    pruned = file_cache.prune(out, {j.entry for j in jobs})
    if pruned:
        _say(f"[cache] removed {pruned} entries of changed or removed files")
    try:
        report = quality_report.submit(str(out)).result()
        _say(f"[report] {report}")
    except Exception as exc:  # the stores are complete; a report failure must not hide that
        _say(f"[report] failed: {type(exc).__name__}: {exc}")
    return summary


def _inputs_fingerprint(jobs: list[_FileJob], key: str, chunking) -> str:
    """sha256 of what the stores are assembled from: every file's (source, path, sha256), the
    processing key and the chunking."""
    doc = {"files": sorted((j.spec.kind, j.rel, j.sha256) for j in jobs), "key": key,
           "chunking": to_jsonable(chunking), "schemas": _schema_versions()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _schema_versions() -> dict[str, str]:
    return {s: load_schema(s).version for s in SUBSETS}


def _record_ledger(ledger: Ledger, jobs, entries, removed, key, run_id, started, stores_written: int,
                   quarantine: list[QuarantineEntry] = ()) -> None:
    rows = []
    schemas = _schema_versions()
    n_q = 0
    dup = {q.path: q for q in quarantine}
    for j in jobs:
        o: FileOutcome = entries[j.path]["file"]
        q = o.quarantine or dup.get(f"{j.spec.kind}:{j.rel}")
        n_q += q is not None
        rows.append(FileRecord(
            source=j.spec.kind, path=j.rel, sha256=j.sha256, size_bytes=j.size, mtime_ns=j.mtime_ns,
            status="quarantined" if q is not None else "built", reason=q.reason if q is not None else "",
            processing_key=key, dynaset_version=__version__, schema_versions=schemas,
            sequences=() if q is not None else tuple(s.key for s in o.staged), first_run=run_id, last_run=run_id,
        ))
    previous = ledger.current()
    n_changed = sum(1 for r in rows if (r.source, r.path) in previous and previous[(r.source, r.path)].sha256 != r.sha256)
    n_new = sum(1 for r in rows if (r.source, r.path) not in previous)
    ledger.record_run(RunRecord(run_id, started, now_iso(), n_new, n_changed, len(rows) - n_new - n_changed,
                                len(removed), n_q, stores_written), rows, removed)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _assemble(outcomes: list[FileOutcome], sims: list[SimOutcome], quarantine: list[QuarantineEntry], out: Path,
              cfg: BuildConfig, chunking, thresholds: Thresholds, build_id: str) -> dict:
    """Dedupe → quality flags → write every subset store from the staged sequences → stats."""
    t_start = time.perf_counter()
    staged, dup_entries = _dedupe(outcomes)
    for q in dup_entries:
        _say(f"[quarantine] {q.path} ({q.stage}): {q.reason}")
    quarantine.extend(dup_entries)
    _write_quarantine(out, quarantine)  # first: whatever fails later, the user keeps this list
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
    write_text_atomic(out / STATS_FILE, json.dumps(stats, indent=1, sort_keys=True, allow_nan=False) + "\n")
    _say(f"[stats] normalization statistics -> {out / STATS_FILE}")
    t_total = time.perf_counter() - t_start

    summary = _summary(outcomes, quarantine, stores, plans, cfg, 0.0, t_total, build_id)
    summary["task_seconds"]["write_regions"] = write_seconds
    summary["wall_seconds"]["assemble"] = t_total
    summary["frames_simulated"] = sum(so.frames for so in sims)
    summary["sequences_excluded"] = len(drop)
    return summary


def _write_quarantine(out: Path, quarantine: list[QuarantineEntry]) -> None:
    write_text_atomic(out / QUARANTINE_FILE, json.dumps([asdict(q) for q in quarantine], indent=2) + "\n")


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
    file_q = [q for q in quarantine if q.stage != "simulate"]  # simulate entries name sequences, not files
    quarantined = {q.path for q in file_q}
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
        "files_built": len(outcomes) - len(quarantined),
        "files_quarantined": len(quarantined),
        "simulations_failed": len(quarantine) - len(file_q),
        "frames_in": sum(o.frames_in for o in outcomes if f"{o.source}:{o.path}" not in quarantined),
        "frames_out": sum(o.frames_out for o in outcomes if f"{o.source}:{o.path}" not in quarantined),
        "task_seconds": stage_seconds,
        "wall_seconds": {"process": t_process, "total": t_total},
        "subsets": subsets,
        "quarantine_file": QUARANTINE_FILE,
    }
