"""Whole-build benchmark: frames/s per stage and peak memory, on a generated corpus.

    python benchmarks/build_bench.py --hours 1
    python benchmarks/build_bench.py --hours 4

Prints, in one run:
* the corpus (files, source frames, hours) and how long generating it took;
* a baseline measured in the same run: the pure stages (read + canonicalize + contact + fit) in a
  plain serial loop over a sample of the files, no Prefect, no Dask, no stores;
* the real build (Prefect flow, local Dask cluster, Zarr stores): per-stage throughput in
  frames/s of task time (ingest counts source frames, the others canonical 30 FPS frames),
  end-to-end frames/s of wall time and its ratio to the serial baseline;
* peak RSS, sampled every 0.2 s: of the flow process, of the largest Dask worker, and of the
  whole process tree (flow + workers + Prefect's ephemeral server). Streaming means the first
  two stay flat when the corpus grows from 1 h to 4 h.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class RssSampler(threading.Thread):
    """Samples the RSS of this process and all its descendants every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_self = self.peak_tree = self.peak_child = 0

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop_event.is_set():
            try:
                own = me.memory_info().rss
                children = []
                for c in me.children(recursive=True):
                    try:
                        children.append(c.memory_info().rss)
                    except psutil.Error:
                        pass
                self.peak_self = max(self.peak_self, own)
                self.peak_child = max([self.peak_child, *children])
                self.peak_tree = max(self.peak_tree, own + sum(children))
            except psutil.Error:
                pass
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0, help="corpus size in hours of motion")
    ap.add_argument("--workers", type=int, default=2, help="local Dask workers")
    ap.add_argument("--baseline-files", type=int, default=40, help="files in the serial baseline sample")
    ap.add_argument("--workdir", default=None, help="keep corpus and stores here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--no-simulate", action="store_true", help="skip the imitation stage (kinematic subsets only)")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dynaset-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus, out = work / "corpus", work / "stores"
    shutil.rmtree(out, ignore_errors=True)

    from flows.runtime import prefect_environment

    prefect_environment(work / ".prefect")
    from pipeline.cli import run_build
    from pipeline.demo import generate_corpus
    from pipeline.process import BuildConfig, process_motion
    from pipeline.sources.amass import AmassSource
    from pipeline.sources.base import SourceSpec

    t0 = time.perf_counter()
    if not corpus.exists():
        generate_corpus(corpus, n_subjects=8, hours=args.hours, seed=0)
    t_gen = time.perf_counter() - t0
    src = AmassSource()
    files = src.discover(corpus)
    print(f"corpus: {len(files)} files under {corpus} (generated in {t_gen:.1f} s)")

    # Baseline: the pure stages in a serial loop over a sample (every k-th file), same config.
    cfg = BuildConfig(simulate=None) if args.no_simulate else BuildConfig()
    sample = files[:: max(1, len(files) // args.baseline_files)][: args.baseline_files]
    t0 = time.perf_counter()
    base_frames = 0
    for path in sample:
        for raw in src.read(path, corpus):
            base_frames += process_motion(raw, cfg).motion.n_frames
    t_base = time.perf_counter() - t0
    base_fps = base_frames / t_base
    print(f"baseline (serial, in-process, no stores): {len(sample)} files, {base_frames} frames, "
          f"{base_fps:,.0f} frames/s")

    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    summary = run_build([SourceSpec("amass", corpus)], out, cfg, workers=args.workers)
    wall = time.perf_counter() - t0
    sampler.stop()

    ts = summary["task_seconds"]
    f_in, f_out = summary["frames_in"], summary["frames_out"]
    hours = f_out / cfg.canonical.fps_hz / 3600
    if "simulate" in ts and summary.get("frames_simulated"):
        print(f"  simulate: {summary['frames_simulated']:,} frames in {ts['simulate']:.1f} s of task time "
              f"= {summary['frames_simulated'] / 30.0 / ts['simulate']:.1f} s of motion per second per worker")
    rates = {
        "ingest": f_in / ts["ingest"],
        "canonicalize": f_out / ts["canonicalize"],
        "contact": f_out / ts["contact"],
        "fit": f_out / ts["fit"],
        # frames written over all subset stores (a frame lands in every subset it belongs to)
        "write": sum(s["frames"] for s in summary["subsets"].values()) / (ts["stage"] + ts["write_regions"]),
    }
    e2e = f_out / wall
    figures = {
        "hours": hours,
        "files": summary["files"],
        "frames_in": f_in,
        "frames_out": f_out,
        "wall_s": wall,
        "frames_per_s_task": rates,
        "end_to_end_frames_per_s": e2e,
        "baseline_serial_frames_per_s": base_fps,
        "ratio_build_vs_serial_baseline": e2e / base_fps,
        "peak_rss_mib": {
            "flow_process": sampler.peak_self / 2**20,
            "largest_worker": sampler.peak_child / 2**20,
            "process_tree": sampler.peak_tree / 2**20,
        },
    }
    print(f"build: {hours:.2f} h of motion, {summary['files']} files, {f_in:,} source frames -> "
          f"{f_out:,} frames at 30 FPS, wall {wall:.1f} s ({args.workers} Dask workers)")
    for k, v in rates.items():
        unit = "source frames/s" if k == "ingest" else "frames/s"
        print(f"  {k:<13}{v:>14,.0f} {unit} of task time")
    print(f"  end-to-end   {e2e:>14,.0f} frames/s of wall time "
          f"= {e2e / base_fps:.2f} x the serial baseline")
    p = figures["peak_rss_mib"]
    print(f"peak RSS: flow process {p['flow_process']:.0f} MiB, largest worker {p['largest_worker']:.0f} MiB, "
          f"process tree {p['process_tree']:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
