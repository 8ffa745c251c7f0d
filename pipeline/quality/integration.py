"""How a build uses the quality package, and a serial in-process reference build.

Integration contract (what ``flows/build.py`` does; docs/quality.md):

1. per-file task, after ``process_motion``::

       frame, window, values = stage_payload(processed)
       row = sequence_metrics(processed, payload=(frame, window, values))   # dict: ids + metrics
       # return it in FileOutcome (small: ~50 floats)

2. flow, after all per-file tasks::

       table, exclusions = apply_flags(rows, thresholds)        # thresholds: Thresholds.load(file) or default
       drop = excluded_ids(exclusions)
       members = [s for s in staged if subset in s.subsets and s.key not in drop]   # per subset
       ... write the stores ...
       write_quality_outputs(out, table, exclusions, staged=[s for s in staged if s.key in drop])
       # before the staging folder is deleted (previews of excluded sequences for the report)
       build_report(out)                                          # OUT/report.html

``finish_quality`` runs step 2's quality part in one call. ``build_in_process`` is the same
pipeline serially in one process (no Prefect, no Dask) for tests, benchmarks and demos; its
``modify`` hook lets a caller break sequences or add arrays (e.g. GRF) before metrics and staging.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .flags import Thresholds, apply_flags, excluded_ids, write_quality_outputs
from .metrics import G_MPS2, centre_of_mass, inputs_from_payload, metrics_row


def sequence_metrics(
    processed: Any,
    payload: tuple[Mapping, Mapping, Mapping] | None = None,
    extras: Mapping[str, np.ndarray] | None = None,
    **meta_extra: Any,
) -> dict[str, Any]:
    """The metrics row of one processed sequence (``pipeline.process.ProcessedSequence``).

    ``payload``: its ``stage_payload`` output when the caller already has it (avoids a copy);
    ``extras``: arrays beyond the payload (simulation, force plates); the canonical sole points
    and the sequence's own ``metric_arrays()`` (C3D: IK marker residuals, plate conflicts) are added
    automatically. ``meta_extra``: e.g. ``source_nan_frac`` from a source reader.
    """
    if payload is None:
        from pipeline.process import stage_payload

        payload = stage_payload(processed)
    frame, window, values = payload
    measured = processed.metric_arrays() if hasattr(processed, "metric_arrays") else {}
    more = {"foot_points_m": processed.motion.foot_points_m, **measured, **dict(extras or {})}
    arrays, meta = inputs_from_payload(frame, window, values, processed.motion.fps_hz, more, **meta_extra)
    return metrics_row(arrays, meta)


def finish_quality(
    out_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    thresholds: Thresholds | None = None,
    staged: Iterable[Any] | None = None,
) -> tuple[Any, list[dict], set[str]]:
    """Flag all rows and write ``metrics.parquet``, ``flags.json``, ``exclusions.json`` (and
    previews of excluded staged sequences); returns (table, exclusions, excluded seq ids)."""
    table, exclusions = apply_flags(rows, thresholds)
    drop = excluded_ids(exclusions)
    staged_excl = None if staged is None else [s for s in staged if s.key in drop]
    write_quality_outputs(out_dir, table, exclusions, staged=staged_excl)
    return table, exclusions, drop


# --- synthetic ground reaction (tests, demos) ----------------------------------------------------


def synthetic_ground_reaction(
    joint_pos_m: np.ndarray, foot_points_m: np.ndarray, contact: np.ndarray, mass_kg: float, fps_hz: float,
) -> dict[str, np.ndarray]:
    """Plausible GRF for a kinematic sequence: F = m (a_com + g) (COM from joint positions, smoothed),
    vertical part clipped at 0, zero without contact, shared between the feet in contact; COP at the
    mean of each foot's contact points. Returns ``grf_n``, ``grm_nm``, ``cop_m``, ``grf_total_n``."""
    n = len(joint_pos_m)
    com = centre_of_mass(joint_pos_m)
    acc = np.gradient(np.gradient(com, axis=0), axis=0) * fps_hz * fps_hz if n >= 3 else np.zeros((n, 3))
    total = mass_kg * (acc + np.array([0.0, 0.0, G_MPS2]))
    total[:, 2] = np.maximum(total[:, 2], 0.0)
    c = np.asarray(contact).astype(bool)
    feet = np.stack([c[:, 0] | c[:, 1], c[:, 2] | c[:, 3]], axis=1).astype(float)  # (N, 2)
    share = feet / np.maximum(feet.sum(axis=1, keepdims=True), 1.0)
    grf = share[:, :, None] * total[:, None, :]
    cop = np.full((n, 2, 3), np.nan)
    for k, pts in enumerate(((0, 1), (2, 3))):
        w = c[:, list(pts)].astype(float)
        s = w.sum(axis=1)
        mean = np.einsum("np,npx->nx", w, foot_points_m[:, list(pts)]) / np.maximum(s, 1.0)[:, None]
        cop[s > 0, k] = mean[s > 0]
        cop[s > 0, k, 2] = 0.0
    f32 = np.float32
    return {"grf_n": grf.astype(f32), "grm_nm": np.zeros((n, 2, 3), f32), "cop_m": cop.astype(f32),
            "grf_total_n": grf.sum(axis=1).astype(f32)}


def ground_reaction_windows(grf: Mapping[str, np.ndarray], window_start: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """Cubic window fits of ``grf_n``/``grm_nm`` named as in the ground_reaction schema."""
    from pipeline import fit

    g = fit.fit_windows(np.asarray(grf["grf_n"], np.float64), window_start, length, fit.KINEMATICS_DEGREE)
    m = fit.fit_windows(np.asarray(grf["grm_nm"], np.float64), window_start, length, fit.KINEMATICS_DEGREE)
    return {"grf_coef_n": g.coef.astype(np.float32), "grm_coef_nm": m.coef.astype(np.float32),
            "grf_fit_rmse_n": g.rmse.astype(np.float32)}


# --- serial reference build ----------------------------------------------------------------------

ModifyHook = Callable[[str, dict, dict, dict, dict], None]
"""``modify(seq_id, frame_arrays, window_arrays, seq_values, extras)``: edit in place before metrics."""


def _store_attrs(cfg: Any) -> tuple[dict, dict]:
    from flows.build import store_attrs

    attrs, coords = store_attrs(cfg)
    attrs["created_by"] = "dynaset quality.build_in_process"
    return attrs, coords


def build_in_process(
    corpus_root: str | Path,
    out_dir: str | Path,
    cfg: Any = None,
    thresholds: Thresholds | None = None,
    modify: ModifyHook | None = None,
    report: bool = False,
    chunking: Any = None,
) -> dict[str, Any]:
    """Serial build of an AMASS-format folder with quality metrics, flags and exclusions.

    Reads every file (``AmassSource``), runs ``process_motion``, lets ``modify`` edit the arrays,
    computes the metrics row, stages the sequence (for ``ground_reaction`` too when ``extras`` hold
    ``grf_n``/``grm_nm``/``cop_m``/``grf_total_n``), flags all rows, writes every subset store
    without the excluded sequences, then ``metrics.parquet``, ``flags.json``, ``exclusions.json``,
    ``quarantine.json``, ``build.json`` (and ``report.html`` with ``report=True``).
    Returns the build summary with per-step seconds.
    """
    from pipeline import __version__
    from pipeline.process import BuildConfig, process_motion, stage_payload
    from pipeline.sources.amass import AmassSource
    from pipeline.sources.base import SourceError
    from pipeline.split import SUBSETS
    from pipeline.store import load_schema, plan_store, stage_sequence, write_store

    cfg = cfg or BuildConfig()
    root, out = Path(corpus_root), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging" / uuid.uuid4().hex[:12]
    src = AmassSource()
    seconds = {"process": 0.0, "metrics": 0.0, "stage": 0.0, "flags": 0.0, "write": 0.0, "report": 0.0}
    rows, staged, quarantine = [], [], []
    files = src.discover(root)
    for path in files:
        t0 = time.perf_counter()
        try:
            raws = src.read(path, root)
            processed = [process_motion(r, cfg) for r in raws]
        except (SourceError, ValueError, ArithmeticError) as exc:
            quarantine.append({"path": f"amass:{path.relative_to(root).as_posix()}", "stage": "ingest",
                               "reason": getattr(exc, "problem", str(exc))})
            continue
        seconds["process"] += time.perf_counter() - t0
        for p in processed:
            frame, window, values = stage_payload(p)
            extras: dict[str, np.ndarray] = {}
            sid = values["seq_id"]
            if modify is not None:
                modify(sid, frame, window, values, extras)
            t1 = time.perf_counter()
            rows.append(sequence_metrics(p, payload=(frame, window, values), extras=extras))
            t2 = time.perf_counter()
            gr = ("grf_n", "grm_nm", "cop_m", "grf_total_n")
            frame_st, window_st = dict(frame), dict(window)
            if all(k in extras for k in gr):
                frame_st.update({k: extras[k] for k in gr})
                window_st.update(ground_reaction_windows(extras, window["window_start"], cfg.windows.length))
            staged.append(stage_sequence(staging, sid, frame_st, window_st, values))
            seconds["metrics"] += t2 - t1
            seconds["stage"] += time.perf_counter() - t2
    staged.sort(key=lambda s: s.key)
    t0 = time.perf_counter()
    table, exclusions = apply_flags(rows, thresholds)
    drop = excluded_ids(exclusions)
    seconds["flags"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    attrs, coords = _store_attrs(cfg)
    subsets = {}
    for subset in SUBSETS:
        members = [s for s in staged if subset in s.subsets and s.key not in drop]
        declared = load_schema(subset).coords
        plan = plan_store(subset, members, attrs, {k: v for k, v in coords.items() if k in declared}, chunking)
        path = write_store(plan, out / f"{subset}.zarr")
        subsets[subset] = {"store": str(path), "sequences": plan.n_sequences, "frames": plan.n_frames,
                           "windows": plan.n_windows, "hours": plan.n_frames / cfg.canonical.fps_hz / 3600.0}
    seconds["write"] = time.perf_counter() - t0
    write_quality_outputs(out, table, exclusions, staged=[s for s in staged if s.key in drop])
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (out / ".staging").rmdir()
    except OSError:
        pass
    summary = {
        "build_id": staging.name, "dynaset_version": __version__, "files": len(files),
        "files_built": len(files) - len(quarantine), "files_quarantined": len(quarantine),
        "sequences": len(rows), "sequences_excluded": len(drop), "subsets": subsets,
        "quarantine_file": "quarantine.json", "task_seconds": seconds, "created_by": "quality.build_in_process",
    }
    (out / "quarantine.json").write_text(json.dumps(quarantine, indent=2) + "\n")
    (out / "build.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if report:
        from .report import build_report

        t0 = time.perf_counter()
        build_report(out)
        seconds["report"] = time.perf_counter() - t0
    return summary
