"""The ``dynaset`` command-line tool.

    dynaset demo [--out DIR]                      generate a synthetic AMASS-format corpus and build it
    dynaset generate --out DIR [--hours H]         only generate a synthetic corpus
    dynaset build --source amass=DIR --out DIR     build subset stores from source folders
    dynaset validate STORE [STORE ...]             check stores against their schemas
    dynaset ingest ROOT [--compact]                incremental run over a root's recorded sources
    dynaset compact ROOT                           rewrite the stores afresh (no tombstones, id order)
    dynaset worker SCHEDULER [--gpu]               a Dask worker for builds on an existing cluster
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
    p.add_argument("--no-dynamics-pass", action="store_true",
                   help="imitate the canonical motion as it is, without first making it dynamically "
                        "consistent (the previous engine; docs/simulation.md)")
    p.add_argument("--seated-start", action="store_true",
                   help="start each imitation pass seated on the soft floor contacts, for sequences that begin in "
                        "quiet stance (removes the first interval's spring-back; off by default: no better on the "
                        "real lab walks; docs/simulation.md)")
    from pipeline.simulate.backends import BACKENDS

    p.add_argument("--sim-backend", choices=list(BACKENDS), default="cpu",
                   help="simulator backend: cpu (MuJoCo), gpu or warp (MuJoCo Warp, batched, on CUDA GPU workers), "
                        "warp-cpu (the same code on Warp's CPU device: for checks, slow)")
    p.add_argument("--gpu-batch-worlds", type=int, default=None,
                   help="with --sim-backend gpu/warp-cpu: (motion, pass) sequences per GPU batch, accumulated "
                        "across file batches (default 4096: fills an H100/H200; docs/simulation.md)")
    p.add_argument("--gpu-batch-memory-gib", type=float, default=None,
                   help="with --sim-backend gpu/warp-cpu: cap on a GPU batch's estimated device memory, GiB; "
                        "batches of long sequences get fewer worlds (default 32)")
    p.add_argument("--thresholds", default=None, help="quality thresholds file (TOML/JSON), see docs/quality.md")
    p.add_argument("--workers", type=int, default=None,
                   help="local Dask worker processes (default min(cpus, 4)); with --scheduler-address, the "
                        "cluster's worker processes in all (sizes the file batches)")
    p.add_argument("--scheduler-address", default=None,
                   help="use an existing Dask scheduler instead, with `dynaset worker` processes (docs/scaling.md)")
    p.add_argument("--shared-root", action="store_true", help=SHARED_ROOT_HELP)


SHARED_ROOT_HELP = ("with a --scheduler-address on another machine: the dataset root (or, for an s3:// root, "
                    "its working mirror DYNASET_WORK_DIR) and the source folders are on a filesystem "
                    "mounted at the same path on every worker (docs/scaling.md)")


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
    if sim is not None and args.no_dynamics_pass:
        sim = replace(sim, dynamics=None)
    if sim is not None and getattr(args, "seated_start", False):
        sim = replace(sim, initial_contact_seat=True)
    return replace(cfg, canonical=canonical, windows=windows, simulate=sim, sim_backend=args.sim_backend)


def _sim_batching(args: argparse.Namespace):
    """``GpuBatching`` from --gpu-batch-worlds/--gpu-batch-memory-gib (``None``: the defaults)."""
    from dataclasses import replace

    from pipeline.simulate.batching import GpuBatching

    worlds, gib = getattr(args, "gpu_batch_worlds", None), getattr(args, "gpu_batch_memory_gib", None)
    if worlds is None and gib is None:
        return None
    b = GpuBatching()
    return replace(b, worlds=b.worlds if worlds is None else worlds, memory_gib=b.memory_gib if gib is None else gib)


def _thresholds(args: argparse.Namespace):
    from pipeline.quality import Thresholds

    return Thresholds.load(args.thresholds) if args.thresholds else None


def run_build(sources, out, cfg, workers=None, scheduler_address=None, thresholds=None, force=False,
              shared_root=False, compact=False, sim_batching=None) -> dict:
    """Run the Prefect ``build`` flow on a Dask task runner with one Prefect API for all processes.

    ``out`` is a local dataset root or an ``s3://`` URL (built in a local mirror, then pushed:
    ``pipeline.store.remote_root``). With a ``scheduler_address`` that is not a loopback address
    the workers run on other machines: ``shared_root`` must assert that the root (the mirror of
    an ``s3://`` root) and the sources are on a shared filesystem, else ``ValueError``.
    ``sim_batching``: ``GpuBatching`` of a batched simulator backend (``None``: the defaults).
    Without a ``scheduler_address``, a run whose planned work is small runs its tasks in this process
    instead of starting a local Dask cluster (``pipeline.dataset.placement``; ``DYNASET_PLACEMENT``).
    """
    from pipeline.store.remote_root import is_remote

    if scheduler_address:
        check_worker_paths(out, scheduler_address, shared_root)
    if is_remote(out):
        return _run_remote_build(sources, str(out), cfg, workers, scheduler_address, thresholds, force, shared_root,
                                 compact, sim_batching)
    out = Path(out)
    from flows.runtime import prefect_environment

    prefect_environment()
    from flows.build import build
    from pipeline.dataset.placement import mode_from_env
    from flows.runtime import (api_url_is_loopback, dask_task_runner, default_workers, prefect_api,
                               scheduler_is_loopback, warm_workers_enabled)

    with prefect_api(warm_workers=not scheduler_address and warm_workers_enabled()) as api_url:
        shared = ()
        if scheduler_address:
            shared = (str(out), *(str(s.root) for s in sources))
            if api_url_is_loopback(api_url) and not scheduler_is_loopback(scheduler_address):
                print(f"[prefect] warning: the flow's Prefect API {api_url} is a loopback address, which Dask "
                      f"workers on other machines than this one cannot reach; run `dynaset server --root ROOT "
                      "--host 0.0.0.0` and export PREFECT_API_URL=http://THIS-HOST:4200/api here and on the "
                      "workers (docs/scaling.md)", file=sys.stderr, flush=True)
        runner = dask_task_runner(workers=workers, address=scheduler_address, api_url=api_url, shared_paths=shared)
        n = workers or default_workers()
        return build.with_options(task_runner=runner)(
            sources=list(sources), out_dir=str(out), cfg=cfg, workers=n, thresholds=thresholds, force=force,
            compact=compact, sim_batching=sim_batching, local_cluster=not scheduler_address,
            placement=mode_from_env(),
        )


def check_worker_paths(out, scheduler_address: str, shared_root: bool) -> None:
    """Refuse a dataset root the Dask workers may not see: a local path (an ``s3://`` root's local
    working mirror) with a scheduler that is not on this machine, unless ``shared_root`` says the
    path is on a shared filesystem. Loopback schedulers (their workers run here) are fine."""
    from flows.runtime import scheduler_is_loopback
    from pipeline.store.remote_root import is_remote, mirror_dir

    if shared_root or scheduler_is_loopback(scheduler_address):
        return
    if is_remote(out):
        what = (f"the working mirror {mirror_dir(str(out))} of {out} (set DYNASET_WORK_DIR to a folder on a "
                "shared filesystem)")
    else:
        what = f"the dataset root {out}"
    raise ValueError(
        f"Dask scheduler {scheduler_address} is not a loopback address, so its workers may run on other "
        f"machines, but {what} is a local path they may not see (they write staging and cache files there "
        "and read the source folders); put it and the sources on a filesystem mounted at the same path on "
        "every worker and pass --shared-root (docs/scaling.md)")


def _run_remote_build(sources, url, cfg, workers, scheduler_address, thresholds, force, shared_root=False,
                      compact=False, sim_batching=None) -> dict:
    from pipeline.store.location import open_location
    from pipeline.store.remote_root import mirror_dir, pull_state, push_state, remote_has_stores

    loc = open_location(url)
    mirror = mirror_dir(url)
    with loc.lock("build"):
        pulled = pull_state(loc, mirror)
        print(f"[remote] {url}: working mirror {mirror} (pulled {', '.join(pulled) or 'nothing'})")
        summary = run_build(sources, mirror, cfg, workers, scheduler_address, thresholds, force, shared_root, compact,
                            sim_batching)
        stores = not summary.get("up_to_date") or not remote_has_stores(loc)
        pushed = push_state(loc, mirror, stores=stores)
        print(f"[remote] pushed {', '.join(pushed)} to {url}")
    summary["subsets"] = {k: {**v, "store": f"{url}/{k}.zarr"} for k, v in summary["subsets"].items()}
    return summary


def _root_arg(text: str):
    """A dataset root: an ``s3://`` URL as is, else an absolute local path."""
    return text if text.startswith("s3://") else Path(text).expanduser().resolve()


def _print_summary(summary: dict) -> None:
    print(f"files: {summary['files']} ({summary['files_built']} built, {summary['files_quarantined']} quarantined)")
    print(f"frames: {summary['frames_in']} source -> {summary['frames_out']} canonical, "
          f"{summary.get('frames_simulated', 0)} simulated; wall {summary['wall_seconds']['total']:.1f} s")
    if summary.get("sequences_excluded"):
        print(f"excluded by quality rules: {summary['sequences_excluded']} sequences (exclusions.json)")
    print(f"{'subset':<16}{'sequences':>10}{'frames':>10}{'hours':>8}  store")
    for name, s in summary["subsets"].items():
        print(f"{name:<16}{s['sequences']:>10}{s['frames']:>10}{s['hours']:>8.3f}  {s['store']}")


EXIT_EMPTY = 3
"""Exit status of a build that finished (stores, quarantine.json, exclusions.json and the report
written) but produced no usable data: no motion sequence, or simulation asked for and no
simulated pass kept. 0 = built; 1 = validate/verify found problems; 2 = bad input or usage;
4 = the Prefect API could not start (docs/stages.md)."""
EXIT_PREFECT = 4


def build_outcome(summary: dict, simulate: bool) -> tuple[str, int]:
    """One summary line for a finished build and its exit status (0 or ``EXIT_EMPTY``)."""
    files, built, quar = summary["files"], summary["files_built"], summary["files_quarantined"]
    subsets = summary.get("subsets", {})
    n_motion = subsets.get("motion", {}).get("sequences", 0)
    n_torque = subsets.get("torque", {}).get("sequences", 0)
    excluded = summary.get("sequences_excluded", 0)
    sim_failed = summary.get("simulations_failed", 0)
    if summary.get("up_to_date"):
        return f"up to date: {files} files unchanged, stores left untouched", 0
    if files == 0:
        return "EMPTY: no source files found; empty stores written", EXIT_EMPTY
    if built == 0:
        return f"EMPTY: all {files} files quarantined (quarantine.json); empty stores written", EXIT_EMPTY
    if n_motion == 0:
        return (f"EMPTY: {built} of {files} files read, but every sequence was excluded by quality rules "
                f"({excluded} in exclusions.json)", EXIT_EMPTY)
    if simulate and n_torque == 0:
        why = f"{sim_failed} simulations failed (quarantine.json)" if sim_failed else \
            "every simulated pass was excluded by quality rules (exclusions.json)"
        return f"INCOMPLETE: {n_motion} motion sequences built, but no simulated pass kept: {why}", EXIT_EMPTY
    extra = [f"{quar} files quarantined"] if quar else []
    extra += [f"{excluded} sequences excluded"] if excluded else []
    extra += [f"{sim_failed} simulations failed"] if sim_failed else []
    return f"OK: {built} of {files} files built, {n_motion} motion sequences" + (
        f" ({', '.join(extra)})" if extra else ""), 0


def _finish(summary: dict, out, simulate: bool) -> int:
    _print_summary(summary)
    if summary["files_quarantined"] or summary.get("simulations_failed"):
        print(f"quarantine list: {out}/quarantine.json")
    print(f"data-quality report: {out}/report.html")
    line, status = build_outcome(summary, simulate)
    print(line)
    return status


def _check_sources(sources) -> None:
    """Refuse an unknown source kind or a missing source folder before any server or cluster starts."""
    from pipeline.sources.registry import known_kinds

    kinds = known_kinds()
    for spec in sources:
        if spec.kind not in kinds:
            raise ValueError(f"unknown source kind {spec.kind!r}; known: {', '.join(kinds)}")
        if not Path(spec.root).is_dir():
            raise FileNotFoundError(f"{spec.kind} source folder {spec.root} does not exist or is not a directory")


def cmd_build(args: argparse.Namespace) -> int:
    out = _root_arg(args.out)
    _check_sources(args.source)
    cfg = _build_config(args)
    summary = run_build(args.source, out, cfg, args.workers, args.scheduler_address,
                        _thresholds(args), force=args.force, shared_root=args.shared_root,
                        sim_batching=_sim_batching(args))
    return _finish(summary, out, cfg.simulate is not None)


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
    cfg = _build_config(args)
    summary = run_build([SourceSpec("amass", corpus)], out / "stores", cfg,
                        args.workers, args.scheduler_address, _thresholds(args), shared_root=args.shared_root,
                        sim_batching=_sim_batching(args))
    status = _finish(summary, out / "stores", cfg.simulate is not None)
    print("open a store with plain xarray:  python -c \"import xarray as xr; "
          f"print(xr.open_zarr('{summary['subsets']['motion']['store']}'))\"")
    return status


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


def _release_target(text: str, root: str | None) -> tuple[str, str]:
    """(dataset root, version) from ``ROOT/releases/X.Y.Z`` or ``--root ROOT X.Y.Z``."""
    text = text.rstrip("/")
    if root is None:
        head, sep, version = text.rpartition("/releases/")
        if not sep:
            raise ValueError(f"{text!r}: give a release folder (ROOT/releases/X.Y.Z) or --root ROOT VERSION")
        return head, version
    return root, text


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.dataset import DatasetConfig
    from pipeline.store.location import open_location

    root = _root_arg(args.root)
    loc = open_location(root)
    if not loc.exists("dataset.json"):
        raise FileNotFoundError(f"{root}/dataset.json: no dataset configuration; run `dynaset build "
                                f"--source KIND=DIR --out {root}` once to create the dataset root")
    config = DatasetConfig.from_json(loc.read_bytes("dataset.json").decode(), f"{root}/dataset.json")
    _check_sources(config.sources)
    summary = run_build(config.sources, root, config.build, args.workers, args.scheduler_address,
                        config.thresholds, force=args.force, shared_root=args.shared_root,
                        compact=getattr(args, "compact", False))
    _print_summary(summary)
    line, status = build_outcome(summary, config.build.simulate is not None)
    print(line)
    return status


def cmd_release(args: argparse.Namespace) -> int:
    from pipeline.release import NotCompactError, publish
    from pipeline.store.location import open_location

    loc = open_location(args.root)
    try:
        manifest = publish(loc, args.version, notes=args.notes or "")
    except NotCompactError as exc:  # appended/tombstoned stores: compact them (a fresh build's bytes), then publish
        print(f"[release] {exc.problem}; compacting first (`dynaset compact {args.root}`)", file=sys.stderr)
        rc = cmd_ingest(argparse.Namespace(root=str(args.root), force=False, workers=None, scheduler_address=None,
                                           shared_root=False, compact=True))
        if rc != 0:
            return rc
        manifest = publish(loc, args.version, notes=args.notes or "")
    n = len(manifest["objects"])
    print(f"released {args.version} -> {loc.url}/releases/{args.version} ({n} objects, "
          f"{manifest['_linked_objects']} hard-linked, parent {manifest['parent'] or 'none'})")
    for s, st in manifest["stores"].items():
        print(f"  {s:<16} schema {st['schema_version']:<7} {st['sequences']:>6} sequences {st['hours']:>8.3f} h")
    return 0


def cmd_releases(args: argparse.Namespace) -> int:
    from pipeline.release import list_releases, read_manifest
    from pipeline.store.location import open_location

    loc = open_location(args.root)
    versions = list_releases(loc)
    if not versions:
        print(f"no releases under {loc.url}")
    for v in versions:
        m = read_manifest(loc, v)
        st = m["stores"]
        print(f"{v:<10} {m['created']}  parent {m['parent'] or '-':<8} "
              + "  ".join(f"{s} {st[s]['sequences']}/{st[s]['hours']:.2f}h" for s in st))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.release import verify
    from pipeline.store.location import open_location

    status = 0
    for target in args.releases:
        root, version = _release_target(target, args.root)
        problems = verify(open_location(root), version)
        if problems:
            status = 1
            print(f"FAILED  {root}/releases/{version}")
            for p in problems[:50]:
                print(f"  - {p}")
        else:
            print(f"ok      {root}/releases/{version}")
    return status


def cmd_diff(args: argparse.Namespace) -> int:
    from pipeline.release import diff_releases, format_diff, read_manifest, read_sequences
    from pipeline.store.location import open_location

    loc = open_location(args.root)
    d = diff_releases(read_manifest(loc, args.a), read_manifest(loc, args.b),
                      read_sequences(loc, args.a), read_sequences(loc, args.b))
    if args.json:
        import json

        print(json.dumps(d, indent=1))
    else:
        print(format_diff(d))
    return 0


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
                   metavar="KIND=DIR", help="a source folder, e.g. amass=/data/AMASS (repeatable); kinds: amass, c3d, "
                   "opensim, addbiomechanics and any other registered source package")
    p.add_argument("--out", required=True,
                   help="dataset root: stores, ingestion ledger, processing cache, releases (see storage_layout.md)")
    p.add_argument("--force", action="store_true", help="reprocess every file, ignoring the processing cache")
    _add_build_options(p)
    p.set_defaults(func=cmd_build)

    from pipeline.quality import add_report_parser

    add_report_parser(sub)

    from pipeline.store.migrations import add_migrate_parser

    add_migrate_parser(sub)
    from flows.schedule import add_server_parsers

    add_server_parsers(sub)  # dynaset server / dynaset schedule (docs/scheduling.md)
    from flows.worker import add_worker_parser

    add_worker_parser(sub)  # dynaset worker (docs/scaling.md)

    p = sub.add_parser("validate", help="check stores against their schemas")
    p.add_argument("stores", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("ingest", help="incremental run over a dataset root's recorded sources (dataset.json)")
    p.add_argument("root", help="dataset root created by `dynaset build --out ROOT`")
    p.add_argument("--force", action="store_true", help="reprocess every file, ignoring the cache")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--scheduler-address", default=None)
    p.add_argument("--shared-root", action="store_true", help=SHARED_ROOT_HELP)
    p.add_argument("--compact", action="store_true",
                   help="rewrite every store afresh (no tombstones, sequences in id order), as `dynaset compact`")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("compact", help="rewrite a dataset root's stores afresh: drop tombstoned sequences, id order "
                                       "(byte-identical to a fresh build of the same inputs; storage_layout.md)")
    p.add_argument("root", help="dataset root created by `dynaset build --out ROOT`")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--scheduler-address", default=None)
    p.add_argument("--shared-root", action="store_true", help=SHARED_ROOT_HELP)
    p.set_defaults(func=cmd_ingest, compact=True, force=False)

    p = sub.add_parser("release", help="publish the current stores as an immutable release")
    p.add_argument("--root", required=True, help="dataset root (a folder or s3://bucket/prefix)")
    p.add_argument("--version", required=True, help="MAJOR.MINOR.PATCH, newer than the latest release")
    p.add_argument("--notes", default=None, help="release notes for the dataset card")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("releases", help="list the releases of a dataset root")
    p.add_argument("--root", required=True)
    p.set_defaults(func=cmd_releases)

    p = sub.add_parser("verify", help="re-check every checksum and schema of releases")
    p.add_argument("releases", nargs="+", help="ROOT/releases/X.Y.Z, or X.Y.Z with --root")
    p.add_argument("--root", default=None)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("diff", help="what changed between two releases")
    p.add_argument("--root", required=True)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)

    args = parser.parse_args(argv)
    from pipeline.release import ReleaseError
    from pipeline.store.location import LockError

    from flows.runtime import PrefectStartError

    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, LockError, ReleaseError) as exc:
        print(f"dynaset: error: {exc}", file=sys.stderr)
        return 2
    except PrefectStartError as exc:
        print(f"dynaset: error: {exc}", file=sys.stderr)
        return EXIT_PREFECT


def run() -> None:
    """Console entry point: ``main`` then a prompt exit.

    Everything a command writes is closed by the time ``main`` returns (stores, ledger, reports);
    what is left is interpreter finalization of the Prefect/Dask/MuJoCo module graph, which took
    1.5 s after a build on a 2-core machine. Streams and logging are flushed, then the process
    exits without it.
    """
    import logging
    import os

    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":
    run()
