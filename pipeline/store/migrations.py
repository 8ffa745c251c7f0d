"""Schema migrations between major versions, and ``dynaset migrate``.

Policy (schemas/README.md): a minor version only adds optional arrays/attributes, so it needs no
migration; a major version changes meaning or layout and comes with a ``Migration`` registered
here from the previous major. ``migrate_store`` applies the chain of registered migrations from a
store's major to the one this dynaset writes (``SUPPORTED_MAJOR``)::

    migrate_store("OUT/motion.zarr")                   # in place, atomically
    migrate_store("old/motion.zarr", "new/motion.zarr")  # into a new store; the old one is untouched

It works on a temporary sibling ``.{name}.tmp-<id>`` and swaps it in like the writer's
``finalize_store``, so a crash never leaves a half-migrated store under the final name. In place,
the sibling is a hard-link copy (chunk files are linked, metadata files copied), so a rename
migration moves array folders and rewrites metadata only: no chunk data is read or written.

Readers (``pipeline.store.reader.open_store``) present an older-major store in the current layout
when every migration on its path is a pure rename (``Migration.is_pure_rename``), with a
``SchemaUpgradeWarning``; otherwise they refuse it and name ``dynaset migrate STORE``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from .schema import (
    SUBSETS,
    SUPPORTED_MAJOR,
    SchemaError,
    _parse_version,
    validate_store,
)
from .staging import replace_dir

METADATA_FILES = frozenset({"zarr.json", ".zattrs", ".zarray", ".zgroup", ".zmetadata"})
"""Files copied (never hard-linked) into a migration's temporary store: the ones it rewrites."""


@dataclass(frozen=True)
class Migration:
    """How a store of ``subset`` at major ``from_major`` becomes ``to_version`` (major + 1).

    Attributes:
        subset: schema name.
        from_major: major version migrated from (any minor of it).
        to_version: schema version the result declares (the first version of the next major).
        reason: one line: why the major changed.
        renames: (old array name, new array name) pairs, applied first.
        transform: further in-place changes on the opened zarr group (``zarr.Group``, ``r+``);
            ``None`` for a pure rename. A transform must write new arrays, not rewrite existing
            chunk files in place (the temporary store hard-links the original's chunks).
    """

    subset: str
    from_major: int
    to_version: str
    reason: str
    renames: tuple[tuple[str, str], ...] = ()
    transform: Callable[[Any], None] | None = None

    @property
    def to_major(self) -> int:
        return _parse_version(self.to_version)[0]

    @property
    def is_pure_rename(self) -> bool:
        """True when the migration only renames arrays: readers can apply it lazily on read."""
        return self.transform is None

    @property
    def rename_map(self) -> dict[str, str]:
        return dict(self.renames)

    def describe(self) -> str:
        """E.g. ``motion 1.x -> 2.0.0: rename seq_sha256 -> seq_source_sha256``."""
        parts = [f"rename {a} -> {b}" for a, b in self.renames]
        if self.transform is not None:
            parts.append(getattr(self.transform, "__doc__", None) or self.transform.__name__)
        return f"{self.subset} {self.from_major}.x -> {self.to_version}: " + "; ".join(parts)

    def apply(self, group: Any) -> None:
        """Apply to an opened zarr group (mode ``r+``); attrs are the caller's business."""
        for old, new in self.renames:
            rename_array(group, old, new)
        if self.transform is not None:
            self.transform(group)


MIGRATIONS: dict[tuple[str, int], Migration] = {}
"""Registered migrations keyed ``(subset, from_major)``."""


def register(migration: Migration) -> Migration:
    """Add a migration to ``MIGRATIONS``; refuses duplicates and majors that skip or go back."""
    key = (migration.subset, migration.from_major)
    if migration.subset not in SUBSETS:
        raise SchemaError(f"migration for unknown schema {migration.subset!r}")
    if migration.to_major != migration.from_major + 1:
        raise SchemaError(
            f"migration {migration.subset} {migration.from_major}.x -> {migration.to_version} must go to major "
            f"{migration.from_major + 1}"
        )
    if key in MIGRATIONS:
        raise SchemaError(f"a migration from {migration.subset} major {migration.from_major} is already registered")
    MIGRATIONS[key] = migration
    return migration


def migration_path(subset: str, version: str, to_major: int | None = None) -> tuple[Migration, ...]:
    """Migrations taking ``subset`` at ``version`` to ``to_major`` (default: ``SUPPORTED_MAJOR``).

    Empty when already there; ``SchemaError`` when ``version`` is newer, or a step is missing.
    """
    if subset not in SUPPORTED_MAJOR:
        raise SchemaError(f"unknown schema {subset!r}; supported: {sorted(SUPPORTED_MAJOR)}")
    target = SUPPORTED_MAJOR[subset] if to_major is None else to_major
    major = _parse_version(version)[0]
    if major > target:
        raise SchemaError(f"{subset} {version} is newer than major {target}; there are no downgrades")
    path = []
    for k in range(major, target):
        step = MIGRATIONS.get((subset, k))
        if step is None:
            raise SchemaError(
                f"no migration registered from {subset} major {k} to {k + 1} "
                f"(a store at {subset} {version} cannot be brought to major {target})"
            )
        path.append(step)
    return tuple(path)


# ---------------------------------------------------------------------------------------------
# The migrations


_SHA_REASON = (
    "releases carry per-object sha256 checksums in their manifests, so the hash of a sequence's "
    "source file is named unambiguously: seq_sha256 -> seq_source_sha256"
)

for _subset in SUBSETS:
    register(Migration(_subset, 1, "2.0.0", _SHA_REASON, renames=(("seq_sha256", "seq_source_sha256"),)))
del _subset


# ---------------------------------------------------------------------------------------------
# Group operations


def _local_root(group: Any) -> Path | None:
    """Folder of ``group`` when it lives in a zarr ``LocalStore``, else ``None``."""
    from zarr.storage import LocalStore

    store = group.store
    if isinstance(store, LocalStore):
        return Path(store.root) / group.path if group.path else Path(store.root)
    return None


def rename_array(group: Any, old: str, new: str) -> None:
    """Rename array ``old`` of ``group`` to ``new`` (a v3 array's metadata does not hold its name).

    In a ``LocalStore`` this moves the array's folder (no chunk is read or written); in other
    stores every key under ``old/`` is copied to ``new/`` and deleted. Consolidated metadata, if
    any, must be refreshed by the caller (``migrate_store`` does).
    """
    if old not in set(group.array_keys()):
        raise SchemaError(f"cannot rename {old} -> {new}: the store has no array {old}")
    if new in set(group.keys()):
        raise SchemaError(f"cannot rename {old} -> {new}: {new} already exists")
    root = _local_root(group)
    if root is not None:
        os.rename(root / old, root / new)
        return
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    store = group.store
    base = f"{group.path}/" if group.path else ""

    async def _move() -> None:
        keys = [k async for k in store.list_prefix(f"{base}{old}/")]
        for key in keys:
            buf = await store.get(key, prototype=default_buffer_prototype())
            await store.set(f"{base}{new}/{key[len(base) + len(old) + 1:]}", buf)
        for key in keys:
            await store.delete(key)

    sync(_move())


def _is_consolidated(path: Path) -> bool:
    import json

    meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    return meta.get("consolidated_metadata") is not None


def _open_rw(path: Path):  # -> zarr.Group
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_group(str(path), mode="r+", zarr_format=3, use_consolidated=False)


def _store_attrs(path: Path) -> dict[str, Any]:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(zarr.open_group(str(path), mode="r", zarr_format=3, use_consolidated=False).attrs)


def _link_tree(src: Path, dst: Path) -> tuple[int, int]:
    """Copy the folder tree ``src`` to ``dst`` (must not exist): chunk files hard-linked, metadata
    files copied; falls back to copying where links are not possible. Returns (linked, copied)."""
    linked = copied = 0
    for folder, _, names in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=rel != Path("."))
        for name in names:
            a, b = Path(folder) / name, dst / rel / name
            if name not in METADATA_FILES:
                try:
                    os.link(a, b)
                    linked += 1
                    continue
                except OSError:
                    pass
            shutil.copy2(a, b)
            copied += 1
    return linked, copied


def _copy_tree(src: Path, dst: Path) -> tuple[int, int]:
    n = 0

    def _count(a: str, b: str) -> str:
        nonlocal n
        n += 1
        return shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=_count)
    return 0, n


# ---------------------------------------------------------------------------------------------
# migrate_store


@dataclass(frozen=True)
class MigrationResult:
    """What ``migrate_store`` did (or, with ``dry_run``, would do).

    Attributes:
        src, dst: store migrated and where the result is (``dst == src`` in place).
        subset: schema name.
        from_version, to_version: schema versions before and after (equal: nothing to do).
        steps: ``Migration.describe()`` of every step applied.
        seconds: wall time (0 for a dry run).
        linked_files, copied_files: files hard-linked / copied into the temporary store.
        dry_run: nothing was written.
    """

    src: Path
    dst: Path
    subset: str
    from_version: str
    to_version: str
    steps: tuple[str, ...]
    seconds: float = 0.0
    linked_files: int = 0
    copied_files: int = 0
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.steps)


def _history_entry(step: Migration, from_version: str, when: str) -> dict[str, Any]:
    return {
        "from": from_version, "to": step.to_version, "renamed": step.rename_map, "reason": step.reason,
        "by": f"dynaset {__version__} (pipeline.store.migrations)", "at": when,
    }


def migrate_group(group: Any, steps: Sequence[Migration], from_version: str) -> str:
    """Apply ``steps`` to an opened zarr group (``r+``) and record them in its attrs:
    ``schema_version`` becomes the last step's ``to_version`` and ``migrated_from`` (a list)
    gains one entry per step. Consolidated metadata is not refreshed. Returns the new version."""
    when = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    history = list(group.attrs.get("migrated_from", []))
    version = from_version
    for step in steps:
        step.apply(group)
        history.append(_history_entry(step, version, when))
        version = step.to_version
    group.attrs.update({"schema_version": version, "migrated_from": history})
    return version


def migrate_store(
    src: str | Path, dst: str | Path | None = None, *, dry_run: bool = False, full_check: bool = False
) -> MigrationResult:
    """Bring the local store ``src`` to the schema major this dynaset writes.

    ``dst=None`` migrates in place; otherwise the result is written to ``dst`` (must not exist;
    ``src`` is untouched, chunk files are copied). Work happens in a temporary sibling of the
    result, which must validate (``validate_store``) before it is swapped in; on any error it is
    deleted and nothing else changes. Validation checks the structure against the new schema; its
    data scan (sequence index, flags, allowed values: time linear in frames) runs too with
    ``full_check`` or when a step has a ``transform`` (pure renames leave the data untouched). A store already at the current major is left as it is (or
    copied to ``dst``). Raises ``SchemaError`` for an unknown/newer schema, a missing migration
    step or an invalid result.
    """
    from .writer import temporary_path

    src = Path(src)
    if not (src / "zarr.json").is_file():
        raise SchemaError(f"{src} is not a zarr v3 store (no zarr.json)")
    attrs = _store_attrs(src)
    name, version = attrs.get("schema_name"), attrs.get("schema_version")
    if name is None or version is None:
        raise SchemaError(f"store {src} has no schema_name/schema_version attrs; not a dynaset store")
    name, version = str(name), str(version)
    try:
        steps = migration_path(name, version)
    except SchemaError as exc:
        raise SchemaError(f"cannot migrate {src}: {exc}") from None
    final = src if dst is None else Path(dst)
    if dst is not None and final.exists():
        raise SchemaError(f"migration target {final} already exists")
    to_version = steps[-1].to_version if steps else version
    result = MigrationResult(src, final, name, version, to_version, tuple(s.describe() for s in steps), dry_run=dry_run)
    if dry_run or (not steps and dst is None):
        return result

    t0 = time.perf_counter()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    try:
        linked, copied = _link_tree(src, tmp) if dst is None else _copy_tree(src, tmp)
        if steps:
            consolidated = _is_consolidated(src)
            migrate_group(_open_rw(tmp), steps, version)
            full = full_check or not all(s.is_pure_rename for s in steps)
            problems = validate_store(tmp, index=full)
            if problems:
                raise SchemaError(f"migrated {src} ({name} {version} -> {to_version}) is invalid: " + "; ".join(problems))
            if consolidated:
                import zarr

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", category=UserWarning)
                    zarr.consolidate_metadata(str(tmp), zarr_format=3)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MigrationResult(
        src, final, name, version, to_version, result.steps, time.perf_counter() - t0, linked, copied, False
    )


# ---------------------------------------------------------------------------------------------
# CLI


def _expand(paths: Sequence[str]) -> list[Path]:
    """Stores named on the command line; a folder that is not a store stands for its ``*.zarr``."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / "zarr.json").exists():
            found = sorted(q for q in p.glob("*.zarr") if q.is_dir() and not q.name.startswith("."))
            out.extend(found or [p])
        else:
            out.append(p)
    return out


def add_migrate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``migrate STORE [STORE ...] [--out DIR] [--dry-run]`` to a ``dynaset`` subparsers object."""
    p = subparsers.add_parser(
        "migrate", help="upgrade stores written by an older dynaset to the current schema major version",
        description="Apply the registered schema migrations (schemas/README.md) to each store, in place "
        "(atomic swap) or into --out. A folder that is not a store stands for the *.zarr stores in it.",
    )
    p.add_argument("stores", nargs="+", metavar="STORE", help="store (or build/release folder of stores)")
    p.add_argument("--out", default=None, metavar="DIR", help="write migrated copies to DIR/<store name> instead")
    p.add_argument("--dry-run", action="store_true", help="only print what would change")
    p.add_argument("--full-check", action="store_true",
                   help="also scan the data (sequence index, flags) when validating a rename-only migration")
    p.set_defaults(func=run_migrate)
    return p


def run_migrate(args: argparse.Namespace) -> int:
    """Entry point of ``dynaset migrate``: 0 when every store is current or migrated, 1 otherwise."""
    status = 0
    out = None if args.out is None else Path(args.out)
    for store in _expand(args.stores):
        dst = None if out is None else out / store.name
        try:
            r = migrate_store(store, dst, dry_run=args.dry_run, full_check=args.full_check)
        except (SchemaError, OSError) as exc:
            status = 1
            print(f"FAILED   {store}: {exc}")
            continue
        where = "" if dst is None else f" -> {r.dst}"
        if not r.changed:
            print(f"current  {store}: {r.subset} {r.from_version}{where}")
        elif r.dry_run:
            print(f"would    {store}: {r.subset} {r.from_version} -> {r.to_version}{where}")
        else:
            print(f"migrated {store}: {r.subset} {r.from_version} -> {r.to_version}{where} in {r.seconds:.2f} s "
                  f"({r.linked_files} files linked, {r.copied_files} copied)")
        for step in r.steps:
            print(f"  - {step}")
    return status


def read_renames(steps: Sequence[Migration]) -> Mapping[str, str]:
    """Stored name → current name after the pure-rename ``steps`` (chained renames composed)."""
    current: dict[str, str] = {}
    for step in steps:
        if not step.is_pure_rename:
            raise SchemaError(f"{step.describe()} is not a pure rename")
        for old, new in step.renames:
            origin = next((k for k, v in current.items() if v == old), old)
            current[origin] = new
    return current
