"""Store-write benchmark: the write stage (stage + shard-aligned region writes) in frames/s per
worker, the new path — whole shards encoded per call (``pipeline.store.shards``), Blosc lz4 — against
the previous path — zarr's array assignment, Blosc zstd — on the same staged sequences, in one run.
The two other combinations are printed too, so the gain of each change is visible.

    python benchmarks/store_write_bench.py --frames 300000

Synthetic smooth motion (float32 joint positions/rotations, 45 markers, contact labels, cubic
window coefficients every 5 frames) at 30 FPS, sequences of 150–1800 frames, written to a motion
and a contact store with the default chunking, one process (= one worker). Frames are counted per
store written (a frame in both stores counts twice), as ``benchmarks/build_bench.py`` does.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WINDOW_LEN, WINDOW_STRIDE = 15, 5


def synthetic(key: str, n: int, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    from pipeline import markers, skeleton

    t = np.arange(n) / 30.0
    f = rng.uniform(0.3, 2.0, (1, 24, 3))
    ph = rng.uniform(0, 2 * np.pi, (1, 24, 3))
    jp = (np.sin(2 * np.pi * f * t[:, None, None] + ph) * 0.3 + rng.normal(0, 1e-3, (n, 24, 3))).astype(np.float32)
    mk = np.repeat(jp, 2, axis=1)[:, : len(markers.MARKER_NAMES)] + np.float32(0.05)
    frame = {"time_s": t.astype(np.float32), "root_pos_m": jp[:, 0].copy(),
             "joint_rot_aa_rad": np.cos(2 * np.pi * f * t[:, None, None] + ph).astype(np.float32) * 0.5,
             "joint_pos_m": jp, "marker_pos_m": mk.astype(np.float32),
             "contact": (np.sin(2 * np.pi * t[:, None] + np.arange(4)) > 0).astype(np.uint8)}
    starts = np.arange(0, max(n - WINDOW_LEN, 0) + 1, WINDOW_STRIDE, dtype=np.int64)
    nw = starts.size
    window = {"window_start": starts,
              "joint_pos_coef_m": rng.normal(0, 0.1, (nw, 4, 24, 3)).astype(np.float32),
              "joint_pos_fit_rmse_m": rng.random(nw).astype(np.float32) * 1e-3,
              "joint_rot_coef_rad": rng.normal(0, 0.1, (nw, 4, 24, 3)).astype(np.float32),
              "joint_rot_fit_rmse_rad": rng.random(nw).astype(np.float32) * 1e-3}
    source, dataset, subject, name = key.split("/")
    values = {"seq_id": key, "seq_source": source, "seq_dataset": dataset, "seq_subject": subject, "seq_name": name,
              "seq_path": f"{dataset}/{subject}/{name}.npz", "seq_source_sha256": hashlib.sha256(key.encode()).hexdigest(),
              "seq_licence": "CC0-1.0", "seq_split": "train", "seq_gender": "neutral", "seq_skeleton": "anthropometric",
              "seq_height_m": 1.7, "seq_mass_kg": 70.0, "seq_ground_offset_m": 0.0, "seq_source_fps_hz": 120.0,
              "seq_duration_s": (n - 1) / 30.0, "seq_betas": np.zeros(16, np.float32),
              "seq_bone_length_m": np.full(len(skeleton.BONE_NAMES), 0.3)}
    return frame, window, values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300_000, help="frames in the corpus (30 FPS)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    from pipeline.dataset.assembly import store_attrs
    from pipeline.process import BuildConfig
    from pipeline.store import Chunking, create_store, load_schema, plan_store, region_plan, stage_sequence
    from pipeline.store.writer import write_frame_region, write_window_region

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dynaset-write-bench-"))
    rng = np.random.default_rng(0)
    payloads, total, i = [], 0, 0
    while total < args.frames:
        n = int(rng.integers(150, 1800))
        payloads.append((f"amass/Bench/S{i % 20:02d}/seq{i:05d}", n))
        total += n
        i += 1
    arrays = [(key, synthetic(key, n, rng)) for key, n in payloads]
    t0 = time.perf_counter()
    staged = [stage_sequence(work / "staging", key, *a, subsets=("motion", "contact")) for key, a in arrays]
    t_stage = time.perf_counter() - t0
    del arrays
    attrs, coords = store_attrs(BuildConfig())
    plans = {}
    for compression in ("zstd", "lz4"):
        for subset in ("motion", "contact"):
            declared = load_schema(subset).coords
            plans[compression, subset] = plan_store(subset, staged, attrs,
                                                    {k: v for k, v in coords.items() if k in declared},
                                                    Chunking(compression=compression))
    frames_written = sum(p.n_frames for (c, _), p in plans.items() if c == "lz4")
    print(f"corpus: {len(staged)} sequences, {total:,} frames ({total / 30 / 3600:.2f} h); "
          f"{frames_written:,} frames over the motion and contact stores; staging {t_stage:.1f} s "
          f"({frames_written / t_stage:,.0f} frames/s)")

    def write_all(method: str, compression: str) -> tuple[float, int]:
        t, nbytes = 0.0, 0
        for (c, subset), plan in plans.items():
            if c != compression:
                continue
            path = work / f"{method}-{subset}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            create_store(plan, path)
            t0 = time.perf_counter()
            for k in range(len(plan.frame_regions)):
                write_frame_region(region_plan(plan, "frame", k), path, 0, method=method)
            for k in range(len(plan.window_regions)):
                write_window_region(region_plan(plan, "window", k), path, 0, method=method)
            t += time.perf_counter() - t0
            nbytes += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return t, nbytes

    combos = [("zarr", "zstd"), ("zarr", "lz4"), ("shards", "zstd"), ("shards", "lz4")]
    write_all("shards", "lz4")  # warm-up (imports, page cache)
    rates = {}
    for method, compression in combos:
        t, nbytes = write_all(method, compression)
        rates[method, compression] = (frames_written / t, frames_written / (t + t_stage))
        label = {("zarr", "zstd"): "  (previous path)", ("shards", "lz4"): "  (new path)"}.get((method, compression), "")
        print(f"{method:<6} {compression:<4} region writes {t:7.2f} s {frames_written / t:>10,.0f} frames/s; write "
              f"stage (stage + regions) {frames_written / (t + t_stage):>9,.0f} frames/s per worker; "
              f"{nbytes / 1e6:.0f} MB{label}")
    new, old = rates["shards", "lz4"], rates["zarr", "zstd"]
    print(f"ratio new / previous path: region writes {new[0] / old[0]:.1f}x, write stage {new[1] / old[1]:.1f}x")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
