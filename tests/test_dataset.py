"""The build's logic without Prefect (``pipeline.dataset``): batching, dedupe, run planning, the
serial executor, and the driver on a small corpus."""

from __future__ import annotations

import json
from pathlib import Path

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
