"""Migration benchmark: ``migrate_store`` (1.x -> 2.0.0) against copying the store.

    python benchmarks/migrate_bench.py                      # writes a 300k-frame ground_reaction 1.1.0 store
    python benchmarks/migrate_bench.py --frames 1000000 --dir /data/tmp

Writes a ground_reaction 1.1.0 store (random float32 data, default chunks/shards: 4096-frame shards)
with the real writer, then times, each on a fresh copy of it:

* ``copytree``: ``shutil.copytree`` of the store (what a full rewrite costs at least);
* ``migrate in place``: ``migrate_store(store)`` (hard-link copy, rename, validate, consolidate, swap);
* ``migrate --out``: ``migrate_store(store, dst)`` (real copy, then the same steps);
* ``link tree``: the hard-link copy alone (chunks linked, metadata copied), and deleting it;
* ``copy swap delete``: what migrating in place by copying would cost without any change: copy to
  a temporary sibling, swap it in, delete the old store;
* ``validate``: ``validate_store`` alone, structure only (what a rename migration runs) and with
  the data scan (``--full-check``);
* ``migrate in place --full-check``.

Every step starts after ``os.sync()``; ``*_s`` is the step alone, ``*_synced_s`` includes flushing
its writes to disk. The page cache is warm (the store was just written). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _payload(key: str, n: int, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    f32 = np.float32
    starts = np.arange(0, max(1, n - 14), 5, dtype=np.int64)
    w = starts.size
    frame = {
        "time_s": (np.arange(n) / 30.0).astype(f32),
        "root_pos_m": rng.normal(size=(n, 3)).astype(f32),
        "joint_rot_aa_rad": rng.normal(size=(n, 24, 3)).astype(f32),
        "joint_pos_m": rng.normal(size=(n, 24, 3)).astype(f32),
        "marker_pos_m": rng.normal(size=(n, 45, 3)).astype(f32),
        "contact": (rng.random((n, 4)) < 0.5).astype(np.uint8),
        "grf_n": rng.normal(size=(n, 2, 3)).astype(f32),
        "grm_nm": rng.normal(size=(n, 2, 3)).astype(f32),
        "cop_m": rng.normal(size=(n, 2, 3)).astype(f32),
        "grf_total_n": rng.normal(size=(n, 3)).astype(f32),
    }
    window = {
        "window_start": starts,
        "joint_pos_coef_m": rng.normal(size=(w, 4, 24, 3)).astype(f32),
        "joint_pos_fit_rmse_m": rng.random(w).astype(f32),
        "joint_rot_coef_rad": rng.normal(size=(w, 4, 24, 3)).astype(f32),
        "joint_rot_fit_rmse_rad": rng.random(w).astype(f32),
        "grf_coef_n": rng.normal(size=(w, 4, 2, 3)).astype(f32),
        "grm_coef_nm": rng.normal(size=(w, 4, 2, 3)).astype(f32),
        "grf_fit_rmse_n": rng.random(w).astype(f32),
    }
    _, dataset, subject, name = key.split("/")
    values = {
        "seq_id": key, "seq_source": "amass", "seq_dataset": dataset, "seq_subject": subject, "seq_name": name,
        "seq_path": f"{dataset}/{subject}/{name}.npz", "seq_sha256": "0" * 64, "seq_split": "train",
        "seq_gender": "neutral", "seq_skeleton": "anthropometric", "seq_height_m": 1.7, "seq_mass_kg": 70.0,
        "seq_ground_offset_m": 0.0, "seq_source_fps_hz": 120.0, "seq_duration_s": (n - 1) / 30.0,
        "seq_betas": np.zeros(16, f32), "seq_bone_length_m": np.full(23, 0.2, f32),
        "seq_source_sha256": "0" * 64,  # staged too, so the sequence also fits the newest schema
    }
    return frame, window, values


def write_old_store(folder: Path, frames: int, seq_frames: int = 3000) -> Path:
    from pipeline.dataset.assembly import store_attrs
    from pipeline.process import BuildConfig
    from pipeline.store import plan_store, stage_sequence, write_store

    rng = np.random.default_rng(0)
    staged = []
    for i, a in enumerate(range(0, frames, seq_frames)):
        n = min(seq_frames, frames - a)
        staged.append(stage_sequence(folder / "staging", f"amass/Bench/S{i % 50:02d}/seq_{i:05d}", *_payload(
            f"amass/Bench/S{i % 50:02d}/seq_{i:05d}", n, rng)))
    attrs, coords = store_attrs(BuildConfig())
    declared = {k: v for k, v in coords.items() if k != "actuated_joint"}
    plan = plan_store("ground_reaction", staged, attrs, declared, schema_version="1.1.0")
    path = write_store(plan, folder / "ground_reaction.zarr")
    shutil.rmtree(folder / "staging")
    return path


def _group_attr(path: Path) -> int:
    """Frames of a store (length of its frame dim)."""
    meta = json.loads((path / "frame_sequence" / "zarr.json").read_text())
    return meta["shape"][0]


def _size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="reuse DIR/ground_reaction.zarr from an earlier run")
    args = ap.parse_args()

    from pipeline.store import migrate_store, validate_store

    work = Path(args.dir or tempfile.mkdtemp(prefix="migrate-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = work / "ground_reaction.zarr"
    for leftover in ("copy.zarr", "linked.zarr", "out"):
        shutil.rmtree(work / leftover, ignore_errors=True)
    written = not (args.reuse and store.is_dir())
    if written:
        shutil.rmtree(store, ignore_errors=True)
        store = write_old_store(work, args.frames)
    n_files, n_bytes = _size(store)
    out: dict = {"frames": int(_group_attr(store)), "files": n_files, "mib": round(n_bytes / 2**20, 1),
                 "write_s": round(time.perf_counter() - t0, 2) if written else None}

    def timed(label: str, fn) -> None:
        os.sync()  # earlier steps' write-back is not charged to this one
        t = time.perf_counter()
        fn()
        out[label] = round(time.perf_counter() - t, 3)
        os.sync()
        out[label[: -len("_s")] + "_synced_s"] = round(time.perf_counter() - t, 3)

    from pipeline.store.migrations import _link_tree
    from pipeline.store.staging import replace_dir
    from pipeline.store.writer import temporary_path

    copy = work / "copy.zarr"
    timed("copytree_s", lambda: shutil.copytree(store, copy))
    timed("link_tree_s", lambda: _link_tree(copy, work / "linked.zarr"))
    timed("rmtree_linked_s", lambda: shutil.rmtree(work / "linked.zarr"))

    def copy_swap_delete() -> None:
        tmp = temporary_path(copy)
        shutil.copytree(copy, tmp)
        replace_dir(tmp, copy)

    timed("copy_swap_delete_s", copy_swap_delete)
    timed("validate_structure_s", lambda: validate_store(copy, index=False))
    timed("validate_full_s", lambda: validate_store(copy))
    timed("migrate_in_place_s", lambda: migrate_store(copy))
    assert validate_store(copy) == []
    shutil.rmtree(copy)
    shutil.copytree(store, copy)
    timed("migrate_in_place_full_check_s", lambda: migrate_store(copy, full_check=True))
    timed("migrate_out_s", lambda: migrate_store(store, work / "out" / "ground_reaction.zarr"))
    out["in_place_vs_copy_swap_delete"] = round(out["migrate_in_place_synced_s"] / out["copy_swap_delete_synced_s"], 3)
    print(json.dumps(out, indent=2))
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
