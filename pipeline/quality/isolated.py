"""A build's HTML report, drawn in the calling process or in a short-lived child process.

``draw(root, build)`` writes ``root/report.html`` with the root's figure cache
(``report.FigureCache``: only figures whose inputs changed are redrawn). ``draw_isolated`` runs the
same in a fresh ``python -m pipeline.quality.isolated ROOT`` process (the build summary on stdin):
what the report allocates — pyarrow's memory pool for ``metrics.parquet``, matplotlib, the figures —
goes back to the system when that process exits, instead of staying in a Dask worker that then runs
the statistics on top of it (docs/scaling.md, "Fifth round": the largest worker at 10 h). Costs
≈ 1 s of imports per build. This module imports only the report's own dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.memory import release_memory


def draw(out_dir: str | Path, build: Mapping[str, Any] | None = None) -> str:
    """Write the report of the dataset root ``out_dir`` (``build``: the run's summary when
    ``build.json`` is not written yet) with its figure cache; returns the report's path, what was
    drawn and the seconds it took."""
    from .report import FIGURE_CACHE_DIR, FigureCache, build_report

    t0 = time.perf_counter()
    try:
        figures = FigureCache(Path(out_dir) / FIGURE_CACHE_DIR)
        path = build_report(Path(out_dir), build=build, figures=figures)
        figures.prune()
        return f"{path} ({figures.describe()}; {time.perf_counter() - t0:.1f} s)"
    finally:
        _release_arrow()
        release_memory()


def draw_isolated(out_dir: str | Path, build: Mapping[str, Any] | None = None) -> str:
    """``draw`` in a child process; raises ``RuntimeError`` with the end of its error output if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", __name__, str(out_dir)], input=json.dumps(build),
                          capture_output=True, text=True, env=dict(os.environ), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"report process exited with status {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    return f"{lines[-1] if lines else ''} in a child process ({time.perf_counter() - t0:.1f} s with its start)"


def _release_arrow() -> None:
    """Return pyarrow's pooled memory (``metrics.parquet``) if pyarrow was used."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        try:
            pa.default_memory_pool().release_unused()
        except Exception:  # noqa: BLE001 - an optimisation only
            pass


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.quality.isolated ROOT``: the build summary (JSON, or ``null``) on stdin."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pipeline.quality.isolated ROOT < build-summary.json", file=sys.stderr)
        return 2
    text = sys.stdin.read().strip()
    build = json.loads(text) if text else None
    print(draw(args[0], build), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
