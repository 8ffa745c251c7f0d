"""Throughput of the MuJoCo Warp backend vs the CPU backend (issue 13).

Simulates batches of demo walks/runs (different subjects, speeds and lengths ± 10 %) with
``MjWarpBackend`` at several batch sizes and reports, per batch size: seconds of motion simulated
per device-second (the batch loop's wall time: physics and, by default, the controller kernels on
the device — one captured CUDA graph per control tick on CUDA; ``--host-controller``: the numpy
controller on the host, one round trip per tick — excluding the per-sequence host preparation,
which CPU workers can do), device memory per world (MuJoCo Warp Model + Data arrays, and the
device controller's arrays), and the ratio to the CPU backend's seconds of motion per
CPU-core-second measured in the same run (process CPU time of ``simulate_motion`` on a subset,
preparation excluded the same way). Each row says whether the ticks ran as a CUDA graph.

On a GPU machine (one command; the first run compiles the kernels, ≈ 1–3 min)::

    python benchmarks/gpu_sim_bench.py --device cuda --worlds 256,1024,4096 --duration-s 4

Without a GPU (Warp's CPU device; small sizes)::

    python benchmarks/gpu_sim_bench.py --device cpu --worlds 1,2,4 --duration-s 1

Prints a table and one JSON line (``--json PATH`` writes it to a file too).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def motions(n: int, duration_s: float):
    from pipeline.simulate.synthetic import demo_motion

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        kind = "run" if i % 4 == 3 else "walk"
        speed = float(rng.uniform(2.5, 3.2) if kind == "run" else rng.uniform(0.8, 1.5))
        dur = duration_s * float(rng.uniform(0.9, 1.1))
        out.append(demo_motion(kind, speed, duration_s=dur, subject=i % 8, seed=i // 8))
    return out


def cpu_rate(mos, cfg) -> float:
    """Seconds of motion per CPU-core-second of the CPU backend's control loop (prep excluded)."""
    from pipeline.simulate.engine import prepare_sequence, simulate_motion

    sim_s = 0.0
    cpu_s = 0.0
    for mo in mos:
        t = time.process_time()
        prepare_sequence(mo, cfg)
        prep = time.process_time() - t
        t = time.process_time()
        simulate_motion(mo, cfg)
        cpu_s += time.process_time() - t - prep
        sim_s += mo.n_frames / mo.fps_hz
    return sim_s / cpu_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="Warp device: cuda, cuda:N or cpu")
    ap.add_argument("--worlds", default="1,2,4", help="comma-separated batch sizes")
    ap.add_argument("--duration-s", type=float, default=1.0)
    ap.add_argument("--cpu-sequences", type=int, default=2, help="sequences timed on the CPU backend")
    ap.add_argument("--host-controller", action="store_true",
                    help="controller math in numpy on the host (the reference path) instead of Warp kernels")
    ap.add_argument("--no-graph", action="store_true", help="device controller without CUDA graph capture")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from pipeline.simulate import SimConfig
    from pipeline.simulate.engine import prepare_sequence
    from pipeline.simulate.packed import pack_prepared
    from pipeline.simulate.warp.backend import WarpBatchSettings, simulate_batch

    cfg = SimConfig()
    opts = dict(device_controller=not args.host_controller, cuda_graph=not args.no_graph)
    sizes = [int(x) for x in args.worlds.split(",")]
    cpu = cpu_rate(motions(args.cpu_sequences, args.duration_s), cfg)
    # warm-up: compile / load the kernels
    warm = pack_prepared([prepare_sequence(m, cfg) for m in motions(1, 0.2)])
    t = time.perf_counter()
    simulate_batch(warm, cfg, WarpBatchSettings(**opts), args.device)
    warm_s = time.perf_counter() - t
    rows = []
    for w in sizes:
        mos = motions(w, args.duration_s)
        t = time.perf_counter()
        preps = pack_prepared([prepare_sequence(m, cfg) for m in mos])
        prep_s = time.perf_counter() - t
        _, st = simulate_batch(preps, cfg, WarpBatchSettings(max_worlds=w, **opts), args.device)
        sim_s = sum(m.n_frames / m.fps_hz for m in mos)
        rate = sim_s / st.wall_s
        rows.append({"worlds": w, "motion_s": sim_s, "device_wall_s": st.wall_s, "prep_s_host": prep_s,
                     "motion_s_per_device_s": rate, "ratio_to_cpu_core": rate / cpu,
                     "device_mib_per_world": st.device_bytes / w / 2**20,
                     "controller_mib_per_world": st.controller_bytes / w / 2**20,
                     "overflow_worlds": len(st.overflow_worlds), "ticks": st.ticks,
                     "device_controller": st.device_controller, "cuda_graph": st.cuda_graph,
                     "force_plan_kkt_max": st.force_plan_kkt_max})
    out = {"device": args.device, **opts, "duration_s": args.duration_s, "warmup_s": warm_s,
           "cpu_motion_s_per_core_s": cpu, "rows": rows}
    print(f"device {args.device}; warm-up (kernel compile/load) {warm_s:.1f} s; "
          f"CPU backend {cpu:.2f} s of motion per core-second; controller on the "
          f"{'device' if opts['device_controller'] else 'host'}")
    print(f"{'worlds':>7} {'motion s':>9} {'device s':>9} {'motion s/dev s':>15} {'× CPU core':>11} {'MiB/world':>10} "
          f"{'ctrl MiB/w':>10} {'graph':>6}")
    for r in rows:
        print(f"{r['worlds']:>7} {r['motion_s']:>9.1f} {r['device_wall_s']:>9.1f} {r['motion_s_per_device_s']:>15.2f} "
              f"{r['ratio_to_cpu_core']:>11.3f} {r['device_mib_per_world']:>10.2f} "
              f"{r['controller_mib_per_world']:>10.2f} {str(r['cuda_graph']):>6}")
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
