"""Parity of the MuJoCo Warp backend with the CPU backend on demo motions (issue 13 metrics).

Per sequence: |Δ median MPJPE| (mm), mean and max joint-position difference between the two
simulations (mm), per-foot GRF difference mean ‖ΔF‖ / mass (N/kg, ImDy's metric), joint torque
RMSE / mass (N·m/kg), resets. One batch of four demo motions of four subjects (walks at 1.2, 1.0,
1.6 m/s, a run at 3.0 m/s)::

    python benchmarks/gpu_parity.py --device cpu --duration-s 2     # Warp's CPU device
    python benchmarks/gpu_parity.py --device cuda --duration-s 4    # on a GPU
    python benchmarks/gpu_parity.py --device cpu --lab-walks        # the four shared lab walks instead

The controller runs as Warp kernels on the device (the default); ``--host-controller`` runs the
numpy reference on the host instead.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--duration-s", type=float, default=2.0)
    ap.add_argument("--lab-walks", action="store_true",
                    help="the four shared lab walks (../shared/data/c3d, benchmarks/physics_bench.py) instead")
    ap.add_argument("--host-controller", action="store_true",
                    help="the numpy controller on the host instead of the device controller's Warp kernels")
    args = ap.parse_args()

    from pipeline.simulate import SimConfig, simulate
    from pipeline.simulate.synthetic import demo_motion
    from pipeline.simulate.warp.backend import MjWarpBackend, WarpBatchSettings

    dur = args.duration_s
    if args.lab_walks:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from physics_bench import load_walks

        mos = [p.motion for p in load_walks().values()]
    else:
        mos = [demo_motion("walk", 1.2, duration_s=dur, subject=0), demo_motion("walk", 1.0, duration_s=dur, subject=1),
               demo_motion("walk", 1.6, duration_s=dur, subject=2), demo_motion("run", 3.0, duration_s=dur, subject=3)]
    cfg = SimConfig()
    cpu = simulate(mos, cfg, backend="cpu")
    backend = MjWarpBackend(device=args.device,
                            settings=WarpBatchSettings(device_controller=not args.host_controller))
    t = time.perf_counter()
    gpu = backend.simulate(mos, cfg)
    print(f"device {args.device}: {time.perf_counter() - t:.1f} s; {backend.last_stats}")
    print("| sequence | MPJPE cpu / warp (mm) | joint pos Δ mean / max (mm) | GRF Δ (N/kg) | torque RMSE (N·m/kg) | resets |")
    print("|---|---|---|---|---|---|")
    for a, b in zip(cpu, gpu):
        dj = np.linalg.norm(a.sim_joint_pos_m - b.sim_joint_pos_m, axis=-1) * 1000
        grf = np.linalg.norm(a.grf_n - b.grf_n, axis=-1).mean() / a.mass_kg
        tq = np.sqrt(np.mean((a.joint_torque_nm - b.joint_torque_nm) ** 2)) / a.mass_kg
        print(f"| {a.sequence_id} | {a.metrics['mpjpe_median_mm']:.2f} / {b.metrics['mpjpe_median_mm']:.2f} | "
              f"{dj.mean():.3f} / {dj.max():.2f} | {grf:.3f} | {tq:.4f} | {int(a.reset.sum())} / {int(b.reset.sum())} |")


if __name__ == "__main__":
    main()
