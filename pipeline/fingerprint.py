"""A fingerprint of the code that produces the data.

``__version__`` alone does not change when the code does (it stayed 0.1.0 through every round of
physics work), so a cache keyed by it silently reused outputs of older code after an upgrade or an
edit. The fingerprint hashes the source of the ``pipeline`` package and the shipped schema files:
any change to them is a new processing key, so incremental builds and the dynamics-pass cache
recompute instead of serving stale results. Flows, tests, docs and benchmarks do not enter it.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SCHEMAS = _PACKAGE.parent / "schemas"
_SUFFIXES = {".py", ".json", ".yaml", ".yml", ".xml", ".txt"}


def source_files(roots: tuple[Path, ...] = (_PACKAGE, _SCHEMAS)) -> list[tuple[str, Path]]:
    """``(name, path)`` of every file that enters the fingerprint, sorted by name (the path
    relative to its root's parent, with ``/`` separators)."""
    out = []
    for root in roots:
        if not root.is_dir():
            continue
        for p in root.rglob("*"):
            if p.is_file() and p.suffix in _SUFFIXES and "__pycache__" not in p.parts:
                out.append((p.relative_to(root.parent).as_posix(), p))
    return sorted(out)


def fingerprint_of(files: list[tuple[str, Path]]) -> str:
    """Hex sha256 over the names and bytes of ``files`` (length-prefixed, so no two different
    file sets hash alike)."""
    h = hashlib.sha256()
    for name, path in files:
        data = path.read_bytes()
        for part in (name.encode(), data):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hex sha256 of this installation's ``pipeline`` source and schema files (computed once per
    process; about 10 ms)."""
    return fingerprint_of(source_files())
