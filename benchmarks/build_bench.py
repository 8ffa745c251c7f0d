"""Whole-build benchmark: frames/s per stage and peak memory, on a generated corpus.

    python benchmarks/build_bench.py --hours 1 --no-simulate --workers 1,2
    python benchmarks/build_bench.py --hours 4 --no-simulate

Prints, in one run:
* the corpus (files, source frames, hours) and how long generating it took;
* a baseline measured in the same run: the pure stages (read + canonicalize + contact + fit) in a
  plain serial loop over a sample of the files, no Prefect, no Dask, no stores;
* the real build (Prefect flow, local Dask cluster, Zarr stores): per-stage throughput in
  frames/s of task time (ingest counts source frames, the others canonical 30 FPS frames),
  end-to-end frames/s of wall time and its ratio to the serial baseline;
* where the wall time goes: cluster start-up and tear-down (outside the flow), discovery and the
  per-file stage, simulation, assembly (planning, region writes, statistics), the report;
* peak RSS, sampled every 0.2 s: of the flow process, of the largest Dask worker, and of the
  whole process tree (flow + workers + Prefect's ephemeral server). Streaming means the first
  two stay flat when the corpus grows from 1 h to 4 h.

``--workers 1,2`` builds the corpus once per worker count (fresh stores each time) and prints the
speed-up of the larger count over the smaller, measured in the same run.
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

    def __init__(self, interval: float = 0.2, log: str | None = None):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_self = self.peak_tree = self.peak_child = 0
        self.log = open(log, "a") if log else None  # noqa: SIM115 - closed in stop()
        self.t0 = time.perf_counter()
        self.cpu: dict[int, tuple[str, float]] = {}  # child pid -> (kind, CPU seconds, user + system)
        me = psutil.Process()
        self.cpu_self0 = sum(me.cpu_times()[:2])
        self.cpu_self = 0.0

    @staticmethod
    def kind(proc: psutil.Process) -> str:
        """What a child process is: a Dask worker, Prefect's API server, or something else."""
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            return "other"
        if "multiprocessing.spawn" in cmd or "spawn_main" in cmd:
            return "dask worker"
        if "prefect" in cmd or "uvicorn" in cmd:
            return "prefect server"
        if "resource_tracker" in cmd:
            return "resource tracker"
        return "other"

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop_event.is_set():
            try:
                own = me.memory_info().rss
                children = []
                for c in me.children(recursive=True):
                    try:
                        children.append(c.memory_info().rss)
                        kind = self.cpu[c.pid][0] if c.pid in self.cpu else self.kind(c)
                        self.cpu[c.pid] = (kind, sum(c.cpu_times()[:2]))
                    except psutil.Error:
                        pass
                self.cpu_self = sum(me.cpu_times()[:2]) - self.cpu_self0
                self.peak_self = max(self.peak_self, own)
                self.peak_child = max([self.peak_child, *children])
                self.peak_tree = max(self.peak_tree, own + sum(children))
                if self.log:  # seconds, flow RSS, then each child's RSS (MiB)
                    self.log.write(" ".join([f"{time.perf_counter() - self.t0:.1f}",
                                             *(f"{r / 2**20:.0f}" for r in (own, *children))]) + "\n")
            except psutil.Error:
                pass
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        if self.log:
            self.log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0, help="corpus size in hours of motion")
    ap.add_argument("--workers", default="2", help="local Dask workers; a comma list builds once per count")
    ap.add_argument("--baseline-files", type=int, default=40, help="files in the serial baseline sample")
    ap.add_argument("--workdir", default=None, help="keep corpus and stores here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--no-simulate", action="store_true", help="skip the imitation stage (kinematic subsets only)")
    ap.add_argument("--rss-log", default=None,
                    help="append every RSS sample to this file: seconds, flow MiB, then each child process's MiB")
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

    counts = [int(w) for w in str(args.workers).split(",")]
    figures = {"hours": None, "baseline_serial_frames_per_s": base_fps, "runs": {}}
    for workers in counts:
        shutil.rmtree(out, ignore_errors=True)
        sampler = RssSampler(log=args.rss_log)
        sampler.start()
        t0 = time.perf_counter()
        summary = run_build([SourceSpec("amass", corpus)], out, cfg, workers=workers)
        wall = time.perf_counter() - t0
        sampler.stop()
        figures["runs"][workers] = run = report_run(summary, wall, sampler, cfg, base_fps, workers)
        figures["hours"] = run["hours"]
    if len(counts) > 1:
        lo, hi = min(counts), max(counts)
        speedup = figures["runs"][hi]["end_to_end_frames_per_s"] / figures["runs"][lo]["end_to_end_frames_per_s"]
        figures[f"speedup_{hi}_vs_{lo}_workers"] = speedup
        print(f"{hi} workers vs {lo}: {speedup:.2f} x end-to-end (same corpus, same run)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report_run(summary: dict, wall: float, sampler: RssSampler, cfg, base_fps: float, workers: int) -> dict:
    """Print one build's throughput, wall-time breakdown and peak RSS; return the figures."""
    ts, ws = summary["task_seconds"], summary["wall_seconds"]
    f_in, f_out = summary["frames_in"], summary["frames_out"]
    hours = f_out / cfg.canonical.fps_hz / 3600
    if "simulate" in ts and summary.get("frames_simulated"):
        print(f"  simulate: {summary['frames_simulated']:,} frames in {ts['simulate']:.1f} s of task time "
              f"= {summary['frames_simulated'] / 30.0 / ts['simulate']:.1f} s of motion per second per worker")
    written = sum(s["frames"] for s in summary["subsets"].values())  # a frame counts in every subset it is in
    rates = {
        "ingest": f_in / ts["ingest"],
        "canonicalize": f_out / ts["canonicalize"],
        "contact": f_out / ts["contact"],
        "fit": f_out / ts["fit"],
        "write": written / (ts["stage"] + ts["write_regions"]),
        "write_regions": written / max(ts["write_regions"], 1e-9),
    }
    e2e = f_out / wall
    flow_total = ws.get("total", wall)
    breakdown = {
        "cluster start + tear-down (outside the flow)": wall - flow_total,
        "discover + per-file stage (to the last file)": ws.get("process", 0.0),
        "simulate (after the last file)": ws.get("simulate", 0.0),
        "assemble: plan + quality outputs": ws.get("assemble_plan", 0.0),
        "assemble: store writes (regions, swap)": ws.get("assemble_write", 0.0),
        "assemble: statistics": ws.get("assemble_stats", 0.0),
        "ledger, summary, report": flow_total - ws.get("process", 0.0) - ws.get("simulate", 0.0)
        - ws.get("assemble", 0.0),
    }
    task = sum(v for k, v in ts.items() if k not in ("write",))
    print(f"build: {hours:.2f} h of motion, {summary['files']} files, {f_in:,} source frames -> "
          f"{f_out:,} frames at 30 FPS, wall {wall:.1f} s ({workers} Dask workers)")
    for k, v in rates.items():
        unit = "source frames/s" if k == "ingest" else "frames/s"
        print(f"  {k:<13}{v:>14,.0f} {unit} of task time")
    print(f"  end-to-end   {e2e:>14,.0f} frames/s of wall time = {e2e / base_fps:.2f} x the serial baseline")
    print(f"  wall-time breakdown ({task:.1f} s of task time over {workers} worker(s) = "
          f"{task / max(wall * workers, 1e-9):.0%} busy):")
    for k, v in breakdown.items():
        print(f"    {k:<46}{v:7.1f} s {v / wall:5.0%}")
    p = {"flow_process": sampler.peak_self / 2**20, "largest_worker": sampler.peak_child / 2**20,
         "process_tree": sampler.peak_tree / 2**20}
    by_kind: dict[str, list[float]] = {}
    for kind, sec in sampler.cpu.values():
        by_kind.setdefault(kind, []).append(sec)
    cpu = {"flow process (flow, Dask scheduler, nannies; Prefect client)": sampler.cpu_self,
           **{f"{k} ({len(v)})": sum(v) for k, v in sorted(by_kind.items())}}
    workers_cpu = sorted(by_kind.get("dask worker", []), reverse=True)
    total_cpu = sum(cpu.values())
    print(f"  CPU seconds (user + system, sampled every 0.2 s): {total_cpu:.1f} s in all over {wall:.1f} s of wall = "
          f"{total_cpu / wall:.2f} cores busy on average ({os.cpu_count()} cores; load average at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    for k, v in cpu.items():
        print(f"    {k:<62}{v:7.1f} s")
    if workers_cpu:
        print(f"    per worker: {', '.join(f'{v:.1f}' for v in workers_cpu)} s; task time {task:.1f} s")
    print(f"  peak RSS: flow process {p['flow_process']:.0f} MiB, largest worker {p['largest_worker']:.0f} MiB, "
          f"process tree {p['process_tree']:.0f} MiB")
    return {"hours": hours, "files": summary["files"], "frames_in": f_in, "frames_out": f_out, "wall_s": wall,
            "frames_per_s_task": rates, "end_to_end_frames_per_s": e2e, "ratio_build_vs_serial_baseline": e2e / base_fps,
            "wall_breakdown_s": breakdown, "peak_rss_mib": p, "cpu_seconds": cpu, "worker_cpu_seconds": workers_cpu}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
