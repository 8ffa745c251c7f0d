"""Data-quality probe of simulated passes: which demo motions would the build EXCLUDE?

Usage::

    python benchmarks/sim_quality_probe.py                      # the default engine ("base")
    python benchmarks/sim_quality_probe.py base legacy60 --only walk run_2p5
    python benchmarks/sim_quality_probe.py --list

Generates the demo corpus (``pipeline.demo.generate_corpus(tmp, n_subjects=3, seed=1)``), keeps
subjects S01 and S02 (16 motions: jump, run 2.5/3.5 m/s, squat, stand, walk 0.8/1.2/1.6 m/s),
processes them exactly as the build does (``pipeline.process.process_motion``), simulates each with
every requested ``SimConfig`` variant, turns the result into the store payload
(``pipeline.process.simulated_payload``) and runs the build's quality metrics and rules
(``pipeline.quality.metrics.metrics_row`` + ``pipeline.quality.evaluate_flags``, default
thresholds). Per motion it prints the peak vertical GRF (body weights), the largest joint angular
speed (rad/s; rule ``joint_flip`` > 50), the 95th percentile of the foot-skating speed during
force contact (m/s; rule ``severe_foot_skating`` > 0.5), the median MPJPE (mm), the fraction of
frames whose *uncapped* residual force demand is ≤ 5 % BW, the number of resets and the rules that
exclude the pass. Single-threaded and deterministic; ≈ 20 s per variant on one core.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.demo import generate_corpus  # noqa: E402
from pipeline.process import BuildConfig, process_motion, simulated_payload  # noqa: E402
from pipeline.quality import evaluate_flags  # noqa: E402
from pipeline.quality.metrics import inputs_from_payload, metrics_row  # noqa: E402
from pipeline.simulate import HumanoidParams, SimConfig, simulate  # noqa: E402
from pipeline.simulate.controller import ContactQP  # noqa: E402
from pipeline.sources.amass import read_amass  # noqa: E402

VARIANTS: dict[str, tuple[str, SimConfig]] = {
    "base": ("the default SimConfig()", SimConfig()),
    "legacy60": (
        "the previous defaults: 60 Hz control, toe contacts never planned, no stance gate, no "
        "armature, no toe spring, contact solref 0.01 s",
        SimConfig(control_hz=60.0, contact=ContactQP(exclude_bodies=("left_foot", "right_foot"),
                                                      stance_gate_height_m=float("inf")),
                  humanoid=HumanoidParams(armature=0.0, solref=(0.01, 1.0)), stiff_joints=()),
    ),
    "no_gate": ("default without the reference stance gate",
                SimConfig(contact=ContactQP(stance_gate_height_m=float("inf")))),
    "no_armature": ("default without joint armature", SimConfig(humanoid=HumanoidParams(armature=0.0))),
    "no_toe_spring": ("default without the physics-rate toe spring", SimConfig(stiff_joints=())),
    "ctrl60": ("default at 60 Hz control", SimConfig(control_hz=60.0)),
    "stiff_pad": ("default with the previous stiffer contacts (solref 0.01 s)",
                  SimConfig(humanoid=HumanoidParams(solref=(0.01, 1.0)))),
}


def load_motions(n_subjects: int = 3, subjects: tuple[str, ...] = ("S01", "S02"), seed: int = 1):
    """Processed demo motions (``ProcessedSequence``) of the selected subjects, sorted by path."""
    cfg = BuildConfig()
    with tempfile.TemporaryDirectory(prefix="simq-") as tmp:
        root = Path(tmp)
        generate_corpus(root, n_subjects=n_subjects, seed=seed)
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*_poses.npz")
                       if any(s in p.parts for s in subjects))
        return [process_motion(read_amass(root / n, root), cfg) for n in names]


def evaluate(processed, sim_cfg: SimConfig, pass_index: int = 0) -> dict:
    """Simulate one processed motion (pass ``pass_index``) and evaluate the build's quality rules on it."""
    m = processed.motion
    if sim_cfg.passes <= pass_index:
        sim_cfg = replace(sim_cfg, passes=pass_index + 1)
    r = simulate([m], sim_cfg, pass_index=pass_index)[0]
    fa, wa, sv = simulated_payload(m, r, processed.split, BuildConfig().windows)
    arrays, meta = inputs_from_payload(fa, wa, sv, m.fps_hz, {"residual_wrench": r.residual_wrench})
    row = metrics_row(arrays, meta)
    return {
        "name": f"{m.provenance.subject}/{m.provenance.name}",
        "grf_peak_bw": row["grf_peak_bw"], "ang_vel_max": row["joint_ang_vel_max_rad_s"],
        "skate_p95": row.get("foot_skate_p95_m_s", float("nan")), "mpjpe_mm": r.metrics["mpjpe_median_mm"],
        "demand_le_5pct": r.metrics["residual_force_demand_le_5pct_bw_frac"], "resets": r.metrics["reset_count"],
        "exclude": [f.name for f in evaluate_flags(row) if f.level == "exclude"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*", default=["base"], help=f"SimConfig variants ({', '.join(VARIANTS)})")
    ap.add_argument("--only", nargs="*", default=None, help="keep motions whose name contains one of these")
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    args = ap.parse_args(argv)
    if args.list:
        for k, (doc, _) in VARIANTS.items():
            print(f"{k:<14} {doc}")
        return 0
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; see --list")
    motions = load_motions()
    if args.only:
        motions = [p for p in motions if any(o in p.motion.provenance.name for o in args.only)]
    for v in args.variants:
        t0 = time.perf_counter()
        rows = [evaluate(p, VARIANTS[v][1]) for p in motions]
        n_ex = sum(1 for r in rows if r["exclude"])
        print(f"== {v}  ({time.perf_counter() - t0:.1f} s)  excluded {n_ex}/{len(rows)}")
        for r in rows:
            print(f"  {r['name']:<18} grf {r['grf_peak_bw']:6.2f} angv {r['ang_vel_max']:5.1f} skate "
                  f"{r['skate_p95']:4.2f} mpjpe {r['mpjpe_mm']:5.1f} res5 {r['demand_le_5pct']:4.2f} "
                  f"resets {r['resets']} {r['exclude']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
