"""Ledger bookkeeping of a run: one ``FileRecord`` per live file, the run's counts.

Rows are produced and written one at a time (``ledger_rows`` → ``record_run``): the driver keeps
only each file's sequence ids and quarantine reason, never a list of every file's record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace

from pipeline import __version__
from pipeline.store.ledger import FileRecord, Ledger, RunRecord, now_iso

from .records import FileJob


def ledger_rows(items: Iterable[tuple[FileJob, tuple[str, ...], str | None]], key: str, run_id: str,
                schemas: dict[str, str]) -> Iterator[FileRecord]:
    """The ledger row of every live file from (job, its sequence ids, quarantine reason or None):
    built (with its sequence ids) or quarantined (with the reason; a file quarantined as a
    duplicate at assembly counts too)."""
    for j, sequences, reason in items:
        yield FileRecord(
            source=j.spec.kind, path=j.rel, sha256=j.sha256, size_bytes=j.size, mtime_ns=j.mtime_ns,
            status="quarantined" if reason is not None else "built", reason=reason or "",
            processing_key=key, dynaset_version=__version__, schema_versions=schemas,
            sequences=() if reason is not None else tuple(sequences), first_run=run_id, last_run=run_id,
        )


def unchanged_rows(jobs: Sequence[FileJob], previous: Mapping[tuple[str, str], FileRecord], key: str,
                   run_id: str) -> list[FileRecord] | None:
    """The rows of a run that changed nothing: every file's live row as recorded (status, reason,
    sequence ids), with this run's size, mtime and run id; None when some file has no live row with
    its content and processing key (then the rows must come from the cache entries)."""
    rows = []
    for j in jobs:
        prev = previous.get(j.file_key)
        if prev is None or prev.sha256 != j.sha256 or prev.processing_key != key:
            return None
        rows.append(replace(prev, size_bytes=j.size, mtime_ns=j.mtime_ns, last_run=run_id))
    return rows


def record_run(ledger: Ledger, rows: Iterable[FileRecord], removed: Sequence[tuple[str, str]], run_id: str,
               started: str, stores_written: int) -> None:
    """Record the run and its file rows (new / changed / unchanged counted against the ledger's
    live rows) in one transaction; ``rows`` is consumed once."""
    previous = ledger.live_shas()
    counts = {"new": 0, "changed": 0, "all": 0, "quarantined": 0}

    def counted() -> Iterator[FileRecord]:
        for r in rows:
            sha = previous.get((r.source, r.path))
            counts["all"] += 1
            counts["new"] += sha is None
            counts["changed"] += sha is not None and sha != r.sha256
            counts["quarantined"] += r.status == "quarantined"
            yield r

    def run() -> RunRecord:
        n_new, n_changed = counts["new"], counts["changed"]
        return RunRecord(run_id, started, now_iso(), n_new, n_changed, counts["all"] - n_new - n_changed,
                         len(removed), counts["quarantined"], stores_written)

    with ledger.transaction():
        ledger.record_files(run_id, counted(), removed)
        ledger.insert_run(run())
