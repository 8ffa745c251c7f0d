"""Ledger bookkeeping of a run: one ``FileRecord`` per live file, the run's counts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipeline import __version__
from pipeline.records import QuarantineEntry
from pipeline.store.ledger import FileRecord, Ledger, RunRecord, now_iso

from .records import FileJob, FileOutcome


def file_records(jobs: Sequence[FileJob], outcomes: dict[str, FileOutcome], key: str, run_id: str,
                 schemas: dict[str, str], quarantine: Iterable[QuarantineEntry] = ()) -> list[FileRecord]:
    """The ledger rows of every live file: built (with its sequence ids) or quarantined (with the
    reason; a file quarantined as a duplicate at assembly counts too). ``outcomes``: path → outcome."""
    dup = {q.path: q for q in quarantine}
    rows = []
    for j in jobs:
        o = outcomes[j.path]
        q = o.quarantine or dup.get(f"{j.spec.kind}:{j.rel}")
        rows.append(FileRecord(
            source=j.spec.kind, path=j.rel, sha256=j.sha256, size_bytes=j.size, mtime_ns=j.mtime_ns,
            status="quarantined" if q is not None else "built", reason=q.reason if q is not None else "",
            processing_key=key, dynaset_version=__version__, schema_versions=schemas,
            sequences=() if q is not None else tuple(s.key for s in o.staged), first_run=run_id, last_run=run_id,
        ))
    return rows


def record_run(ledger: Ledger, rows: list[FileRecord], removed: Sequence[tuple[str, str]], run_id: str,
               started: str, stores_written: int) -> None:
    """Record the run and its file rows (new / changed / unchanged counted against the ledger)."""
    previous = ledger.current()
    n_changed = sum(1 for r in rows if (r.source, r.path) in previous and previous[(r.source, r.path)].sha256 != r.sha256)
    n_new = sum(1 for r in rows if (r.source, r.path) not in previous)
    n_q = sum(1 for r in rows if r.status == "quarantined")
    ledger.record_run(RunRecord(run_id, started, now_iso(), n_new, n_changed, len(rows) - n_new - n_changed,
                                len(removed), n_q, stores_written), rows, removed)
