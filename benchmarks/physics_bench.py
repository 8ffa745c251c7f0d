"""Physical fidelity of the imitation on real lab walks and the demo corpus (issue 11), in one run.

Usage::

    python benchmarks/physics_bench.py                 # everything (~3 min on one core)
    python benchmarks/physics_bench.py --no-demo       # only the lab walks and the speed ratio
    python benchmarks/physics_bench.py --speed-only    # only the speed ratio (section 4)

Prints, for each simulator variant (``VARIANTS``: the previous engine = "before", the default
engine = "after", and the default with the root residual torque capped):

1. the four shared lab walks with force plates (``../shared/data/c3d``: opensim-core walking2,
   BTK PiG_Motion3_FF and Gait, kineticstoolkit walk), each read by the C3D source and processed
   as the build does, and two held-out real trials no setting was tuned on (``HELD_OUT``: the
   AddBiomechanics tutorial walk and the JA1Gait35 sprint, read by the OpenSim-upload source;
   ``--no-held-out`` skips them; they are not in the mean λ), simulated, and compared with the same trial's measured per-foot GRF and with
   inverse dynamics under the plate forces, using the build's own validation metrics
   (``pipeline.quality.validation``): λ = mean ‖F_sim − F_plate‖ / mass per foot (N/kg, ImDy's
   metric), peak and stance-impulse errors, sagittal hip/knee/ankle torque RMSE vs ID (N·m/kg);
   plus peak vertical force sim vs plate (BW), MPJPE median / p95 (mm, against the canonical
   motion), resets, the uncapped residual
   force demand (median, BW; fraction of frames ≤ 5 % BW), and the RMS of the applied root
   residual force (N) and torque (N·m);
2. the dynamics pass's own force plan against the plates (no simulation): blind, and with the
   plates as targets (AddBiomechanics-style);
3. the demo corpus (subjects S01, S02 of ``generate_corpus(n_subjects=3, seed=1)``, 16 motions,
   passes 0–2 by default) through the build's quality rules, unchanged: excluded / total per motion
   type and the rules;
4. speed: the imitation loop's physics-step rate against raw ``mj_step`` on the same states
   (goal ≥ 0.5; the dynamics pass staged, as the build computes it once per motion) and the
   dynamics pass's cost as its own ratio to the simulation time (docs/simulation.md "Speed").

To judge a change of the simulator, compare variants on many real runs, pass by pass:
``benchmarks/physics_sweep.py`` (ten trials, ``--passes`` each, paired).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline.dynamics import DynamicsConfig, dynamics_pass  # noqa: E402
from pipeline.process import BuildConfig, process_motion  # noqa: E402
from pipeline.simulate import SimConfig, simulate  # noqa: E402
from pipeline.simulate.humanoid import build_humanoid, skeleton_from_motion  # noqa: E402
from pipeline.sources.base import get_source  # noqa: E402

G = 9.81
C3D_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "c3d"
WALKS = {"walking2": "opensim-core/walking2.c3d", "PiG_Motion3_FF": "btk/PiG/PiG_Motion3_FF.c3d",
         "Gait": "btk/others/Gait.c3d", "kit walk": "kineticstoolkit/walk.c3d"}
ADDB_ROOT = C3D_ROOT.parent / "addbiomechanics"
HELD_OUT = {"tutorial walk": "tutorial_walk/motion_capture_walk_trimmed.trc", "JA1Gait35 sprint": "JA1Gait35/JA1Gait35.trc"}
"""Real trials with force plates that no setting was tuned on (OpenSim/AddBiomechanics uploads, read by the
``opensim`` source): reported beside the four walks, not in their mean (the issue's table)."""
VARIANTS: dict[str, tuple[str, SimConfig]] = {
    "before": ("the previous engine: tracks the canonical motion as it is, root torque uncapped "
               "(SimConfig(dynamics=None, residual_torque_limit_nm_per_kg=inf))",
               SimConfig(dynamics=None, residual_torque_limit_nm_per_kg=float("inf"))),
    "after": ("the default SimConfig(): dynamics pass, plan load sharing, swing clearance, root residual torque "
              "capped at 1 N·m/kg", SimConfig()),
    "after-uncapped": ("the default with the root residual torque uncapped",
                       SimConfig(residual_torque_limit_nm_per_kg=float("inf"))),
}


def load_walks(held_out: bool = False) -> dict:
    """The four shared C3D walks (and, with ``held_out``, the ``HELD_OUT`` trials where present), processed
    as the build does."""
    src = get_source("c3d")
    out = {k: process_motion(src.read(C3D_ROOT / rel, C3D_ROOT)[0], BuildConfig()) for k, rel in WALKS.items()}
    if held_out and ADDB_ROOT.is_dir():
        osim = get_source("opensim")
        out.update({k: process_motion(osim.read(ADDB_ROOT / rel, ADDB_ROOT)[0], BuildConfig())
                    for k, rel in HELD_OUT.items()})
    return out


def per_foot(force: np.ndarray, meas, fps: float) -> dict:
    """λ per foot (N/kg), (peak Fz sim, plate) per foot (BW), (impulse sim, plate) per foot (BW·s)."""
    mass = meas.mass_kg
    bw = mass * G
    lam, peak, imp = [], [], []
    for f in range(2):
        ok = np.isfinite(meas.grf_n[:, f]).all(-1)
        lam.append(float(np.linalg.norm(force[ok, f] - meas.grf_n[ok, f], axis=-1).mean() / mass))
        peak.append((force[ok, f, 2].max() / bw, meas.grf_n[ok, f, 2].max() / bw))
        imp.append((force[ok, f, 2].sum() / fps / bw, meas.grf_n[ok, f, 2].sum() / fps / bw))
    return {"lam": lam, "peak": peak, "imp": imp}


def walk_row(p, r, id_torque: np.ndarray) -> dict:
    """The build's own validation metrics (pipeline.quality.validation) plus peaks, impulses,
    tracking and residuals of one simulated lab walk."""
    from pipeline.quality.validation import cop_validation, grf_validation, torque_validation

    meas = p.measured
    bw = meas.mass_kg * G
    out = per_foot(r.grf_n, meas, p.motion.fps_hz)
    out.update(grf_validation(r.grf_n, meas.grf_n, meas.mass_kg, p.motion.fps_hz))
    cop = cop_validation(r.cop_m, meas.cop_m, meas.grf_n, meas.mass_kg)
    out["cop"] = (cop["cop_vs_plate_err_left_m"], cop["cop_vs_plate_err_right_m"])
    out.update(torque_validation(r.joint_torque_nm, id_torque, meas.mass_kg, r.sim_joint_rot_aa_rad,
                                 p.motion.joint_rot_aa_rad))
    # where the torque error comes from: inverse dynamics of the same (measured) motion under the
    # *simulated* floor forces and centres of pressure, against the plates' ID (the forces' share)
    # and against the simulated torques (the tracking's share)
    from pipeline.inverse_dynamics import KINEMATICS_CUTOFF_HZ, inverse_dynamics

    id_sim = inverse_dynamics(p.motion, r.grf_n, r.cop_m, r.free_moment_nm, cutoff_hz=KINEMATICS_CUTOFF_HZ)
    out["tau_forces"] = torque_validation(id_sim.joint_torque_nm, id_torque, meas.mass_kg, p.motion.joint_rot_aa_rad,
                                          p.motion.joint_rot_aa_rad)["torque_vs_id_rmse_nm_per_kg"]
    out["tau_tracking"] = torque_validation(r.joint_torque_nm, id_sim.joint_torque_nm, meas.mass_kg,
                                            r.sim_joint_rot_aa_rad, p.motion.joint_rot_aa_rad)[
        "torque_vs_id_rmse_nm_per_kg"]
    dem = np.linalg.norm(r.residual_demand_wrench[:, :3], axis=-1) / bw
    out.update(
        mpjpe=(r.metrics["mpjpe_median_mm"], r.metrics["mpjpe_p95_mm"]), resets=r.metrics["reset_count"],
        dem=float(np.median(dem)), dem5=float(np.mean(dem <= 0.05)),
        rf=float(np.sqrt(np.mean(np.sum(r.residual_wrench[:, :3] ** 2, axis=-1)))),
        rt=float(np.sqrt(np.mean(np.sum(r.residual_wrench[:, 3:] ** 2, axis=-1)))),
    )
    return out


def mean_row(rows: list[dict]) -> dict:
    """Field-wise mean of ``walk_row`` dicts (numbers and tuples of numbers; nested tuples element-wise)."""
    def avg(vals):
        if isinstance(vals[0], (tuple, list)):
            return tuple(avg([v[i] for v in vals]) for i in range(len(vals[0])))
        return float(np.mean(vals))
    return {k: avg([r[k] for r in rows]) for k in rows[0]}


def print_walks(walks: dict, names: list[str], passes: int = 1) -> dict:
    from pipeline.inverse_dynamics import measured_inverse_dynamics

    print("== 1. lab walks: simulated vs force plates and vs inverse dynamics with the plate forces ==")
    print("   λ = the build's grf_vs_plate_err (plate averaged onto the simulated intervals), N/kg; peak/impulse"
          " errors: the build's grf_peak_err_frac / grf_impulse_err_frac (worst foot); τ RMSE: sagittal"
          " hip/knee/ankle vs ID, N·m/kg")
    if passes > 1:
        print(f"   every figure is the mean over {passes} passes (the build's --passes variation: gains, joint"
              " noise, root velocity noise); 'spread' is the min–max of the walk's mean λ over the passes")
    print(f"{'variant':<12}{'trial':<16}{'λ L/R':>11}{'peak err':>9}{'imp err':>8}{'τ RMSE':>7}"
          f"{'peak Fz L sim/plate':>20}{'R sim/plate':>13}{'MPJPE p50/p95':>15}{'resets':>7}"
          f"{'demand p50':>11}{'≤5%BW':>7}{'F_res RMS':>10}{'T_res RMS':>11}{'τ forces':>9}{'τ track':>8}"
          f"{'CoP err L/R':>12}")
    print("   τ forces: ID under the simulated floor forces/CoPs vs ID under the plates (the GRF's share of the τ"
          " error); τ track: simulated torques vs ID under their own forces (the tracking's share), N·m/kg;"
          " CoP err: the build's cop_vs_plate_err (mean horizontal distance where the plate carries ≥ 0.2 BW), cm")
    ids = {k: measured_inverse_dynamics(p.motion, p.measured).joint_torque_nm for k, p in walks.items()}
    means = {}
    for v in names:
        cfg = replace(VARIANTS[v][1], passes=max(passes, 1))
        lams = []
        for k, p in walks.items():
            rows = [walk_row(p, simulate([p.motion], cfg, pass_index=i)[0], ids[k]) for i in range(cfg.passes)]
            c = mean_row(rows)
            spread = [np.mean([r["grf_vs_plate_err_left_n_per_kg"], r["grf_vs_plate_err_right_n_per_kg"]])
                      for r in rows]
            lam = (c["grf_vs_plate_err_left_n_per_kg"], c["grf_vs_plate_err_right_n_per_kg"])
            if k in WALKS:
                lams += list(lam)
            (pl, pr) = c["peak"]
            print(f"{v:<16}{k:<16}{lam[0]:>5.2f}/{lam[1]:<5.2f}{100 * c['grf_peak_err_frac']:>7.0f} %"
                  f"{100 * c['grf_impulse_err_frac']:>6.0f} %{c['torque_vs_id_rmse_nm_per_kg']:>7.2f}"
                  f"{pl[0]:>12.2f}/{pl[1]:<7.2f}{pr[0]:>6.2f}/{pr[1]:<6.2f}"
                  f"{c['mpjpe'][0]:>8.0f}/{c['mpjpe'][1]:<6.0f}{c['resets']:>7.1f}{c['dem']:>9.2f}BW{c['dem5']:>7.2f}"
                  f"{c['rf']:>8.0f} N{c['rt']:>8.0f} N·m{c['tau_forces']:>8.2f}{c['tau_tracking']:>8.2f}"
                  f"{100 * c['cop'][0]:>7.1f}/{100 * c['cop'][1]:<4.1f}"
                  + (f"   spread {min(spread):.2f}–{max(spread):.2f}" if len(rows) > 1 else ""))
        means[v] = float(np.mean(lams))
        print(f"{v:<16}{'mean λ':<16}{means[v]:>5.2f} N/kg   (the four C3D walks; {VARIANTS[v][0]})")
    return means


def plan_torque_error(p, hum, r) -> float:
    """Sagittal torque RMSE (N·m/kg) of inverse dynamics under the plan's per-foot forces applied at the
    plan's centres of pressure, against inverse dynamics under the plates: what the plan itself says
    about the joint torques (a simulation that followed its plan exactly would score this)."""
    from pipeline.dynamics import centroidal_state
    from pipeline.inverse_dynamics import KINEMATICS_CUTOFF_HZ, inverse_dynamics, measured_inverse_dynamics
    from pipeline.quality.validation import torque_validation

    mo = p.motion
    _, _, corners = centroidal_state(r.motion, hum)
    cop = np.full((mo.n_frames, 2, 3), np.nan)
    for f in range(2):
        fz = np.clip(r.corner_force_n[:, 6 * f:6 * f + 6, 2], 0.0, None)
        tot = fz.sum(1)
        c = (corners[:, 6 * f:6 * f + 6] * fz[..., None]).sum(1) / np.maximum(tot, 1e-9)[:, None]
        c[:, 2] = 0.0
        cop[:, f] = np.where((tot > 20.0)[:, None], c, np.nan)
    id_plan = inverse_dynamics(mo, r.foot_force_n, cop, np.zeros((mo.n_frames, 2)), cutoff_hz=KINEMATICS_CUTOFF_HZ)
    id_meas = measured_inverse_dynamics(mo, p.measured)
    return torque_validation(id_plan.joint_torque_nm, id_meas.joint_torque_nm, p.measured.mass_kg, mo.joint_rot_aa_rad,
                             mo.joint_rot_aa_rad)["torque_vs_id_rmse_nm_per_kg"]


def print_plan(walks: dict) -> None:
    print("== 2. the dynamics pass's force plan vs force plates (no simulation); τ = sagittal torque RMSE of ID"
          " under the plan's forces at the plan's centres of pressure vs ID under the plates, N·m/kg ==")
    for k, p in walks.items():
        mo = p.motion
        hum = build_humanoid(skeleton_from_motion(mo), mo.mass_kg, mo.gender, SimConfig().humanoid, 1 / 480)
        cells = []
        for use in (False, True):
            t0 = time.perf_counter()
            r = dynamics_pass(mo, hum, DynamicsConfig(use_measured=use), p.measured.grf_n)
            dt = time.perf_counter() - t0
            c = per_foot(r.foot_force_n, p.measured, mo.fps_hz)
            cells.append(f"{'plates as targets' if use else 'blind'}: λ {c['lam'][0]:.2f}/{c['lam'][1]:.2f} N/kg, "
                         f"τ {plan_torque_error(p, hum, r):.2f}, "
                         f"pelvis moved ≤ {100 * r.metrics['dyn_root_correction_max_m']:.1f} cm, "
                         f"Newton res {r.metrics['dyn_newton_residual_rms_bw']:.3f} BW, Euler res "
                         f"{r.metrics['dyn_euler_residual_rms_nm']:.0f} N·m RMS ({dt:.2f} s)")
        print(f"  {k:<16}" + " | ".join(cells))


def print_demo(names: list[str], passes: int = 3) -> None:
    from sim_quality_probe import evaluate, load_motions

    print(f"== 3. demo corpus (S01, S02): excluded by the unchanged quality rules, per motion type, passes 0–{passes - 1}"
          " (the build's --passes variation) ==")
    motions = load_motions()
    for v in names:
        by_kind: dict[str, list] = defaultdict(list)
        per_pass = [0] * passes
        t0 = time.perf_counter()
        for p in motions:
            for i in range(passes):
                row = evaluate(p, VARIANTS[v][1], pass_index=i)
                by_kind[p.motion.provenance.name.rsplit("_t", 1)[0]].append(row)
                per_pass[i] += bool(row["exclude"])
        total = sum(len(r) for r in by_kind.values())
        n_ex = sum(1 for rows in by_kind.values() for r in rows if r["exclude"])
        split = ", ".join(f"pass {i}: {k}/{total // passes}" for i, k in enumerate(per_pass))
        print(f"  {v:<14} excluded {n_ex}/{total} ({split}; {time.perf_counter() - t0:.0f} s)")
        for kind, rows in sorted(by_kind.items()):
            ex = [r for r in rows if r["exclude"]]
            rules = sorted({x for r in ex for x in r["exclude"]})
            peaks = ", ".join(f"{r['grf_peak_bw']:.1f}" for r in rows)
            print(f"    {kind:<10} {len(ex)}/{len(rows)} excluded  peak GRF {peaks} BW  {rules}")


def print_speed(repeats: int = 3) -> None:
    """Section 4 on the 3 s demo walk: per engine variant the share of the imitation's wall time spent
    inside ``mj_step`` (= loop rate / raw ``mj_step`` rate on the same states; median of ``repeats``
    runs, the range beside it), with the dynamics pass staged as the build stages it (computed once
    per motion in the per-file task); then the dynamics pass's own time against the imitation's, and
    the ratio if it were counted in the loop. The 1-minute load average is printed: on a shared
    machine every figure here moves with it."""
    import os

    from sim_bench import timed_run

    from pipeline.simulate import motion_dynamics
    from pipeline.simulate.synthetic import demo_motion

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"== 4. speed (one core; 1-min load average {load:.1f} on {os.cpu_count()} CPUs; median of {repeats} runs) ==")
    mo = demo_motion("walk", 1.2, duration_s=3.0)
    secs = mo.n_frames / mo.fps_hz
    loop = {}
    for v in ("before", "after"):
        cfg = VARIANTS[v][1]
        dyn = motion_dynamics(mo, cfg)  # None without a dynamics pass
        runs = sorted((t_step / dt, dt, t_step) for dt, t_step, _ in (timed_run(mo, cfg, dyn) for _ in range(repeats)))
        ratio, dt, t_step = runs[len(runs) // 2]
        loop[v] = (dt, t_step)
        print(f"  {v:<10} loop / raw mj_step: {ratio:.2f} (goal ≥ 0.5; runs {runs[0][0]:.2f}–{runs[-1][0]:.2f}); "
              f"{secs / dt:.1f} s of motion per second" + ("; dynamics pass staged" if dyn is not None else ""))
    hum = build_humanoid(skeleton_from_motion(mo), mo.mass_kg, mo.gender, SimConfig().humanoid, 1 / 480)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dynamics_pass(mo, hum)
        times.append(time.perf_counter() - t0)
    t_dyn = float(np.median(times))
    dt, t_step = loop["after"]
    print(f"  dynamics pass alone: {t_dyn:.2f} s for {mo.n_frames} frames = {t_dyn / dt:.2f} × the simulation time "
          f"(once per motion, shared by its passes); loop / raw mj_step with it counted: {t_step / (dt + t_dyn):.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"of {list(VARIANTS)}")
    ap.add_argument("--no-demo", action="store_true", help="skip the demo-corpus section (the slowest)")
    ap.add_argument("--passes", type=int, default=3,
                    help="simulated passes per lab walk (the closed loop is chaotic: one pass varies by ±0.4 N/kg)")
    ap.add_argument("--demo-passes", type=int, default=3, help="passes per demo motion (section 3)")
    ap.add_argument("--no-held-out", action="store_true",
                    help="only the four C3D walks in section 1 (not the held-out OpenSim/AddBiomechanics trials)")
    ap.add_argument("--speed-only", action="store_true", help="only section 4 (speed; no lab walks needed)")
    args = ap.parse_args(argv)
    if args.speed_only:
        print_speed()
        return 0
    if not C3D_ROOT.is_dir():
        print(f"the shared lab walks are missing: {C3D_ROOT}", file=sys.stderr)
        return 2
    walks = load_walks(held_out=not args.no_held_out)
    means = print_walks(walks, args.variants, args.passes)
    if "before" in means:
        for v, m in means.items():
            print(f"  mean λ {v}: {m:.2f} N/kg ({m / means['before']:.2f} × before)")
    print_plan(walks)
    if not args.no_demo:
        print_demo(args.variants, args.demo_passes)
    print_speed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
