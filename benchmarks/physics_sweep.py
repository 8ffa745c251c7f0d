"""Simulator variants on every real trial with force plates, many passes each, compared run by run.

The closed loop is chaotic: one pass of one trial moves by ±0.3 N/kg when anything changes by a bit,
so a change is judged on many real runs, not on four walks (docs/simulation.md, sixth round). This is
the evaluation set of the sixth to eighth rounds: the four shared C3D walks, the AddBiomechanics
tutorial walk, and the BTK trials ``sample02/pc_int``, ``pc_real``, ``Dec_real`` (one trial stored three
ways), ``sample10/type-2a`` and ``sample01/Eb015pi`` — 10 trials × ``--passes`` passes per variant.

Usage::

    python benchmarks/physics_sweep.py                                   # the default engine, 5 passes
    python benchmarks/physics_sweep.py --passes 10 \\
        --variant default='SimConfig()' \\
        --variant seated='SimConfig(initial_contact_seat=True)'

A variant is ``NAME=EXPR``, ``EXPR`` a Python expression over ``SimConfig``, ``DynamicsConfig``,
``HumanoidParams``, ``Gains``, ``ContactQP``, ``replace`` and ``inf`` (evaluated here, on your own command
line). Prints per variant: λ (the build's ``grf_vs_plate_err``, mean of the two feet, N/kg) over all
runs — median, mean, 90th percentile, runs above 1.0 —; on the four walks the means of λ, sagittal
torque RMSE vs inverse dynamics under the plates (N·m/kg), RMS of the applied residual force (N) and
torque (N·m), the fraction of frames whose uncapped residual force demand is ≤ 5 % BW, the worst-foot
stance impulse and peak errors; over all runs τ, residual force, demand, resets per run and the centre
of pressure error (cm); the mean λ per trial; and, for every variant after the first, the run-by-run
(paired: same trial, same pass) change of λ against the first — mean, median, and how many runs got
better or worse by more than ``--tie`` N/kg.

``--plates-plan`` tracks, instead of the blind dynamics pass, the plan solved with each trial's plates as
per-foot force targets (``DynamicsConfig(use_measured=True)``; λ of the plan itself 0.04–0.13 N/kg):
what is left is the closed loop's own error (docs/simulation.md, eighth round). ``--demo`` also runs
every variant on the demo corpus (subjects S01 and S02, 16 motions, passes 0–2, as section 3 of
``physics_bench.py``) through the build's quality rules, unchanged, and prints the excluded passes per
motion type and their peak vertical forces.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from physics_bench import C3D_ROOT, WALKS, load_walks, walk_row  # noqa: E402

EXTRA = {"pc_int": "btk/sample02/pc_int.c3d", "pc_real": "btk/sample02/pc_real.c3d",
         "Dec_real": "btk/sample02/Dec_real.c3d", "type-2a": "btk/sample10/type-2a.c3d",
         "Eb015pi": "btk/sample01/Eb015pi.c3d"}
"""BTK trials with plates beside the four walks (the sixth round's evaluation set)."""
TRIALS = (*WALKS, "tutorial walk", *EXTRA)
FOUR_WALKS = tuple(WALKS)

_TRIALS: dict | None = None


def trials() -> dict:
    """Every trial of ``TRIALS`` present under ``../shared/data``, processed as the build does (cached
    per process)."""
    global _TRIALS
    if _TRIALS is None:
        from pipeline.process import BuildConfig, process_motion
        from pipeline.sources.base import get_source

        out = load_walks(held_out=True)
        out.pop("JA1Gait35 sprint", None)  # a sprint: reported by physics_bench, not a walk
        src = get_source("c3d")
        for name, rel in EXTRA.items():
            if (C3D_ROOT / rel).is_file():
                out[name] = process_motion(src.read(C3D_ROOT / rel, C3D_ROOT)[0], BuildConfig())
        _TRIALS = {k: out[k] for k in TRIALS if k in out}
    return _TRIALS


def config_of(expr: str):
    """The ``SimConfig`` an expression names (the module docstring's namespace, no builtins)."""
    from pipeline.dynamics import DynamicsConfig
    from pipeline.simulate import SimConfig
    from pipeline.simulate.controller import ContactQP, Gains
    from pipeline.simulate.humanoid import HumanoidParams

    ns = {"SimConfig": SimConfig, "DynamicsConfig": DynamicsConfig, "HumanoidParams": HumanoidParams,
          "Gains": Gains, "ContactQP": ContactQP, "replace": replace, "inf": math.inf}
    cfg = eval(expr, {"__builtins__": {}}, ns)  # noqa: S307 - the user's own command line
    if not isinstance(cfg, SimConfig):
        raise ValueError(f"{expr!r} is not a SimConfig")
    return cfg


def run_one(job: tuple[str, str, str, int, bool]) -> tuple[str, str, int, dict]:
    """Simulate pass ``i`` of one trial under one variant (with ``plates_plan``: tracking the plan solved
    with the trial's plates as force targets); the figures of ``walk_row``."""
    from pipeline.inverse_dynamics import measured_inverse_dynamics
    from pipeline.simulate import simulate
    from pipeline.simulate.engine import simulate_motion

    name, expr, trial, i, plates_plan = job
    p = trials()[trial]
    cfg = config_of(expr)
    cfg = replace(cfg, passes=max(cfg.passes, i + 1))
    if plates_plan:
        if cfg.dynamics is None:
            raise ValueError(f"--plates-plan needs a dynamics pass; {expr!r} has none")
        from pipeline.dynamics import dynamics_pass
        from pipeline.simulate.humanoid import build_humanoid, skeleton_from_motion

        hum = build_humanoid(skeleton_from_motion(p.motion), p.motion.mass_kg, p.motion.gender, cfg.humanoid,
                             cfg.physics_dt_s)
        dyn = dynamics_pass(p.motion, hum, replace(cfg.dynamics, use_measured=True), p.measured.grf_n)
        r = simulate_motion(p.motion, cfg, i, hum, dynamics=dyn)
    else:
        r = simulate([p.motion], cfg, pass_index=i)[0]
    w = walk_row(p, r, measured_inverse_dynamics(p.motion, p.measured).joint_torque_nm)
    cop = np.asarray(w["cop"], float)
    return name, trial, i, {
        "lam": (w["grf_vs_plate_err_left_n_per_kg"] + w["grf_vs_plate_err_right_n_per_kg"]) / 2,
        "tau": w["torque_vs_id_rmse_nm_per_kg"], "rf": w["rf"], "rt": w["rt"], "dem5": w["dem5"],
        "imp": w["grf_impulse_err_frac"], "peak": w["grf_peak_err_frac"], "resets": w["resets"],
        "cop": float(np.nanmean(cop)) if np.isfinite(cop).any() else math.nan}


def demo_one(job: tuple[str, str, int, int]) -> tuple[str, str, int, dict]:
    """Pass ``i`` of demo motion ``k`` under one variant through the build's quality rules
    (``sim_quality_probe.evaluate``)."""
    from sim_quality_probe import evaluate

    name, expr, k, i = job
    p = demo_motions()[k]
    return name, p.motion.provenance.name.rsplit("_t", 1)[0], i, evaluate(p, config_of(expr), pass_index=i)


_DEMO: list | None = None


def demo_motions() -> list:
    """The demo corpus of ``physics_bench.py`` section 3 (cached per process)."""
    global _DEMO
    if _DEMO is None:
        from sim_quality_probe import load_motions

        _DEMO = load_motions()
    return _DEMO


def print_demo(variants: dict[str, str], workers: int, passes: int = 3) -> dict:
    """Every variant on the demo corpus: excluded passes per motion type, their rules and peaks."""
    jobs = [(v, e, k, i) for v, e in variants.items() for k in range(len(demo_motions())) for i in range(passes)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = list(ex.map(demo_one, jobs))
    else:
        results = [demo_one(j) for j in jobs]
    out: dict = {}
    print(f"demo corpus: {len(demo_motions())} motions × {passes} passes, the build's quality rules unchanged")
    for v in variants:
        kinds: dict[str, list] = {}
        for vv, kind, _, row in results:
            if vv == v:
                kinds.setdefault(kind, []).append(row)
        n_ex = sum(bool(r["exclude"]) for rows in kinds.values() for r in rows)
        n = sum(len(rows) for rows in kinds.values())
        out[v] = {kind: {"excluded": sum(bool(r["exclude"]) for r in rows), "passes": len(rows),
                         "peak_bw": [float(r["grf_peak_bw"]) for r in rows],
                         "rules": sorted({x for r in rows for x in r["exclude"]})} for kind, rows in kinds.items()}
        print(f"  {v}: {n_ex}/{n} excluded; " + "; ".join(
            f"{kind} {d['excluded']}/{d['passes']} (peaks {min(d['peak_bw']):.1f}–{max(d['peak_bw']):.1f} BW"
            + (f", {', '.join(d['rules'])})" if d["rules"] else ")") for kind, d in sorted(out[v].items())))
    return out


def paired(rows: dict, a: str, b: str, names: list[str], passes: int, tie: float) -> dict:
    """Run-by-run change of λ, variant ``b`` minus variant ``a`` (same trial, same pass)."""
    d = np.array([rows[(b, k, i)]["lam"] - rows[(a, k, i)]["lam"] for k in names for i in range(passes)])
    return {"mean": float(d.mean()), "median": float(np.median(d)), "better": int((d < -tie).sum()),
            "worse": int((d > tie).sum()), "runs": int(d.size),
            "per_trial": {k: float(np.mean([rows[(b, k, i)]["lam"] - rows[(a, k, i)]["lam"] for i in range(passes)]))
                          for k in names}}


def summary(rows: dict, v: str, names: list[str], passes: int) -> dict:
    """The figures the module docstring lists, for variant ``v``."""
    runs = [rows[(v, k, i)] for k in names for i in range(passes)]
    four = [rows[(v, k, i)] for k in names if k in FOUR_WALKS for i in range(passes)]
    lam = np.array([r["lam"] for r in runs])

    def mean(key, rr):
        vals = [r[key] for r in rr if np.isfinite(r[key])]
        return float(np.mean(vals)) if vals else math.nan

    return {
        "lam_median": float(np.median(lam)), "lam_mean": float(lam.mean()), "lam_p90": float(np.percentile(lam, 90)),
        "runs_above_1": int((lam > 1.0).sum()), "runs": int(lam.size),
        "four_walks": {k: mean(k, four) for k in ("lam", "tau", "rf", "rt", "dem5", "imp", "peak")},
        "all": {k: mean(k, runs) for k in ("tau", "rf", "dem5", "resets", "cop")},
        "per_trial": {k: float(np.mean([rows[(v, k, i)]["lam"] for i in range(passes)])) for k in names},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", default=None, metavar="NAME=EXPR",
                    help="a simulator variant (repeat); the first is the baseline of the paired comparison "
                         "(default: default=SimConfig())")
    ap.add_argument("--passes", type=int, default=5, help="passes per trial (the build's --passes variation)")
    ap.add_argument("--trials", nargs="*", default=None, help=f"a subset of {list(TRIALS)}")
    ap.add_argument("--workers", type=int, default=2, help="processes")
    ap.add_argument("--tie", type=float, default=0.02, help="a paired change within ±this (N/kg) counts as neither")
    ap.add_argument("--plates-plan", action="store_true",
                    help="track the plan solved with each trial's plates as force targets (the closed loop's own error)")
    ap.add_argument("--demo", action="store_true", help="also run every variant on the demo corpus (quality rules)")
    ap.add_argument("--json", default=None, help="also write every run's figures and the summaries here")
    args = ap.parse_args(argv)
    if not C3D_ROOT.is_dir():
        print(f"the shared lab trials are missing: {C3D_ROOT}", file=sys.stderr)
        return 2
    variants: dict[str, str] = {}
    for spec in args.variant or ["default=SimConfig()"]:
        name, sep, expr = spec.partition("=")
        if not sep or not name.strip():
            ap.error(f"--variant wants NAME=EXPR, got {spec!r}")
        config_of(expr)  # fail before any simulation
        variants[name.strip()] = expr
    present = list(trials())
    names = [k for k in (args.trials or present) if k in present]
    missing = sorted(set(args.trials or ()) - set(present))
    if missing:
        print(f"not available: {missing} (of {present})", file=sys.stderr)
        return 2
    if args.passes < 1 or not names:
        ap.error("need at least one pass and one trial")
    jobs = [(v, e, k, i, args.plates_plan) for v, e in variants.items() for k in names for i in range(args.passes)]
    t0 = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as ex:
            results = list(ex.map(run_one, jobs))
    else:
        results = [run_one(j) for j in jobs]
    rows = {(v, k, i): r for v, k, i, r in results}
    print(f"{len(names)} trials × {args.passes} passes × {len(variants)} variants, {time.perf_counter() - t0:.0f} s"
          + (" (tracking the plans solved with the plates as force targets)" if args.plates_plan else ""))
    out = {"trials": names, "passes": args.passes, "variants": variants, "plates_plan": args.plates_plan,
           "summary": {}, "paired": {},
           "runs": [{"variant": v, "trial": k, "pass": i, **r} for (v, k, i), r in rows.items()]}
    base = next(iter(variants))
    for v, expr in variants.items():
        s = out["summary"][v] = summary(rows, v, names, args.passes)
        f, a = s["four_walks"], s["all"]
        print(f"{v}: {expr}")
        print(f"  λ over {s['runs']} runs: median {s['lam_median']:.3f}, mean {s['lam_mean']:.3f}, "
              f"p90 {s['lam_p90']:.2f}, {s['runs_above_1']} above 1.0 N/kg")
        print(f"  four walks: λ {f['lam']:.3f}  τ vs ID {f['tau']:.3f} N·m/kg  F_res {f['rf']:.1f} N  "
              f"T_res {f['rt']:.1f} N·m  demand ≤ 5 % BW {f['dem5']:.2f}  impulse err {f['imp']:.3f}  "
              f"peak err {f['peak']:.3f}")
        print(f"  all runs: τ vs ID {a['tau']:.3f}  F_res {a['rf']:.1f} N  demand ≤ 5 % BW {a['dem5']:.2f}  "
              f"resets/run {a['resets']:.2f}  CoP err {100 * a['cop']:.1f} cm")
        print("  λ per trial: " + ", ".join(f"{k} {x:.2f}" for k, x in s["per_trial"].items()))
        if v != base:
            d = out["paired"][v] = paired(rows, base, v, names, args.passes, args.tie)
            print(f"  vs {base}, run by run: λ change mean {d['mean']:+.3f}, median {d['median']:+.3f}; "
                  f"{d['better']} better, {d['worse']} worse by > {args.tie} of {d['runs']}")
    if args.demo:
        out["demo"] = print_demo(variants, args.workers)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
