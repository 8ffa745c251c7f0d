"""The ``dynaset`` command-line tool.

    dynaset demo [--out DIR]                      generate a synthetic AMASS-format corpus and build it
    dynaset generate --out DIR [--hours H]         only generate a synthetic corpus
    dynaset build --source amass=DIR --out DIR     build subset stores from source folders
    dynaset validate STORE [STORE ...]             check stores against their schemas
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _source_arg(text: str):
    from pipeline.sources.base import SourceSpec

    kind, sep, root = text.partition("=")
    if not sep or not kind or not root:
        raise argparse.ArgumentTypeError(f"expected KIND=DIR (e.g. amass=/data/AMASS), got {text!r}")
    return SourceSpec(kind=kind.strip().lower(), root=Path(root).expanduser().resolve())


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=float, default=30.0, help="canonical frame rate, Hz (default 30)")
    p.add_argument("--window-length", type=int, default=None, help="polynomial window length, frames")
    p.add_argument("--window-stride", type=int, default=None, help="polynomial window stride, frames")
    p.add_argument("--smpl-model-dir", default=None,
                   help="folder with SMPL/SMPL-H/SMPL-X model npz files (needs the [smpl] extra)")
    p.add_argument("--no-simulate", action="store_true",
                   help="skip the physics imitation stage (ground_reaction/torque stay empty)")
    p.add_argument("--passes", type=int, default=1, help="imitation passes per motion (default 1)")
    p.add_argument("--sim-backend", choices=["cpu", "gpu", "isaacgym"], default="cpu",
                   help="simulator backend: cpu (MuJoCo), gpu (MuJoCo Warp/MJX on GPU workers)")
    p.add_argument("--thresholds", default=None, help="quality thresholds file (TOML/JSON), see docs/quality.md")
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (default min(cpus, 4))")
    p.add_argument("--scheduler-address", default=None, help="use an existing Dask scheduler instead")


def _build_config(args: argparse.Namespace):
    from dataclasses import replace

    from pipeline.process import BuildConfig

    cfg = BuildConfig()
    canonical = replace(cfg.canonical, fps_hz=args.fps, smpl_model_dir=args.smpl_model_dir)
    windows = cfg.windows
    if args.window_length is not None:
        windows = replace(windows, length=args.window_length)
    if args.window_stride is not None:
        windows = replace(windows, stride=args.window_stride)
    sim = None if args.no_simulate else replace(cfg.simulate, passes=args.passes)
    return replace(cfg, canonical=canonical, windows=windows, simulate=sim, sim_backend=args.sim_backend)


def _thresholds(args: argparse.Namespace):
    from pipeline.quality import Thresholds

    return Thresholds.load(args.thresholds) if args.thresholds else None


def run_build(sources, out: Path, cfg, workers=None, scheduler_address=None, thresholds=None) -> dict:
    """Run the Prefect ``build`` flow on a Dask task runner with one Prefect API for all processes."""
    from flows.runtime import prefect_environment

    prefect_environment(out / ".prefect")
    from flows.build import build
    from flows.runtime import dask_task_runner, default_workers, prefect_api

    with prefect_api():
        runner = dask_task_runner(workers=workers, address=scheduler_address)
        n = workers or default_workers()
        return build.with_options(task_runner=runner)(
            sources=list(sources), out_dir=str(out), cfg=cfg, workers=n, thresholds=thresholds
        )


def _print_summary(summary: dict) -> None:
    print(f"files: {summary['files']} ({summary['files_built']} built, {summary['files_quarantined']} quarantined)")
    print(f"frames: {summary['frames_in']} source -> {summary['frames_out']} canonical, "
          f"{summary.get('frames_simulated', 0)} simulated; wall {summary['wall_seconds']['total']:.1f} s")
    if summary.get("sequences_excluded"):
        print(f"excluded by quality rules: {summary['sequences_excluded']} sequences (exclusions.json)")
    print(f"{'subset':<16}{'sequences':>10}{'frames':>10}{'hours':>8}  store")
    for name, s in summary["subsets"].items():
        print(f"{name:<16}{s['sequences']:>10}{s['frames']:>10}{s['hours']:>8.3f}  {s['store']}")


def cmd_build(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser().resolve()
    summary = run_build(args.source, out, _build_config(args), args.workers, args.scheduler_address,
                        _thresholds(args))
    _print_summary(summary)
    if summary["files_quarantined"]:
        print(f"quarantine list: {out / 'quarantine.json'}")
    if (out / "report.html").exists():
        print(f"data-quality report: {out / 'report.html'}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from pipeline.demo import generate_corpus

    out = Path(args.out).expanduser().resolve()
    files = generate_corpus(out, n_subjects=args.subjects, hours=args.hours, seed=args.seed)
    print(f"wrote {len(files)} AMASS-format files under {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import generate_corpus
    from pipeline.sources.base import SourceSpec

    out = Path(args.out).expanduser().resolve()
    corpus = out / "corpus" / "amass"
    files = generate_corpus(corpus, n_subjects=args.subjects, hours=args.hours, seed=args.seed)
    print(f"[demo] generated {len(files)} AMASS-format npz files (60/100/120/250 Hz) under {corpus}")
    summary = run_build([SourceSpec("amass", corpus)], out / "stores", _build_config(args),
                        args.workers, args.scheduler_address, _thresholds(args))
    _print_summary(summary)
    if (out / "stores" / "report.html").exists():
        print(f"data-quality report: {out / 'stores' / 'report.html'}")
    print("open a store with plain xarray:  python -c \"import xarray as xr; "
          f"print(xr.open_zarr('{summary['subsets']['motion']['store']}'))\"")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.store import validate_store

    status = 0
    for path in args.stores:
        try:
            problems = validate_store(Path(path))
        except Exception as exc:  # unreadable store: report it like any other problem
            problems = [f"cannot open store: {exc}"]
        if problems:
            status = 1
            print(f"INVALID {path}")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"ok      {path}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynaset", description="Build human-dynamics datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate a synthetic AMASS-format corpus and build it")
    p.add_argument("--out", default="demo-out", help="output folder (default ./demo-out)")
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--hours", type=float, default=None, help="corpus size in hours (default: a small corpus)")
    p.add_argument("--seed", type=int, default=0)
    _add_build_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("generate", help="only generate a synthetic AMASS-format corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--hours", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("build", help="build the subset stores from source folders")
    p.add_argument("--source", action="append", type=_source_arg, required=True,
                   metavar="KIND=DIR", help="a source folder, e.g. amass=/data/AMASS (repeatable)")
    p.add_argument("--out", required=True, help="output folder for the stores")
    _add_build_options(p)
    p.set_defaults(func=cmd_build)

    from pipeline.quality import add_report_parser

    add_report_parser(sub)

    p = sub.add_parser("validate", help="check stores against their schemas")
    p.add_argument("stores", nargs="+")
    p.set_defaults(func=cmd_validate)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"dynaset: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
