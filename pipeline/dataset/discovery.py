"""Discovery: the source files of a dataset root's sources, and what a run has to do with them.

A file is identified by (source kind, path relative to its source root); its content by sha256
(taken from the ledger when size and mtime are unchanged, so an unchanged corpus is not re-hashed).
Its cache entry (``pipeline.store.file_cache``) is keyed by content and processing key: a run
processes only files without a complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.sources.base import SourceSpec, get_source, sha256_of
from pipeline.store import file_cache
from pipeline.store.ledger import Ledger

from .config import to_jsonable
from .records import FileJob, FileOutcome, SimOutcome

ENTRY_TYPES = {"file": FileOutcome, "sims": tuple[SimOutcome, ...]}
"""What a complete per-file cache entry holds."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def discover(sources: Sequence[SourceSpec], out: Path, ledger: Ledger, key: str,
             say: Callable[[str], None] = _say) -> list[FileJob]:
    """Every source file as a ``FileJob``, in source then discovery order."""
    jobs = []
    for spec in sources:
        files = get_source(spec.kind).discover(Path(spec.root))
        say(f"[discover] {spec.kind}: {len(files)} files under {spec.root}")
        known = ledger.live_stats(spec.kind)  # one query, not one per file
        base = str(Path(spec.root)).rstrip("/") + "/"
        for p in files:
            p = str(p)
            st = os.stat(p)
            rel = p[len(base):] if p.startswith(base) else Path(p).relative_to(Path(spec.root)).as_posix()
            k = known.get(rel)
            sha = k[2] if k is not None and k[:2] == (st.st_size, st.st_mtime_ns) else sha256_of(Path(p))[0]
            jobs.append(FileJob(spec, p, rel, st.st_size, st.st_mtime_ns, sha,
                                file_cache.entry_dir(out, spec.kind, rel, sha, key)))
    return jobs


@dataclass(frozen=True)
class RunPlan:
    """What one run does: the files to process, the files whose cache entry is complete, removed files."""

    jobs: tuple[FileJob, ...]
    todo: tuple[FileJob, ...]
    cached: tuple[FileJob, ...]
    """Files that need no processing: their complete cache entries are read back at assembly
    (``load_outcome``), one at a time."""
    removed: tuple[tuple[str, str], ...]
    n_new: int
    n_changed: int


def plan_run(jobs: Sequence[FileJob], previous: Container[tuple[str, str]] | Iterable[tuple[str, str]], out: Path,
             force: bool = False) -> RunPlan:
    """Split ``jobs`` into files to process and files whose cache entry is complete (its
    ``outcome.json`` exists; nothing is read); ``previous``: the (source, path) keys of the
    ledger's live rows."""
    seen = {j.file_key for j in jobs}
    removed = tuple(sorted(k for k in previous if k not in seen))
    cached: list[FileJob] = []
    todo: list[FileJob] = []
    for j in jobs:
        (cached if not force and file_cache.is_complete(j.entry) else todo).append(j)
    n_new = sum(1 for j in todo if j.file_key not in previous)
    return RunPlan(tuple(jobs), tuple(todo), tuple(cached), removed, n_new, len(todo) - n_new)


class CacheEntryError(RuntimeError):
    """A complete-looking cache entry could not be read; it was reset, so the next run redoes it."""


def load_outcome(job: FileJob, out: Path) -> tuple[FileOutcome, tuple[SimOutcome, ...]]:
    """The outcome and simulations recorded in ``job``'s complete cache entry. An unreadable entry
    is reset (the next run reprocesses the file) and ``CacheEntryError`` raised."""
    entry = file_cache.load_entry(job.entry, out, ENTRY_TYPES)
    if entry is None:
        file_cache.reset_entry(job.entry)
        raise CacheEntryError(f"cache entry {job.entry} of {job.spec.kind}:{job.rel} is unreadable; it was reset: "
                              "run the build again to reprocess that file")
    return entry["file"], entry["sims"]


def inputs_fingerprint(jobs: Sequence[FileJob], key: str, chunking, schema_versions: dict[str, str]) -> str:
    """sha256 of what the stores are assembled from: every file's (source, path, sha256), the
    processing key, the chunking and the schema versions."""
    doc = {"files": sorted((j.spec.kind, j.rel, j.sha256) for j in jobs), "key": key,
           "chunking": to_jsonable(chunking), "schemas": schema_versions}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
