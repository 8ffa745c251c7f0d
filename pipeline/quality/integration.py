"""How a build uses the quality package, and a serial in-process reference build.

Integration contract (what ``pipeline.dataset`` does; docs/quality.md):

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

``finish_quality`` runs step 2's quality part in one call. ``build_in_process`` runs the build's
own driver serially in one process (no Prefect, no Dask) for tests, benchmarks and demos; its
``modify`` hook lets a caller break sequences or add arrays (e.g. GRF) before metrics and staging.
"""

from __future__ import annotations

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


def build_in_process(
    corpus_root: str | Path,
    out_dir: str | Path,
    cfg: Any = None,
    thresholds: Thresholds | None = None,
    modify: Callable[[str, dict, dict, dict, dict], None] | None = None,
    report: bool = False,
    chunking: Any = None,
) -> dict[str, Any]:
    """Serial build of an AMASS-format folder through the build's own driver
    (``pipeline.dataset.build.build_dataset`` with a ``SerialExecutor``): no Prefect, no Dask.

    Kinematic subsets only (``cfg.simulate`` is ignored); ``modify(seq_id, frame, window, values,
    extras)`` edits each sequence before its metrics and staging (GRF put in ``extras`` is staged for
    ground_reaction). Every file is reprocessed (the hook is not part of the processing key). Writes
    the stores without excluded sequences, ``metrics.parquet``, ``flags.json``, ``exclusions.json``,
    ``quarantine.json``, ``build.json`` (and ``report.html`` with ``report=True``). Returns the
    build summary; ``task_seconds`` also holds ``process`` (read + pure stages), ``metrics``,
    ``stage`` and ``write``.
    """
    from dataclasses import replace

    from pipeline.dataset.build import build_dataset
    from pipeline.dataset.executor import SerialExecutor
    from pipeline.process import BuildConfig
    from pipeline.sources.base import SourceSpec

    cfg = replace(cfg or BuildConfig(), simulate=None)
    summary = build_dataset(
        [SourceSpec("amass", Path(corpus_root).resolve())], Path(out_dir), cfg, chunking, workers=1,
        thresholds=thresholds, force=True, executor=SerialExecutor(), modify=modify, report=report,
        created_by="dynaset quality.build_in_process",
    )
    sec = summary["task_seconds"]
    sec.update(process=sum(sec.get(k, 0.0) for k in ("ingest", "canonicalize", "contact", "fit", "split")),
               metrics=sec.get("quality", 0.0), write=sec.get("write_regions", 0.0))
    summary["sequences"] = summary["subsets"]["motion"]["sequences"] + summary["sequences_excluded"]
    return summary
