"""Assembly: every live file's outcome → deduplicated, quality-filtered members of each subset →
store plans → shard-aligned region writes → validated stores swapped into place → statistics.

The pure part (``dedupe``, ``select``, ``plan_stores``) decides what goes where; ``write_stores``
runs the region writes through an executor (``pipeline.dataset.executor``) and does the I/O only
through ``pipeline.store``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__, markers, skeleton
from pipeline.process import BuildConfig
from pipeline.quality import Thresholds
from pipeline.quality.flags import excluded_ids
from pipeline.records import QuarantineEntry
from pipeline.split import SUBSETS
from pipeline.store.staging import Trash
from pipeline.store import (
    LABELLED_DIMS,
    Chunking,
    StagedSequence,
    StorePlan,
    check_store,
    create_store,
    load_schema,
    plan_store,
    region_plan,
    swap_store,
    write_frame_region,
    write_window_region,
)

from .config import from_jsonable, to_jsonable
from .executor import Executor, release_memory
from .records import FileOutcome, SimOutcome

QUARANTINE_FILE = "quarantine.json"


def store_attrs(cfg: BuildConfig, created_by: str = "dynaset build") -> tuple[dict, dict]:
    """Group attributes and coordinate labels common to every subset store."""
    attrs = {
        "dynaset_version": __version__,
        "fps_hz": float(cfg.canonical.fps_hz),
        "frame_convention": (
            "world frame z up, metres, radians, ground plane z = 0; SMPL joint order; "
            "joint 0 rotation global, others local to the parent; see storage_layout.md"
        ),
        "created_by": created_by,
        "window_length_frames": int(cfg.windows.length),
        "window_stride_frames": int(cfg.windows.stride),
        "window_time": "u = k / (length - 1) in [0, 1]; coefficients in increasing powers of u",
        "build_config": json.dumps(asdict(cfg), default=str, sort_keys=True),
    }
    coords = {
        "joint": list(skeleton.JOINT_NAMES),
        "bone": list(skeleton.BONE_NAMES),
        "marker": list(markers.MARKER_NAMES),
        "foot_point": list(skeleton.FOOT_POINT_NAMES),
        "foot": ["left", "right"],
        "actuated_joint": list(skeleton.JOINT_NAMES[1:]),
        "xyz": ["x", "y", "z"],
    }
    return attrs, coords


def dedupe(outcomes: Sequence[FileOutcome]) -> tuple[list[StagedSequence], list[QuarantineEntry]]:
    """Staged sequences sorted by id; a file whose sequence id another file already has is quarantined.

    Files are considered in (source, path) order, so the first file keeps the id.
    """
    owner: dict[str, str] = {}
    keep: list[StagedSequence] = []
    entries: list[QuarantineEntry] = []
    for o in sorted(outcomes, key=lambda o: (o.source, o.path)):
        clash = [s.key for s in o.staged if s.key in owner]
        if clash:
            entries.append(QuarantineEntry(
                path=o.name, stage="split",
                reason=f"duplicate sequence id {clash[0]!r} (already built from {owner[clash[0]]})",
            ))
            continue
        for s in o.staged:
            owner[s.key] = o.name
            keep.append(s)
    return sorted(keep, key=lambda s: s.key), entries


@dataclass(frozen=True)
class Selection:
    """What the stores hold: every kept sequence (motions and simulated passes) in id order, and
    which of them quality rules exclude; the metrics table and exclusions; duplicate-file entries;
    the frames of the kept simulated motions."""

    staged: tuple[StagedSequence, ...]
    drop: frozenset[str]
    duplicates: tuple[QuarantineEntry, ...]
    frames_simulated: int
    table: Any
    exclusions: list

    def members(self, subset: str) -> list[StagedSequence]:
        """The sequences of ``subset``'s store, in store order (sequence id)."""
        return [s for s in self.staged if subset in s.subsets and s.key not in self.drop]

    @property
    def excluded(self) -> list[StagedSequence]:
        return [s for s in self.staged if s.key in self.drop]


class Selector:
    """``select`` one file at a time, in (source, path) order: each file's outcome and simulations
    are read (e.g. from its cache entry), deduplicated, their metrics rows flagged into a columnar
    table (``FlagAccumulator``), and dropped; only the staged-sequence handles stay. So the driver's
    memory holds no per-file outcome or metrics row of the corpus (docs/scaling.md, "Flat memory")."""

    def __init__(self, thresholds: Thresholds | None):
        from pipeline.quality.flags import FlagAccumulator

        self._flags = FlagAccumulator(thresholds)
        self._owner: dict[str, str] = {}
        self._staged: list[StagedSequence] = []
        self._dups: list[QuarantineEntry] = []
        self._passes: list[str] = []  # staged keys of simulated passes
        self._frames_simulated = 0
        self._last: tuple[str, str] | None = None

    def add(self, outcome: FileOutcome, sims: Sequence[SimOutcome] = ()) -> QuarantineEntry | None:
        """One file (files must come in (source, path) order: the first file keeps a sequence id);
        returns its quarantine entry if another file already has one of its sequence ids."""
        key = (outcome.source, outcome.path)
        if self._last is not None and key < self._last:
            raise ValueError(f"files must be added in (source, path) order: {key} after {self._last}")
        self._last = key
        clash = [s.key for s in outcome.staged if s.key in self._owner]
        if clash:
            q = QuarantineEntry(path=outcome.name, stage="split",
                                reason=f"duplicate sequence id {clash[0]!r} (already built from {self._owner[clash[0]]})")
            self._dups.append(q)
            return q
        ids = set()
        for s in outcome.staged:
            self._owner[s.key] = outcome.name
            self._staged.append(s)
            ids.add(s.key)
        for r in outcome.metrics:
            if r.get("seq_id") in ids:
                self._flags.add(r)
        origins = {c[1] for c in outcome.to_simulate}
        for so in sims:
            if so.origin not in origins:
                continue
            self._frames_simulated += so.frames
            for s in so.staged:
                self._staged.append(s)
                self._passes.append(s.key)
            for r in so.metrics:
                self._flags.add(r)
        return None

    def finish(self) -> Selection:
        table, exclusions = self._flags.finish()
        drop = set(excluded_ids(exclusions))
        drop |= {k for k in self._passes if k.split("#pass")[0] in drop}
        staged = tuple(sorted(self._staged, key=lambda s: s.key))
        self._staged = []
        return Selection(staged, frozenset(drop), tuple(self._dups), self._frames_simulated, table, exclusions)


def select(outcomes: Sequence[FileOutcome], sims: Sequence[SimOutcome], thresholds: Thresholds | None) -> Selection:
    """Dedupe files, keep the simulations of kept files, flag every sequence (motions and passes):
    excluded ones stay out of the stores, and a motion excluded by quality takes its passes with it.
    (``Selector`` over ``outcomes`` in (source, path) order.)"""
    by_origin: dict[str, list[SimOutcome]] = {}
    for so in sims:
        by_origin.setdefault(so.origin, []).append(so)
    sel = Selector(thresholds)
    for o in sorted(outcomes, key=lambda o: (o.source, o.path)):
        sel.add(o, [so for c in o.to_simulate for so in by_origin.get(c[1], ())])
    return sel.finish()


STATE_FILE = ".cache/assembly.json"
STATE_FORMAT = 1
MAX_DEAD_FRACTION = 0.25
"""An incremental run rewrites (compacts) a store instead of appending to it when more than this
fraction of its frames would be tombstoned."""


def token(s: StagedSequence, out: Path, prefix: str | None = None) -> str:
    """A staged sequence's identity across runs: its cache path relative to the root. Cache entries
    are keyed by content and processing key, so a changed file gets a new token. ``prefix``: the
    resolved root with a trailing ``/`` (``root_prefix``), to skip resolving each path: staged
    paths read back from the cache are absolute under the resolved root already."""
    path = str(s.path)
    if prefix is not None and path.startswith(prefix) and "/../" not in path and "/./" not in path:
        return path[len(prefix):]
    try:
        return Path(s.path).resolve().relative_to(Path(out).resolve()).as_posix()
    except ValueError:
        return str(Path(s.path).resolve())


def root_prefix(out: Path) -> str:
    """The resolved dataset root with a trailing ``/`` (``token``'s fast path)."""
    return str(Path(out).resolve()).rstrip("/") + "/"


def base_fingerprint(plan: StorePlan) -> str:
    """sha256 of what every sequence of a store shares (schema version, attributes, coordinates,
    chunking): a store is appended to only if it equals the new plan's."""
    doc = {"schema": [plan.subset, plan.schema_version], "attrs": plan.attrs, "coords": plan.coords,
           "chunking": to_jsonable(plan.chunking)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class StoreState:
    """What a subset store holds, per store sequence: key, token, frames, windows; tombstoned indices."""

    base: str
    keys: tuple[str, ...]
    tokens: tuple[str, ...]
    frames: tuple[int, ...]
    windows: tuple[int, ...]
    dead: tuple[int, ...] = ()

    @property
    def n_frames(self) -> int:
        return sum(self.frames)

    @property
    def compact(self) -> bool:
        """No tombstones and sequences in key order: what a fresh build writes."""
        return not self.dead and list(self.keys) == sorted(self.keys)

    def live(self) -> dict[str, int]:
        dead = set(self.dead)
        return {t: i for i, t in enumerate(self.tokens) if i not in dead}


def read_state(out: Path) -> dict[str, StoreState]:
    """The stores' recorded states (``{}`` when absent or unreadable: every store is rewritten)."""
    try:
        doc = json.loads((Path(out) / STATE_FILE).read_text())
        if doc.get("format") != STATE_FORMAT:
            return {}
        return {k: from_jsonable(StoreState, v) for k, v in doc["subsets"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_state(out: Path, states: dict[str, StoreState]) -> None:
    from pipeline.store.location import write_text_atomic

    (Path(out) / STATE_FILE).parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": STATE_FORMAT, "subsets": to_jsonable(states)}
    write_text_atomic(Path(out) / STATE_FILE, json.dumps(doc, sort_keys=True) + "\n")


def clear_state(out: Path) -> None:
    """Forget the states (before stores are swapped: a crash midway makes the next run rewrite)."""
    (Path(out) / STATE_FILE).unlink(missing_ok=True)


@dataclass(frozen=True)
class StoreChange:
    """What a run does to one subset store.

    ``mode``: ``full`` (write the store afresh from ``plan``: a fresh build or a compaction),
    ``append`` (``plan`` holds only the sequences to append; ``tombstones`` are store indices to
    mark) or ``none`` (left untouched). ``state``: the store's state afterwards."""

    subset: str
    mode: str
    plan: StorePlan | None
    tombstones: tuple[int, ...]
    state: StoreState


def plan_changes(selection: Selection, states: dict[str, StoreState], out: Path, cfg: BuildConfig,
                 chunking: Chunking | None, created_by: str = "dynaset build", compact: bool = False,
                 max_dead_fraction: float = MAX_DEAD_FRACTION) -> dict[str, StoreChange]:
    """Decide per subset between a full write, an append with tombstones, or nothing (pure, apart
    from reading each existing store's sizes). Every plan is validated before any store is written.

    A store is appended to only when what its sequences share is unchanged (``base_fingerprint``:
    schema version, attributes, coordinates, chunking). That includes the torque store's
    ``source_dof`` coordinate, the sorted union of the live sequences' source DOF names: a run whose
    sequences bring a DOF name the store lacks (or drop the last sequence with some name, or bring
    the first source torques to a store without them) rewrites that store in full."""
    from pipeline.store.append import store_sizes

    attrs, coords = store_attrs(cfg, created_by)
    prefix = root_prefix(out)
    changes = {}
    for subset in SUBSETS:
        declared = load_schema(subset).coords
        sub_coords = {k: v for k, v in coords.items() if k in declared}
        members = selection.members(subset)
        full = plan_store(subset, members, attrs, sub_coords, chunking)
        base = base_fingerprint(full)
        fresh = StoreState(base, tuple(s.key for s in members), tuple(token(s, out, prefix) for s in members),
                           tuple(s.n_frames for s in members), tuple(s.n_windows for s in members))
        old = states.get(subset)
        path = Path(out) / f"{subset}.zarr"
        usable = (not compact and old is not None and old.base == base and (path / "zarr.json").is_file()
                  and "seq_tombstone" in full.schema.arrays
                  and store_sizes(path) == (len(old.keys), old.n_frames, sum(old.windows)))
        if not usable:
            changes[subset] = StoreChange(subset, "full", full, (), fresh)
            continue
        live = old.live()
        wanted = set(fresh.tokens)
        tombstones = tuple(sorted(i for t, i in live.items() if t not in wanted))
        new = [s for s, t in zip(members, fresh.tokens) if t not in live]
        if not tombstones and not new:
            changes[subset] = StoreChange(subset, "none", None, (), old)
            continue
        dead = tuple(sorted(set(old.dead) | set(tombstones)))
        total = old.n_frames + sum(s.n_frames for s in new)
        dead_frames = sum(old.frames[i] for i in dead)
        if total and dead_frames / total > max_dead_fraction:
            changes[subset] = StoreChange(subset, "full", full, (), fresh)
            continue
        state = StoreState(base, old.keys + tuple(s.key for s in new), old.tokens + tuple(token(s, out, prefix) for s in new),
                           old.frames + tuple(s.n_frames for s in new), old.windows + tuple(s.n_windows for s in new),
                           dead)
        # the whole store's labelled coordinates (source_dof): equal to the stored ones, or ``base`` differs
        whole = {**sub_coords, **{d: full.coords[d] for d in LABELLED_DIMS if d in full.coords}}
        changes[subset] = StoreChange(subset, "append", plan_store(subset, new, attrs, whole, chunking),
                                      tombstones, state)
    return changes


def write_region(plan: StorePlan, tmp_path: str, dim: str) -> float:
    """Write region 0 of a ``region_plan`` along ``dim`` (``frame``/``window``); returns seconds."""
    t0 = time.perf_counter()
    (write_frame_region if dim == "frame" else write_window_region)(plan, Path(tmp_path), 0)
    return time.perf_counter() - t0


def write_regions(items: Sequence[tuple[StorePlan, str, str]], after: Any = None) -> float:
    """``write_region`` for each (region plan, temporary store, dim) in turn; returns seconds.
    One task writes several regions: each task costs the task runner a fixed bookkeeping time
    that a region (16k frames, ~0.1 s) does not amortize. ``after``: ignored (the ``create_stores``
    futures it is submitted with, so that it starts once they are done)."""
    try:
        return sum(write_region(plan, tmp_path, dim) for plan, tmp_path, dim in items)
    finally:
        release_memory()


def group_regions(items: Sequence[tuple[StorePlan, str, str]], n_groups: int) -> list[list]:
    """``items`` (in order) in at most ``n_groups`` contiguous groups of about equal records."""
    if not items:
        return []
    sizes = [max(1, p.n_frames if dim == "frame" else p.n_windows) for p, _, dim in items]
    total, n_groups = sum(sizes), max(1, min(n_groups, len(items)))
    groups: list[list] = [[]]
    done = 0
    for item, size in zip(items, sizes):
        if groups[-1] and done >= total * len(groups) / n_groups:
            groups.append([])
        groups[-1].append(item)
        done += size
    return groups


def create_stores(group: Sequence[tuple[StorePlan, str, str]]) -> None:
    """``create_store`` for each (plan, temporary store, subset) in turn (one task)."""
    for plan, tmp, _ in group:
        create_store(plan, Path(tmp))


def check_stores(group: Sequence[tuple[StorePlan, str, str]], after: Any = None) -> None:
    """``check_store`` for each (plan, temporary store, subset) in turn (one task); ``after``:
    ignored (the ``write_regions`` futures it is submitted with)."""
    for plan, tmp, subset in group:
        check_store(plan, tmp, f"{subset}.zarr")


def _store_groups(stores: list[tuple[StorePlan, str, str]], workers: int) -> list[list]:
    """The stores in at most ``workers`` groups of about equal records (largest first, each to the
    lightest group): one task per group, so a one-worker run pays one task, not one per store."""
    groups: list[list] = [[] for _ in range(max(1, min(workers, len(stores))))]
    load = [0] * len(groups)
    for item in sorted(stores, key=lambda it: -(it[0].n_frames + it[0].n_windows)):
        i = load.index(min(load))
        groups[i].append(item)
        load[i] += item[0].n_frames + item[0].n_windows + 1
    return [g for g in groups if g]


def _results(executor: Executor, futures: list) -> list:
    """Wait for every future, then their results in order (re-raises the first failure)."""
    executor.wait(futures)
    return [f.result() for f in futures]


def write_stores(changes: dict[str, StoreChange], out: Path, build_id: str, executor: Executor,
                 say=print, tasks: int = 4, trash: Trash | None = None,
                 workers: int = 2) -> tuple[dict[str, str], float]:
    """Apply every store change: create the store (``full``: ``create_stores`` tasks, at most
    ``workers`` of them) or a hard-linked clone grown for the appended sequences (``append``, here)
    under a temporary name, write all their regions through ``executor`` in about ``tasks`` tasks
    (each gets only its regions' sequences), validate each (``check_stores`` tasks, at most
    ``workers``), then swap them into place here. ``trash``: replaced stores (and ones an
    interrupted run left) are deleted there, in the background (the caller waits for it); default:
    at once. (Creating and validating ran in the flow process one store after the other: 4.7 of
    the 5.5 s of a 1 h build's writes.)

    Returns (subset → final path, summed region-write seconds). On any failure every temporary
    store is deleted and the existing stores stay as they were.
    """
    from pipeline.store.append import plan_append, prepare_append

    if trash is not None:
        trash.sweep(out)

    todo = {k: c for k, c in changes.items() if c.mode != "none"}
    tmps = {subset: out / f".{subset}.zarr.tmp-{build_id}" for subset in todo}
    plans: dict[str, StorePlan] = {}
    items: list[tuple[StorePlan, str, str]] = []
    creates: list[tuple[StorePlan, str, str]] = []
    futures = []
    try:
        for subset, change in todo.items():
            final = out / f"{subset}.zarr"
            if change.mode == "full":
                plan = change.plan
                creates.append((plan, str(tmps[subset]), subset))
            else:
                plan = plan_append(final, change.plan)
                prepare_append(final, plan, change.tombstones, tmps[subset])
            plans[subset] = plan
            items += [(region_plan(plan, "frame", i), str(tmps[subset]), "frame") for i in range(len(plan.frame_regions))]
            items += [(region_plan(plan, "window", i), str(tmps[subset]), "window")
                      for i in range(len(plan.window_regions))]
        # the three phases are submitted at once, each task with the previous phase's futures as
        # an argument: it starts as they finish, without a round trip through this process (in a
        # 1 h build the checks started 0.7 s after the last region was written)
        created = [executor.submit(create_stores, g) for g in _store_groups(creates, workers)]
        futures = list(created)
        written = [executor.submit(write_regions, group, created) for group in group_regions(items, tasks)]
        futures += written
        say(f"[write] {len(items)} shard-aligned regions in {len(written)} tasks over {len(todo)} stores "
            f"({', '.join(f'{k}: {c.mode}' for k, c in changes.items())})")
        checks = [(plans[subset], str(tmps[subset]), subset) for subset in plans]
        checked = [executor.submit(check_stores, g, written) for g in _store_groups(checks, workers)]
        futures += checked
        _results(executor, created)
        seconds = sum(_results(executor, written))
        _results(executor, checked)
    except BaseException:
        executor.wait(futures)  # no writer may still read the staging folder when it is deleted
        for tmp in tmps.values():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    clear_state(out)
    stores = {}
    for subset in changes:
        final = out / f"{subset}.zarr"
        if subset in plans:
            swap_store(tmps[subset], final, trash.add if trash is not None else None)
            c = changes[subset]
            say(f"[write] {subset}: {c.mode}, {len(c.plan.staged)} sequences written, {len(c.tombstones)} "
                f"tombstoned -> {final}")
        stores[subset] = str(final)
    write_state(out, {k: c.state for k, c in changes.items()})
    return stores, seconds


def subset_counts(changes: dict[str, StoreChange], stores: dict[str, str], fps_hz: float) -> dict[str, dict]:
    """Live sequences, frames and windows per subset store, and what this run did to it."""
    out = {}
    for subset, c in changes.items():
        st, dead = c.state, set(c.state.dead)
        frames = sum(f for i, f in enumerate(st.frames) if i not in dead)
        out[subset] = {"store": stores[subset], "mode": c.mode, "sequences": len(st.keys) - len(dead),
                       "frames": frames, "windows": sum(w for i, w in enumerate(st.windows) if i not in dead),
                       "hours": frames / fps_hz / 3600.0, "tombstoned": len(dead),
                       "written_sequences": 0 if c.plan is None else len(c.plan.staged),
                       "written_frames": 0 if c.plan is None else c.plan.n_frames}
    return out


STATS_CACHE_DIR = ".cache/stats"


def store_stats(store_path: str, only: tuple[str, ...] | None = None, canonical: bool = True,
                part: tuple[int, int] | None = None, parts: int = 0, after: Any = None) -> dict:
    """Normalization statistics of one finished store (streamed block by block); ``only``: these
    arrays; ``canonical``: also the canonical-feature statistics. Per-block accumulators are kept in
    the root's ``.cache/stats/``: after an incremental run only new and tombstoned blocks are read.
    ``part``/``parts``: one of ``parts`` parallel tasks computing the blocks, then the merge
    (``pipeline.loaders.stats.compute_stats``; the same figures as one task). ``after``: ignored
    (the merge's part tasks, passed as futures so that it runs once they are done)."""
    from pipeline.loaders.stats import compute_stats

    path = Path(store_path)
    cache = path.parent / STATS_CACHE_DIR / f"{path.name.removesuffix('.zarr')}{'-own' if only else ''}.npz"
    try:
        return compute_stats(store_path, only=only, canonical=canonical, block_cache=cache, part=part, parts=parts)
    finally:
        release_memory()


STATS_FRAMES_PER_PART = 4 * 4096
"""A store's statistics are split into parallel tasks of at least this many frames each."""


def stats_parts(store_path: str, tasks: int) -> int:
    """How many parallel tasks compute the statistics of the store at ``store_path`` (1: one)."""
    from pipeline.store.append import store_sizes

    try:
        n_frames = store_sizes(Path(store_path))[1]
    except (OSError, ValueError, KeyError):
        return 1
    return max(1, min(tasks, n_frames // STATS_FRAMES_PER_PART))


def same_sequences(changes: dict[str, StoreChange]) -> dict[str, str]:
    """subset → an earlier subset whose store holds the very same sequences (tokens, tombstones):
    the arrays the two share have the same statistics (motion and contact, usually)."""
    out: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for subset, c in changes.items():
        sig = (c.state.tokens, c.state.dead)
        if sig in seen and c.state.tokens:
            out[subset] = seen[sig]
        else:
            seen[sig] = subset
    return out


def write_stats(stores: dict[str, str], out: Path, executor: Executor, changed: Sequence[str] | None = None,
                same_as: dict[str, str] | None = None, tasks: int = 1,
                submitted: Callable[[], None] | None = None) -> Path:
    """``stats.json``: the statistics of every subset in ``changed`` (default all) computed in
    parallel through ``executor``; the others are kept from the previous ``stats.json``. A subset
    holding the same sequences as another (``same_as``) has only its own arrays computed; the shared
    arrays' statistics (and the canonical features, computed from shared arrays) are copied. A large
    store's blocks are split over up to ``tasks`` parallel tasks, then merged by one more.
    ``submitted``: called once every first-round task is submitted (the build submits its report
    then, so that the statistics, on the critical path, take the free workers first)."""
    from pipeline.loaders.stats import STATS_FILE, STATS_FORMAT
    from pipeline.store.location import write_text_atomic

    changed = list(stores) if changed is None else list(changed)
    same_as = {k: v for k, v in (same_as or {}).items() if k in changed and v in changed}
    try:
        previous = json.loads((out / STATS_FILE).read_text())
        previous = previous["subsets"] if previous.get("format") == STATS_FORMAT else {}
    except (OSError, ValueError, KeyError):
        previous = {}
    changed += [s for s in stores if s not in previous and s not in changed]
    futures, split = {}, {}
    for subset in changed:
        if subset in same_as:
            shared = set(load_schema(subset).arrays) & set(load_schema(same_as[subset]).arrays)
            own = tuple(sorted(set(load_schema(subset).arrays) - shared))
            futures[subset] = executor.submit(store_stats, stores[subset], own, False)
            continue
        n = stats_parts(stores[subset], tasks)
        if n == 1:
            futures[subset] = executor.submit(store_stats, stores[subset])
        else:
            part_futures = [executor.submit(store_stats, stores[subset], None, True, (i, n)) for i in range(n)]
            # the merge depends on its parts' futures: it starts as they finish, without a round
            # trip through this process (a 1 h build's merge waited 1.1 s for it), and fails with them
            split[subset] = part_futures
            futures[subset] = executor.submit(store_stats, stores[subset], None, True, None, n, part_futures)
    if submitted is not None:
        submitted()
    for part_futures in split.values():
        executor.wait(part_futures)
        for f in part_futures:
            f.result()  # re-raises a part's failure
    subsets = {k: previous[k] for k in stores if k not in futures}
    subsets.update({k: f.result() for k, f in futures.items()})
    for subset, donor in same_as.items():
        mine, theirs = subsets[subset], subsets[donor]
        mine["arrays"] = dict(sorted({**{k: v for k, v in theirs["arrays"].items()
                                          if k in load_schema(subset).arrays}, **mine["arrays"]}.items()))
        mine["canonical"] = theirs["canonical"]
    stats = {"format": STATS_FORMAT, "subsets": dict(sorted(subsets.items()))}
    write_text_atomic(out / STATS_FILE, json.dumps(stats, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return out / STATS_FILE


def write_quarantine(out: Path, quarantine: Sequence[QuarantineEntry]) -> None:
    from pipeline.store.location import write_text_atomic

    write_text_atomic(out / QUARANTINE_FILE, json.dumps([asdict(q) for q in quarantine], indent=2) + "\n")
