"""The simulate stage for a batch of canonical motions (hand-over files written by the per-file stage)."""

from __future__ import annotations

import hashlib
import time
import traceback
from pathlib import Path

import numpy as np

from pipeline.dynamics import DynamicsResult
from pipeline.lab.measured import SourceTorques
from pipeline.process import BuildConfig, simulated_key, simulated_payload
from pipeline.quality.metrics import inputs_from_payload, metrics_row
from pipeline.records import CanonicalMotion, QuarantineEntry
from pipeline.simulate import simulate_jobs
from pipeline.simulate.engine import (
    SimConfig,
    SimulationResult,
    dynamics_config_key,
    dynamics_key,
    motion_dynamics,
)
from pipeline.store import stage_sequence
from pipeline.store.canonical_io import (
    load_canonical,
    load_dynamics,
    load_extras,
    load_result,
    save_dynamics,
    save_result,
)
from pipeline.store.staging import safe_key

from .records import PreparedChunk, SimOutcome, SimResults, SimulatedChunk

VALIDATION_EXTRAS = ("plate_grf_n", "plate_cop_m", "id_joint_torque_nm")
"""Hand-over extras the simulated passes' metrics use (quality providers ``sim_vs_plate``,
``sim_vs_plate_cop``, ``sim_vs_id``)."""


def _error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def dynamics_file(canonical: Path, sim: SimConfig) -> Path:
    """Where the per-file task stages the dynamics pass of the canonical motion file ``canonical``
    under ``sim``: beside it, named by ``engine.dynamics_config_key`` (an internal staging file)."""
    canonical = Path(canonical)
    return canonical.with_name(f"{canonical.stem}.dynamics-{dynamics_config_key(sim)}.npz")


def stage_dynamics(motion: CanonicalMotion, canonical: Path, sim: SimConfig) -> Path | None:
    """Compute the dynamics pass of ``motion`` (saved as ``canonical``) under ``sim`` and write it to
    ``dynamics_file``; ``None`` (nothing written) when ``sim.dynamics`` is ``None``. Run by the
    per-file task, so that simulate tasks (GPU workers above all) do not: it is ≈ 90 % of their
    host preparation and does not depend on the pass."""
    dyn = motion_dynamics(motion, sim)
    if dyn is None:
        return None
    return save_dynamics(dyn, dynamics_key(motion, sim), dynamics_file(canonical, sim))


def staged_dynamics(motion: CanonicalMotion, canonical: Path, sim: SimConfig) -> DynamicsResult | None:
    """The dynamics pass ``stage_dynamics`` wrote for ``motion`` (loaded from ``canonical``), or
    ``None`` when there is none, or it was written for another motion or configuration (the
    simulate task then computes it, with the same result)."""
    if sim.dynamics is None:
        return None
    return load_dynamics(dynamics_file(canonical, sim), motion, dynamics_key(motion, sim))


def simulate_motions(items: list[tuple[str, str, str]], cfg: BuildConfig) -> list[SimOutcome]:
    """Imitate a batch of (sequence id, canonical motion file, split) ``cfg.simulate.passes`` times
    (``simulate_parts`` with every pass of every motion); one ``SimOutcome`` per item."""
    passes = tuple(range(cfg.simulate.passes))
    return simulate_parts([(item, passes) for item in items], cfg)


def simulate_parts(parts: list[tuple[tuple[str, str, str], tuple[int, ...]]], cfg: BuildConfig,
                   max_worlds: int | None = None) -> list[SimOutcome]:
    """Imitate (item, passes) parts: the given passes of each (sequence id, canonical motion file,
    split); one ``SimOutcome`` per part, holding its passes only (``merge_parts`` joins the parts
    of one motion). Everything in one task: the CPU backend's simulate tasks (``simulate_motions``);
    the build splits a batched backend's work into ``simulate_results`` (the batch, on the GPU
    worker) and ``finish_results`` (staging, on CPU workers), with the same staged bytes and rows.

    A motion's dynamics pass is the one the per-file task staged beside its canonical file
    (``stage_dynamics``) when there is a valid one, else the backend computes it.
    All (motion, pass) sequences go through the backend in one call (``simulate_jobs``: a batched
    backend runs them as one batch of up to ``max_worlds`` worlds, the CPU backend pass by pass);
    if that call fails, the sequences are retried one by one so that a motion the simulator
    cannot handle is quarantined alone (its remaining passes are skipped). Every pass is staged as
    its own sequence (ground_reaction + torque subsets) with its quality-metrics row; for a motion
    with measured forces (hand-over extras) the row also holds the validation metrics against the
    plates and the inverse dynamics. A motion with the source's own ID (AddBiomechanics) stages it
    beside every pass (``source_tau_opensim``).
    """
    t0 = time.perf_counter()
    motions, failed, dyns = _load_motions(parts, cfg)
    measured, source_tau = {}, {}
    for path in motions:
        _load_validation(path, measured, source_tau, failed)
    jobs, results = _run_jobs(parts, motions, dyns, failed, cfg, max_worlds)
    staged: dict[tuple, list] = {}
    rows: dict[tuple, list] = {}
    for ((key, path, split), p), result in zip(jobs, results):
        if result is None or path in failed:
            continue
        try:
            s, r = _stage_pass(key, path, split, p, motions[path], result, measured.get(path, {}),
                               source_tau.get(path), cfg)
            staged.setdefault((path, p), []).append(s)
            rows.setdefault((path, p), []).append(r)
        except Exception as exc:
            failed[path] = _error(exc)
    elapsed = time.perf_counter() - t0
    n_worlds = max(1, sum(max(1, len(passes)) for _, passes in parts))
    return [_outcome(item, passes, failed, motions, staged, rows, elapsed * max(1, len(passes)) / n_worlds)
            for item, passes in parts]


def _load_motions(parts, cfg: BuildConfig) -> tuple[dict, dict, dict]:
    """(canonical motions, load errors, staged dynamics passes) by canonical motion file: what the
    backend needs. An unreadable hand-over file quarantines its motion only."""
    motions, failed, dyns = {}, {}, {}
    for (key, path, split), _ in parts:
        if path in motions or path in failed:
            continue
        try:
            motions[path] = load_canonical(Path(path))
        except Exception as exc:  # an unreadable hand-over file: quarantine this motion only
            failed[path] = _error(exc)
            continue
        # the dynamics pass the per-file task staged (None: the backend computes it, same result)
        dyns[path] = staged_dynamics(motions[path], Path(path), cfg.simulate)
    return motions, failed, dyns


def _load_validation(path: str, measured: dict, source_tau: dict, failed: dict) -> None:
    """The hand-over extras the staging of ``path``'s passes uses (measured forces, the source's
    own ID) into ``measured``/``source_tau``; an unreadable file marks the motion failed."""
    try:
        extras = load_extras(Path(path))
        measured[path] = {k: extras[k] for k in VALIDATION_EXTRAS if k in extras}
        source_tau[path] = SourceTorques.from_extras(extras)
    except Exception as exc:
        failed[path] = _error(exc)


def _run_jobs(parts, motions: dict, dyns: dict, failed: dict, cfg: BuildConfig, max_worlds: int | None):
    """The (item, pass) jobs of the loaded motions and their ``SimulationResult``s (``None`` for a
    motion that failed): one backend call, then one by one if it fails (failing motions go to
    ``failed``)."""
    jobs = [(item, p) for item, passes in parts if item[1] in motions and item[1] not in failed for p in passes]
    try:
        results = simulate_jobs([(motions[item[1]], p) for item, p in jobs], cfg.simulate, cfg.sim_backend,
                                max_worlds, dynamics=[dyns[item[1]] for item, _ in jobs])
    except Exception:
        results = []
        for item, p in jobs:
            path = item[1]
            if path in failed:
                results.append(None)
                continue
            try:
                results.append(simulate_jobs([(motions[path], p)], cfg.simulate, cfg.sim_backend,
                                             dynamics=[dyns[path]])[0])
            except Exception as exc:
                failed[path] = _error(exc)
                results.append(None)
    return jobs, results


def _stage_pass(key: str, path: str, split: str, p: int, motion: CanonicalMotion, result: SimulationResult,
                measured: dict, source_tau, cfg: BuildConfig):
    """Stage one simulated pass (ground_reaction + torque subsets) beside its file's other staged
    sequences; returns (its ``StagedSequence``, its quality-metrics row)."""
    frame, window, values = simulated_payload(motion, result, split, cfg.windows, source_tau)
    sim_key = simulated_key(key, p)
    extras = {"residual_wrench": result.residual_wrench, **measured}
    if result.dyn_root_correction_m is not None:
        extras["dyn_root_correction_m"] = result.dyn_root_correction_m
    if result.swing_penetration_m is not None:
        extras["swing_penetration_m"] = result.swing_penetration_m
    arrays, meta = inputs_from_payload(frame, window, values, motion.fps_hz, extras, seq_id=sim_key)
    row = metrics_row(arrays, meta)
    staged = stage_sequence(Path(path).parent.parent / "sim", sim_key, frame, window, values,
                            subsets=("ground_reaction", "torque"))
    return staged, row


def _outcome(item, passes, failed: dict, motions: dict, staged: dict, rows: dict, seconds: float) -> SimOutcome:
    key, path, _ = item
    if path in failed:
        return SimOutcome(key, path, quarantine=QuarantineEntry(path=key, stage="simulate", reason=failed[path]),
                          seconds=seconds)
    return SimOutcome(key, path, tuple(s for p in passes for s in staged.get((path, p), [])),
                      tuple(r for p in passes for r in rows.get((path, p), [])), None, seconds,
                      motions[path].n_frames * len(passes))


def result_file(path: str, key: str, p: int) -> Path:
    """Where the batched simulate task writes pass ``p`` of sequence ``key`` (canonical motion file
    ``path``) for a finish task: the file's cache entry, ``sim-results/`` (an internal staging
    file, deleted once the pass is staged)."""
    return Path(path).parent.parent / "sim-results" / f"{safe_key(simulated_key(key, p))}.npz"


def simulate_results(parts: list[tuple[tuple[str, str, str], tuple[int, ...]]], cfg: BuildConfig,
                     max_worlds: int | None = None) -> list[SimResults]:
    """The batched (GPU) simulate task: ``simulate_parts``' backend call only. Each (motion, pass)
    ``SimulationResult`` is written to ``result_file`` (``canonical_io.save_result``); one small
    ``SimResults`` handle per part, for ``finish_results`` on a CPU worker (the staging, metrics rows
    and hand-over extras: ≈ 10 ms per pass that would otherwise keep the GPU host busy). A motion
    that cannot be loaded or simulated is reported failed (quarantined alone, as in
    ``simulate_parts``)."""
    t0 = time.perf_counter()
    motions, failed, dyns = _load_motions(parts, cfg)
    jobs, results = _run_jobs(parts, motions, dyns, failed, cfg, max_worlds)
    files: dict[tuple[str, int], str] = {}
    for ((key, path, _), p), result in zip(jobs, results):
        if result is None or path in failed:
            continue
        try:
            files[(path, p)] = str(save_result(result, result_file(path, key, p)))
        except Exception as exc:
            failed[path] = _error(exc)
    elapsed = time.perf_counter() - t0
    n_worlds = max(1, sum(max(1, len(passes)) for _, passes in parts))
    out = []
    for item, passes in parts:
        share = elapsed * max(1, len(passes)) / n_worlds
        path = item[1]
        if path in failed:
            for p in passes:  # passes written before the motion failed
                if (path, p) in files:
                    Path(files[(path, p)]).unlink(missing_ok=True)
            out.append(SimResults(item, tuple(passes), (), failed[path], share))
        else:
            out.append(SimResults(item, tuple(passes), tuple(files[(path, p)] for p in passes), None, share))
    return out


def finish_results(handles: list[SimResults], cfg: BuildConfig) -> list[SimOutcome]:
    """The CPU finish task of a batched simulate task's parts (``simulate_results``): load each
    pass's result, stage it with its metrics row exactly as ``simulate_parts`` does, delete the
    result file; one ``SimOutcome`` per handle (its seconds: the simulate task's share plus this
    task's). A motion whose pass cannot be staged is quarantined alone (its remaining passes are
    skipped); a handle that reports a failure becomes its quarantine entry."""
    t0 = time.perf_counter()
    motions, failed = {}, {}
    measured, source_tau = {}, {}
    staged: dict[tuple, list] = {}
    rows: dict[tuple, list] = {}
    for h in handles:
        key, path, split = h.item
        try:
            if h.error is not None:
                failed.setdefault(path, h.error)
                continue
            if path not in motions and path not in failed:
                try:
                    motions[path] = load_canonical(Path(path))
                except Exception as exc:
                    failed[path] = _error(exc)
                    continue
                _load_validation(path, measured, source_tau, failed)
            for p, f in zip(h.passes, h.files):
                if path in failed:
                    break
                try:
                    s, r = _stage_pass(key, path, split, p, motions[path], load_result(Path(f)),
                                       measured.get(path, {}), source_tau.get(path), cfg)
                    staged.setdefault((path, p), []).append(s)
                    rows.setdefault((path, p), []).append(r)
                except Exception as exc:
                    failed[path] = _error(exc)
        finally:
            for f in h.files:
                Path(f).unlink(missing_ok=True)
    elapsed = time.perf_counter() - t0
    n_worlds = max(1, sum(max(1, len(h.passes)) for h in handles))
    return [_outcome(h.item, h.passes, failed, motions, staged, rows,
                     h.seconds + elapsed * max(1, len(h.passes)) / n_worlds) for h in handles]


def chunk_file(parts, kind: str) -> Path:
    """Where the batched path stages a chunk's files (``kind``: ``prep`` for its packed inputs,
    ``raw`` for its worlds' recordings): the cache entry of its first part's canonical motion
    file, ``sim-<kind>/<key>-<hash of the parts>.npz`` (internal staging files, deleted by the
    finish task)."""
    (key, path, _), _ = parts[0]
    tag = hashlib.sha256(repr([(tuple(i), tuple(p)) for i, p in parts]).encode()).hexdigest()[:12]
    return Path(path).parent.parent / f"sim-{kind}" / f"{safe_key(key)}-{tag}.npz"


def prepare_chunk(parts: list[tuple[tuple[str, str, str], tuple[int, ...]]], cfg: BuildConfig) -> PreparedChunk:
    """The simulate-prepare task (CPU worker) of some parts of one batch of worlds: load the motions
    and their staged dynamics passes, prepare every (motion, pass) (``engine.prepare_sequence``,
    the passes of a motion sharing its pass-independent part) and stage their packed host inputs
    (``packed.pack_prepared`` → ``chunk_file(parts, "prep")``) for the GPU task
    (``simulate_prepared``), which then only loads, uploads and simulates them. A dynamics pass the
    per-file task did not stage is computed here and staged (the finish task reads it). A motion
    that cannot be loaded or prepared is reported (``PreparedChunk.errors``) and left out; the
    other worlds are unaffected."""
    from pipeline.simulate.engine import prepare_sequence
    from pipeline.simulate.packed import pack_prepared, save_packed

    t0 = time.perf_counter()
    sim = cfg.simulate
    motions, failed, dyns = _load_motions(parts, cfg)
    preps, jobs, first = [], [], {}
    for i, ((_, path, _), passes) in enumerate(parts):
        for p in passes:
            if path in failed:
                break
            try:
                prep = prepare_sequence(motions[path], sim, p, like=first.get(path), dynamics=dyns[path])
            except Exception as exc:
                failed[path] = _error(exc)
                break
            first.setdefault(path, prep)
            preps.append(prep)
            jobs.append((i, p))
    keep = [j for j, (i, _) in enumerate(jobs) if parts[i][0][1] not in failed]
    for path, prep in first.items():
        if path not in failed and dyns.get(path) is None and prep.dyn is not None:
            try:  # for the finish task; without it, it computes the dynamics pass again (same result)
                save_dynamics(prep.dyn, dynamics_key(motions[path], sim), dynamics_file(Path(path), sim))
            except Exception:
                pass
    file = None
    if keep:
        file = str(save_packed(pack_prepared([preps[j] for j in keep]), chunk_file(parts, "prep")))
    return PreparedChunk(tuple((tuple(item), tuple(passes)) for item, passes in parts), file,
                         tuple(jobs[j] for j in keep), tuple(failed.items()), time.perf_counter() - t0)


def simulate_prepared(chunks: list[PreparedChunk], cfg: BuildConfig, max_worlds: int | None = None
                      ) -> list[SimulatedChunk]:
    """The GPU task of one batch of worlds: load the prepare tasks' packed inputs, simulate every
    world as one batch (``MjWarpBackend.run_packed``: up to ``max_worlds`` worlds per device batch),
    write each chunk's recordings (``packed.save_recordings`` → ``chunk_file(parts, "raw")``)
    for its finish task (``finish_chunk``). No MuJoCo model or data per world, no motion files,
    no result arrays: the host work is loading, concatenating, uploading, downloading and
    writing. If the batch raises, its worlds are run one at a time and a motion whose world fails
    is reported failed (its other worlds skipped), as ``simulate_parts`` does."""
    from pipeline.simulate.backends import get_backend
    from pipeline.simulate.packed import concat_packed, load_packed, place_recordings, save_recordings

    t0 = time.perf_counter()
    failed: dict[str, str] = {}
    packs, spans, paths = [], [], []  # paths: each world's canonical motion file
    for c in chunks:
        a = len(paths)
        if c.file is not None:
            try:
                packs.append(load_packed(Path(c.file)))
                paths += [c.parts[i][0][1] for i, _ in c.jobs]
            except Exception as exc:  # an unreadable staging file fails its chunk's motions only
                for (_, path, _), _ in c.parts:
                    failed.setdefault(path, _error(exc))
        spans.append((a, len(paths)))
    rec = None
    if packs:
        packed = concat_packed(packs)
        backend = get_backend(cfg.sim_backend, max_worlds)
        try:
            rec = backend.run_packed(packed, cfg.simulate)
        except Exception:  # one world at a time: only the failing motion is lost
            done = []
            for w in range(packed.worlds):
                if paths[w] in failed:
                    continue
                try:
                    done.append((np.array([w]), backend.run_packed(packed.take([w]), cfg.simulate)))
                except Exception as exc:
                    failed[paths[w]] = _error(exc)
            rec = place_recordings(done, packed.worlds) if done else None
    written = []
    for c, (a, b) in zip(chunks, spans):
        ok = [w for w in range(a, b) if paths[w] not in failed]
        file = None
        if ok and rec is not None:
            file = str(save_recordings(rec.take(ok), chunk_file(c.parts, "raw")))
        written.append((file, tuple(c.jobs[w - a] for w in ok)))
    elapsed = time.perf_counter() - t0
    total = max(1, len(paths))
    out = []
    for c, (a, b), (file, jobs) in zip(chunks, spans, written):
        errors = tuple((path, failed[path]) for path in dict.fromkeys(p for (_, p, _), _ in c.parts) if path in failed)
        out.append(SimulatedChunk(c, file, jobs, errors, elapsed * max(1, b - a) / total))
    return out


def finish_chunk(chunk: SimulatedChunk, cfg: BuildConfig) -> list[SimOutcome]:
    """The simulate-finish task (CPU worker) of one chunk simulated by ``simulate_prepared``: each
    world's ``SimulationResult`` from its recordings (``packed.finish_world``: ``engine._finish``
    with the motion, humanoid and dynamics pass loaded here), staged with its metrics row exactly
    as ``simulate_parts`` stages it; the chunk's staging files are deleted. One ``SimOutcome`` per
    part of the chunk (its seconds: its share of the prepare, GPU and finish tasks); a motion that
    failed anywhere, or whose pass cannot be finished or staged, is quarantined alone."""
    from pipeline.simulate.engine import motion_dynamics
    from pipeline.simulate.humanoid import build_humanoid, skeleton_from_motion
    from pipeline.simulate.packed import finish_world, load_recordings

    t0 = time.perf_counter()
    prep = chunk.prepared
    sim = cfg.simulate
    failed = dict(prep.errors)
    for path, reason in chunk.errors:
        failed.setdefault(path, reason)
    motions, subject, measured, source_tau = {}, {}, {}, {}
    staged: dict[tuple, list] = {}
    rows: dict[tuple, list] = {}
    try:
        rec = load_recordings(Path(chunk.file))[0] if chunk.file is not None else None
        for w, (i, p) in enumerate(chunk.jobs):
            key, path, split = prep.parts[i][0]
            if path in failed:
                continue
            try:
                if path not in motions:
                    motion = motions[path] = load_canonical(Path(path))
                    _load_validation(path, measured, source_tau, failed)
                    skel = skeleton_from_motion(motion)
                    hum = build_humanoid(skel, motion.mass_kg, motion.gender, sim.humanoid, sim.physics_dt_s)
                    dyn = staged_dynamics(motion, Path(path), sim)
                    if dyn is None and sim.dynamics is not None:
                        dyn = motion_dynamics(motion, sim, hum)
                    subject[path] = (hum, skel, dyn)
                    if path in failed:
                        continue
                hum, skel, dyn = subject[path]
                result = finish_world(rec, w, motions[path], sim, hum, skel, dyn)
                s, r = _stage_pass(key, path, split, p, motions[path], result, measured.get(path, {}),
                                   source_tau.get(path), cfg)
                staged.setdefault((path, p), []).append(s)
                rows.setdefault((path, p), []).append(r)
            except Exception as exc:
                failed[path] = _error(exc)
    except Exception as exc:  # unreadable recordings: every motion of the chunk
        for (_, path, _), _ in prep.parts:
            failed.setdefault(path, _error(exc))
    finally:
        for f in (chunk.file, prep.file):
            if f is not None:
                Path(f).unlink(missing_ok=True)
    for (_, path, _), _ in prep.parts:  # a part with no world left and no reason (not expected)
        if path not in motions and path not in failed:
            failed[path] = "no simulated world"
    own = time.perf_counter() - t0
    n_worlds = max(1, sum(max(1, len(passes)) for _, passes in prep.parts))
    spent = prep.seconds + chunk.seconds + own
    return [_outcome(item, passes, failed, motions, staged, rows, spent * max(1, len(passes)) / n_worlds)
            for item, passes in prep.parts]


def prepare_groups(parts: list, worlds: int) -> list[list]:
    """``parts`` ((item, passes) pairs) in order, grouped into prepare chunks of about ``worlds``
    worlds each (a part is never split)."""
    groups: list[list] = []
    cur: list = []
    n = 0
    for part in parts:
        cur.append(part)
        n += max(1, len(part[1]))
        if n >= worlds:
            groups.append(cur)
            cur, n = [], 0
    if cur:
        groups.append(cur)
    return groups


def finish_groups(handles: list[SimResults], worlds: int) -> list[list[SimResults]]:
    """``handles`` in order, grouped into finish tasks of about ``worlds`` passes each (a part is
    never split; a failed one counts as one)."""
    groups: list[list[SimResults]] = []
    cur: list[SimResults] = []
    n = 0
    for h in handles:
        cur.append(h)
        n += max(1, len(h.files))
        if n >= worlds:
            groups.append(cur)
            cur, n = [], 0
    if cur:
        groups.append(cur)
    return groups


def merge_parts(parts: list[tuple[tuple[int, ...], SimOutcome]]) -> SimOutcome:
    """One motion's ``SimOutcome`` from the outcomes of its parts (passes, outcome), in any order:
    staged passes and metrics rows in pass order; quarantined if any part is (the first part's
    reason, in pass order), as when all passes run in one task."""
    if len(parts) == 1:
        return parts[0][1]
    parts = sorted(parts, key=lambda po: min(po[0], default=0))
    first = parts[0][1]
    seconds = sum(o.seconds for _, o in parts)
    bad = next((o.quarantine for _, o in parts if o.quarantine is not None), None)
    if bad is not None:
        return SimOutcome(first.sequence_id, first.origin, quarantine=bad, seconds=seconds)
    return SimOutcome(first.sequence_id, first.origin, tuple(s for _, o in parts for s in o.staged),
                      tuple(r for _, o in parts for r in o.metrics), None, seconds, sum(o.frames for _, o in parts))
