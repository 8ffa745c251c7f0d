"""The per-file processing cache of a dataset root: ``.cache/files/<file key>/<sha256>-<processing key>/``.

Each entry holds what processing one source file produced (staged sequences, canonical motions
handed to simulation, simulated passes) plus ``outcome.json``, written last: an entry without it
is incomplete (a crashed run) and is redone. Paths inside ``outcome.json`` are stored relative to
the dataset root, so a root can be moved. The cache only saves time: deleting it makes the next run
reprocess every file, with byte-identical results.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dataset import from_jsonable, to_jsonable
from pipeline.store.staging import safe_key

CACHE_DIR = ".cache/files"
OUTCOME_FILE = "outcome.json"
CACHE_FORMAT = 1
_ROOT = "@root/"
_ROOT_IN_JSON = re.compile(r'(?<!\\)"@root/')
"""A JSON string value that starts with ``_ROOT`` (an unescaped quote, then the marker)."""


def entry_dir(root: Path, source: str, rel: str, sha256: str, key: str) -> Path:
    """Cache folder of one (file, content, processing key)."""
    return Path(root) / CACHE_DIR / safe_key(f"{source}:{rel}") / f"{sha256[:24]}-{key[:16]}"


def _plain(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, root) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value.startswith(root):
        return _ROOT + value[len(root):]
    return value


def save_entry(entry: Path, root: Path, records: dict[str, Any]) -> None:
    """Write ``outcome.json`` (the completion marker) for a cache entry; ``records`` are dataclasses."""
    prefix = str(Path(root).resolve()) + "/"
    doc = {"format": CACHE_FORMAT, "records": _plain(to_jsonable(records), prefix)}
    tmp = entry / f".{OUTCOME_FILE}.tmp-{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
    os.replace(tmp, entry / OUTCOME_FILE)


def is_complete(entry: Path) -> bool:
    """Whether an entry is complete: its ``outcome.json`` exists (the last file written)."""
    return (Path(entry) / OUTCOME_FILE).is_file()


def load_entry(entry: Path, root: Path, types: dict[str, Any]) -> dict[str, Any] | None:
    """The records of a complete entry (typed by ``types``), or None if absent/incomplete/unreadable."""
    path = entry / OUTCOME_FILE
    if not path.is_file():
        return None
    try:
        prefix = str(Path(root).resolve()) + "/"
        # root-relative strings back to absolute paths in the text: one pass over the bytes instead
        # of a walk over every value (metrics rows included) of the parsed document
        doc = json.loads(_ROOT_IN_JSON.sub(lambda _: '"' + json.dumps(prefix)[1:-1], path.read_text(encoding="utf-8")))
        if doc.get("format") != CACHE_FORMAT:
            return None
        records = doc["records"]
        return {name: from_jsonable(tp, records[name]) for name, tp in types.items()}
    except (ValueError, KeyError, TypeError):
        return None


def reset_entry(entry: Path) -> None:
    """Empty an incomplete entry before it is redone."""
    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)


def prune(root: Path, keep: set[Path]) -> int:
    """Delete every cache entry not in ``keep`` (and emptied file folders); returns entries removed.
    Entries are compared by their (file folder, entry) names under the root's cache folder: one
    directory listing per file folder, no path resolution per entry."""
    base = Path(root) / CACHE_DIR
    if not base.is_dir():
        return 0
    kept: dict[str, set[str]] = {}
    for k in keep:
        k = Path(k)
        kept.setdefault(k.parent.name, set()).add(k.name)
    removed = 0
    with os.scandir(base) as folders:
        for file_dir in folders:
            if not file_dir.is_dir(follow_symlinks=False):
                continue
            mine = kept.get(file_dir.name, set())
            for name in os.listdir(file_dir.path):
                if name not in mine:
                    shutil.rmtree(os.path.join(file_dir.path, name), ignore_errors=True)
                    removed += 1
            if not mine:  # emptied (a folder still holding something stays)
                try:
                    os.rmdir(file_dir.path)
                except OSError:
                    pass
    return removed
