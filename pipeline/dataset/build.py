"""The build driver: discover → process new/changed files → simulate → assemble → record.

One path for every way a build runs: the Prefect flow (``flows.build``) passes an executor that
maps each stage function onto its Prefect task on the Dask cluster; tests and
``pipeline.quality.build_in_process`` pass ``SerialExecutor``. Only small records travel back to
the driver, so its memory does not grow with the corpus.

Incremental: only files that are new or whose content changed since the last run are processed
(the ingestion ledger and the per-file cache say which); when nothing changed the stores are left
untouched.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from pipeline.process import BuildConfig
from pipeline.quality import Thresholds
from pipeline.quality.flags import write_quality_outputs
from pipeline.quality.isolated import draw, draw_isolated
from pipeline.records import QuarantineEntry
from pipeline.simulate.backends import BATCHED_BACKENDS, GPU_BACKENDS
from pipeline.simulate.batching import GpuBatching, GpuBatchPlanner, MotionJob, WorldBatch, steps_per_frame
from pipeline.sources.base import SourceSpec
from pipeline.split import SUBSETS
from pipeline.store import Chunking, file_cache, load_schema
from pipeline.store.ledger import LEDGER_FILE, Ledger, now_iso
from pipeline.store.location import LocalLocation, write_text_atomic
from pipeline.store.staging import Trash

from . import assembly
from .bookkeeping import ledger_rows, record_run, unchanged_rows
from .config import DatasetConfig, processing_key
from .discovery import RunPlan, discover, inputs_fingerprint, load_outcome, plan_run
from . import placement as placement_rule
from .executor import Executor, SerialExecutor, WithResources, release_memory
from .files import ModifyHook, batch_jobs, process_files
from .records import FileJob, FileOutcome, SimOutcome
from .simulation import finish_chunk, merge_parts, prepare_chunk, prepare_groups, simulate_motions, simulate_prepared
from .summary import SUMMARY_FILE, FileTotals, add_seconds, summarize


CPU_SIM_MOTIONS_PER_TASK = 16
"""Motions per simulate task on CPU workers (a file batch holds up to 128 files)."""

PREPARE_WORLDS_PER_TASK = 32
"""(motion, pass) worlds per simulate-prepare task of a batched backend (``simulation.prepare_chunk``,
CPU workers; a motion's passes are never split): ≈ 10 ms each for a 4 s motion, so a task takes
≈ 0.3 s and a 4096-world batch spreads over 128 tasks; the same chunk goes on to one finish task
(``simulation.finish_chunk``, ≈ 10 ms per world)."""

TASK_PRIORITY = {"prepare": 1, "finish": 1}
"""Dask priorities of the batched backend's CPU tasks: ahead of the per-file tasks queued before them,
so that the GPU gets its next batch and the staged recordings are consumed while files are still
being processed."""

CPU_RESOURCES = {"CPU": 1}
"""What every non-GPU task of a build with a GPU backend asks for: `dynaset worker` advertises it on
CPU workers and not on GPU workers (``--gpu``), so per-file, prepare, finish, write and statistics
tasks never take a GPU worker's slot (docs/scaling.md)."""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)




def report_task(out_dir: str, build: dict | None = None, isolate: bool = False) -> str:
    """The build's self-contained HTML data-quality report (on a worker: plotting stays out of
    the driver's process); ``build``: the run's summary, when ``build.json`` is not written yet.
    Figures are kept in the root's cache under a digest of what they draw and only the ones whose
    inputs changed are redrawn (``pipeline.quality.report.FigureCache``). ``isolate``: draw it in a
    short-lived child process (``pipeline.quality.isolated``), so that what the report allocates
    leaves with it (a Dask worker runs statistics after it). Returns the report's path and what was
    drawn."""
    release_memory()  # what earlier tasks on this worker left in the heap
    return draw_isolated(out_dir, build) if isolate else draw(out_dir, build)


def schema_versions() -> dict[str, str]:
    return {s: load_schema(s).version for s in SUBSETS}


def build_dataset(
    sources: Sequence[SourceSpec],
    out_dir: str | Path,
    cfg: BuildConfig = BuildConfig(),
    chunking: Chunking | None = None,
    workers: int = 2,
    thresholds: Thresholds | None = None,
    force: bool = False,
    executor: Executor | None = None,
    modify: ModifyHook | None = None,
    report: bool = True,
    created_by: str = "dynaset build",
    compact: bool = False,
    sim_batching: GpuBatching | None = None,
    small_executor: Executor | None = None,
    placement: str = "auto",
) -> dict:
    """Incrementally build every subset store of the dataset root ``out_dir``; returns the summary.

    ``workers``: parallel task slots (sizes the file batches); ``force`` reprocesses every file;
    ``modify``: a hook editing each sequence before metrics and staging (serial executors only: it
    is not part of the processing key); ``report``: write ``report.html``; ``compact``: rewrite
    every store afresh (no tombstones, sequences in id order: byte-identical to a fresh build of the
    same inputs) even when nothing changed; ``sim_batching``: how a batched simulator backend
    (``cfg.sim_backend`` ``gpu``/``warp-cpu``) groups simulations into batches of worlds (default
    ``GpuBatching()``; not part of the processing key: it does not change results).
    ``small_executor``: an in-process executor the run switches to, after planning, when its work is
    small (``placement``: ``auto`` applies ``pipeline.dataset.placement.choose``, ``cluster`` /
    ``in-process`` force it); ``None``: every task goes to ``executor``. The root is locked.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    thresholds = thresholds or Thresholds.default()
    executor = executor or SerialExecutor()
    if cfg.sim_backend in GPU_BACKENDS and cfg.simulate is not None and not isinstance(executor, SerialExecutor):
        executor = WithResources(executor, CPU_RESOURCES)  # GPU workers run only the GPU tasks
    with LocalLocation(out).lock("build"):
        DatasetConfig(tuple(sources), cfg, thresholds).write(out)
        ledger = Ledger(out / LEDGER_FILE)
        trash = Trash()  # replaced stores, deleted in the background while the run goes on
        try:
            return _run(sources, out, cfg, chunking, workers, thresholds, force, executor, modify, report,
                        created_by, compact, ledger, sim_batching, small_executor, placement, trash)
        finally:
            trash.wait()
            ledger.close()


def compact_dataset(root: str | Path, executor: Executor | None = None) -> dict:
    """``dynaset compact`` without Prefect: rewrite every store of the local dataset root afresh
    (no tombstones, id order: a fresh build's bytes) from its recorded configuration and cache."""
    config = DatasetConfig.read(Path(root))
    return build_dataset(list(config.sources), root, config.build, workers=1, thresholds=config.thresholds,
                         executor=executor, compact=True)


def _run(sources, out: Path, cfg: BuildConfig, chunking, workers: int, thresholds: Thresholds, force: bool,
         executor: Executor, modify, report: bool, created_by: str, compact: bool, ledger: Ledger,
         sim_batching: GpuBatching | None = None, small_executor: Executor | None = None,
         placement: str = "auto", trash: Trash | None = None) -> dict:
    t_start = time.perf_counter()
    build_id = uuid.uuid4().hex[:12]
    started = now_iso()
    key = processing_key(cfg, thresholds)
    schemas = schema_versions()
    previous = ledger.live_shas()
    jobs = discover(sources, out, ledger, key, say)
    run = plan_run(jobs, previous, out, force)
    t_discover = time.perf_counter() - t_start
    say(f"[ledger] {len(jobs)} files: {len(run.todo)} to process ({run.n_new} new, {run.n_changed} changed or "
        f"reprocessed), {len(run.cached)} unchanged from cache, {len(run.removed)} removed")

    fingerprint = inputs_fingerprint(jobs, key, chunking, schemas)
    last = _read_json(out / SUMMARY_FILE) or {}
    states = assembly.read_state(out)
    is_compact = all(s in states and states[s].compact for s in SUBSETS)
    if not run.todo and not run.removed and last.get("inputs_fingerprint") == fingerprint and all(
            (out / f"{s}.zarr").is_dir() for s in SUBSETS) and (not compact or is_compact):
        say("[build] nothing new: stores are up to date and left untouched")
        # every file keeps its live ledger row (duplicates stay quarantined); read from the cache
        # entries only if the ledger lacks one
        rows = unchanged_rows(jobs, ledger.current(), key, build_id)
        if rows is None:
            items, _, _, _ = _collect(jobs, out, thresholds, earlier=_read_json(out / assembly.QUARANTINE_FILE) or [])
            rows = ledger_rows(items, key, build_id, schemas)
        record_run(ledger, rows, run.removed, build_id, started, stores_written=0)
        summary = dict(last)
        summary.update(up_to_date=True, files_new=0, files_changed=0, files_unchanged=len(jobs), files_removed=0,
                       ledger_hash=ledger.content_hash(), run_id=build_id)
        return summary

    if small_executor is not None:
        where = placement_rule.choose(len(run.todo), last, placement, rewrite_all=compact and not is_compact)
        say(f"[placement] {where.describe(len(run.todo))}")
        if where.in_process:
            executor = small_executor
    t_process, t_simulate, stage_seconds, sim_seconds = _process(run, out, cfg, thresholds, workers, executor, modify,
                                                                 sim_batching)
    release_memory()

    # every live file's outcome, fresh and cached alike, read back from its cache entry one at a
    # time in (source, path) order: the driver keeps only the staged-sequence handles
    t0 = time.perf_counter()
    items, selection, totals, quarantine = _collect(jobs, out, thresholds)
    for q in selection.duplicates:
        say(f"[quarantine] {q.path} ({q.stage}): {q.reason}")
    assembly.write_quarantine(out, quarantine)  # first: whatever fails later, the user keeps this list
    write_quality_outputs(out, selection.table, selection.exclusions, staged=selection.excluded)
    if selection.drop:
        say(f"[quality] {len(selection.drop)} sequences excluded by quality rules (exclusions.json)")
    changes = assembly.plan_changes(selection, states, out, cfg, chunking, created_by, compact)
    frames_simulated, n_excluded = selection.frames_simulated, len(selection.drop)
    del selection  # the metrics table and the staged handles: the plans hold what the writes need
    t_plan = time.perf_counter() - t0
    release_memory()
    stores, write_seconds = assembly.write_stores(changes, out, build_id, executor, say, tasks=2 * max(1, workers),
                                                  trash=trash, workers=max(1, workers))
    t_write = time.perf_counter() - t0 - t_plan
    release_memory()
    changed = [k for k, c in changes.items() if c.mode != "none"]
    counts = assembly.subset_counts(changes, stores, cfg.canonical.fps_hz)
    summary = summarize(totals, stage_seconds, quarantine, counts, build_id)
    # the report needs the stores, the quality outputs and the summary's counts, not the
    # statistics: it runs on a worker while they are computed. It is submitted right after their
    # tasks, so that the large ones take the free workers first, with a higher priority than the
    # queued small ones, so that it takes the first worker they free (a 1 h build, 2 workers:
    # submitted first, it held back the second statistics task 3.7 s; last, it ran alone at the end)
    isolate = bool(getattr(executor, "remote", False))  # a worker that runs the statistics next
    report_futures: list = []
    t_report = time.perf_counter()

    def submit_report() -> None:
        nonlocal t_report
        if report:
            t_report = time.perf_counter()
            report_futures.append(executor.submit(report_task, str(out), dict(summary), isolate, priority=1))

    try:
        stats_path = assembly.write_stats(stores, out, executor, changed, assembly.same_sequences(changes),
                                            tasks=max(1, workers), submitted=submit_report)
    except BaseException:
        executor.wait(report_futures)  # no task of this run outlives it
        raise
    report_future = report_futures[0] if report_futures else None
    say(f"[stats] normalization statistics of {', '.join(changed) or 'no store'} -> {stats_path}")
    t_assemble = time.perf_counter() - t0
    del changes

    summary["task_seconds"]["write_regions"] = write_seconds
    summary["task_seconds"]["simulate"] = sim_seconds
    summary["processing_rate"] = placement_rule.update_rate(last, len(run.todo), sum(stage_seconds.values()) + sim_seconds)
    summary["frames_simulated"] = frames_simulated
    summary["sequences_excluded"] = n_excluded
    summary["wall_seconds"] = {"process": t_process, "simulate": t_simulate, "assemble": t_assemble,
                               "assemble_plan": t_plan, "assemble_write": t_write,
                               "assemble_stats": t_assemble - t_plan - t_write, "discover": t_discover}
    release_memory()
    t0 = time.perf_counter()
    record_run(ledger, ledger_rows(items, key, build_id, schemas), run.removed, build_id, started,
               stores_written=len(SUBSETS))
    summary.update(
        up_to_date=False, inputs_fingerprint=fingerprint, run_id=build_id,
        files_new=run.n_new, files_changed=run.n_changed, files_unchanged=len(run.cached),
        files_removed=len(run.removed), ledger_hash=ledger.content_hash(),
    )
    summary["wall_seconds"]["ledger"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pruned = file_cache.prune(out, {j.entry for j in jobs})
    if pruned:
        say(f"[cache] removed {pruned} entries of changed or removed files")
    summary["wall_seconds"]["prune"] = time.perf_counter() - t0
    if report_future is not None:
        t0 = time.perf_counter()
        try:
            say(f"[report] {report_future.result()} (done {time.perf_counter() - t_report:.1f} s after it was "
                "submitted, with the statistics)")
        except Exception as exc:  # the stores are complete; a report failure must not hide that
            say(f"[report] failed: {type(exc).__name__}: {exc}")
        summary["wall_seconds"]["report_wait"] = time.perf_counter() - t0
    summary["wall_seconds"]["total"] = time.perf_counter() - t_start
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _collect(jobs: Sequence[FileJob], out: Path, thresholds: Thresholds, earlier: Sequence[dict] = ()):
    """Read every live file's cache entry once, in (source, path) order, into the assembly's
    selection (``assembly.Selector``), the build's file totals and the quarantine list (file
    entries, then simulation entries, then duplicates); nothing per file is kept but its ledger
    item (job, sequence ids, quarantine reason or None). ``earlier``: quarantine.json entries of an
    earlier run (kept for files quarantined as duplicates when nothing is re-selected)."""
    sel = assembly.Selector(thresholds)
    totals = FileTotals()
    file_q: list[QuarantineEntry] = []
    sim_q: list[QuarantineEntry] = []
    items: list[tuple[FileJob, tuple[str, ...], str | None]] = []
    dup_earlier = {q["path"]: q["reason"] for q in earlier}
    for j in sorted(jobs, key=lambda j: j.file_key):
        o, sims = load_outcome(j, out)
        dup = sel.add(o, sims)
        q = o.quarantine or dup
        if o.quarantine is not None:
            file_q.append(o.quarantine)
        sim_q += [so.quarantine for so in sims if so.quarantine is not None]
        reason = q.reason if q is not None else dup_earlier.get(o.name)
        totals.add(o, reason is not None)
        items.append((j, tuple(s.key for s in o.staged), reason))
    selection = sel.finish()
    return items, selection, totals, file_q + sim_q + list(selection.duplicates)


def _process(run: RunPlan, out: Path, cfg: BuildConfig, thresholds: Thresholds, workers: int, executor: Executor,
             modify, sim_batching: GpuBatching | None = None) -> tuple[float, float, dict[str, float], float]:
    """ingest → canonicalize → contact → fit → split → quality → stage for the files to process, in
    parallel batches; each finished batch's motions go on to the simulate stage right away: on the
    CPU backend in tasks of ``CPU_SIM_MOTIONS_PER_TASK`` motions, on a batched backend through the
    ``GpuBatchPlanner`` (``sim_batching``), which accumulates them across processing batches into
    batches of worlds (the last, partial one sent when processing ends; a motion's passes may span
    batches: ``simulation.merge_parts`` joins them). Each batch is three kinds of tasks: CPU prepare
    tasks of ≈ ``PREPARE_WORLDS_PER_TASK`` worlds (``simulation.prepare_chunk``: host preparation,
    packed inputs staged), submitted as soon as the batch is planned with a priority over the
    queued per-file tasks; the GPU task (``simulation.simulate_prepared``), which Dask starts when
    its prepare tasks are done (they are its arguments), so batch k + 1 is prepared while batch k
    runs; and, as each GPU task ends, one CPU finish task per prepared chunk
    (``simulation.finish_chunk``: results, staging, metrics rows). With a GPU backend every
    non-GPU task asks for ``CPU_RESOURCES``, which GPU workers do not advertise. Every file's cache
    entry is completed as soon
    as its outcome (and its simulations) are in; the driver keeps a file's outcome only while its
    simulations are pending.

    Returns (process wall seconds, simulate wall seconds, summed per-stage task seconds of the
    processed files, summed simulate task seconds)."""
    t0 = time.perf_counter()
    for j in run.todo:
        file_cache.reset_entry(j.entry)
    by_key = {j.file_key: j for j in run.todo}
    batches = batch_jobs([(j.spec, j.path, str(j.entry)) for j in run.todo], workers)
    # the workers complete the cache entries of files with nothing to simulate themselves
    futures = [executor.submit(process_files, batch, cfg, thresholds, modify, str(out)) for batch in batches]
    waiting: dict[str, FileOutcome] = {}  # canonical motion file → the outcome of the file it came from
    pending: dict[tuple[str, str], list[SimOutcome]] = {}
    stage_seconds: dict[str, float] = {}
    got: dict[str, list] = {}  # canonical motion file → [(passes, SimOutcome)] of its parts so far
    sim_futures = []
    sim_parts: dict[int, list] = {}  # id(finish future) → the passes of its parts, for batched backends
    n_done = n_sim = n_quarantined = 0
    resources = {"GPU": 1} if cfg.sim_backend in GPU_BACKENDS else None
    planner = None
    if cfg.sim_backend in BATCHED_BACKENDS and cfg.simulate is not None:
        planner = GpuBatchPlanner(sim_batching or GpuBatching(), cfg.simulate.passes,
                                  steps_per_frame(cfg.canonical.fps_hz, cfg.simulate.control_hz))
    all_passes = tuple(range(cfg.simulate.passes)) if cfg.simulate is not None else ()

    gpu_futures = []  # batched backends: simulate_prepared tasks (kept to the end: their ids mark them)

    def submit_batches(batches: list[WorldBatch]) -> None:
        # per batch: CPU prepare tasks (priority: ahead of queued per-file tasks), then the GPU task,
        # which Dask starts once they are done; preparing the next batch never waits for this one
        for b in batches:
            groups = prepare_groups([(p.item, p.passes) for p in b.parts], PREPARE_WORLDS_PER_TASK)
            preps = [executor.submit(prepare_chunk, g, cfg, priority=TASK_PRIORITY["prepare"]) for g in groups]
            gpu_futures.append(executor.submit(simulate_prepared, preps, cfg, b.worlds, resources=resources))
            say(f"[simulate] batch of {b.worlds} worlds ({len(b.parts)} motion(s), {b.max_frames} frames longest, "
                f"≈ {b.memory_bytes(planner.steps_per_frame) / 2**20:.0f} MiB) sent")

    for fut in executor.as_completed(futures):
        batch_items, ready = [], []
        for o in fut.result():
            job = by_key[(o.source, o.path)]
            n_done += 1
            add_seconds(stage_seconds, o.seconds)
            batch_items.extend(o.to_simulate)
            if planner is not None:
                ready += [MotionJob(item, n) for item, n in zip(o.to_simulate, motion_frames(o))]
            if o.quarantine is not None:
                n_quarantined += 1
                say(f"[quarantine] {o.quarantine.path} ({o.quarantine.stage}): {o.quarantine.reason}")
            if o.to_simulate:  # else the worker completed the cache entry (process_files)
                pending[job.file_key] = []
                for c in o.to_simulate:
                    waiting[c[1]] = o
        say(f"[process] {n_done}/{len(run.todo)} files done, {n_quarantined} quarantined")
        n_sim += len(batch_items)
        if planner is not None:
            # batched backends: motions accumulate across processing batches into batches of worlds
            submit_batches(planner.add(ready))
        elif batch_items:
            # CPU tasks take a few motions each, so that the last ones of a build spread over the workers
            step = CPU_SIM_MOTIONS_PER_TASK
            sim_futures.extend(executor.submit(simulate_motions, batch_items[i : i + step], cfg, resources=resources)
                               for i in range(0, len(batch_items), step))
    if planner is not None:
        submit_batches(planner.flush())  # the last, partial batch
    t_process = time.perf_counter() - t0
    # a batched backend's GPU task only simulates and writes its chunks' recordings; each finished
    # batch's chunks go on to CPU finish tasks (results, staging, metrics rows) right away, so that
    # the GPU worker's host is free for the next batch. Finished simulations are recorded as they
    # come in; when a GPU task ends, the wait restarts with its finish tasks added.
    n_done = 0
    sim_seconds = 0.0
    gpu_ids = {id(f) for f in gpu_futures}
    todo = {id(f): f for f in (*sim_futures, *gpu_futures)}
    while todo:
        for fut in executor.as_completed(list(todo.values())):
            del todo[id(fut)]
            if id(fut) in gpu_ids:
                for chunk in fut.result():
                    ffut = executor.submit(finish_chunk, chunk, cfg, priority=TASK_PRIORITY["finish"])
                    todo[id(ffut)] = ffut
                    sim_parts[id(ffut)] = [passes for _, passes in chunk.prepared.parts]
                break  # wait again, with its finish tasks
            parts = sim_parts.pop(id(fut), None)
            for i, so in enumerate(fut.result()):
                have = got.setdefault(so.origin, [])
                have.append((parts[i] if parts is not None else all_passes, so))
                if sum(len(p) for p, _ in have) < len(all_passes):
                    continue  # more passes of this motion are in other batches
                so = merge_parts(got.pop(so.origin))
                n_done += 1
                sim_seconds += so.seconds
                o = waiting.pop(so.origin)
                done = pending[(o.source, o.path)]
                done.append(so)
                if so.quarantine is not None:
                    say(f"[quarantine] {so.quarantine.path} ({so.quarantine.stage}): {so.quarantine.reason}")
                if len(done) == len(o.to_simulate):
                    file_cache.save_entry(by_key[(o.source, o.path)].entry, out, {"file": o, "sims": _by_id(done)})
                    del pending[(o.source, o.path)]
            say(f"[simulate] {n_done}/{n_sim} motions imitated ({cfg.simulate.passes} pass(es) each)")
    t_simulate = time.perf_counter() - t0 - t_process
    return t_process, t_simulate, stage_seconds, sim_seconds


def motion_frames(o: FileOutcome) -> list[int]:
    """Frames of each motion a file hands to the simulate stage (``o.to_simulate`` order): the
    staged sequence its canonical motion file was saved beside (``files.process_files``)."""
    frames = {f"{s.path.name}.npz": s.n_frames for s in o.staged}
    return [frames.get(Path(path).name, 0) for _, path, _ in o.to_simulate]


def _by_id(sims: list[SimOutcome]) -> tuple[SimOutcome, ...]:
    return tuple(sorted(sims, key=lambda x: x.sequence_id))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
