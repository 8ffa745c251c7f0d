"""Throughput and quality of the physics imitation engine (``pipeline.simulate``).

Usage: ``python benchmarks/sim_bench.py [--subjects 2] [--seconds 3] [--speed-only]``

Prints, in one run and on one core:
1. the raw ``mj_step`` rate of the same humanoid on the floor with contacts: the time spent inside
   the ``mj_step`` calls of the imitation itself (same states, same contacts), for a standing and
   a walking motion;
2. the full imitation loop's rate (controller at ``SimConfig().control_hz`` — 120 Hz, 4 physics
   steps of 1/480 s per tick — + recording, with the per-sequence preparation and finish; the
   motion's dynamics pass computed beforehand, as the build's per-file task stages it),
   in physics steps per second, and its ratio to (1);
3. seconds of motion simulated per wall-clock second per core, and the dynamics pass's time as a
   ratio to the imitation's;
4. success / MPJPE / residual distributions over a generated demo corpus
   (``pipeline.demo.generate_corpus(tmp, n_subjects)`` → AMASS reader → canonicalize → simulate).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import mujoco
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.canonical import CanonicalConfig, canonicalize  # noqa: E402
from pipeline.demo import generate_corpus  # noqa: E402
from pipeline.simulate import SimConfig, motion_dynamics, simulate, simulate_jobs  # noqa: E402
from pipeline.simulate.synthetic import demo_motion  # noqa: E402
from pipeline.sources.amass import read_amass  # noqa: E402


def timed_run(motion, cfg: SimConfig, dynamics=None) -> tuple[float, float, int]:
    """(wall seconds of the imitation, seconds spent inside ``mj_step``, physics steps).

    ``dynamics``: the motion's dynamics pass computed beforehand (``motion_dynamics``), as the build
    stages it: the imitation then does not include it. Without it a configuration with a dynamics
    pass computes it inside the timed imitation."""
    def run():
        if dynamics is None:
            return simulate([motion], cfg)
        return simulate_jobs([(motion, 0)], cfg, dynamics=[dynamics])

    run()  # warm the model cache
    step_time = [0.0]
    real_step = mujoco.mj_step

    def timed_step(m, d, nstep=1):
        t = time.perf_counter()
        real_step(m, d, nstep)
        step_time[0] += time.perf_counter() - t

    mujoco.mj_step = timed_step
    try:
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
    finally:
        mujoco.mj_step = real_step
    steps = motion.n_frames * round(cfg.control_hz / motion.fps_hz) * cfg.substeps
    return dt, step_time[0], steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="motion length of the speed test, s")
    ap.add_argument("--speed-only", action="store_true", help="only the speed section (1-3)")
    args = ap.parse_args(argv)
    cfg = SimConfig()

    print("== speed (one core; the dynamics pass staged as the build does, its cost on its own line) ==")
    for kind, speed in (("stand", 0.0), ("walk", 1.2)):
        mo = demo_motion(kind, speed, duration_s=args.seconds)
        motion_dynamics(mo, cfg)  # warm (humanoid cache, solver import)
        t0 = time.perf_counter()
        dyn = motion_dynamics(mo, cfg)
        t_dyn = time.perf_counter() - t0
        dt, t_step, steps = timed_run(mo, cfg, dynamics=dyn)
        raw, loop = steps / t_step, steps / dt
        print(f"  [{kind}] raw mj_step rate (same humanoid, same states, contacts): {raw:8.0f} steps/s")
        print(f"  [{kind}] imitation loop (controller + recording):                {loop:8.0f} physics steps/s")
        print(f"  [{kind}] ratio loop / raw:                                         {loop / raw:8.2f}  (goal >= 0.5)")
        print(f"  [{kind}] motion simulated per wall second per core:                {mo.n_frames / mo.fps_hz / dt:8.2f} s/s")
        print(f"  [{kind}] dynamics pass (once per motion) / imitation time:        {t_dyn / dt:8.2f}")

    if args.speed_only:
        return
    print(f"== quality on generate_corpus(n_subjects={args.subjects}) ==")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = generate_corpus(root, n_subjects=args.subjects)
        motions = [canonicalize(read_amass(f, root), CanonicalConfig()) for f in files]
    t0 = time.perf_counter()
    results = simulate(motions, cfg)
    dt = time.perf_counter() - t0
    total_s = sum(m.n_frames / m.fps_hz for m in motions)
    print(f"  {len(motions)} sequences, {total_s:.1f} s of motion in {dt:.1f} s ({total_s / dt:.2f} s/s)")
    hdr = (f"  {'sequence':<34}{'reset':>6}{'MPJPE med':>10}{'p95':>7}{'rel med':>8}{'res<=5%':>8}"
           f"{'demand<=5%':>11}{'resT med':>9}{'NE p95':>8}")
    print(hdr)
    for m, r in zip(motions, results):
        x = r.metrics
        print(f"  {m.provenance.subject + '/' + m.provenance.name:<34}{x['reset_count']:>6}{x['mpjpe_median_mm']:>10.1f}"
              f"{x['mpjpe_p95_mm']:>7.0f}{x['mpjpe_root_relative_median_mm']:>8.1f}"
              f"{x['residual_force_le_5pct_bw_frac']:>8.2f}{x['residual_force_demand_le_5pct_bw_frac']:>11.2f}"
              f"{x['residual_torque_median_nm']:>9.0f}{x['newton_euler_imbalance_p95_bw']:>8.3f}")
    frames = np.concatenate([~r.reset for r in results])
    mp = np.concatenate([r.mpjpe_m for r in results]) * 1000
    bw = [r.metrics["body_weight_n"] for r in results]
    rf = np.concatenate([np.linalg.norm(r.residual_wrench[:, :3], axis=1) / b for r, b in zip(results, bw)])
    rd = np.concatenate([np.linalg.norm(r.residual_demand_wrench[:, :3], axis=1) / b for r, b in zip(results, bw)])
    print("== corpus distributions (all frames) ==")
    print(f"  sequences without reset: {np.mean([r.metrics['success'] for r in results]):.2f}; "
          f"frames without reset: {frames.mean():.3f} (goal >= 0.99)")
    print(f"  MPJPE mm: median {np.median(mp):.1f} (goal <= 30), p75 {np.percentile(mp, 75):.1f}, "
          f"p95 {np.percentile(mp, 95):.1f}")
    print(f"  applied residual force / BW <= 5 %: {np.mean(rf <= 0.05):.3f} of frames (goal >= 0.95); "
          f"median {np.median(rf):.3f} BW")
    print(f"  residual force DEMAND (uncapped) / BW <= 5 %: {np.mean(rd <= 0.05):.3f}; median {np.median(rd):.3f}, "
          f"p95 {np.percentile(rd, 95):.2f} BW")
    for kind in ("walk", "run", "stand", "squat", "jump"):
        sel = [r for m, r in zip(motions, results) if m.provenance.name.startswith(kind)]
        if sel:
            print(f"  {kind:<6} resets {sum(r.metrics['reset_count'] for r in sel):>3}  MPJPE med "
                  f"{np.median([r.metrics['mpjpe_median_mm'] for r in sel]):6.1f} mm  demand<=5% "
                  f"{np.mean([r.metrics['residual_force_demand_le_5pct_bw_frac'] for r in sel]):.2f}")


if __name__ == "__main__":
    main()
