"""Throughput of ``pipeline.fit.fit_windows`` against a per-window least-squares loop.

Usage: ``python benchmarks/fit_bench.py [--frames 108000] [--baseline-windows 500]``

The input is a random-walk signal of ``frames`` × 24 joints × 3 (default 1 h at 30 FPS). The
vectorized fit runs over all windows; the baseline (one ``numpy.polynomial.polynomial.polyfit``
call per window, all 72 channels at once) runs on the first ``--baseline-windows`` windows in the
same process and its time is extrapolated per window to the full count. Both results are
compared on the baseline subset.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.fit import KINEMATICS_DEGREE, WindowConfig, fit_windows, normalized_time  # noqa: E402


def _best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=108_000, help="frames at 30 FPS (default: 1 h)")
    ap.add_argument("--degree", type=int, default=KINEMATICS_DEGREE)
    ap.add_argument("--length", type=int, default=WindowConfig.length)
    ap.add_argument("--stride", type=int, default=WindowConfig.stride)
    ap.add_argument("--baseline-windows", type=int, default=500, help="windows timed in the loop baseline")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = ap.parse_args(argv)

    cfg = WindowConfig(length=args.length, stride=args.stride)
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(scale=0.01, size=(args.frames, 24, 3)), axis=0)
    starts = cfg.starts(args.frames)
    n_win = len(starts)
    if n_win == 0:
        raise SystemExit(f"--frames {args.frames} shorter than one window ({cfg.length})")

    t_vec, res = _best_of(lambda: fit_windows(x, starts, cfg.length, args.degree), args.repeat)

    u = normalized_time(cfg.length)
    sub = starts[: min(args.baseline_windows, n_win)]

    def baseline() -> np.ndarray:
        out = np.empty((len(sub), args.degree + 1, 72))
        for w, s in enumerate(sub):  # the per-window loop being replaced
            out[w] = np.polynomial.polynomial.polyfit(u, x[s : s + cfg.length].reshape(cfg.length, 72), args.degree)
        return out

    t_base_sub, ref = _best_of(baseline, args.repeat)
    t_base = t_base_sub / len(sub) * n_win
    err = np.max(np.abs(res.coef[: len(sub)].reshape(len(sub), args.degree + 1, 72) - ref))

    print(f"input: {args.frames} frames x 24 joints x 3 ({args.frames / 30 / 60:.1f} min at 30 FPS), "
          f"degree {args.degree}, window {cfg.length} frames, stride {cfg.stride} -> {n_win} windows")
    print(f"fit_windows (vectorized): {t_vec * 1e3:9.1f} ms  {n_win / t_vec:12,.0f} windows/s  "
          f"{args.frames / t_vec:12,.0f} frames/s")
    print(f"per-window polyfit loop:  {t_base * 1e3:9.1f} ms  {n_win / t_base:12,.0f} windows/s  "
          f"{args.frames / t_base:12,.0f} frames/s  (timed on {len(sub)} windows, extrapolated)")
    print(f"speed-up: {t_base / t_vec:.1f}x   max |coef difference| on the subset: {err:.2e}")


if __name__ == "__main__":
    main()
