"""Loader benchmark: ImDyS windows/s from memory vs. from Zarr, single process and with workers.

    python benchmarks/loader_bench.py                       # builds a 20-min motion store first
    python benchmarks/loader_bench.py --store out/motion.zarr --epochs 2

Prints, in one run, for the same store and the same window assembly code (w = 2, markers,
batch 256, shuffled, default edge="clamp"):

* ``memory``: ``ImDySWindows(in_memory=True)`` (numpy copy of the selected sequences) — the
  ceiling;
* ``zarr``: the Zarr loader in the main process (chunk cache ``--cache-mb``, default 256 MiB);
* ``zarr 8 MiB cache``: a cache smaller than the store (~30 MiB decoded): random batches (capped
  at 30 batches: nearly every window misses), then ``ChunkShuffleSampler`` (chunk-local batches);
* ``zarr workers``: ``DataLoader(num_workers=2, batch_size=256)`` (persistent workers, each with
  its own cache), with random and with chunk shuffling.

Each configuration runs in a fresh subprocess (so peak RSS is its own): windows/s of every epoch
(epoch 1 starts cold: store opened, cache empty, workers started) and the peak RSS of the process
plus its workers, sampled every 10 ms with psutil. The ratio column is the epoch's rate over the
in-memory rate of the same epoch (goal >= 0.25).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class RssSampler(threading.Thread):
    """Peak RSS of this process plus all its descendants, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.01):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak = 0

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop_event.is_set():
            try:
                total = me.memory_info().rss
                for c in me.children(recursive=True):
                    try:
                        total += c.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self.stop_event.wait(self.interval)

    def stop(self) -> int:
        self.stop_event.set()
        self.join()
        return self.peak


def build_store(out: Path, minutes: float, seed: int = 0) -> tuple[Path, dict]:
    """A motion store of >= ``minutes`` of generated motion, built directly (no Prefect)."""
    from pipeline.dataset.assembly import store_attrs
    from pipeline.demo import generate_corpus
    from pipeline.process import BuildConfig, process_motion, stage_payload
    from pipeline.sources.amass import read_amass
    from pipeline.store import load_schema, plan_store, stage_sequence, write_store

    t0 = time.perf_counter()
    corpus = out / "corpus"
    files = generate_corpus(corpus, n_subjects=8, hours=minutes / 60.0, seed=seed)
    cfg = BuildConfig()
    staged = []
    for f in files:
        p = process_motion(read_amass(f, corpus), cfg)
        fa, wa, sv = stage_payload(p)
        staged.append(stage_sequence(out / "staging", p.motion.provenance.sequence_id, fa, wa, sv, subsets=p.subsets))
    staged.sort(key=lambda s: s.key)
    attrs, coords = store_attrs(cfg)
    declared = load_schema("motion").coords
    plan = plan_store("motion", staged, attrs, {k: v for k, v in coords.items() if k in declared})
    path = write_store(plan, out / "motion.zarr")
    shutil.rmtree(out / "staging", ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    info = {"files": len(files), "frames": plan.n_frames, "minutes": plan.n_frames / 30.0 / 60.0,
            "build_s": time.perf_counter() - t0}
    return path, info


CONFIGS = {
    "memory": dict(in_memory=True),
    "zarr": dict(),
    "zarr 8 MiB cache, random (30 batches)": dict(cache_mb=8, batches=30),
    "zarr 8 MiB cache, chunk shuffle": dict(cache_mb=8, chunk_shuffle=True),
    "zarr 2 workers": dict(num_workers=2),
    "zarr 2 workers, 8 MiB cache, chunk shuffle": dict(num_workers=2, cache_mb=8, chunk_shuffle=True),
}
"""Configurations; ``batches`` caps an epoch (random access through a cache smaller than the
store re-decodes about one chunk per window: far too slow for a whole epoch)."""


def run_config(store: str, name: str, epochs: int, batch_size: int, cache_mb: float, representation: str) -> dict:
    """One configuration in this process; returns its figures."""
    import numpy as np

    from pipeline.loaders import ImDySWindows, make_loader

    cfg = dict(CONFIGS[name])
    sampler = RssSampler()
    sampler.start()
    rss0 = psutil.Process().memory_info().rss
    ds = ImDySWindows(store, None, representation=representation, in_memory=cfg.pop("in_memory", False),
                      cache_mb=cfg.pop("cache_mb", cache_mb))
    nw = cfg.pop("num_workers", 0)
    cap = cfg.pop("batches", None)
    loader = make_loader(ds, batch_size=batch_size, seed=0, num_workers=nw, persistent_workers=nw > 0, **cfg)
    rates, check = [], 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = 0
        for k, batch in enumerate(loader):
            n += int(batch["state"].shape[0])
            check += float(batch["state"][:, 2, 0, 2].double().sum())  # touch the data
            if cap is not None and k + 1 >= cap:
                break
        rates.append(n / (time.perf_counter() - t0))
    peak = sampler.stop()
    stats = ds.cache_stats()
    return {"config": name, "windows": len(ds), "rates": rates, "peak_rss_mb": peak / 2**20,
            "rss_before_mb": rss0 / 2**20, "checksum": round(check, 3),
            "cache_main": None if stats is None else vars(stats), "np": np.__version__}


def bare_assembly_rate(store: str, batch_size: int, representation: str, seconds: float = 2.0) -> float:
    """windows/s of ``assemble_imdys`` alone on the in-memory copy (no dataset, no torch)."""
    import numpy as np

    from pipeline.loaders import ImDySWindows
    from pipeline.loaders.windows import assemble_imdys

    ds = ImDySWindows(store, None, representation=representation, in_memory=True, as_tensors=False)
    rng = np.random.default_rng(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        row, t = ds.table.locate(rng.integers(0, len(ds), batch_size))
        assemble_imdys(ds.source, ds.config, ds.table.frame_offset[row], ds.table.count[row], t)
        n += batch_size
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="motion (or any subset) store to read; default: build one")
    ap.add_argument("--minutes", type=float, default=20.0, help="generated motion when building (default 20)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--cache-mb", type=float, default=256.0)
    ap.add_argument("--representation", default="markers", choices=["markers", "joints", "rot6d"])
    ap.add_argument("--only", action="append", help="run only these configurations (repeatable)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--_config", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._config:  # child: one configuration
        res = run_config(args.store, args._config, args.epochs, args.batch_size, args.cache_mb, args.representation)
        print(json.dumps(res))
        return 0

    tmp = None
    build = None
    if args.store:
        store = args.store
    else:
        tmp = Path(tempfile.mkdtemp(prefix="dynaset-loader-bench-"))
        path, build = build_store(tmp, args.minutes)
        store = str(path)
        print(f"built {store}: {build['files']} files, {build['frames']} frames = {build['minutes']:.1f} min "
              f"at 30 FPS in {build['build_s']:.1f} s", flush=True)
    try:
        import zarr

        g = zarr.open_group(store, mode="r")
        size_mb = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file()) / 2**20 if "://" not in store else float("nan")
        print(f"store {store}: {g['frame_sequence'].shape[0]} frames, {g['seq_frame_count'].shape[0]} sequences, "
              f"{size_mb:.1f} MiB on disk; w=2 ({args.representation}), batch {args.batch_size}, "
              f"{psutil.cpu_count()} CPUs", flush=True)
        bare = bare_assembly_rate(store, args.batch_size, args.representation)
        print(f"bare assemble_imdys on the in-memory copy: {bare:,.0f} windows/s", flush=True)
        results = []
        for name in CONFIGS:
            if args.only and name not in args.only:
                continue
            cmd = [sys.executable, __file__, "--store", store, "--_config", name, "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--cache-mb", str(args.cache_mb),
                   "--representation", args.representation]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name}: FAILED\n{out.stderr[-3000:]}", flush=True)
                continue
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"  ran {name}: " + ", ".join(f"{x:,.0f}" for x in r["rates"]) + " windows/s", flush=True)
        base = next((r for r in results if r["config"] == "memory"), None)
        print()
        head = "".join(f"  epoch {e + 1} win/s   ratio" for e in range(args.epochs))
        print(f"{'configuration':45s}{head}   peak RSS MiB")
        for r in results:
            cells = ""
            for e, rate in enumerate(r["rates"]):
                ratio = rate / base["rates"][e] if base else float("nan")
                cells += f"  {rate:13,.0f}   {ratio:5.2f}"
            print(f"{r['config']:45s}{cells}   {r['peak_rss_mb']:8.0f}")
        checks = {r["checksum"] for r in results if "batches" not in CONFIGS[r["config"]]}
        print(f"\nsame windows in every configuration (checksum of state z): {len(checks) == 1}")
        if args.json:
            Path(args.json).write_text(json.dumps({"build": build, "bare": bare, "results": results}, indent=1))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
