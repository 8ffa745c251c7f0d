"""The build's logic without Prefect (``pipeline.dataset``): batching, dedupe, run planning, the
serial executor, and the driver on a small corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.dataset.assembly import dedupe
from pipeline.dataset.executor import SerialExecutor
from pipeline.dataset.files import batch_jobs
from pipeline.dataset.records import FileOutcome
from pipeline.records import QuarantineEntry
from pipeline.store import StagedSequence


def _staged(key: str) -> StagedSequence:
    return StagedSequence(key, Path("/nowhere") / key, 10, 1, ("motion", "contact"))


def test_batch_jobs_covers_every_job_in_order():
    jobs = list(range(37))
    batches = batch_jobs(jobs, workers=2)
    assert [j for b in batches for j in b] == jobs
    assert max(len(b) for b in batches) <= 16 and len(batches) >= 8
    assert batch_jobs([], 2) == []


def test_dedupe_keeps_the_first_file_in_source_path_order():
    a = FileOutcome("amass", "b.npz", (_staged("x"), _staged("y")))
    b = FileOutcome("amass", "a.npz", (_staged("x"),))
    c = FileOutcome("amass", "c.npz", (), QuarantineEntry("amass:c.npz", "ingest", "bad"))
    keep, dups = dedupe([a, b, c])
    assert [s.key for s in keep] == ["x"]  # a.npz owns x; b.npz (x, y) is quarantined whole
    assert [q.path for q in dups] == ["amass:b.npz"] and "duplicate sequence id 'x'" in dups[0].reason


def test_store_groups_balance_stores_over_workers():
    """Creating and checking stores runs in at most one task per worker, the largest stores spread
    first; one worker gets one task with every store."""
    from types import SimpleNamespace

    from pipeline.dataset.assembly import _store_groups

    stores = [(SimpleNamespace(n_frames=f, n_windows=w), f"/tmp/{name}", name)
              for name, f, w in (("motion", 100, 10), ("contact", 90, 9), ("ground_reaction", 50, 5),
                                 ("torque", 40, 4))]
    one = _store_groups(stores, 1)
    assert len(one) == 1 and sorted(s[2] for s in one[0]) == sorted(s[2] for s in stores)
    two = _store_groups(stores, 2)
    assert [[s[2] for s in g] for g in two] == [["motion", "torque"], ["contact", "ground_reaction"]]
    assert len(_store_groups(stores, 8)) == 4 and _store_groups([], 2) == []


def test_serial_executor_defers_errors_to_result():
    ex = SerialExecutor()
    ok = ex.submit(lambda a, b: a + b, 1, 2)
    bad = ex.submit(lambda: 1 / 0)
    ex.wait([ok, bad])
    assert ok.result() == 3 and list(ex.as_completed([ok])) == [ok]
    with pytest.raises(ZeroDivisionError):
        bad.result()


def test_nothing_under_pipeline_imports_flows():
    root = Path(__file__).resolve().parents[1] / "pipeline"
    offenders = [p for p in root.rglob("*.py") if p.name != "cli.py"
                 and ("from flows" in p.read_text() or "import flows" in p.read_text())]
    assert offenders == []


# --- incremental ingestion: append + tombstones, compaction == fresh build ----------------------

def _digest(root: Path) -> dict[str, str]:
    """sha256 of every store object, by path relative to the root."""
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("*.zarr/**/*")) if p.is_file()}


def _inodes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_ino for p in root.glob("*.zarr/**/*") if p.is_file()}


@pytest.fixture(scope="module")
def incremental(tmp_path_factory):
    """A corpus built once, then 3 files added, one changed and one removed (serial driver), then
    compacted; and a fresh build of the final corpus."""
    import shutil

    import numpy as np

    from pipeline.dataset.build import build_dataset
    from pipeline.demo import generate_corpus
    from pipeline.process import BuildConfig
    from pipeline.sources.base import SourceSpec
    from pipeline.store import Chunking

    base = tmp_path_factory.mktemp("incremental")
    corpus = base / "corpus"
    files = sorted(generate_corpus(corpus, n_subjects=2, seed=3))
    cfg = BuildConfig(simulate=None)
    small = Chunking(frame_chunk=64, frame_shard=256, window_chunk=16, window_shard=64, shards_per_region=2)
    src = [SourceSpec("amass", corpus)]
    root = base / "root"

    def run(**kw):
        return build_dataset(src, root, cfg, small, workers=1, report=False, **kw)

    first = run()
    before = _digest(root)
    inodes = _inodes(root)
    new_dir = corpus / "DynasetSynth" / "S_new"
    new_dir.mkdir()
    for i, f in enumerate(files[:3]):
        shutil.copyfile(f, new_dir / f"copy{i}_{f.name}")
    data = dict(np.load(files[-1], allow_pickle=False))
    data["trans"] = data["trans"] + np.array([0.05, 0.0, 0.0])
    np.savez(files[-1], **data)
    files[-2].unlink()
    inc = run()
    after_inc = _digest(root)
    inodes_inc = _inodes(root)
    snapshot = base / "after-incremental"
    shutil.copytree(root, snapshot)
    noop = run()
    compacted = run(compact=True)
    fresh_root = base / "fresh"
    fresh = build_dataset(src, fresh_root, cfg, small, workers=1, report=False)
    return {"root": root, "snapshot": snapshot, "fresh_root": fresh_root, "first": first, "inc": inc, "noop": noop,
            "compacted": compacted, "fresh": fresh, "before": before, "after_inc": after_inc,
            "inodes": inodes, "inodes_inc": inodes_inc, "n_files": len(files), "corpus": corpus}


def test_incremental_run_appends_and_tombstones_only_what_changed(incremental):
    inc = incremental["inc"]
    assert (inc["files_new"], inc["files_changed"], inc["files_removed"]) == (3, 1, 1)
    for subset in ("motion", "contact"):
        s = inc["subsets"][subset]
        assert s["mode"] == "append" and s["written_sequences"] == 4  # 3 new + the changed file's new version
        assert s["tombstoned"] == 2  # the changed file's old version and the removed file
    before, after = incremental["before"], incremental["after_inc"]
    first = incremental["first"]["subsets"]["motion"]
    # what was rewritten: only objects of the appended tail, the per-sequence arrays and metadata
    changed = {k for k in after if before.get(k) != after[k]}
    from pipeline.store import load_schema

    schema = load_schema("motion")
    tail = {"frame": first["frames"] // 256, "window": first["windows"] // 64}  # shard holding the old last record
    n_shards = 0
    for k in changed:
        store, name, *rest = k.split("/")
        key = ".".join(rest).replace("/", ".").split(".")  # c.<k>.0.0 (or c/<k>/0/0 in older stores)
        if store == "motion.zarr" and key[:1] == ["c"] and len(key) > 1 and name in schema.arrays:
            dim = schema.arrays[name].dims[0]
            if dim in tail:
                n_shards += 1
                assert int(key[1]) >= tail[dim], k  # no shard before the appended tail is rewritten
    assert n_shards  # the appended tail's shards were found
    written = sum(1 for k in changed if k.startswith("motion.zarr/"))
    assert written < 0.5 * sum(1 for k in after if k.startswith("motion.zarr/"))
    unchanged = [k for k in before if k in after and before[k] == after[k]]
    assert len(unchanged) > len(changed)  # most objects were kept, and kept as the same files (hard links)
    same_inode = [k for k in unchanged if incremental["inodes"][k] == incremental["inodes_inc"][k]]
    assert same_inode and len(same_inode) >= len(unchanged) - 4 * 2  # zarr.json of a store may be rewritten


def test_removing_a_file_rewrites_only_the_tombstone_mask(tmp_path):
    """A run that only removes a file keeps every store object but ``seq_tombstone``'s chunk and the
    metadata as the same files (hard links); replaced stores are deleted, none left in the root."""
    from pipeline.dataset.build import build_dataset
    from pipeline.demo import generate_corpus
    from pipeline.process import BuildConfig
    from pipeline.sources.base import SourceSpec
    from pipeline.store import Chunking

    corpus, root = tmp_path / "corpus", tmp_path / "root"
    files = sorted(generate_corpus(corpus, n_subjects=1, seed=4))
    small = Chunking(frame_chunk=64, frame_shard=256, window_chunk=16, window_shard=64, shards_per_region=2)

    def run():
        return build_dataset([SourceSpec("amass", corpus)], root, BuildConfig(simulate=None), small, workers=1,
                             report=False)

    run()
    before = _inodes(root)
    files[1].unlink()
    summary = run()
    assert summary["subsets"]["motion"]["mode"] == "append" and summary["subsets"]["motion"]["tombstoned"] == 1
    after = _inodes(root)
    new = {k for k in after if before.get(k) != after[k]}
    assert new and all(k.endswith("zarr.json") or "/seq_tombstone/" in k for k in new), sorted(new)
    assert any("motion.zarr/seq_tombstone/" in k for k in new)
    assert not list(root.glob(".*.trash-*")) and not list(root.glob(".*.tmp-*"))


def test_readers_skip_tombstoned_sequences(incremental):
    import xarray as xr

    from pipeline.loaders import open_release

    root = incremental["snapshot"]
    raw = xr.open_zarr(root / "motion.zarr")  # plain xarray: every stored sequence, with the mask
    assert int(raw.seq_tombstone.sum()) == 2
    ds, index = open_release(root, "motion")
    fresh, _ = open_release(incremental["fresh_root"], "motion")
    assert sorted(index["seq_id"]) == sorted(fresh.seq_id.values.tolist())
    assert ds.sizes["frame"] == fresh.sizes["frame"] and ds.sizes["window"] == fresh.sizes["window"]
    i = index["seq_id"].tolist().index(str(fresh.seq_id.values[0]))
    a, n = int(ds.seq_frame_offset[i]), int(ds.seq_frame_count[i])
    b = int(fresh.seq_frame_offset[0])
    np.testing.assert_array_equal(ds.joint_pos_m[a:a + n].values, fresh.joint_pos_m[b:b + n].values)


def test_noop_stays_untouched_and_compaction_equals_a_fresh_build(incremental):
    assert incremental["noop"]["up_to_date"] is True
    assert incremental["compacted"]["subsets"]["motion"]["mode"] == "full"
    assert _digest(incremental["root"]) == _digest(incremental["fresh_root"])
    stats = json.loads((incremental["root"] / "stats.json").read_text())["subsets"]["motion"]["arrays"]
    fresh = json.loads((incremental["fresh_root"] / "stats.json").read_text())["subsets"]["motion"]["arrays"]
    assert stats == fresh


def test_statistics_and_selection_of_an_appended_store_cover_live_sequences_only(incremental):
    from pipeline.loaders import read_index, select_sequences

    snap = json.loads((incremental["snapshot"] / "stats.json").read_text())["subsets"]["motion"]
    fresh = json.loads((incremental["fresh_root"] / "stats.json").read_text())["subsets"]["motion"]
    assert snap["n_frames"] == fresh["n_frames"] and snap["n_sequences_tombstoned"] == 2
    for name in ("joint_pos_m", "contact", "joint_pos_coef_m", "seq_height_m"):
        a, b = snap["arrays"].get(name), fresh["arrays"].get(name)
        if a is None:
            continue
        assert a["count"] == b["count"], name
        np.testing.assert_allclose(np.asarray(a["mean"], float), np.asarray(b["mean"], float), rtol=1e-9, atol=1e-12)
        assert a["min"] == b["min"] and a["max"] == b["max"], name
    index, _ = read_index(incremental["snapshot"] / "motion.zarr")
    assert len(select_sequences(index)) == len(index) - 2


def test_statistics_reuse_unchanged_blocks_with_the_same_results(incremental):
    """After an incremental run, stats.json was computed reading only new and tombstoned blocks
    (the per-block cache of the root); a computation from scratch gives exactly the same numbers."""
    from pipeline.loaders.stats import compute_stats

    snap = json.loads((incremental["snapshot"] / "stats.json").read_text())["subsets"]["motion"]
    assert snap["blocks_reused"] > 0
    scratch = compute_stats(incremental["snapshot"] / "motion.zarr")
    assert scratch["arrays"] == snap["arrays"] and scratch["canonical"] == snap["canonical"]


def test_statistics_of_an_appended_store_merge_from_the_last_checkpoint(incremental, tmp_path, monkeypatch):
    """When a store's last shard changes (an append rewrites the shard holding the old last record),
    a cached computation reads only the blocks over it and merges from the fold checkpoint before
    them, with the very same figures as a computation from scratch."""
    import os
    import shutil

    from pipeline.loaders import stats as st

    monkeypatch.setattr(st, "CHECKPOINT_BLOCKS", 2)
    store = tmp_path / "motion.zarr"
    shutil.copytree(incremental["fresh_root"] / "motion.zarr", store)
    cache = tmp_path / "stats" / "motion.npz"
    cold = st.compute_stats(store, block_cache=cache)
    n_blocks = cold["blocks_merged"]
    assert cold["blocks_reused"] == 0 and n_blocks > 8  # the fixture's shards are 256 frames, 64 windows
    warm = st.compute_stats(store, block_cache=cache)
    assert warm["blocks_merged"] == 0 and warm["blocks_reused"] == n_blocks  # resumed after the last block
    last = max((store / "frame_sequence").glob("c.*"), key=lambda p: int(p.name.split(".")[1]))
    t = last.stat().st_mtime_ns + 10**9
    os.utime(last, ns=(t, t))  # "rewritten": the frame blocks over (and reading into) the last shard change
    again = st.compute_stats(store, block_cache=cache)
    assert 0 < again["blocks_merged"] <= 2 + st.CHECKPOINT_BLOCKS, again["blocks_merged"]
    assert again["blocks_reused"] == n_blocks - 2
    scratch = st.compute_stats(store)
    drop = ("seconds", "blocks_reused", "blocks_merged")
    assert {k: v for k, v in again.items() if k not in drop} == {k: v for k, v in scratch.items() if k not in drop}


def test_statistics_split_over_parallel_tasks_equal_one_task(incremental, tmp_path, monkeypatch):
    """A large store's statistics computed as several part tasks then a merge: the same stats.json
    figures as one task (the fresh build's), no part file left behind."""
    import shutil

    from pipeline.dataset import assembly
    from pipeline.dataset.executor import SerialExecutor

    root = tmp_path / "root"
    shutil.copytree(incremental["fresh_root"], root)
    shutil.rmtree(root / assembly.STATS_CACHE_DIR)
    monkeypatch.setattr(assembly, "STATS_FRAMES_PER_PART", 64)
    stores = {s: str(root / f"{s}.zarr") for s in ("motion", "contact", "ground_reaction", "torque")}
    assert assembly.stats_parts(stores["motion"], 3) == 3
    path = assembly.write_stats(stores, root, SerialExecutor(), same_as={"contact": "motion"}, tasks=3)
    got = json.loads(path.read_text())["subsets"]
    want = json.loads((incremental["fresh_root"] / "stats.json").read_text())["subsets"]
    for subset in stores:
        assert got[subset]["arrays"] == want[subset]["arrays"], subset
        assert got[subset]["canonical"] == want[subset]["canonical"], subset
    assert not list((root / assembly.STATS_CACHE_DIR).glob("*part*"))


class _Recording(SerialExecutor):
    """A serial executor that records every submission: (function name, args, priority)."""

    def __init__(self):
        super().__init__()
        self.log: list[tuple[str, tuple, int]] = []

    def submit(self, fn, *args, resources=None, priority=0):
        self.log.append((fn.__name__, args, priority))
        return super().submit(fn, *args, resources=resources, priority=priority)


def test_statistics_merge_depends_on_its_parts_and_the_hook_follows_every_first_round_task(
        incremental, tmp_path, monkeypatch):
    """A split store's merge is submitted with its parts' futures as an argument (the executor
    starts it when they finish: no round trip through the driver), before ``submitted`` is called;
    the hook sees every store's statistics already submitted."""
    import shutil

    from pipeline.dataset import assembly

    root = tmp_path / "root"
    shutil.copytree(incremental["fresh_root"], root)
    shutil.rmtree(root / assembly.STATS_CACHE_DIR)
    monkeypatch.setattr(assembly, "STATS_FRAMES_PER_PART", 64)
    stores = {s: str(root / f"{s}.zarr") for s in ("motion", "contact", "ground_reaction", "torque")}
    ex = _Recording()
    at_hook: list[list] = []
    assembly.write_stats(stores, root, ex, same_as={"contact": "motion"}, tasks=3,
                         submitted=lambda: at_hook.append(list(ex.log)))
    assert len(at_hook) == 1 and at_hook[0] == ex.log  # nothing is submitted after the hook
    motion = [args for name, args, _ in ex.log if name == "store_stats" and args[0] == stores["motion"]]
    parts = [a for a in motion if len(a) > 3 and a[3] is not None]
    merge = [a for a in motion if len(a) > 4 and a[3] is None and a[4] == 3]
    assert len(parts) == 3 and len(merge) == 1
    after = merge[0][5]
    assert len(after) == 3 and all(isinstance(r, dict) for r in (f.result() for f in after))
    assert {args[0] for name, args, _ in ex.log} == set(stores.values())


def test_a_failing_region_write_leaves_the_stores_as_they_were(incremental, tmp_path, monkeypatch):
    """The writes' phases are submitted at once (each depends on the previous phase's futures): a
    region writer that fails still fails the build with its own error, removes every temporary
    store and leaves the existing stores byte for byte."""
    import shutil

    from pipeline.dataset import assembly
    from pipeline.dataset.build import build_dataset
    from pipeline.process import BuildConfig
    from pipeline.sources.base import SourceSpec
    from pipeline.store import Chunking

    root = tmp_path / "root"
    shutil.copytree(incremental["snapshot"], root)  # appended, not compact: compact=True rewrites all
    before = _digest(root)

    def broken(plan, tmp_path, dim):
        raise OSError("disk full (test)")

    monkeypatch.setattr(assembly, "write_region", broken)
    small = Chunking(frame_chunk=64, frame_shard=256, window_chunk=16, window_shard=64, shards_per_region=2)
    ex = _Recording()
    with pytest.raises(OSError, match="disk full"):
        build_dataset([SourceSpec("amass", incremental["corpus"])], root, BuildConfig(simulate=None), small,
                      workers=1, report=False, executor=ex, compact=True)
    names = [name for name, _, _ in ex.log]
    assert "create_stores" in names and "write_regions" in names and "check_stores" in names
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]
    assert _digest(root) == before


def test_build_submits_the_report_after_the_statistics_with_a_higher_priority(tmp_path):
    """The report task is submitted once every statistics task is, with priority 1: the large
    statistics tasks take the free workers first, the report the first worker they free."""
    from pipeline.dataset.build import build_dataset
    from pipeline.demo import generate_corpus
    from pipeline.process import BuildConfig
    from pipeline.sources.base import SourceSpec

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n_subjects=1, seed=4)
    ex = _Recording()
    build_dataset([SourceSpec("amass", corpus)], tmp_path / "root", BuildConfig(simulate=None), workers=1,
                  executor=ex, report=True)
    names = [name for name, _, _ in ex.log]
    assert names.count("report_task") == 1 and "store_stats" in names
    i = names.index("report_task")
    assert i > max(k for k, n in enumerate(names) if n == "store_stats")
    assert ex.log[i][2] == 1 and ex.log[i][1][0] == str(tmp_path / "root")
    assert (tmp_path / "root" / "report.html").is_file()


# --- flat driver memory: outcomes streamed from the cache, ledger rows streamed -------------------

def test_selector_streams_files_in_order_and_matches_select():
    from pipeline.dataset.assembly import Selector, select
    from pipeline.dataset.records import SimOutcome

    a = FileOutcome("amass", "a.npz", (_staged("x"),), metrics=({"seq_id": "x", "source": "amass"},),
                    to_simulate=(("x", "/c/x.npz", "train"),))
    b = FileOutcome("amass", "b.npz", (_staged("x"), _staged("y")), metrics=({"seq_id": "x"}, {"seq_id": "y"}))
    c = FileOutcome("amass", "c.npz", (_staged("z"),), metrics=({"seq_id": "z", "duration_s": 0.01},))
    sims = [SimOutcome("x#pass0", "/c/x.npz", (_staged("x#pass0"),), ({"seq_id": "x#pass0"},), frames=10)]
    sel = Selector(None)
    assert sel.add(a, sims) is None
    dup = sel.add(b)
    assert dup is not None and dup.path == "amass:b.npz" and "duplicate sequence id 'x'" in dup.reason
    sel.add(c)
    streamed = sel.finish()
    batch = select([c, b, a], sims, None)
    assert [s.key for s in streamed.staged] == [s.key for s in batch.staged] == ["x", "x#pass0", "z"]
    assert list(streamed.table["seq_id"]) == ["x", "x#pass0", "z"]  # b's row for x is not in the table
    assert streamed.frames_simulated == batch.frames_simulated == 10
    assert streamed.drop == batch.drop and streamed.duplicates == batch.duplicates
    with pytest.raises(ValueError, match="order"):
        sel2 = Selector(None)
        sel2.add(b)
        sel2.add(a)


def test_plan_run_reads_no_cache_entry(tmp_path, monkeypatch):
    """Planning a run only checks which entries are complete; the outcomes are read at assembly."""
    from pipeline.dataset import discovery
    from pipeline.dataset.records import FileJob
    from pipeline.sources.base import SourceSpec
    from pipeline.store import file_cache

    spec = SourceSpec("amass", tmp_path)
    jobs = [FileJob(spec, str(tmp_path / f"{n}.npz"), f"{n}.npz", 1, 1, n * 8, tmp_path / "e" / n) for n in "abc"]
    for j in jobs[:2]:
        j.entry.mkdir(parents=True)
    file_cache.save_entry(jobs[0].entry, tmp_path, {"file": FileOutcome("amass", "a.npz"), "sims": ()})
    (jobs[1].entry / "outcome.json").write_text("{not json")  # looks complete, unreadable
    monkeypatch.setattr(file_cache, "load_entry", lambda *a, **k: pytest.fail("plan_run read an entry"))
    run = discovery.plan_run(jobs, {("amass", "a.npz"), ("amass", "gone.npz")}, tmp_path)
    assert [j.rel for j in run.cached] == ["a.npz", "b.npz"] and [j.rel for j in run.todo] == ["c.npz"]
    assert run.removed == (("amass", "gone.npz"),) and run.n_new == 1
    monkeypatch.undo()
    o, sims = discovery.load_outcome(jobs[0], tmp_path)
    assert o.path == "a.npz" and sims == ()
    with pytest.raises(discovery.CacheEntryError):
        discovery.load_outcome(jobs[1], tmp_path)
    assert not file_cache.is_complete(jobs[1].entry)  # reset: the next run reprocesses the file


def test_ledger_rows_stream_into_one_transaction_with_counts(tmp_path):
    from pipeline.dataset.bookkeeping import ledger_rows, record_run, unchanged_rows
    from pipeline.dataset.records import FileJob
    from pipeline.sources.base import SourceSpec
    from pipeline.store.ledger import Ledger

    spec = SourceSpec("amass", tmp_path)

    def job(rel, sha):
        return FileJob(spec, str(tmp_path / rel), rel, 10, 5, sha, tmp_path / rel)

    with Ledger(tmp_path / "ledger.sqlite") as led:
        record_run(led, ledger_rows(iter([(job("a", "1"), ("x",), None), (job("b", "2"), ("y",), "bad")]), "k", "r1",
                                    {}), (), "r1", "t", 4)
        consumed = []

        def rows():
            for r in ledger_rows([(job("a", "9"), ("x2",), None), (job("c", "3"), ("z",), None)], "k", "r2", {}):
                consumed.append(r.path)
                yield r

        record_run(led, rows(), [("amass", "b")], "r2", "t", 4)
        assert consumed == ["a", "c"]
        run = led.runs()[-1]
        assert (run.files_new, run.files_changed, run.files_unchanged, run.files_removed) == (1, 1, 0, 1)
        cur = led.current()
        assert cur[("amass", "a")].sequences == ("x2",) and ("amass", "b") not in cur
        assert led.live_shas() == {("amass", "a"): "9", ("amass", "c"): "3"}
        same = unchanged_rows([job("a", "9"), job("c", "3")], cur, "k", "r3")
        assert [(r.path, r.sequences, r.last_run, r.first_run) for r in same] == [("a", ("x2",), "r3", "r2"),
                                                                                  ("c", ("z",), "r3", "r2")]
        assert unchanged_rows([job("a", "8")], cur, "k", "r3") is None
        assert unchanged_rows([job("a", "9")], cur, "other-key", "r3") is None


def test_cache_entry_roundtrip_restores_root_paths_only_where_they_were(tmp_path):
    from pipeline.dataset.discovery import ENTRY_TYPES
    from pipeline.store import file_cache

    root = tmp_path / "root \"q\" é"
    entry = root / ".cache" / "e"
    entry.mkdir(parents=True)
    staged = StagedSequence("k", root / ".cache" / "e" / "k", 10, 1, ("motion",))
    o = FileOutcome("amass", "a.npz", (staged,), metrics=({"seq_id": "k", "note": 'say "@root/x"', "v": 1.5},))
    file_cache.save_entry(entry, root, {"file": o, "sims": ()})
    assert str(root) not in (entry / "outcome.json").read_text()  # stored relative: the root can move
    back = file_cache.load_entry(entry, root, ENTRY_TYPES)
    assert back["file"] == o and back["sims"] == ()


def test_prune_removes_only_entries_not_kept(tmp_path):
    from pipeline.store import file_cache

    keep = {file_cache.entry_dir(tmp_path, "amass", "a.npz", "1" * 64, "k" * 32),
            file_cache.entry_dir(tmp_path, "amass", "b.npz", "2" * 64, "k" * 32)}
    stale = [file_cache.entry_dir(tmp_path, "amass", "a.npz", "3" * 64, "k" * 32),
             file_cache.entry_dir(tmp_path, "amass", "gone.npz", "4" * 64, "k" * 32)]
    for e in [*keep, *stale]:
        e.mkdir(parents=True)
        (e / "outcome.json").write_text("{}")
    assert file_cache.prune(tmp_path, keep) == 2
    assert all(e.is_dir() for e in keep) and not any(e.exists() for e in stale)
    assert not stale[1].parent.exists()  # the removed file's folder went with its last entry
    assert file_cache.prune(tmp_path, keep) == 0


def test_token_fast_path_equals_resolving(tmp_path):
    from pipeline.dataset.assembly import root_prefix, token

    (tmp_path / "real" / ".cache" / "e").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for out in (tmp_path / "real", tmp_path / "link"):
        for p in (out / ".cache" / "e" / "k", Path(root_prefix(out)) / ".cache" / "e" / "k", out / ".cache" / ".." / "x"):
            s = StagedSequence("k", p, 1, 1, ("motion",))
            assert token(s, out, root_prefix(out)) == token(s, out)


def test_workers_complete_cache_entries_and_send_back_slim_outcomes(tmp_path):
    """With a cache root, a file with nothing to simulate has its entry completed in the task, and
    the driver gets its outcome without staged sequences or metrics rows (flat driver memory)."""
    from pipeline.dataset.discovery import ENTRY_TYPES
    from pipeline.dataset.files import process_files
    from pipeline.demo import generate_corpus
    from pipeline.process import BuildConfig
    from pipeline.sources.base import SourceSpec
    from pipeline.store import file_cache

    corpus = tmp_path / "corpus"
    path = sorted(generate_corpus(corpus, n_subjects=1, seed=1))[0]
    spec = SourceSpec("amass", corpus)
    entry = tmp_path / "root" / ".cache" / "files" / "x" / "e"
    entry.mkdir(parents=True)
    full = process_files([(spec, str(path), str(entry))], BuildConfig(simulate=None))[0]
    assert full.staged and full.metrics and not file_cache.is_complete(entry)
    (got,) = process_files([(spec, str(path), str(entry))], BuildConfig(simulate=None), None, None,
                           str(tmp_path / "root"))
    assert got.staged == () and got.metrics == () and got.frames_out == full.frames_out
    back = file_cache.load_entry(entry, tmp_path / "root", ENTRY_TYPES)["file"]
    assert [s.key for s in back.staged] == [s.key for s in full.staged]
    plain = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in full.metrics]
    assert json.dumps(back.metrics, sort_keys=True) == json.dumps(plain, sort_keys=True)  # NaN-safe
