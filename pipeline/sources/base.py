"""What every source shares: errors that name the file, hashing, licence sidecars, the ``Source``
protocol and ``get_source`` (the registry itself: ``pipeline.sources.registry``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


def read_source_bytes(path: Path, rel: str | Path) -> tuple[str, int, bytes]:
    """(hex sha256, size in bytes, contents) of a source file read once; ``SourceError`` naming ``rel``
    when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(rel, f"cannot read file ({exc.strerror or exc})") from None
    return hashlib.sha256(data).hexdigest(), len(data), data


LICENCE_FILE_NAMES: tuple[str, ...] = ("license", "license.txt", "licence", "licence.txt", "copyright.txt")
"""Licence sidecar names (case-insensitive), in order of preference within one folder; any other
``LICENCE*`` file comes after them."""

LICENCE_MAX_CHARS = 200
UNKNOWN_LICENCE = "unknown"


def _licence_files(folder: Path) -> list[Path]:
    """Licence sidecars in ``folder``, most preferred first."""
    try:
        entries = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name)
    except OSError:
        return []
    rank = {name: i for i, name in enumerate(LICENCE_FILE_NAMES)}
    found = [p for p in entries if p.name.lower() in rank or p.name.lower().startswith("licence")]
    return sorted(found, key=lambda p: rank.get(p.name.lower(), len(rank)))


def _first_line(path: Path) -> str:
    """First non-empty line of a text file, stripped and cut to ``LICENCE_MAX_CHARS`` ("" if none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                text = " ".join(line.split())
                if text:
                    return text[:LICENCE_MAX_CHARS]
    except OSError:
        pass
    return ""


def find_licence(path: str | Path, root: str | Path) -> str:
    """Licence of a source file: the first non-empty line of the nearest licence sidecar
    (``LICENSE``, ``LICENSE.txt``, ``LICENCE*``, ``licence.txt``, ``Copyright.txt``; any case),
    looking in the file's folder, then each parent up to and including ``root``; ``"unknown"``
    when there is none. A file outside ``root`` only looks in its own folder."""
    path, root = Path(path).absolute(), Path(root).absolute()
    folder = path if path.is_dir() else path.parent
    chain = [folder, *folder.parents]
    if root in chain:
        chain = chain[: chain.index(root) + 1]
    else:
        chain = [folder]
    for d in chain:
        for candidate in _licence_files(d):
            text = _first_line(candidate)
            if text:
                return text
    return UNKNOWN_LICENCE


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
    """The registered source of that kind (``pipeline.sources.registry``: amass, c3d, opensim, ...)."""
    from pipeline.sources.registry import get_source as _get

    return _get(kind)
