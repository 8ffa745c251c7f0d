"""Where the CPU imitation loop's time goes per control tick (issue 11's speed target).

Usage: ``python benchmarks/sim_sections.py [--reps 5] [--seconds 3]``

Runs the 3 s demo walk (``SimConfig()``, the dynamics pass computed beforehand, as the build stages
it) with timing markers inserted before anchor lines of the *current* source of
``engine.simulate_motion``, ``TrackingController.compute`` and ``controller.solve_force_plan`` (a copy
compiled here; the package is not modified) and prints the **thread CPU time** per tick of each
section, so other processes' load on a shared machine does not count. Each marker costs ≈ 1 µs
(printed), charged to the section it ends. Sections whose anchors are gone from the source are
merged into the previous one: keep the anchors in step with the code.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.simulate import SimConfig, controller, engine  # noqa: E402
from pipeline.simulate.synthetic import demo_motion  # noqa: E402

ENGINE = [
    ("p = prepare_sequence", "prepare_sequence (reference, FK, model copy, controller)"),
    ("qpos_rec = np.empty", "loop setup"),
    ("mujoco.mj_kinematics", "mj_kinematics + mj_comPos + mj_comVel"),
    ("# fall / divergence", "flight anchor"),
    ("reset_now = abs", "fall/divergence test (pelvis height, mean joint error)"),
    ("if k % spf == 0", "frame record (mj_subtreeVel)"),
    ("q_ref[:] = rq[k]", "controller inputs"),
    ("tau, residual = ctrl.compute", "compute: call"),
    ("tau_tick[k] = tau", "tick bookkeeping (sums, qfrc_applied, springs, swing geoms)"),
    ("mujoco.mj_step(m, d)", "mj_step (raw)"),
    ("buf_steps[j] = sensordata", "per-step sensor and passive-torque copies"),
    ("if d.time < t_before", "tick bookkeeping (sums, qfrc_applied, springs, swing geoms)"),
    ("tau_sum = np.zeros", "after the loop: sums and reductions"),
    ("result = _finish", "_finish (FK, markers, metrics)"),
    ("return result", "(end)"),
]
COMPUTE = [
    ("m = self.m", "compute: a* (mj_differentiatePos) + mj_rne"),
    ("mujoco.mj_collision", "compute: mj_collision"),
    ("if d.ncon", "compute: floor-contact filtering"),
    ("nc = pts.shape[0]", "compute: contact matrix (einsum, plan rows)"),
    ("beta = solve_force_plan", "compute: solve_force_plan"),
    ("f = beta.reshape", "compute: mj_applyFT per contact"),
    ("self.last_contact_force", "compute: residual caps, shortfall"),
    ("if self.torque_limits", "compute: torque limits"),
    ("return joint", "tick bookkeeping (sums, qfrc_applied, springs, swing geoms)"),
]
PLAN = [
    ("m, n = A.shape", "solve_force_plan: unconstrained 6×6 solve"),
    ("A_aug = ", "solve_force_plan: NNLS (augmented system + routine)"),
]

_acc: dict[str, int] = {}
_cur = ["(start)"]
_last = [0]
_tt = time.thread_time_ns


def _tk(label: str) -> None:
    now = _tt()
    _acc[_cur[0]] = _acc.get(_cur[0], 0) + now - _last[0]
    _cur[0] = label
    _last[0] = now


def _instrument(fn, anchors, ns):
    lines = textwrap.dedent(inspect.getsource(fn)).split("\n")
    out, used = [], set()
    for ln in lines:
        for a, label in anchors:
            if ln.strip().startswith(a) and a not in used:
                out.append(ln[:len(ln) - len(ln.lstrip())] + f"_tk({label!r})")
                used.add(a)
        out.append(ln)
    for a, label in anchors:
        if a not in used:
            print(f"  (anchor {a!r} not in {fn.__qualname__}: '{label}' merged into the previous section)")
    g = dict(ns)
    g["_tk"] = _tk
    exec(compile("\n".join(out), f"<instrumented {fn.__qualname__}>", "exec"), g)
    return g[fn.__name__]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    sim = _instrument(engine.simulate_motion, ENGINE, vars(engine))
    compute, plan = controller.TrackingController.compute, controller.solve_force_plan
    controller.solve_force_plan = _instrument(plan, PLAN, vars(controller))
    # (the instrumented compute's globals are a copy of the module's, taken after the line above)
    controller.TrackingController.compute = _instrument(compute, COMPUTE, vars(controller))
    try:
        mo = demo_motion("walk", 1.2, duration_s=args.seconds)
        cfg = SimConfig()
        dyn = engine.motion_dynamics(mo, cfg)
        sim(mo, cfg, dynamics=dyn)  # warm
        _acc.clear()
        t0 = _last[0] = _tt()
        _cur[0] = "(start)"
        for _ in range(args.reps):
            sim(mo, cfg, dynamics=dyn)
            _tk("(between runs)")
        total = _tt() - t0
    finally:
        controller.TrackingController.compute, controller.solve_force_plan = compute, plan
    ticks = mo.n_frames * round(cfg.control_hz / mo.fps_hz) * args.reps
    t = _tt()
    for _ in range(20000):
        _tk("(marker cost)")
    marker = (_tt() - t) / 20000
    for k in ("(marker cost)", "(start)", "(between runs)"):
        _acc.pop(k, None)
    step = _acc.get("mj_step (raw)", 0)
    print(f"thread CPU per control tick: {total / ticks / 1e3:.1f} µs ({total / 1e9 / args.reps:.3f} s per "
          f"{args.seconds:g} s walk); mj_step {100 * step / total:.1f} % of it; each marker ≈ {marker / 1e3:.2f} µs")
    for k, v in sorted(_acc.items(), key=lambda kv: -kv[1]):
        print(f"  {v / ticks / 1e3:7.1f} µs/tick  {100 * v / total:5.1f} %  {k}")


if __name__ == "__main__":
    main()
