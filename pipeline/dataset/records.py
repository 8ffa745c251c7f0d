"""Small, picklable records passed between the build's stages (and kept in the per-file cache)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.records import QuarantineEntry
from pipeline.sources.base import SourceSpec
from pipeline.store import StagedSequence


@dataclass(frozen=True)
class FileJob:
    """A discovered source file: where it is, what it holds (bytes, sha256), where its cache entry is."""

    spec: SourceSpec
    path: str
    rel: str
    size: int
    mtime_ns: int
    sha256: str
    entry: Path

    @property
    def file_key(self) -> tuple[str, str]:
        """(source kind, path relative to the source root): the file's identity across runs."""
        return (self.spec.kind, self.rel)


@dataclass(frozen=True)
class FileOutcome:
    """What a per-file task sends back: staged sequences or a quarantine entry, and timings (s)."""

    source: str
    path: str
    staged: tuple[StagedSequence, ...] = ()
    quarantine: QuarantineEntry | None = None
    seconds: dict = field(default_factory=dict)
    frames_in: int = 0
    frames_out: int = 0
    metrics: tuple[dict, ...] = ()
    to_simulate: tuple[tuple[str, str, str], ...] = ()
    """(sequence id, canonical motion file, split) of sequences the simulate stage imitates."""

    @property
    def name(self) -> str:
        """``<source>:<relative path>``, as in quarantine entries."""
        return f"{self.source}:{self.path}"


@dataclass(frozen=True)
class SimOutcome:
    """What a simulate task sends back for one motion: staged passes, metrics rows, or an error."""

    sequence_id: str
    origin: str = ""
    """The canonical motion file it imitated (identifies the source file's sequence)."""
    staged: tuple[StagedSequence, ...] = ()
    metrics: tuple[dict, ...] = ()
    quarantine: QuarantineEntry | None = None
    seconds: float = 0.0
    frames: int = 0


@dataclass(frozen=True)
class SimResults:
    """What a batched (GPU) simulate task sends back for one part (some passes of one motion):
    where each pass's ``SimulationResult`` was written (``simulation.result_file``), or why the
    motion failed; the driver hands these to CPU finish tasks (``simulation.finish_results``)."""

    item: tuple[str, str, str]
    """(sequence id, canonical motion file, split)."""
    passes: tuple[int, ...]
    files: tuple[str, ...] = ()
    """One result file per pass, in ``passes`` order; empty when ``error`` is set."""
    error: str | None = None
    seconds: float = 0.0
    """This part's share of the simulate task's wall time."""


@dataclass(frozen=True)
class PreparedChunk:
    """What a simulate-prepare task (``simulation.prepare_chunk``, CPU worker) sends back for some
    parts of one batch of worlds: the packed host inputs of their worlds
    (``pipeline.simulate.packed``) in a staging file, and the motions it could not prepare."""

    parts: tuple[tuple[tuple[str, str, str], tuple[int, ...]], ...]
    """(item, passes) of every part given, in order: (sequence id, canonical motion file, split)."""
    file: str | None
    """The staged ``PackedWorlds`` (``None`` when no world could be prepared)."""
    jobs: tuple[tuple[int, int], ...] = ()
    """(part index, pass) of each packed world, in world order."""
    errors: tuple[tuple[str, str], ...] = ()
    """(canonical motion file, reason) of the motions that failed (their parts have no worlds)."""
    seconds: float = 0.0


@dataclass(frozen=True)
class SimulatedChunk:
    """What the GPU task (``simulation.simulate_prepared``) sends back per prepared chunk, for its
    simulate-finish task (``simulation.finish_chunk``): the chunk, the file holding its worlds'
    recordings (``packed.WorldRecordings``, world order of the chunk minus failed motions), and
    the motions the simulation failed for."""

    prepared: PreparedChunk
    file: str | None
    jobs: tuple[tuple[int, int], ...] = ()
    """(part index, pass) of each recorded world, in the file's order."""
    errors: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    """This chunk's share of the GPU task's wall time."""
