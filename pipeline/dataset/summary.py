"""``build.json``: what a build produced (files, frames, subsets) and where its time went (s)."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import __version__
from pipeline.records import QuarantineEntry

from .assembly import QUARANTINE_FILE
from .records import FileOutcome

SUMMARY_FILE = "build.json"


def summarize(outcomes: Sequence[FileOutcome], quarantine: Sequence[QuarantineEntry], subsets: dict[str, dict],
              build_id: str) -> dict:
    """Counts per file and subset (``subsets``: ``assembly.subset_counts``), summed per-stage task
    seconds (``task_seconds``)."""
    file_q = [q for q in quarantine if q.stage != "simulate"]  # simulate entries name sequences, not files
    quarantined = {q.path for q in file_q}
    stage_seconds: dict[str, float] = {}
    for o in outcomes:
        for k, v in o.seconds.items():
            stage_seconds[k] = stage_seconds.get(k, 0.0) + v
    built = [o for o in outcomes if o.name not in quarantined]
    return {
        "build_id": build_id,
        "dynaset_version": __version__,
        "files": len(outcomes),
        "files_built": len(outcomes) - len(quarantined),
        "files_quarantined": len(quarantined),
        "simulations_failed": len(quarantine) - len(file_q),
        "frames_in": sum(o.frames_in for o in built),
        "frames_out": sum(o.frames_out for o in built),
        "task_seconds": stage_seconds,
        "wall_seconds": {},
        "subsets": subsets,
        "quarantine_file": QUARANTINE_FILE,
    }
