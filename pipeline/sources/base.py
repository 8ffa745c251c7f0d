"""What every source shares: errors that name the file, hashing, and the source registry."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from pipeline.records import RawMotion


class SourceError(ValueError):
    """A source file that cannot be read; ``str()`` is one line naming the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def sha256_of(path: Path, block_size: int = 1 << 20) -> tuple[str, int]:
    """Hex sha256 digest and size in bytes of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(block_size):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class Source(Protocol):
    """A source kind: finds its files under a root and reads one file into ``RawMotion`` records."""

    name: str

    def discover(self, root: Path) -> list[Path]:
        """Candidate files under ``root``, sorted, as absolute paths."""

    def read(self, path: Path, root: Path) -> list[RawMotion]:
        """Read one file; raise ``SourceError`` for a bad file."""


@dataclass(frozen=True)
class SourceSpec:
    """A source to build: its kind (registry key) and root folder."""

    kind: str
    root: Path


def get_source(kind: str) -> Source:
    """The registered source of that kind (``amass``)."""
    factories: dict[str, Callable[[], Source]] = {}
    from pipeline.sources import amass

    factories["amass"] = amass.AmassSource
    try:
        return factories[kind]()
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r}; known: {sorted(factories)}") from None
