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
* the one-time first start of Prefect's API on the benchmark's fresh Prefect home (database
  migrations), paid before the timed builds, which then start as a returning user's build does;
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
    """Samples the RSS and CPU time of this process and all its descendants every ``interval`` seconds.

    Children are told apart by kind (``kind``): a Dask worker is a ``multiprocessing`` spawn child of
    this process (the local cluster's nannies run here) or a child of the fork server
    (``flows.runtime.warm_worker_processes``) this process started; a process that a worker starts itself (a
    spawned helper pool, a ``subprocess``) is a ``worker helper`` and is not a Dask worker, however
    it was started; Prefect's API server; the resource tracker; anything else."""

    def __init__(self, interval: float = 0.2, log: str | None = None):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_self = self.peak_tree = 0
        self.log = open(log, "a") if log else None  # noqa: SIM115 - closed in stop()
        self.t0 = time.perf_counter()
        self.kinds: dict[int, str] = {}  # child pid -> kind
        self.cpu: dict[int, tuple[str, float]] = {}  # child pid -> (kind, CPU seconds, user + system)
        self.peaks: dict[int, int] = {}  # child pid -> peak RSS (bytes)
        me = psutil.Process()
        self.cpu_self0 = sum(me.cpu_times()[:2])
        self.cpu_self = 0.0

    @staticmethod
    def kind(proc: psutil.Process, me: int, kinds: dict[int, str]) -> str:
        """What a child process is (``me``: this process's pid; ``kinds``: children seen so far)."""
        try:
            cmd = " ".join(proc.cmdline())
            parent = proc.ppid()
        except psutil.Error:
            return "other"
        if parent != me and kinds.get(parent) in ("dask worker", "worker helper"):
            return "worker helper"
        if "resource_tracker" in cmd:
            return "resource tracker"
        if "multiprocessing.forkserver" in cmd:  # the fork server, and the workers forked from it
            if parent == me:
                return "fork server"
            return "dask worker" if kinds.get(parent) == "fork server" else "worker helper"
        if "multiprocessing.spawn" in cmd or "spawn_main" in cmd:
            return "dask worker" if parent == me else "worker helper"
        if "prefect" in cmd or "uvicorn" in cmd:
            return "prefect server"
        return "other"

    @property
    def peak_worker(self) -> int:
        """Peak RSS of the largest Dask worker (bytes)."""
        return max([0, *(r for pid, r in self.peaks.items() if self.kinds.get(pid) == "dask worker")])

    def peak_of(self, kind: str) -> int:
        return max([0, *(r for pid, r in self.peaks.items() if self.kinds.get(pid) == kind)])

    def run(self) -> None:
        me = psutil.Process()
        tags = {"dask worker": "w", "worker helper": "h", "prefect server": "s", "resource tracker": "r", "fork server": "f",
                "other": "o"}
        while not self.stop_event.is_set():
            try:
                own = me.memory_info().rss
                children = []
                # parents before children: a helper's kind depends on its parent's
                for c in sorted(me.children(recursive=True), key=lambda c: c.pid):
                    try:
                        rss = c.memory_info().rss
                        if c.pid not in self.kinds:
                            self.kinds[c.pid] = self.kind(c, me.pid, self.kinds)
                        kind = self.kinds[c.pid]
                        self.cpu[c.pid] = (kind, sum(c.cpu_times()[:2]))
                        self.peaks[c.pid] = max(self.peaks.get(c.pid, 0), rss)
                        children.append((tags[kind], c.pid, rss))
                    except psutil.Error:
                        pass
                self.cpu_self = sum(me.cpu_times()[:2]) - self.cpu_self0
                self.peak_self = max(self.peak_self, own)
                self.peak_tree = max(self.peak_tree, own + sum(r for _, _, r in children))
                if self.log:  # seconds, flow RSS, then each child's kind letter, pid and RSS (MiB)
                    self.log.write(" ".join([f"{time.perf_counter() - self.t0:.1f}", f"{own / 2**20:.0f}",
                                             *(f"{t}{pid}:{r / 2**20:.0f}" for t, pid, r in children)]) + "\n")
            except psutil.Error:
                pass
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        if self.log:
            self.log.close()


def task_summary(path: Path, workers: set[int]) -> dict:
    """What ``$DYNASET_TASK_LOG`` recorded (``pipeline.dataset.executor.probed``): per task kind the
    calls, wall and CPU seconds (the task's thread; the whole process over the call), and per
    Dask worker the task whose call raised that process's peak RSS the most."""
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    by_task: dict[str, dict] = {}
    for r in recs:
        t = by_task.setdefault(r["task"], {"calls": 0, "wall_s": 0.0, "thread_cpu_s": 0.0, "process_cpu_s": 0.0,
                                           "peak_rise_mib": 0.0})
        t["calls"] += 1
        t["wall_s"] += r["t1"] - r["t0"]
        t["thread_cpu_s"] += r["thread_cpu"]
        t["process_cpu_s"] += r["process_cpu"]
    peaks: dict[int, list] = {}  # pid -> [peak so far, task of the largest rise, that rise, peak]
    for r in sorted(recs, key=lambda r: r["t1"]):
        prev = peaks.setdefault(r["pid"], [r["rss0"], None, 0.0, 0.0])  # a first task: from its start
        rise = r["maxrss"] - prev[0]
        if rise > 0:
            by_task[r["task"]]["peak_rise_mib"] += rise
            if rise > prev[2]:
                prev[1], prev[2] = r["task"], rise
            prev[0] = r["maxrss"]
        prev[3] = max(prev[3], r["maxrss"])
    return {"tasks": by_task,
            "peak_by_pid": {pid: {"peak_mib": v[3], "largest_rise_task": v[1], "largest_rise_mib": v[2]}
                            for pid, v in peaks.items() if not workers or pid in workers}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0, help="corpus size in hours of motion")
    ap.add_argument("--workers", default="2", help="local Dask workers; a comma list builds once per count")
    ap.add_argument("--baseline-files", type=int, default=40, help="files in the serial baseline sample")
    ap.add_argument("--workdir", default=None, help="keep corpus and stores here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--no-simulate", action="store_true", help="skip the imitation stage (kinematic subsets only)")
    ap.add_argument("--rss-log", default=None,
                    help="append every RSS sample to this file: seconds, flow MiB, then each child process as "
                         "KINDPID:MiB (w Dask worker, h a worker's helper, s Prefect server, r resource tracker, o other)")
    ap.add_argument("--task-log", default=None,
                    help="record every task call (pipeline.dataset.executor.TASK_LOG_ENV) in this file and print "
                         "per task kind its CPU and the task that raised each worker's peak RSS")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dynaset-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus, out = work / "corpus", work / "stores"
    shutil.rmtree(out, ignore_errors=True)

    from flows.runtime import prefect_environment

    prefect_environment(work / ".prefect")
    from pipeline.cli import run_build
    from pipeline.dataset.executor import TASK_LOG_ENV
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

    # Prefect's first start on a fresh home migrates its database (≈ 10–30 s on 2 cores), once per
    # home: a user's home (~/.cache/dynaset/prefect) pays it on the first build only. Pay it here,
    # outside the timed builds, so every timed build (and a --workers 1,2 comparison) starts as a
    # returning user's build does; the one-time cost is printed on its own.
    from flows.runtime import prefect_api

    t0 = time.perf_counter()
    with prefect_api():
        pass
    t_first = time.perf_counter() - t0
    print(f"Prefect home first start (database migrations, once per home; not in the timed builds): {t_first:.1f} s")

    counts = [int(w) for w in str(args.workers).split(",")]
    figures = {"hours": None, "baseline_serial_frames_per_s": base_fps, "prefect_first_start_s": t_first,
               "runs": {}}
    for workers in counts:
        shutil.rmtree(out, ignore_errors=True)
        task_log = Path(f"{args.task_log}.{workers}") if args.task_log else None
        if task_log is not None:
            task_log.unlink(missing_ok=True)
            os.environ[TASK_LOG_ENV] = str(task_log.resolve())
        sampler = RssSampler(log=args.rss_log)
        sampler.start()
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        summary = run_build([SourceSpec("amass", corpus)], out, cfg, workers=workers)
        wall = time.perf_counter() - t0
        sampler.stop()
        os.environ.pop(TASK_LOG_ENV, None)
        figures["runs"][workers] = run = report_run(summary, wall, sampler, cfg, base_fps, workers, load0, task_log)
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


def report_run(summary: dict, wall: float, sampler: RssSampler, cfg, base_fps: float, workers: int,
               load0: float = float("nan"), task_log: Path | None = None) -> dict:
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
        "discover (stat, sha256 of new files, ledger)": ws.get("discover", 0.0),
        "per-file stage (to the last file)": ws.get("process", 0.0),
        "simulate (after the last file)": ws.get("simulate", 0.0),
        "assemble: plan + quality outputs": ws.get("assemble_plan", 0.0),
        "assemble: store writes (regions, swap)": ws.get("assemble_write", 0.0),
        "assemble: statistics": ws.get("assemble_stats", 0.0),
        "ledger, summary, report": flow_total - ws.get("discover", 0.0) - ws.get("process", 0.0)
        - ws.get("simulate", 0.0) - ws.get("assemble", 0.0),
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
    p = {"flow_process": sampler.peak_self / 2**20, "largest_worker": sampler.peak_worker / 2**20,
         "largest_helper": sampler.peak_of("worker helper") / 2**20,
         "prefect_server": sampler.peak_of("prefect server") / 2**20, "process_tree": sampler.peak_tree / 2**20}
    by_kind: dict[str, list[float]] = {}
    for kind, sec in sampler.cpu.values():
        by_kind.setdefault(kind, []).append(sec)
    cpu = {"flow process (flow, Dask scheduler, nannies; Prefect client)": sampler.cpu_self,
           **{f"{k} ({len(v)})": sum(v) for k, v in sorted(by_kind.items())}}
    workers_cpu = sorted(by_kind.get("dask worker", []), reverse=True)
    total_cpu = sum(cpu.values())
    print(f"  CPU seconds (user + system, sampled every 0.2 s): {total_cpu:.1f} s in all over {wall:.1f} s of wall = "
          f"{total_cpu / wall:.2f} cores busy on average ({os.cpu_count()} cores; load average {load0:.2f} at the "
          f"start, {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end)")
    for k, v in cpu.items():
        print(f"    {k:<62}{v:7.1f} s")
    if workers_cpu:
        print(f"    per worker: {', '.join(f'{v:.1f}' for v in workers_cpu)} s; task time {task:.1f} s")
    print(f"  peak RSS: flow process {p['flow_process']:.0f} MiB, largest worker {p['largest_worker']:.0f} MiB, "
          f"largest worker helper {p['largest_helper']:.0f} MiB, Prefect server {p['prefect_server']:.0f} MiB, "
          f"process tree {p['process_tree']:.0f} MiB")
    tasks = None
    if task_log is not None:
        worker_pids = {pid for pid, k in sampler.kinds.items() if k == "dask worker"}
        tasks = task_summary(task_log, worker_pids)
        print("  tasks (wall s / CPU s of the task's thread / CPU s of its process over the call / calls):")
        for k, t in sorted(tasks["tasks"].items()):
            print(f"    {k:<20}{t['wall_s']:8.1f}{t['thread_cpu_s']:8.1f}{t['process_cpu_s']:8.1f}{t['calls']:6d}")
        thread = sum(t["thread_cpu_s"] for t in tasks["tasks"].values())
        if workers_cpu:
            print(f"  worker CPU {sum(workers_cpu):.1f} s: in task threads {thread:.1f} s, outside them "
                  f"{sum(workers_cpu) - thread:.1f} s")
        for pid, v in tasks["peak_by_pid"].items():
            print(f"  process {pid}: peak {v['peak_mib']:.0f} MiB; largest rise in one task: "
                  f"{v['largest_rise_task']} (+{v['largest_rise_mib']:.0f} MiB)")
    return {"hours": hours, "files": summary["files"], "frames_in": f_in, "frames_out": f_out, "wall_s": wall,
            "frames_per_s_task": rates, "end_to_end_frames_per_s": e2e, "ratio_build_vs_serial_baseline": e2e / base_fps,
            "wall_breakdown_s": breakdown, "peak_rss_mib": p, "cpu_seconds": cpu, "worker_cpu_seconds": workers_cpu,
            "load_average_start_end": [load0, os.getloadavg()[0]], "tasks": tasks}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
