"""Incremental ingestion and release benchmark, against a full build measured in the same run.

    python benchmarks/ingest_bench.py --hours 0.5 --new-frac 0.05

On a generated corpus (simulation off unless ``--simulate``):

1. full build of the corpus into a dataset root (the baseline);
2. release 1.0.0;
3. a no-op re-run (nothing changed): wall time, and the stores' bytes are checked unchanged;
4. ``--new-frac`` of the files added (copies under a new subject), then an incremental run;
5. one file changed, then an incremental run; 6. one file removed, then an incremental run —
   each: wall time vs the full build, and the store bytes written (objects that are new files:
   appended shards, per-sequence arrays, metadata) vs the stores' size;
7. ``dynaset compact``: wall time; the stores are checked byte-identical to a fresh build of the
   final corpus (``--check-fresh``, one more full build);
8. release 1.1.0: wall time, objects hard-linked to the parent vs new, and the disk used by the two
   releases (distinct inodes) vs their apparent size;
9. ``verify`` of both releases: wall time and MB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.glob("*.zarr/**/*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def store_objects(root: Path) -> dict[str, tuple[int, int]]:
    """Every store object: relative path → (inode, size)."""
    out = {}
    for p in root.glob("*.zarr/**/*"):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (st.st_ino, st.st_size)
    return out


def written_bytes(before: dict, after: dict) -> int:
    """Bytes of the store objects that are new files (a kept object keeps its inode)."""
    return sum(size for k, (ino, size) in after.items() if before.get(k, (None,))[0] != ino)


def disk_usage(paths: list[Path]) -> tuple[int, int]:
    """(bytes on distinct inodes, apparent bytes) of every file under ``paths``."""
    seen, real, apparent = set(), 0, 0
    for base in paths:
        for dirpath, _, files in os.walk(base):
            for name in files:
                st = os.stat(os.path.join(dirpath, name))
                apparent += st.st_size
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    real += st.st_size
    return real, apparent


def phase_seconds(root: Path, wall: float) -> dict[str, float]:
    """Where an incremental run's wall time went, from its ``build.json`` (``wall_seconds``): the
    flow's phases, and what lies outside them (the Dask cluster's start and tear-down, the CLI)."""
    import json

    ws = json.loads((root / "build.json").read_text()).get("wall_seconds", {})
    total = ws.get("total", 0.0)
    out = {"outside the phases (cluster start/stop, report, CLI)": wall - total}
    out.update({k: v for k, v in ws.items() if k != "total"})
    out["rest of the flow (ledger, summary)"] = total - ws.get("process", 0.0) - ws.get("simulate", 0.0) - ws.get(
        "assemble", 0.0) - ws.get("ledger", 0.0) - ws.get("prune", 0.0) - ws.get("discover", 0.0) - ws.get(
        "report_wait", 0.0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=0.5)
    ap.add_argument("--new-frac", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--simulate", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--check-fresh", action="store_true",
                    help="also build the final corpus afresh and check the compacted stores equal it byte for byte")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dynaset-ingest-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(work / ".prefect"))
    from flows.runtime import prefect_api, prefect_environment

    prefect_environment(work / ".prefect")
    from pipeline.cli import main as cli
    from pipeline.demo import generate_corpus
    from pipeline.release import publish, verify
    from pipeline.store.location import LocalLocation

    corpus, root = work / "corpus", work / "root"
    files = sorted(generate_corpus(corpus, n_subjects=4, hours=args.hours, seed=0))
    sim = [] if args.simulate else ["--no-simulate"]
    build = ["build", "--source", f"amass={corpus}", "--out", str(root), "--workers", str(args.workers), *sim]
    with prefect_api():
        t0 = time.perf_counter()
        assert cli(build) == 0
        t_full = time.perf_counter() - t0
        loc = LocalLocation(root)
        t0 = time.perf_counter()
        publish(loc, "1.0.0")
        t_rel1 = time.perf_counter() - t0
        d0 = digest(root)
        t0 = time.perf_counter()
        assert cli(["ingest", str(root), "--workers", str(args.workers)]) == 0
        t_noop = time.perf_counter() - t0
        assert digest(root) == d0, "a no-op run changed the stores"

        n_new = max(1, int(round(args.new_frac * len(files))))
        new_dir = corpus / "DynasetSynth" / "S_new"
        new_dir.mkdir()

        breakdowns: list[dict] = []

        def step(change) -> tuple[float, int, int]:
            change()
            before = store_objects(root)
            t0 = time.perf_counter()
            assert cli(["ingest", str(root), "--workers", str(args.workers)]) == 0
            t = time.perf_counter() - t0
            after = store_objects(root)
            breakdowns.append(phase_seconds(root, t))
            return t, written_bytes(before, after), sum(size for _, size in after.values())

        def add():
            for i, f in enumerate(files[:n_new]):
                shutil.copyfile(f, new_dir / f"copy{i:03d}_{f.name}")

        def change_one():
            data = dict(np.load(files[-1], allow_pickle=False))
            data["trans"] = data["trans"] + np.array([0.05, 0.0, 0.0])
            np.savez(files[-1], **data)

        steps = {f"+{n_new} files ({args.new_frac:.0%})": step(add), "1 file changed": step(change_one),
                 "1 file removed": step(lambda: files[-2].unlink())}
        t0 = time.perf_counter()
        assert cli(["compact", str(root), "--workers", str(args.workers)]) == 0
        t_compact = time.perf_counter() - t0
        same_as_fresh = None
        if args.check_fresh:
            fresh = work / "fresh"
            assert cli(["build", "--source", f"amass={corpus}", "--out", str(fresh), "--workers", str(args.workers),
                        *sim]) == 0
            same_as_fresh = digest(root) == digest(fresh)
        t0 = time.perf_counter()
        m2 = publish(loc, "1.1.0")
        t_rel2 = time.perf_counter() - t0
        t0 = time.perf_counter()
        problems = verify(loc, "1.0.0") + verify(loc, "1.1.0")
        t_verify = time.perf_counter() - t0
    rel1, rel2 = root / "releases" / "1.0.0", root / "releases" / "1.1.0"
    real, apparent = disk_usage([rel1, rel2])
    cur_real, _ = disk_usage([root / f"{s}.zarr" for s in ("motion", "contact", "ground_reaction", "torque")])
    both_real, _ = disk_usage([rel1, rel2] + [root / f"{s}.zarr" for s in ("motion", "contact", "ground_reaction", "torque")])
    m1_objects = sum(1 for _ in rel1.rglob("*") if _.is_file())

    print(f"corpus: {len(files)} files ({args.hours} h); workers {args.workers}; "
          f"simulation {'on' if args.simulate else 'off'}")
    print(f"full build (baseline)        {t_full:7.1f} s")
    print(f"no-op re-run                 {t_noop:7.1f} s   {t_noop / t_full:5.2f} x full   stores byte-identical")
    for name, (t, wrote, total) in steps.items():
        print(f"incremental {name:<17}{t:7.1f} s   {t / t_full:5.2f} x full   wrote {wrote / 1e6:6.1f} MB of "
              f"{total / 1e6:.1f} MB of stores ({wrote / max(total, 1):.1%})")
    for name, b in zip(steps, breakdowns):
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in b.items()))
    fresh_note = {None: "not checked (--check-fresh)", True: "byte-identical to a fresh build",
                  False: "DIFFERS from a fresh build"}[same_as_fresh]
    print(f"compact                      {t_compact:7.1f} s   {t_compact / t_full:5.2f} x full   {fresh_note}")
    print(f"release 1.0.0                {t_rel1:7.1f} s   ({m1_objects} objects)")
    print(f"release 1.1.0                {t_rel2:7.1f} s   {m2['_linked_objects']} hard links of "
          f"{len(m2['objects'])} objects")
    print(f"verify 1.0.0 + 1.1.0         {t_verify:7.1f} s   {apparent / 1e6 / max(t_verify, 1e-9):6.0f} MB/s; "
          f"problems: {len(problems)}")
    print(f"disk: two releases take {real / 1e6:.1f} MB for {apparent / 1e6:.1f} MB apparent "
          f"({real / apparent:.2f}); with the current stores {both_real / 1e6:.1f} MB "
          f"(current alone {cur_real / 1e6:.1f} MB)")
    if not args.keep:
        for p in work.rglob("*"):
            try:
                p.chmod(0o755 if p.is_dir() else 0o644)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
