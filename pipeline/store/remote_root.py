"""Dataset roots on object storage: a local working mirror, pulled before and pushed after a build.

The processing itself needs a POSIX folder (memory-mapped staging, parallel region writers, atomic
renames), so a build into ``s3://bucket/prefix`` runs in a local *mirror* of the root
(``DYNASET_WORK_DIR`` or ``~/.cache/dynaset/roots/<hash of the URL>``) under the remote root's lock:

1. pull the ledger and the recorded configuration/summary (the remote root is the truth);
2. build incrementally into the mirror (its processing cache may be empty: files are then
   reprocessed, with byte-identical results);
3. push the stores (if they were re-assembled or the remote lacks them), the side files and the
   ledger (always: it records the run).

Readers should read releases, which are published manifest-last (``pipeline.release``); the
current stores on S3 are replaced object by object.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipeline.split import SUBSETS
from pipeline.store.location import Location

STATE_FILES = ("ledger.sqlite", "dataset.json", "build.json")
SIDE_FILES = ("build.json", "dataset.json", "stats.json", "quarantine.json", "flags.json", "exclusions.json",
              "metrics.parquet", "report.html")
"""Files a build writes next to the stores (those that exist are pushed, and copied into releases)."""


def is_remote(root: str | os.PathLike) -> bool:
    return os.fspath(root).startswith("s3://")


def mirror_dir(url: str) -> Path:
    """The local working mirror of a remote root."""
    base = os.environ.get("DYNASET_WORK_DIR")
    base_path = Path(base) if base else Path.home() / ".cache" / "dynaset" / "roots"
    return (base_path / hashlib.sha256(url.encode()).hexdigest()[:16]).resolve()


def pull_state(loc: Location, mirror: Path) -> list[str]:
    """Copy the remote ledger, dataset.json and build.json into the mirror; returns what was pulled.
    A mirror file the remote lacks is removed (the remote root is the truth)."""
    mirror.mkdir(parents=True, exist_ok=True)
    pulled = []
    for name in STATE_FILES:
        if loc.exists(name):
            loc.get_file(name, mirror / name)
            pulled.append(name)
        else:
            (mirror / name).unlink(missing_ok=True)
    return pulled


def push_state(loc: Location, mirror: Path, stores: bool) -> list[str]:
    """Upload the stores (if ``stores``), the side files and the ledger; returns what was pushed."""
    pushed = []
    if stores:
        for s in SUBSETS:
            loc.put_tree(mirror / f"{s}.zarr", f"{s}.zarr")
            pushed.append(f"{s}.zarr")
    for name in (*SIDE_FILES, "ledger.sqlite"):
        if (mirror / name).is_file():
            loc.write_bytes(name, (mirror / name).read_bytes())
            pushed.append(name)
    return pushed


def remote_has_stores(loc: Location) -> bool:
    return all(loc.exists(f"{s}.zarr/zarr.json") for s in SUBSETS)
