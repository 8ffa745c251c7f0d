"""Quality metrics + report benchmark on a generated corpus (default ≥ 1 hour).

    python benchmarks/report_bench.py                # 1 h, 8 subjects
    python benchmarks/report_bench.py --hours 2 --workdir /tmp/rb

Prints, in one run:
* the corpus (files, hours) and how long generating it took;
* a serial in-process build (``pipeline.quality.build_in_process``: read → process → metrics →
  stage → flags → stores without excluded sequences → metrics.parquet/flags/exclusions), with the
  seconds spent in each step; the metrics step is also given in frames/s and as a share of
  read+process (what the quality stage adds to a build's per-file tasks);
* the report: ``build_report`` with the default 12 per-sequence plots, against a baseline measured
  in the same run (the same report without per-sequence plots, which reads no arrays from the stores),
  and ``report_json``; seconds and sizes. Goal: < 60 s and < 20 MB for 1 h.

A few sequences are broken on purpose (glitch frames, sliding feet, NaN gaps), so the report has
flagged and excluded sequences to rank and plot.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _breaker(every: int):
    """Break every ``every``-th sequence in turn: glitch, sliding markers, NaN gap."""
    from pipeline import markers as mk

    count = {"n": 0}

    def modify(sid, frame, window, values, extras):
        count["n"] += 1
        k = count["n"]
        if k % every:
            return
        kind = (k // every) % 3
        n = len(frame["time_s"])
        if kind == 0 and n > 40:
            frame["joint_pos_m"][n // 2] += np.array([0.35, 0.0, 0.0], np.float32)
        elif kind == 1 and n > 40:
            frame["marker_pos_m"][n // 3: n // 3 + 25, mk.MARKER_NAMES.index("LTOE")] = np.nan
        elif kind == 2:
            frame["joint_pos_m"][n // 4] += np.array([0.0, 0.2, 0.0], np.float32)

    return modify


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--break-every", type=int, default=25, help="break every N-th sequence (0: none)")
    ap.add_argument("--workdir", default=None, help="keep corpus and output here (default: a temp dir, deleted)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    from pipeline.demo import generate_corpus
    from pipeline.quality import build_in_process, build_report, report_json

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dynaset-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus, out = work / "corpus", work / "out"
    shutil.rmtree(out, ignore_errors=True)
    fig: dict = {}
    try:
        t0 = time.perf_counter()
        if not corpus.exists():
            files = generate_corpus(corpus, n_subjects=args.subjects, hours=args.hours)
        else:
            files = sorted(corpus.rglob("*_poses.npz"))
        fig["generate_s"] = time.perf_counter() - t0
        print(f"[corpus] {len(files)} files under {corpus} (generated in {fig['generate_s']:.1f} s)")

        t0 = time.perf_counter()
        summary = build_in_process(corpus, out, modify=_breaker(args.break_every) if args.break_every else None)
        fig["build_s"] = time.perf_counter() - t0
        sec = summary["task_seconds"]
        frames = summary["subsets"]["motion"]["frames"]
        doc0 = report_json(out)["summary"]
        hours_all = doc0["hours"] + doc0["hours_excluded"]
        print(f"[build] serial in-process build of {hours_all:.2f} h ({doc0['sequences']} sequences, "
              f"{doc0['sequences_excluded']} excluded): {fig['build_s']:.1f} s")
        for k in ("process", "metrics", "stage", "flags", "write"):
            print(f"  {k:<8} {sec[k]:7.2f} s")
        all_frames = int(round(hours_all * 3600 * 30))
        print(f"  metrics: {all_frames / max(sec['metrics'], 1e-9):,.0f} frames/s, "
              f"{100 * sec['metrics'] / max(sec['process'], 1e-9):.1f} % of read+process time")
        fig.update(build_steps_s=sec, frames=all_frames, hours=hours_all, sequences=doc0["sequences"],
                   excluded=doc0["sequences_excluded"], stored_frames=frames)

        t0 = time.perf_counter()
        base = build_report(out, path=out / "report_noplots.html", sequence_plots=0)
        fig["report_baseline_s"] = time.perf_counter() - t0
        fig["report_baseline_mb"] = base.stat().st_size / 1e6
        t0 = time.perf_counter()
        path = build_report(out)
        fig["report_s"] = time.perf_counter() - t0
        fig["report_mb"] = path.stat().st_size / 1e6
        t0 = time.perf_counter()
        doc = report_json(out)
        fig["json_s"] = time.perf_counter() - t0
        fig["json_kb"] = len(json.dumps(doc)) / 1e3
        print(f"[report] baseline (no per-sequence plots): {fig['report_baseline_s']:.1f} s, "
              f"{fig['report_baseline_mb']:.2f} MB")
        print(f"[report] full (12 per-sequence plots):     {fig['report_s']:.1f} s, {fig['report_mb']:.2f} MB "
              f"-> {path}")
        print(f"[report] json: {fig['json_s']:.1f} s, {fig['json_kb']:.0f} kB")
        ok = fig["report_s"] < 60 and fig["report_mb"] < 20
        print(f"[goal] report < 60 s and < 20 MB for {hours_all:.2f} h: {'met' if ok else 'NOT met'}")
        if args.json:
            Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
