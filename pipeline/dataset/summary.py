"""``build.json``: what a build produced (files, frames, subsets) and where its time went (s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline import __version__
from pipeline.records import QuarantineEntry

from .assembly import QUARANTINE_FILE
from .records import FileOutcome

SUMMARY_FILE = "build.json"


@dataclass
class FileTotals:
    """What ``build.json`` counts over the run's files, added up one file at a time (``add``)."""

    files: int = 0
    files_built: int = 0
    frames_in: int = 0
    frames_out: int = 0

    def add(self, outcome: FileOutcome, quarantined: bool) -> None:
        """One live file's outcome; ``quarantined``: at processing or as a duplicate."""
        self.files += 1
        if not quarantined:
            self.files_built += 1
            self.frames_in += outcome.frames_in
            self.frames_out += outcome.frames_out


def add_seconds(total: dict[str, float], seconds: dict[str, float]) -> None:
    """Add one file's per-stage task seconds to ``total``."""
    for k, v in seconds.items():
        total[k] = total.get(k, 0.0) + v


def summarize(totals: FileTotals, stage_seconds: dict[str, float], quarantine: Sequence[QuarantineEntry],
              subsets: dict[str, dict], build_id: str) -> dict:
    """Counts per file and subset (``subsets``: ``assembly.subset_counts``), summed per-stage task
    seconds of the files processed in this run (``task_seconds``)."""
    file_q = [q for q in quarantine if q.stage != "simulate"]  # simulate entries name sequences, not files
    return {
        "build_id": build_id,
        "dynaset_version": __version__,
        "files": totals.files,
        "files_built": totals.files_built,
        "files_quarantined": totals.files - totals.files_built,
        "simulations_failed": len(quarantine) - len(file_q),
        "frames_in": totals.frames_in,
        "frames_out": totals.frames_out,
        "task_seconds": dict(stage_seconds),
        "wall_seconds": {},
        "subsets": subsets,
        "quarantine_file": QUARANTINE_FILE,
    }
