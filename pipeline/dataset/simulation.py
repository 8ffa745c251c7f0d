"""The simulate stage for a batch of canonical motions (hand-over files written by the per-file stage)."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from pipeline.lab.measured import SourceTorques
from pipeline.process import BuildConfig, simulated_key, simulated_payload
from pipeline.quality.metrics import inputs_from_payload, metrics_row
from pipeline.records import QuarantineEntry
from pipeline.simulate import simulate
from pipeline.store import stage_sequence
from pipeline.store.canonical_io import load_canonical, load_extras

from .records import SimOutcome

VALIDATION_EXTRAS = ("plate_grf_n", "id_joint_torque_nm")
"""Hand-over extras the simulated passes' metrics use (quality providers ``sim_vs_plate``/``sim_vs_id``)."""


def _error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def simulate_motions(items: list[tuple[str, str, str]], cfg: BuildConfig) -> list[SimOutcome]:
    """Imitate a batch of (sequence id, canonical motion file, split) ``cfg.simulate.passes`` times.

    Each pass runs the whole batch through the backend at once (a GPU backend batches across
    sequences); if the batch fails, its motions are retried one by one so that a motion the
    simulator cannot handle is quarantined alone. Every pass of every motion is staged as its own
    sequence (ground_reaction + torque subsets) with its quality-metrics row; for a motion with
    measured forces (hand-over extras) the row also holds the validation metrics against the plates
    and the inverse dynamics. A motion with the source's own ID (AddBiomechanics) stages it beside
    every pass (``source_tau_opensim``).
    """
    t0 = time.perf_counter()
    loaded, failed, measured, source_tau = [], {}, {}, {}
    for key, path, split in items:
        try:
            loaded.append((key, path, split, load_canonical(Path(path))))
            extras = load_extras(Path(path))
            measured[path] = {k: extras[k] for k in VALIDATION_EXTRAS if k in extras}
            source_tau[path] = SourceTorques.from_extras(extras)
        except Exception as exc:  # an unreadable hand-over file: quarantine this motion only
            failed[path] = _error(exc)
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
                    failed[path] = _error(exc)
                    results.append(None)
        for (key, path, split, motion), result in zip(batch, results):
            if result is None:
                continue
            try:
                frame, window, values = simulated_payload(motion, result, split, cfg.windows, source_tau.get(path))
                sim_key = simulated_key(key, p)
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
                failed[path] = _error(exc)
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
