"""``pipeline.dataset.executor.probed`` (the benchmarks' task log) and ``pipeline.memory``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.dataset.executor import TASK_LOG_ENV, probed
from pipeline.memory import _malloc_trim, release_memory


def _touch(mib: int) -> int:
    a = np.ones(mib * 2**20 // 8)  # written: resident
    return int(a.size)


def test_probed_is_a_plain_call_without_the_log(tmp_path, monkeypatch):
    monkeypatch.delenv(TASK_LOG_ENV, raising=False)
    assert probed(_touch)(1) == 2**17
    assert probed(_touch).__name__ == "_touch"  # the Prefect task keeps the stage function's name
    assert not list(tmp_path.iterdir())


_CHILD = """
import numpy as np
from pipeline.dataset.executor import probed

def _touch(mib):
    a = np.ones(mib * 2**20 // 8)
    return int(a.size)

def _fail():
    raise ValueError("boom")

probed(_touch)(64)
try:
    probed(_fail)()
except ValueError:
    pass
"""


def test_probed_logs_each_call_with_its_memory_and_cpu(tmp_path):
    # in a fresh process: the peak RSS (ru_maxrss) is the process's lifetime peak, which a long test
    # session may already hold above what the 64 MiB array adds to its current RSS
    log = tmp_path / "tasks.jsonl"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", _CHILD], env={**os.environ, TASK_LOG_ENV: str(log)}, cwd=root,
                   check=True, timeout=120)
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["task"] for r in recs] == ["_touch", "_fail"]  # a failing call is logged too
    r = recs[0]
    assert r["t1"] >= r["t0"] and r["thread_cpu"] >= 0 and r["process_cpu"] >= 0
    assert r["maxrss"] >= r["rss0"] + 60  # the 64 MiB array raised the peak
    assert r["maxrss"] >= max(r["rss0"], r["rss1"]) - 1


def test_release_memory_looks_libc_up_once():
    release_memory()
    assert _malloc_trim.cache_info().currsize == 1
    release_memory()
    assert _malloc_trim.cache_info().hits >= 1
