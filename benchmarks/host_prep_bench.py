"""Host preparation per simulated world, on the simulate (GPU) task's side and on the per-file
(CPU) task's side (issue 13: the GPU worker's host must keep up with the GPU).

A batched simulate task prepares every (motion, pass) on its host before the batch runs
(``engine.prepare_sequence``). The dynamics pass (conditioning + Clarabel QP, ≈ 90 % of it) does
not depend on the pass: the build's per-file task computes it and stages it beside the canonical
motion file (``pipeline.dataset.simulation.stage_dynamics``); the simulate task loads it
(``staged_dynamics``), and the passes of one motion share everything else that does not depend on
the pass (``prepare_sequence(like=...)``: reference, plan, gates, swing clearance).

Measured on demo walks/runs (as ``gpu_sim_bench.py``), humanoids already built (the build caches
them per subject; ``humanoid_build_s`` is one cold build):

* ``before``: the simulate task computes the dynamics pass once per motion (what the batched
  backend did before the dynamics pass moved out of it);
* ``after``: it loads the staged dynamics pass (file read + key check) and prepares the rest;
* ``cpu_task``: what the per-file task now spends per motion (dynamics pass + key + file write);
* ``post``: what the simulate task does per (motion, pass) after the control loop, on the GPU
  worker's host: ``engine._finish`` (in the backend), and staging the pass with its metrics row in
  one task (``simulate_parts``) or, split, only writing its result (``simulate_results``) while
  CPU finish tasks stage it (``finish_results``, timed too).

Per (motion, pass) seconds, and what a ``--worlds`` batch implies in host-core-seconds against
the GPU time the batch should take at ``--target`` s of motion per GPU-second::

    python benchmarks/host_prep_bench.py --motions 16 --duration-s 4 --passes 1,3

**The GPU task's own host work** (``--gpu-motions N``, default 64 motions over ``--subjects`` 8
subjects; 0 skips it): the build's batched path on Warp's CPU device with the batch loop's device
part stubbed out (``_device_loop``: uploads, control ticks, downloads; the recorded poses are the
reference), so that what is timed is the host work of the task that holds the GPU worker, per
(motion, pass), for each pass count of ``--gpu-passes``:

* ``one task`` (``simulate_results``): the GPU task loads the motions and dynamics passes, prepares
  every world, simulates, runs ``engine._finish`` and writes each result; CPU finish tasks stage
  them (``finish_results``). For ≥ 64 motions the reference kinematics run in the process pool
  (its CPU time is reported apart);
* ``prepared``: CPU prepare tasks (``prepare_chunk``, 32 worlds each), the GPU task
  (``simulate_prepared``: load the packed worlds, simulate, write the recordings), CPU finish tasks
  (``finish_chunk``: results, staging);
* with ``--baseline-ref REF`` (e.g. ``main``): ``one task`` again, measured with the tree of git
  revision ``REF`` (``git archive``, run in a subprocess with that tree first on ``sys.path``) in
  the same run, on the same files.

All paths must stage the same bytes (checked). Scaled to ``--worlds`` worlds per batch (the
measured per-world figure includes the batch's fixed costs, so it is an upper bound), against the
GPU time of such a batch at ``--target``: the estimated seconds of motion per wall-second of one
GPU worker, serial (host work, then the GPU) and with the host work overlapped. Needs the ``gpu``
extra (Warp's CPU device); the first run compiles Warp's kernels.

Prints tables and one JSON line (``--json PATH`` writes it too).
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

from gpu_sim_bench import motions  # the same synthetic mix of walks and runs (benchmarks/ is on sys.path)


def _best(fn, repeat: int) -> float:
    """Smallest wall time of ``repeat`` runs (the machine is shared: the minimum is the least
    disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def post_processing(mos, canons, cfg) -> dict:
    """Per (motion, pass) host seconds around the backend's control loop, CPU engine, pass 0,
    dynamics pass staged; the backend's own ``engine._finish`` (result arrays and metrics: both
    backends run it on the host) is timed apart:

    * one task (``simulate_parts``: what the GPU task did before the split, and the CPU backend's
      task still does): load the hand-over files, stage each pass with its metrics row;
    * the split (``simulate_results`` on the GPU worker: load the canonical files and dynamics
      passes, write each result file; then ``finish_results`` on CPU workers: load the result and
      hand-over files, stage each pass with its metrics row, delete the result file).

    Staged bytes of both paths are compared (they must be identical)."""
    import shutil
    from dataclasses import replace

    import pipeline.dataset.simulation as simulation
    import pipeline.simulate.engine as engine
    from pipeline.process import BuildConfig

    spent = {"backend": 0.0, "finish": 0.0, "write": 0.0}
    real_jobs, real_finish, real_save = simulation.simulate_jobs, engine._finish, simulation.save_result

    def timed_save(*a, **k):
        t = time.perf_counter()
        try:
            return real_save(*a, **k)
        finally:
            spent["write"] += time.perf_counter() - t

    def timed_jobs(*a, **k):
        t = time.perf_counter()
        try:
            return real_jobs(*a, **k)
        finally:
            spent["backend"] += time.perf_counter() - t

    def timed_finish(*a, **k):
        t = time.perf_counter()
        try:
            return real_finish(*a, **k)
        finally:
            spent["finish"] += time.perf_counter() - t

    def staged_bytes():
        return {str(q): q.read_bytes() for c in canons for q in sorted((Path(c).parent.parent / "sim").rglob("*"))
                if q.is_file()}

    def clear():
        for c in canons:
            shutil.rmtree(Path(c).parent.parent / "sim", ignore_errors=True)

    simulation.simulate_jobs, engine._finish, simulation.save_result = timed_jobs, timed_finish, timed_save
    try:
        bcfg = replace(BuildConfig(), simulate=cfg)
        items = [(m.provenance.sequence_id, str(c), "train") for m, c in zip(mos, canons)]
        parts = [(it, (0,)) for it in items]
        clear()
        t = time.perf_counter()
        outs = simulation.simulate_parts(parts, bcfg)
        total = time.perf_counter() - t
        backend_one, finish_s = spent["backend"], spent["finish"]
        want = staged_bytes()
        clear()
        spent["backend"] = 0.0
        t = time.perf_counter()
        handles = simulation.simulate_results(parts, bcfg)
        gpu_task = time.perf_counter() - t - spent["backend"]
        t = time.perf_counter()
        split = simulation.finish_results(handles, bcfg)
        finish_task = time.perf_counter() - t
    finally:
        simulation.simulate_jobs, engine._finish, simulation.save_result = real_jobs, real_finish, real_save
    assert all(o.quarantine is None for o in outs + split)
    assert staged_bytes() == want, "the split path staged other bytes"
    n = len(items)
    return {"worlds": n, "load_and_stage_s_per_world": (total - backend_one) / n,
            "finish_s_per_world": finish_s / n, "gpu_task_post_s_per_world": gpu_task / n,
            "cpu_finish_task_s_per_world": finish_task / n, "result_write_s_per_world": spent["write"] / n,
            "split_bytes_identical": True}


def _pool_cpu(prep_pool) -> float:
    """CPU seconds (user + system) the pool's processes have used so far."""
    pool = prep_pool._POOL
    if pool is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in list(pool._processes):
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def bench_motions(n: int, duration_s: float, subjects: int):
    """``gpu_sim_bench.motions``' mix of walks and runs (lengths ± 10 %), over ``subjects`` subjects
    (a subject's motions share its humanoid, as in a corpus)."""
    import numpy as np

    from pipeline.simulate.synthetic import demo_motion

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        kind = "run" if i % 4 == 3 else "walk"
        speed = float(rng.uniform(2.5, 3.2) if kind == "run" else rng.uniform(0.8, 1.5))
        dur = duration_s * float(rng.uniform(0.9, 1.1))
        out.append(demo_motion(kind, speed, duration_s=dur, subject=i % max(1, subjects)))
    return out


def _stub_device_loop():
    """Replace the batch loop's device part by writing the reference poses as the recorded states
    (same stub for every tree: its ``_device_loop`` takes ``out``, ``rq`` and ``spf``)."""
    import pipeline.simulate.warp.backend as wb

    def stub(*args, out, rq, spf, **kw):
        n = out["qpos_rec"].shape[1]
        out["qpos_rec"][:] = rq[:, ::spf][:, :n]
        return 0.0, False, 0

    wb._device_loop = stub


def _staged_digest(root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for q in sorted(root.glob("e*/sim/**/*")):
        if q.is_file():
            h.update(str(q.relative_to(root)).encode())
            h.update(q.read_bytes())
    return h.hexdigest()


def _clear(root: Path) -> None:
    import shutil

    for kind in ("sim", "sim-results", "sim-prep", "sim-raw"):
        for d in root.glob(f"e*/{kind}"):
            shutil.rmtree(d)


def gpu_task_measure(spec: dict) -> dict:
    """The GPU task's host CPU seconds (and its CPU tasks') per (motion, pass) for the paths this
    tree has (module docstring), on the canonical files and staged dynamics passes under
    ``spec["root"]`` (``e<i>/canonical/m.npz``); best of ``spec["repeat"]`` for the GPU task."""
    import warnings
    from dataclasses import replace

    import numpy as np

    import pipeline.dataset.simulation as simulation
    from pipeline.process import BuildConfig
    from pipeline.simulate import SimConfig, prep_pool
    from pipeline.store.canonical_io import load_canonical

    warnings.simplefilter("ignore")
    _stub_device_loop()
    root = Path(spec["root"])
    canons = sorted(root.glob("e*/canonical/m.npz"), key=lambda q: int(q.parent.parent.name[1:]))
    out = {"rows": []}
    for passes in spec["passes"]:
        cfg = replace(BuildConfig(), sim_backend="warp-cpu", simulate=SimConfig(passes=passes))
        mos = [load_canonical(c) for c in canons]
        out["dynamics_staged"] = all(simulation.staged_dynamics(m, c, cfg.simulate) is not None
                                     for m, c in zip(mos, canons))
        parts = [((m.provenance.sequence_id, str(c), "train"), tuple(range(passes))) for m, c in zip(mos, canons)]
        worlds = len(parts) * passes
        row = {"passes": passes, "worlds": worlds}

        def gpu(fn, *a):
            best = None
            for _ in range(max(1, spec["repeat"])):
                p0, c0, t0 = _pool_cpu(prep_pool), time.process_time(), time.perf_counter()
                res = fn(*a)
                got = (time.process_time() - c0, time.perf_counter() - t0, _pool_cpu(prep_pool) - p0)
                best = got if best is None or got[0] < best[0] else best
            return res, best

        def cpu(fn, *a):
            c0 = time.process_time()
            return fn(*a), time.process_time() - c0

        simulation.simulate_results(parts[:2], cfg, 64)  # warm: imports, Warp, code paths
        _clear(root)
        handles, (c, w, pc) = gpu(simulation.simulate_results, parts, cfg, worlds)
        nbytes = sum(Path(f).stat().st_size for h in handles for f in h.files)
        _, fc = cpu(simulation.finish_results, handles, cfg)
        row["one_task"] = {"gpu_task_cpu_s": c / worlds, "gpu_task_wall_s": w / worlds, "pool_cpu_s": pc / worlds,
                           "prepare_cpu_s": 0.0, "finish_cpu_s": fc / worlds, "staged_bytes": nbytes / worlds,
                           "digest": _staged_digest(root)}
        if hasattr(simulation, "simulate_prepared"):
            from pipeline.dataset.build import PREPARE_WORLDS_PER_TASK

            _clear(root)
            groups = simulation.prepare_groups(parts, PREPARE_WORLDS_PER_TASK)
            chunks, pcpu = cpu(lambda: [simulation.prepare_chunk(g, cfg) for g in groups])
            simulation.simulate_prepared(chunks[:1], cfg, worlds)  # warm
            sims, (c, w, pc) = gpu(simulation.simulate_prepared, chunks, cfg, worlds)
            nbytes = sum(Path(x.file).stat().st_size for x in chunks) + sum(Path(x.file).stat().st_size for x in sims)
            _, fc = cpu(lambda: [simulation.finish_chunk(x, cfg) for x in sims])
            row["prepared"] = {"gpu_task_cpu_s": c / worlds, "gpu_task_wall_s": w / worlds, "pool_cpu_s": pc / worlds,
                               "prepare_cpu_s": pcpu / worlds, "finish_cpu_s": fc / worlds,
                               "staged_bytes": nbytes / worlds, "digest": _staged_digest(root)}
        _clear(root)
        out["rows"].append(row)
    prep_pool.shutdown()
    return out


def gpu_task_section(args, out: dict) -> None:
    """``gpu_task_measure`` in this tree and, with ``--baseline-ref``, in that revision's tree (a
    subprocess), on the same files; adds ``out["gpu_task"]`` and prints the comparison."""
    import shutil
    import subprocess
    import sys

    from pipeline.dataset.simulation import stage_dynamics
    from pipeline.simulate import SimConfig
    from pipeline.store.canonical_io import save_canonical

    tmp = Path(tempfile.mkdtemp(prefix="host_prep_bench-gpu-"))
    mos = bench_motions(args.gpu_motions, args.duration_s, args.subjects)
    for i, m in enumerate(mos):
        stage_dynamics(m, save_canonical(m, tmp / f"e{i}" / "canonical" / "m.npz"), SimConfig())
    motion_s = sum(m.n_frames / m.fps_hz for m in mos) / len(mos)
    spec = {"root": str(tmp), "passes": [int(x) for x in args.gpu_passes.split(",")], "repeat": args.gpu_repeat}
    res = {"motions": len(mos), "subjects": args.subjects, "motion_s_mean": motion_s,
           "load_avg_before": os.getloadavg()}
    if args.baseline_ref:
        repo = Path(__file__).resolve().parent.parent
        tree = Path(tempfile.mkdtemp(prefix="host_prep_bench-baseline-"))
        archive = subprocess.run(["git", "-C", str(repo), "archive", args.baseline_ref], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        sj, oj = tree / "spec.json", tree / "out.json"
        sj.write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, __file__, "--measure-gpu-task", str(sj), str(oj)], env=env, check=True)
        res["baseline"] = json.loads(oj.read_text())
        res["baseline_ref"] = args.baseline_ref
        shutil.rmtree(tree, ignore_errors=True)
    res["this_tree"] = gpu_task_measure(spec)
    res["load_avg_after"] = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)
    out["gpu_task"] = res

    w = args.worlds
    batch_motion_s = w * motion_s
    gpu_s = batch_motion_s / args.target
    print(f"\nGPU task's host work, device loop stubbed (Warp's CPU device): {len(mos)} motions of {motion_s:.2f} s "
          f"over {args.subjects} subjects; load average {res['load_avg_before'][0]:.2f} → "
          f"{res['load_avg_after'][0]:.2f}; a {w}-world batch = {batch_motion_s:.0f} s of motion = {gpu_s:.1f} GPU-s "
          f"at {args.target:.0f} s/s")
    print(f"{'path':<28} {'passes':>6} {'GPU task ms/world':>18} {'wall ms':>8} {'core-s/batch':>13} {'pool core-s':>12} "
          f"{'prepare core-s':>15} {'finish core-s':>14} {'MB/world':>9} {'s/s serial':>11} {'s/s overlap':>12}")
    rows = []
    if "baseline" in res:
        rows += [(f"{args.baseline_ref}: one task", r, r["one_task"]) for r in res["baseline"]["rows"]]
    rows += [("this tree: one task", r, r["one_task"]) for r in res["this_tree"]["rows"]]
    rows += [("this tree: prepared", r, r["prepared"]) for r in res["this_tree"]["rows"] if "prepared" in r]
    digests = {}
    for name, r, f in rows:
        host = f["gpu_task_cpu_s"] * w
        f["gpu_task_core_s_per_batch"] = host
        f["motion_s_per_wall_s_serial"] = batch_motion_s / (host + gpu_s)
        f["motion_s_per_wall_s_overlapped"] = batch_motion_s / max(host, gpu_s)
        digests.setdefault(r["passes"], set()).add(f["digest"])
        print(f"{name:<28} {r['passes']:>6} {f['gpu_task_cpu_s'] * 1e3:>18.2f} {f['gpu_task_wall_s'] * 1e3:>8.2f} "
              f"{host:>13.1f} "
              f"{f['pool_cpu_s'] * w:>12.1f} {f['prepare_cpu_s'] * w:>15.1f} {f['finish_cpu_s'] * w:>14.1f} "
              f"{f['staged_bytes'] / 1e6:>9.2f} {f['motion_s_per_wall_s_serial']:>11.0f} "
              f"{f['motion_s_per_wall_s_overlapped']:>12.0f}")
    res["staged_bytes_identical"] = all(len(d) == 1 for d in digests.values())
    print("staged bytes identical across paths:", res["staged_bytes_identical"])
    assert res["staged_bytes_identical"], "the paths staged different bytes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--motions", type=int, default=16)
    ap.add_argument("--duration-s", type=float, default=4.0)
    ap.add_argument("--passes", default="1,3", help="comma-separated pass counts per motion")
    ap.add_argument("--worlds", type=int, default=4096, help="worlds per GPU batch (the build's default)")
    ap.add_argument("--target", type=float, default=1000.0, help="GPU target, s of motion per GPU-second")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print where the after-path's time goes")
    ap.add_argument("--post-motions", type=int, default=4,
                    help="motions simulated (CPU engine, pass 0) to time the simulate task's per-pass work after "
                         "the backend (0: skip)")
    ap.add_argument("--pool", type=int, default=1, help="also time the prepared batch with the process pool "
                    "(prep_pool, the machine's cores; 0: skip)")
    ap.add_argument("--gpu-motions", type=int, default=64,
                    help="motions of the GPU task's host-work section (0: skip it; needs the gpu extra)")
    ap.add_argument("--subjects", type=int, default=8, help="distinct subjects of those motions")
    ap.add_argument("--gpu-passes", default="1,3", help="comma-separated pass counts of that section")
    ap.add_argument("--gpu-repeat", type=int, default=2, help="GPU task runs per path (best kept)")
    ap.add_argument("--baseline-ref", default=None,
                    help="git revision whose tree is measured as the baseline in the same run (e.g. main)")
    ap.add_argument("--skip-prep", action="store_true", help="only the GPU task's section")
    ap.add_argument("--measure-gpu-task", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.measure_gpu_task:  # the baseline's subprocess (gpu_task_section)
        spec = json.loads(Path(args.measure_gpu_task[0]).read_text())
        Path(args.measure_gpu_task[1]).write_text(json.dumps(gpu_task_measure(spec)))
        return
    if args.skip_prep:
        out = {"load_avg": os.getloadavg(), "cpu_count": os.cpu_count()}
        gpu_task_section(args, out)
        print(json.dumps(out))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2)
        return

    from pipeline.simulate import SimConfig, build_humanoid, skeleton_from_motion
    from pipeline.simulate import humanoid as humanoid_mod
    from pipeline.simulate.engine import prepare_sequence

    staged = "dynamics" in inspect.signature(prepare_sequence).parameters  # this branch or before it
    cfg = SimConfig()
    mos = motions(args.motions, args.duration_s)
    motion_s = sum(m.n_frames / m.fps_hz for m in mos) / len(mos)
    humanoid_mod._CACHE.clear()
    t = time.perf_counter()
    build_humanoid(skeleton_from_motion(mos[0]), mos[0].mass_kg, mos[0].gender, cfg.humanoid, cfg.physics_dt_s)
    hum_s = time.perf_counter() - t
    for m in mos:  # the build caches humanoids per subject
        build_humanoid(skeleton_from_motion(m), m.mass_kg, m.gender, cfg.humanoid, cfg.physics_dt_s)

    def before(passes: int):
        for m in mos:
            first = None
            for p in range(passes):
                prep = prepare_sequence(m, cfg, p, like=first)
                first = first or prep

    out = {"staged": staged, "motions": len(mos), "motion_s_mean": motion_s, "humanoid_build_s": hum_s,
           "load_avg": os.getloadavg(), "cpu_count": os.cpu_count(), "rows": []}
    tmp = Path(tempfile.mkdtemp(prefix="host_prep_bench-"))
    if staged:
        from pipeline.dataset.simulation import stage_dynamics, staged_dynamics
        from pipeline.store.canonical_io import load_canonical, save_canonical

        canons = [save_canonical(m, tmp / "canonical" / f"m{i}.npz") for i, m in enumerate(mos)]
        t = time.perf_counter()
        for m, c in zip(mos, canons):
            stage_dynamics(m, c, cfg)
        out["cpu_task_s_per_motion"] = (time.perf_counter() - t) / len(mos)
        loaded = [load_canonical(c) for c in canons]

        def after(passes: int):
            for m, c in zip(loaded, canons):
                dyn = staged_dynamics(m, c, cfg)
                assert dyn is not None
                first = None
                for p in range(passes):
                    prep = prepare_sequence(m, cfg, p, like=first, dynamics=dyn)
                    first = first or prep

        def pooled(passes: int):
            """``after`` as the batched backend does it for a large batch: the reference kinematics of
            every motion in the process pool (``prep_pool``), the rest in this process."""
            from pipeline.simulate.prep_pool import reference_kinematics_many

            dyns = [staged_dynamics(m, c, cfg) for m, c in zip(loaded, canons)]
            kins = reference_kinematics_many([(m, d.motion) for m, d in zip(loaded, dyns)], cfg, min_motions=1)
            assert kins is not None  # an iterator: the preparation below overlaps the pool's work
            for m, dyn, kin in zip(loaded, dyns, kins):
                first = None
                for p in range(passes):
                    prep = prepare_sequence(m, cfg, p, like=first, dynamics=dyn, reference=kin)
                    first = first or prep

        t = time.perf_counter()
        for m, c in zip(loaded, canons):
            staged_dynamics(m, c, cfg)
        out["load_s_per_motion"] = (time.perf_counter() - t) / len(mos)

    gpu_s = args.worlds * motion_s / args.target
    out["gpu_s_per_batch_at_target"] = gpu_s
    for passes in [int(x) for x in args.passes.split(",")]:
        n = len(mos) * passes
        row = {"passes": passes, "before_s_per_world": _best(lambda: before(passes), args.repeat) / n}
        if staged:
            row["after_s_per_world"] = _best(lambda: after(passes), args.repeat) / n
            if args.pool:
                from pipeline.simulate import prep_pool

                pooled(passes)  # start the pool (spawned processes import the pipeline once)
                w0, c0 = _pool_cpu(prep_pool), time.process_time()
                row["pool_wall_s_per_world"] = _best(lambda: pooled(passes), args.repeat) / n
                row["pool_main_cpu_s_per_world"] = (time.process_time() - c0) / (args.repeat * n)
                row["pool_workers_cpu_s_per_world"] = (_pool_cpu(prep_pool) - w0) / (args.repeat * n)
                row["pool_workers"] = prep_pool.pool_workers()
        for k in ("before", "after"):
            if f"{k}_s_per_world" in row:
                row[f"{k}_core_s_per_batch"] = row[f"{k}_s_per_world"] * args.worlds
        out["rows"].append(row)
    if staged and args.post_motions:
        out["post"] = post_processing(mos[: args.post_motions], canons[: args.post_motions], cfg)
    if staged and args.profile:
        pr = cProfile.Profile()
        pr.enable()
        after(max(int(x) for x in args.passes.split(",")))
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(15)
        print(s.getvalue())

    print(f"{len(mos)} motions, {motion_s:.2f} s each on average; load average {out['load_avg'][0]:.2f} on "
          f"{out['cpu_count']} cores; one cold humanoid build {hum_s * 1e3:.0f} ms (cached per subject)")
    if staged:
        print(f"per-file (CPU) task: +{out['cpu_task_s_per_motion'] * 1e3:.0f} ms per simulated motion (dynamics pass "
              f"+ write); simulate task: {out['load_s_per_motion'] * 1e3:.1f} ms per motion to load it")
    print(f"GPU time of a {args.worlds}-world batch at {args.target:.0f} s of motion per GPU-second: {gpu_s:.1f} s")
    print(f"{'passes':>6} {'before ms/world':>16} {'after ms/world':>15} {'before core-s/batch':>20} "
          f"{'after core-s/batch':>19}")
    for r in out["rows"]:
        after_ms = f"{r['after_s_per_world'] * 1e3:15.1f}" if "after_s_per_world" in r else f"{'-':>15}"
        after_b = f"{r['after_core_s_per_batch']:19.0f}" if "after_core_s_per_batch" in r else f"{'-':>19}"
        print(f"{r['passes']:>6} {r['before_s_per_world'] * 1e3:16.1f} {after_ms} "
              f"{r['before_core_s_per_batch']:20.0f} {after_b}")
    for r in out["rows"]:
        if "pool_wall_s_per_world" in r:
            print(f"{r['passes']} pass(es), pool of {r['pool_workers']} processes: "
                  f"{r['pool_wall_s_per_world'] * 1e3:.1f} ms/world wall ({r['pool_wall_s_per_world'] * args.worlds:.0f} s per batch), this process "
                  f"{r['pool_main_cpu_s_per_world'] * 1e3:.1f} ms/world CPU, the pool "
                  f"{r['pool_workers_cpu_s_per_world'] * 1e3:.1f} ms/world CPU")
    if "post" in out:
        po = out["post"]
        w = args.worlds
        before_post = po["finish_s_per_world"] + po["load_and_stage_s_per_world"]
        after_post = po["finish_s_per_world"] + po["gpu_task_post_s_per_world"]
        out["gpu_task_post_core_s_per_batch"] = {"one_task": before_post * w, "split": after_post * w}
        out["cpu_finish_core_s_per_batch"] = po["cpu_finish_task_s_per_world"] * w
        print(f"after the backend, per (motion, pass): engine._finish {po['finish_s_per_world'] * 1e3:.1f} ms "
              f"(in the backend); one task (simulate_parts): load + stage + metrics row "
              f"{po['load_and_stage_s_per_world'] * 1e3:.1f} ms; split: GPU task (simulate_results: load + write "
              f"the result) {po['gpu_task_post_s_per_world'] * 1e3:.1f} ms (the write "
              f"{po['result_write_s_per_world'] * 1e3:.1f} ms), CPU finish task (finish_results) "
              f"{po['cpu_finish_task_s_per_world'] * 1e3:.1f} ms (staged bytes identical)")
        loop_after = (po["finish_s_per_world"] + po["result_write_s_per_world"]) * w
        out["gpu_task_post_core_s_per_batch"]["split_after_loop_only"] = loop_after
        print(f"GPU task outside the backend, × {w} worlds: {before_post * w:.0f} core-s in one task → "
              f"{after_post * w:.0f} core-s split, of which after the loop (engine._finish + the result write) "
              f"{loop_after:.0f} core-s (+ {po['cpu_finish_task_s_per_world'] * w:.0f} core-s in CPU finish tasks)")
    if args.gpu_motions:
        gpu_task_section(args, out)
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
