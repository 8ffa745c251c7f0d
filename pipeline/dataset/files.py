"""The per-file stage: read one source file → canonicalize → contact → fit → split → quality
metrics → stage its arrays in the file's cache entry, and for each motion to simulate its canonical
motion file and its dynamics pass (the pass-independent host preparation of the simulate task).
Never raises for bad data: a file that cannot be built comes back as a quarantine entry, so one bad
file never stops a batch."""

from __future__ import annotations

import time
from dataclasses import replace
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.process import BuildConfig, process_motion, stage_payload
from pipeline.quality import Thresholds, evaluate_flags
from pipeline.quality.integration import ground_reaction_windows, sequence_metrics
from pipeline.records import QuarantineEntry
from pipeline.sources.base import SourceError, SourceSpec, get_source
from pipeline.store import stage_sequence
from pipeline.store.canonical_io import save_canonical

from .records import FileOutcome
from .simulation import stage_dynamics

ModifyHook = Callable[[str, dict, dict, dict, dict], None]
"""``modify(seq_id, frame_arrays, window_arrays, seq_values, extras)``: edits a sequence in place
before its metrics and staging (tests, benchmarks: break sequences, add GRF). GRF arrays put in
``extras`` (``grf_n``, ``grm_nm``, ``cop_m``, ``grf_total_n``) are staged with their window fits."""

_GROUND_REACTION = ("grf_n", "grm_nm", "cop_m", "grf_total_n")


def measured_extras(processed) -> dict:
    """What the simulate task compares a measured sequence's passes with (hand-over extras):
    the plate forces per foot (``plate_grf_n``, ``plate_cop_m``, ``plate_free_moment_nm``) and the
    inverse-dynamics torques (``id_joint_torque_nm``, NaN where unknown); and what the passes store beside
    them: the source's own ID (``SourceTorques.extras``: ``source_tau_opensim``, ``source_dofs``)."""
    out = {} if processed.source_torques is None else processed.source_torques.extras()
    m = processed.measured
    if m is None or not m.has_grf:
        return out
    out.update({"plate_grf_n": m.grf_n, "plate_cop_m": m.cop_m, "plate_free_moment_nm": m.free_moment_nm})
    if processed.inverse_dynamics is not None:
        out["id_joint_torque_nm"] = processed.inverse_dynamics.joint_torque_nm
    return out


def process_file(
    spec: SourceSpec, path: str, entry_dir: str, cfg: BuildConfig, thresholds: Thresholds | None = None,
    modify: ModifyHook | None = None,
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
        staged, rows, to_simulate = [], [], []
        frames_in = frames_out = 0
        for raw in raws:
            stage = "process"
            processed = process_motion(raw, cfg, seconds)
            key = processed.motion.provenance.sequence_id
            frame, window, values = stage_payload(processed)
            extras: dict[str, np.ndarray] = {}
            if modify is not None:
                modify(key, frame, window, values, extras)
            stage = "quality"
            t0 = time.perf_counter()
            row = sequence_metrics(processed, payload=(frame, window, values), extras=extras)
            excluded = any(f.level == "exclude" for f in evaluate_flags(row, thresholds))
            seconds["quality"] = seconds.get("quality", 0.0) + time.perf_counter() - t0
            stage = "stage"
            t0 = time.perf_counter()
            subsets = processed.subsets
            if all(k in extras for k in _GROUND_REACTION):  # hook-provided GRF: stage it and its fits
                frame = {**frame, **{k: extras[k] for k in _GROUND_REACTION}}
                window = {**window, **ground_reaction_windows(extras, window["window_start"], cfg.windows.length)}
                subsets = None  # every subset whose required arrays are now staged
            staged.append(stage_sequence(file_staging, key, frame, window, values, subsets=subsets))
            if cfg.simulate is not None and not excluded:
                canon = save_canonical(processed.motion, file_staging / "canonical" / f"{staged[-1].path.name}.npz",
                                       extras=measured_extras(processed))
                to_simulate.append((key, str(canon), processed.split))
            seconds["stage"] = seconds.get("stage", 0.0) + time.perf_counter() - t0
            if cfg.simulate is not None and not excluded and cfg.simulate.dynamics is not None:
                t0 = time.perf_counter()
                try:  # the simulate task's pass-independent host preparation, done here (CPU workers)
                    stage_dynamics(processed.motion, canon, cfg.simulate)
                except Exception:  # noqa: BLE001 - the simulate task computes it again and reports the error
                    pass
                seconds["dynamics"] = seconds.get("dynamics", 0.0) + time.perf_counter() - t0
            rows.append(row)
            frames_in += raw.n_frames
            frames_out += processed.motion.n_frames
        return FileOutcome(
            spec.kind, rel, tuple(staged), None, seconds, frames_in, frames_out, tuple(rows), tuple(to_simulate)
        )
    except SourceError as exc:
        reason = exc.problem
    except (ValueError, FloatingPointError, ArithmeticError) as exc:
        reason = str(exc)
    except Exception as exc:  # a bug or an unforeseen input: keep the batch going, keep the trace
        reason = f"unexpected error: {traceback.format_exception_only(type(exc), exc)[-1].strip()}"
    entry = QuarantineEntry(path=f"{spec.kind}:{rel}", stage=failed_stage(stage, seconds), reason=reason)
    return FileOutcome(spec.kind, rel, (), entry, seconds)


def process_files(
    jobs: list[tuple[SourceSpec, str, str]], cfg: BuildConfig, thresholds: Thresholds | None = None,
    modify: ModifyHook | None = None, cache_root: str | None = None,
) -> list[FileOutcome]:
    """``process_file`` for a batch of (spec, path, cache entry) jobs, one at a time. Batching only
    amortizes the task runner's per-task bookkeeping (Prefect: several API calls per task run).

    ``cache_root`` (the dataset root): a file with nothing to simulate has its cache entry completed
    here (``outcome.json``), and only its ``slim`` outcome is returned: the driver reads the entry
    back at assembly, so no per-sequence record travels to it (or stays in its task futures)."""
    from pipeline.store import file_cache

    from .executor import release_memory

    try:
        out = []
        for spec, path, entry in jobs:
            o = process_file(spec, path, entry, cfg, thresholds, modify)
            if cache_root is not None and not o.to_simulate:
                file_cache.save_entry(Path(entry), Path(cache_root), {"file": o, "sims": ()})
                o = slim(o)
            out.append(o)
        return out
    finally:
        release_memory()


def slim(o: FileOutcome) -> FileOutcome:
    """A file's outcome without its staged sequences and metrics rows (its cache entry holds them)."""
    return replace(o, staged=(), metrics=())


def batch_jobs(jobs: list, workers: int, max_batch: int = 128, per_worker: int = 4) -> list[list]:
    """Split jobs into contiguous batches: ~``per_worker`` batches per worker, at most ``max_batch``
    files each (few enough tasks to amortize bookkeeping, enough to balance the workers).

    Every task costs the Prefect task engine 0.1–0.5 s on the worker and the flow (two API
    clients, settings rebuilt, state changes sent; docs/scaling.md "Where a build's time goes"),
    while a file of the synthetic benchmark corpus takes ~20 ms: batches of 16 files spent about
    half their time in that bookkeeping."""
    if not jobs:
        return []
    size = max(1, min(max_batch, -(-len(jobs) // (per_worker * max(1, workers)))))
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def failed_stage(stage: str, seconds: dict) -> str:
    """The stage a file failed in: inside ``process`` the first of canonicalize/contact/fit not timed."""
    if stage != "process":
        return stage
    return next((s for s in ("canonicalize", "contact", "fit") if s not in seconds), "split")
