"""The ingestion ledger: every source file a dataset root has seen, in ``ledger.sqlite``.

One row per (source kind, relative path, content sha256). Status:

- ``built``: its sequences are in the current stores (or it produced none);
- ``quarantined``: it could not be built; ``reason`` says why;
- ``superseded``: the file at that path changed; a newer row holds the current content;
- ``removed``: the file is no longer under its source root; its sequences left the stores.

A run records what it found (new / changed / unchanged / removed files) in ``runs``. The ledger is
updated only after the stores were written, so a crashed run leaves it at the previous state and the
next run redoes the work. ``ledger_hash`` fingerprints the ledger's content (not its timestamps) for
release manifests.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LEDGER_FILE = "ledger.sqlite"
STATUSES = ("built", "quarantined", "superseded", "removed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    processing_key TEXT NOT NULL,
    dynaset_version TEXT NOT NULL,
    schema_versions TEXT NOT NULL,
    sequences TEXT NOT NULL,
    first_run TEXT NOT NULL,
    last_run TEXT NOT NULL,
    PRIMARY KEY (source, path, sha256)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT NOT NULL,
    files_new INTEGER NOT NULL,
    files_changed INTEGER NOT NULL,
    files_unchanged INTEGER NOT NULL,
    files_removed INTEGER NOT NULL,
    files_quarantined INTEGER NOT NULL,
    stores_written INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class FileRecord:
    """One ledger row. ``sequences`` are the sequence ids the file produced."""

    source: str
    path: str
    sha256: str
    size_bytes: int
    mtime_ns: int
    status: str
    reason: str
    processing_key: str
    dynaset_version: str
    schema_versions: dict
    sequences: tuple[str, ...]
    first_run: str
    last_run: str


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    started: str
    finished: str
    files_new: int
    files_changed: int
    files_unchanged: int
    files_removed: int
    files_quarantined: int
    stores_written: int


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Ledger:
    """The ledger of one dataset root (a SQLite file; one writer at a time — the root lock)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def files(self, status: str | None = None) -> list[FileRecord]:
        """Rows (optionally of one status), ordered by source, path, first run."""
        q = "SELECT * FROM files" + (" WHERE status = ?" if status else "") + " ORDER BY source, path, first_run"
        rows = self._db.execute(q, (status,) if status else ()).fetchall()
        return [_record(r) for r in rows]

    def current(self) -> dict[tuple[str, str], FileRecord]:
        """The live row (built or quarantined) per (source, path)."""
        return {(r.source, r.path): r for r in self.files() if r.status in ("built", "quarantined")}

    def live_shas(self) -> dict[tuple[str, str], str]:
        """(source, path) → sha256 of every live (built or quarantined) row: ``current`` without the rows."""
        rows = self._db.execute("SELECT source, path, sha256 FROM files WHERE status IN ('built','quarantined')")
        return {(s, p): sha for s, p, sha in rows}

    def live_stats(self, source: str) -> dict[str, tuple[int, int, str]]:
        """path → (size, mtime_ns, sha256) of ``source``'s live rows: ``known_sha`` for every file at once."""
        rows = self._db.execute("SELECT path, size_bytes, mtime_ns, sha256 FROM files WHERE source=? "
                                "AND status IN ('built','quarantined')", (source,))
        return {p: (int(size), int(mtime), sha) for p, size, mtime, sha in rows}

    def known_sha(self, source: str, path: str, size: int, mtime_ns: int) -> str | None:
        """The recorded sha256 of a live file with this size and mtime (skips re-hashing), else None."""
        row = self._db.execute(
            "SELECT sha256 FROM files WHERE source=? AND path=? AND size_bytes=? AND mtime_ns=? "
            "AND status IN ('built','quarantined')", (source, path, size, mtime_ns)).fetchone()
        return row[0] if row else None

    def record_run(self, run: RunRecord, seen: Iterable[FileRecord], removed: Iterable[tuple[str, str]]) -> None:
        """Apply one finished run in a single transaction.

        ``seen`` are the live rows of every file discovered in the run; an older live row of the same
        path with another sha256 becomes ``superseded``; ``removed`` (source, path) pairs become ``removed``.
        """
        with self.transaction():
            self.record_files(run.run_id, seen, removed)
            self.insert_run(run)

    def transaction(self):
        """A context in which ``record_files`` and ``insert_run`` commit together (or not at all)."""
        return self._db

    def record_files(self, run_id: str, seen: Iterable[FileRecord], removed: Iterable[tuple[str, str]]) -> None:
        """``record_run``'s file rows (``seen`` consumed once, row by row); inside ``transaction()``."""
        for r in seen:
            self._db.execute(
                "UPDATE files SET status='superseded', last_run=? WHERE source=? AND path=? AND sha256<>? "
                "AND status IN ('built','quarantined')", (run_id, r.source, r.path, r.sha256))
            prev = self._db.execute("SELECT first_run FROM files WHERE source=? AND path=? AND sha256=?",
                                    (r.source, r.path, r.sha256)).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (r.source, r.path, r.sha256, r.size_bytes, r.mtime_ns, r.status, r.reason, r.processing_key,
                 r.dynaset_version, json.dumps(r.schema_versions, sort_keys=True),
                 json.dumps(list(r.sequences)), prev[0] if prev else r.first_run, r.last_run))
        for source, path in removed:
            self._db.execute(
                "UPDATE files SET status='removed', last_run=? WHERE source=? AND path=? "
                "AND status IN ('built','quarantined')", (run_id, source, path))

    def insert_run(self, run: RunRecord) -> None:
        """``record_run``'s run row; inside ``transaction()``."""
        self._db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?)", (
            run.run_id, run.started, run.finished, run.files_new, run.files_changed, run.files_unchanged,
            run.files_removed, run.files_quarantined, run.stores_written))

    def runs(self) -> list[RunRecord]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY started, run_id").fetchall()
        return [RunRecord(*r) for r in rows]

    def content_hash(self) -> str:
        """sha256 over every row's (source, path, sha256, status, processing key), sorted: identifies
        the ledger's content independently of run times and mtimes."""
        rows = self._db.execute(
            "SELECT source, path, sha256, status, processing_key FROM files ORDER BY source, path, sha256").fetchall()
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _record(row: tuple) -> FileRecord:
    (source, path, sha, size, mtime, status, reason, key, version, schemas, seqs, first, last) = row
    return FileRecord(source, path, sha, int(size), int(mtime), status, reason, key, version,
                      json.loads(schemas), tuple(json.loads(seqs)), first, last)
