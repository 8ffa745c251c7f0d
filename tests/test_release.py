"""Incremental ingestion, releases, verification, diff, crash safety and the root lock, end to end.

One small generated corpus (8 files) is built, released as 1.0.0, changed (one file added, one
changed, one removed), ingested incrementally and released as 1.1.0. Builds run the real Prefect
flow on a local Dask cluster (one ephemeral Prefect API for the module).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main as cli_main
from pipeline.demo import generate_corpus
from pipeline.release import ReleaseError, list_releases, publish, read_manifest, verify
from pipeline.split import SUBSETS
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.store.location import LocalLocation, LockError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def stores_digest(root: Path) -> str:
    """sha256 over every store file's relative path and bytes."""
    h = hashlib.sha256()
    for s in SUBSETS:
        for p in sorted((root / f"{s}.zarr").rglob("*")):
            if p.is_file():
                h.update(p.relative_to(root).as_posix().encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def build(corpus: Path, root: Path) -> None:
    rc = cli_main(["build", "--source", f"amass={corpus}", "--out", str(root), "--no-simulate", "--workers", "1"])
    assert rc == 0


@pytest.fixture(scope="module")
def prefect():
    from flows.runtime import prefect_api

    with prefect_api() as url:
        yield url


@pytest.fixture(scope="module")
def history(tmp_path_factory, prefect):
    """build → release 1.0.0 → change the corpus → ingest → release 1.1.0 → ingest again."""
    base = tmp_path_factory.mktemp("release")
    corpus, root = base / "corpus", base / "root"
    files = sorted(generate_corpus(corpus, n_subjects=1, seed=3))
    build(corpus, root)
    v1_digest = stores_digest(root)
    loc = LocalLocation(root)
    publish(loc, "1.0.0", notes="first release")

    # the week's changes: one new file (new subject), one changed, one deleted
    added = corpus / "DynasetSynth" / "S99" / "walk_new_poses.npz"
    added.parent.mkdir()
    shutil.copyfile(files[0], added)
    changed, removed = files[1], files[2]
    data = dict(np.load(changed, allow_pickle=False))
    data["trans"] = data["trans"] + np.array([0.25, 0.0, 0.0])
    np.savez(changed, **data)
    removed.unlink()
    assert cli_main(["ingest", str(root), "--workers", "1"]) == 0  # appends + tombstones (storage_layout.md)
    appended_digest = stores_digest(root)
    # a release compacts the stores first: the released stores are a fresh build's bytes
    assert cli_main(["release", "--root", str(root), "--version", "1.1.0"]) == 0
    v2_digest = stores_digest(root)
    assert v2_digest != appended_digest
    runs_before = len(Ledger(root / LEDGER_FILE).runs())
    assert cli_main(["ingest", str(root), "--workers", "1"]) == 0  # nothing new
    return {
        "corpus": corpus, "root": root, "loc": loc, "files": files, "added": added, "changed": changed,
        "removed": removed, "v1_digest": v1_digest, "v2_digest": v2_digest, "runs_before": runs_before,
    }


def rel(corpus: Path, p: Path) -> str:
    return p.relative_to(corpus).as_posix()


def test_ledger_processed_only_new_and_changed_files(history):
    with Ledger(history["root"] / LEDGER_FILE) as ledger:
        runs = ledger.runs()
        files = ledger.files()
    first, second, compaction, third = runs[-4], runs[-3], runs[-2], runs[-1]
    n = len(history["files"])
    assert (first.files_new, first.files_changed, first.files_unchanged) == (n, 0, 0)
    assert (second.files_new, second.files_changed, second.files_unchanged, second.files_removed) == (1, 1, n - 2, 1)
    assert (compaction.files_new, compaction.files_changed, compaction.files_removed) == (0, 0, 0)
    assert (third.files_new, third.files_changed, third.files_unchanged, third.files_removed) == (0, 0, n, 0)
    assert third.stores_written == 0 and second.stores_written == compaction.stores_written == len(SUBSETS)
    status = {(r.path, r.status) for r in files}
    c = history["corpus"]
    assert (rel(c, history["changed"]), "superseded") in status
    assert (rel(c, history["changed"]), "built") in status
    assert (rel(c, history["removed"]), "removed") in status
    assert (rel(c, history["added"]), "built") in status
    assert sum(1 for r in files if r.status == "built") == n  # n - 1 removed + 1 added
    live = [r for r in files if r.status == "built"]
    assert all(r.sequences and r.schema_versions["motion"] for r in live)


def test_rerun_changes_nothing(history):
    assert stores_digest(history["root"]) == history["v2_digest"]
    summary = json.loads((history["root"] / "build.json").read_text())
    assert summary["files_built"] == len(history["files"])


def test_compacted_incremental_equals_fresh_build_byte_for_byte(history, tmp_path):
    fresh = tmp_path / "fresh"
    build(history["corpus"], fresh)
    assert stores_digest(fresh) == history["v2_digest"]


def test_releases_verify_and_old_release_is_untouched(history):
    loc = history["loc"]
    assert list_releases(loc) == ["1.0.0", "1.1.0"]
    assert verify(loc, "1.0.0") == []
    assert verify(loc, "1.1.0") == []
    # the 1.0.0 stores still hold exactly what was built then
    v1 = history["root"] / "releases" / "1.0.0"
    assert stores_digest(v1) == history["v1_digest"]
    assert cli_main(["verify", str(v1)]) == 0


def test_manifest_and_card(history):
    m = read_manifest(history["loc"], "1.1.0")
    assert m["parent"] == "1.0.0" and m["version"] == "1.1.0"
    assert m["ledger_hash"] and m["git_commit"] and m["dynaset_version"]
    n = len(history["files"])
    assert m["stores"]["motion"]["sequences"] == n
    by_split = m["stores"]["motion"]["by_split"]
    assert sum(v["sequences"] for v in by_split.values()) == n
    assert abs(sum(v["hours"] for v in by_split.values()) - m["stores"]["motion"]["hours"]) < 1e-9
    for s in SUBSETS:
        assert m["stores"][s]["schema_version"].count(".") == 2
    some = next(k for k in m["objects"] if k.startswith("motion.zarr/"))
    assert len(m["objects"][some]["sha256"]) == 64
    card = (history["root"] / "releases" / "1.1.0" / "README.md").read_text()
    for heading in ("## Contents", "## Sources and licences", "## Conventions and units", "## Splits",
                    "## How to load", "## Quality and known issues", "## Changes since 1.0.0"):
        assert heading in card
    assert "CC0-1.0" in card  # the demo corpus licence, read from its LICENSE.txt


def test_unchanged_objects_are_hard_links_to_the_parent(history):
    root = history["root"]
    m1, m2 = read_manifest(history["loc"], "1.0.0"), read_manifest(history["loc"], "1.1.0")
    same = [k for k, v in m2["objects"].items()
            if k.endswith(".zarr/zarr.json") is False and m1["objects"].get(k, {}).get("sha256") == v["sha256"]
            and ".zarr/" in k]
    assert same, "some store objects are identical between the releases"
    for k in same:
        a, b = root / "releases" / "1.0.0" / k, root / "releases" / "1.1.0" / k
        assert os.stat(a).st_ino == os.stat(b).st_ino, k
    # release objects are read-only (no write bit): an in-place write by a non-root user fails
    import stat

    for p in (root / "releases" / "1.1.0").rglob("*"):
        if p.is_file():
            assert not p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), p


def test_diff_lists_exactly_the_changes(history, capsys):
    from pipeline.release import diff_releases, read_sequences

    loc = history["loc"]
    d = diff_releases(read_manifest(loc, "1.0.0"), read_manifest(loc, "1.1.0"),
                      read_sequences(loc, "1.0.0"), read_sequences(loc, "1.1.0"))
    motion = d["subsets"]["motion"]
    seqs = read_sequences(loc, "1.1.0")["motion"]
    old = read_sequences(loc, "1.0.0")["motion"]
    c = history["corpus"]
    added_id = next(k for k, v in seqs.items() if v["path"] == rel(c, history["added"]))
    changed_id = next(k for k, v in seqs.items() if v["path"] == rel(c, history["changed"]))
    removed_id = next(k for k, v in old.items() if v["path"] == rel(c, history["removed"]))
    assert motion["added"] == [added_id]
    assert motion["removed"] == [removed_id]
    assert motion["changed"] == [changed_id]
    assert d["subsets"]["contact"]["added"] == [added_id]
    assert motion["schema"]["from"] == motion["schema"]["to"]
    assert cli_main(["diff", "--root", str(history["root"]), "1.0.0", "1.1.0"]) == 0
    out = capsys.readouterr().out
    assert f"+ {added_id}" in out and f"- {removed_id}" in out and f"~ {changed_id}" in out


def test_release_rules(history):
    loc = history["loc"]
    with pytest.raises(ReleaseError, match="already exists"):
        publish(loc, "1.1.0")
    with pytest.raises(ReleaseError, match="newer than"):
        publish(loc, "1.0.5")
    with pytest.raises(ReleaseError, match="MAJOR.MINOR.PATCH"):
        publish(loc, "v2")


def test_verify_detects_tampering(history, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(history["root"] / "releases" / "1.0.0", copy / "releases" / "1.0.0")
    victim = next(p for p in sorted((copy / "releases" / "1.0.0" / "motion.zarr").rglob("*")) if p.is_file()
                  and p.stat().st_size > 100)
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    (copy / "releases" / "1.0.0" / "stray.txt").write_text("x")
    problems = verify(LocalLocation(copy), "1.0.0")
    assert any("sha256" in p and victim.name in p for p in problems), problems
    assert any("unexpected object stray.txt" in p for p in problems), problems
    assert cli_main(["verify", str(copy / "releases" / "1.0.0")]) == 1


def test_second_writer_is_refused_while_the_root_is_locked(history, capsys):
    root = history["root"]
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pipeline.store.location import LocalLocation
            with LocalLocation({str(root)!r}).lock("build"):
                print("locked", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match="busy.*build"):
            publish(history["loc"], "9.9.9")
        assert cli_main(["release", "--root", str(root), "--version", "9.9.9"]) == 2
        assert "busy" in capsys.readouterr().err
    finally:
        holder.kill()  # a crashed (killed) holder releases the lock
        holder.wait()
    with LocalLocation(root).lock("test"):
        pass


KILLER = """
import os, signal, sys
from pipeline.release import publish
from pipeline.store.location import LocalLocation
at = float(sys.argv[3])
def hook(i, n):
    if i >= max(1, int(at * n)):
        os.kill(os.getpid(), signal.SIGKILL)
publish(LocalLocation(sys.argv[1]), sys.argv[2], on_object=hook)
"""


@pytest.mark.parametrize("at", [0.0, 0.5, 1.0])
def test_sigkill_mid_publish_leaves_no_partial_release(history, tmp_path, at):
    # a private copy of the root (hard links keep it cheap), so each crash starts from 1.0.0 + 1.1.0
    root = tmp_path / "root"
    shutil.copytree(history["root"], root, ignore=shutil.ignore_patterns(".prefect"))
    res = subprocess.run([sys.executable, "-c", KILLER, str(root), "2.0.0", str(at)], cwd=REPO)
    assert res.returncode == -signal.SIGKILL
    loc = LocalLocation(root)
    assert list_releases(loc) == ["1.0.0", "1.1.0"]
    assert not (root / "releases" / "2.0.0").exists()
    assert verify(loc, "1.0.0") == [] and verify(loc, "1.1.0") == []
    m = publish(loc, "2.0.0")  # re-run: the lock was released by the kill; leftovers are cleaned
    assert m["parent"] == "1.1.0"
    assert verify(loc, "2.0.0") == []
    assert not [p for p in (root / "releases").iterdir() if p.name.startswith(".tmp-")]
