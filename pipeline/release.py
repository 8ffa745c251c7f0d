"""Versioned, immutable releases of a dataset root: publish, list, verify, diff.

A release is the folder ``releases/<X.Y.Z>/`` of a dataset root (local or ``s3://``) holding the
four subset stores, the build's side files (stats, quality tables, report), ``sequences.json`` (every
sequence with its split, frames and source sha256), a dataset card ``README.md`` and
``manifest.json``: the sha256 and size of every other object, the schema of every store, counts per
subset and split, the dynaset version and git commit, the ingestion-ledger hash and the parent release.

Atomicity: a release exists if and only if its ``manifest.json`` exists. Locally the release is
assembled in ``releases/.tmp-<X.Y.Z>-<id>/`` and renamed into place in one step (the manifest is
written before the rename); on S3 the objects are copied into ``releases/<X.Y.Z>/`` and the manifest
is written last. A crash at any point leaves the complete release or none; earlier releases are
never written to. Objects unchanged since the parent release are hard links to the parent's
(local), so an unchanged store costs no disk space.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.split import SUBSETS
from pipeline.store.ledger import now_iso
from pipeline.store.location import Location
from pipeline.store.remote_root import SIDE_FILES

RELEASES = "releases"
MANIFEST = "manifest.json"
CARD = "README.md"
SEQUENCES = "sequences.json"
MANIFEST_FORMAT = 1
_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


class ReleaseError(RuntimeError):
    """A release cannot be published or does not verify."""


def parse_version(text: str) -> tuple[int, int, int]:
    """``X.Y.Z`` → (X, Y, Z); ``ReleaseError`` for anything else."""
    m = _VERSION.match(text)
    if not m:
        raise ReleaseError(f"release version {text!r} is not MAJOR.MINOR.PATCH (e.g. 1.0.0)")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def list_releases(loc: Location) -> list[str]:
    """Published releases (those with a manifest), oldest version first."""
    out = []
    for name in loc.list_dirs(RELEASES):
        if name.startswith(".") or not _VERSION.match(name):
            continue
        if loc.exists(f"{RELEASES}/{name}/{MANIFEST}"):
            out.append(name)
    return sorted(out, key=parse_version)


def read_manifest(loc: Location, version: str) -> dict:
    rel = f"{RELEASES}/{version}/{MANIFEST}"
    if not loc.exists(rel):
        raise ReleaseError(f"no release {version} under {loc.url} (releases: {', '.join(list_releases(loc)) or 'none'})")
    return json.loads(loc.read_bytes(rel))


def read_sequences(loc: Location, version: str) -> dict:
    return json.loads(loc.read_bytes(f"{RELEASES}/{version}/{SEQUENCES}"))


# ---------------------------------------------------------------------------------------------
# Pure parts: what a release says about its stores, and how two releases differ


@dataclass(frozen=True)
class StoreSummary:
    """One store's schema and counts (hours = frames / fps / 3600) overall and per split."""

    subset: str
    schema_version: str
    fps_hz: float
    sequences: dict[str, dict]
    """seq_id → {split, frames, source, path, source_sha256}."""

    def counts(self) -> dict:
        def agg(rows) -> dict:
            frames = sum(r["frames"] for r in rows)
            return {"sequences": len(rows), "frames": frames, "hours": frames / self.fps_hz / 3600.0}

        rows = list(self.sequences.values())
        by_split = {s: agg([r for r in rows if r["split"] == s]) for s in ("train", "val", "test")}
        return {**agg(rows), "by_split": by_split}


def summarize_store(subset: str, attrs: dict, columns: dict) -> StoreSummary:
    """``StoreSummary`` from a store's group attrs and its per-sequence columns (1-D arrays)."""
    sha = columns.get("seq_source_sha256", columns.get("seq_sha256"))
    n = len(columns["seq_id"])
    seqs = {}
    for i in range(n):
        seqs[str(columns["seq_id"][i])] = {
            "split": str(columns["seq_split"][i]),
            "frames": int(columns["seq_frame_count"][i]),
            "source": str(columns["seq_source"][i]),
            "path": str(columns["seq_path"][i]),
            "source_sha256": str(sha[i]) if sha is not None else "",
            "licence": str(columns["seq_licence"][i]) if "seq_licence" in columns else "unknown",
        }
    return StoreSummary(subset, str(attrs.get("schema_version")), float(attrs.get("fps_hz", 30.0)), seqs)


def diff_releases(a: dict, b: dict, seq_a: dict, seq_b: dict) -> dict:
    """What changed from release ``a`` to ``b`` (manifests and sequences.json documents).

    Per subset: sequence ids added, removed and changed (same id, other source sha256 or frame
    count, or the processing configuration changed), and the schema version change with the arrays
    added/removed between the two schema versions; plus objects reused vs new.
    """
    from pipeline.store.schema import load_schema

    out: dict = {"from": a["version"], "to": b["version"], "subsets": {}}
    config_changed = a.get("processing_key") != b.get("processing_key")
    for subset in SUBSETS:
        sa, sb = seq_a.get(subset, {}), seq_b.get(subset, {})
        added = sorted(set(sb) - set(sa))
        removed = sorted(set(sa) - set(sb))
        changed = sorted(
            k for k in set(sa) & set(sb)
            if config_changed or (sa[k]["source_sha256"], sa[k]["frames"]) != (sb[k]["source_sha256"], sb[k]["frames"])
        )
        va = a["stores"][subset]["schema_version"]
        vb = b["stores"][subset]["schema_version"]
        schema = {"from": va, "to": vb}
        if va != vb:
            try:
                arrays_a = set(load_schema(subset, va).arrays)
                arrays_b = set(load_schema(subset, vb).arrays)
                schema.update(arrays_added=sorted(arrays_b - arrays_a), arrays_removed=sorted(arrays_a - arrays_b))
            except Exception as exc:  # noqa: BLE001 - an unknown schema version is reported, not fatal
                schema["note"] = f"cannot compare schemas: {exc}"
        out["subsets"][subset] = {"added": added, "removed": removed, "changed": changed, "schema": schema}
    oa, ob = a["objects"], b["objects"]
    out["objects"] = {
        "same": sum(1 for k, v in ob.items() if oa.get(k, {}).get("sha256") == v["sha256"]),
        "new_or_changed": sum(1 for k, v in ob.items() if oa.get(k, {}).get("sha256") != v["sha256"]),
        "dropped": sum(1 for k in oa if k not in ob),
    }
    out["config_changed"] = config_changed
    return out


def format_diff(d: dict) -> str:
    lines = [f"release {d['from']} -> {d['to']}"]
    if d["config_changed"]:
        lines.append("  processing configuration changed: every kept sequence was reprocessed")
    for subset, s in d["subsets"].items():
        sch = s["schema"]
        head = f"  {subset}: +{len(s['added'])} added, -{len(s['removed'])} removed, ~{len(s['changed'])} changed"
        if sch["from"] != sch["to"]:
            head += f"; schema {sch['from']} -> {sch['to']}"
            if sch.get("arrays_added") or sch.get("arrays_removed"):
                head += f" (arrays +{sch.get('arrays_added', [])} -{sch.get('arrays_removed', [])})"
        lines.append(head)
        for tag, ids in (("+", s["added"]), ("-", s["removed"]), ("~", s["changed"])):
            lines += [f"    {tag} {i}" for i in ids]
    o = d["objects"]
    lines.append(f"  objects: {o['same']} identical, {o['new_or_changed']} new or changed, {o['dropped']} dropped")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Publishing


def git_commit() -> str | None:
    """The git commit of the dynaset source tree, if it is a git checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        res = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return res.stdout.strip() + ("-dirty" if dirty else "")


def _read_store_summary(loc: Location, subset: str) -> StoreSummary:
    import zarr

    target, options = loc.zarr_target(f"{subset}.zarr")
    group = zarr.open_group(target, mode="r", storage_options=options) if options else zarr.open_group(target, mode="r")
    attrs = dict(group.attrs)
    names = ["seq_id", "seq_split", "seq_frame_count", "seq_source", "seq_path", "seq_sha256", "seq_source_sha256",
             "seq_licence"]
    members = set(group.array_keys())
    columns = {n: group[n][...] for n in names if n in members}
    return summarize_store(subset, attrs, columns)


def publish(loc: Location, version: str, notes: str = "", on_object: Callable[[int, int], None] | None = None) -> dict:
    """Publish the root's current stores as release ``version``; returns its manifest.

    Refuses an existing version, a version not above the latest release, a root without a build,
    and stores that fail schema validation. A local root's stores holding tombstoned or appended
    sequences are compacted first (``dynaset compact``); an ``s3://`` root's raise
    ``NotCompactError``. Takes the root's lock. ``on_object(i, n)`` is called
    after each object is placed (progress; the crash tests use it).
    """
    parse_version(version)
    root = loc.local_path()
    if root is not None and any(_not_compact(loc, s) for s in SUBSETS if loc.exists(f"{s}.zarr/zarr.json")):
        # appended/tombstoned stores (incremental ingestion): compact them first, so that the release
        # is byte-identical to a fresh build of its inputs (an s3:// root: `dynaset compact` first)
        from pipeline.dataset.build import compact_dataset

        compact_dataset(root)
    with loc.lock("release"):
        return _publish(loc, version, notes, on_object)


class NotCompactError(ReleaseError):
    """The stores hold tombstoned or appended sequences (incremental ingestion): a release must be
    byte-identical to a fresh build of its inputs, so the stores are compacted first."""

    def __init__(self, problem: str):
        super().__init__(f"{problem}: run `dynaset compact ROOT` before releasing")
        self.problem = problem


def _not_compact(loc: Location, subset: str) -> str:
    """Why a store is not in a fresh build's layout (tombstones, sequences out of id order), or ""."""
    import zarr

    from pipeline.quality.collect import sequence_key

    target, options = loc.zarr_target(f"{subset}.zarr")
    g = zarr.open_group(target, mode="r", storage_options=options) if options else zarr.open_group(target, mode="r")
    names = set(g.array_keys())
    if "seq_tombstone" in names:
        dead = int((np.asarray(g["seq_tombstone"][...]) == 1).sum())
        if dead:
            return f"has {dead} tombstoned sequences"
    if "seq_id" not in names or not g["seq_id"].shape[0]:
        return ""
    ids = [str(x) for x in np.asarray(g["seq_id"][...]).tolist()]
    passes = np.asarray(g["seq_pass"][...]).tolist() if "seq_pass" in names else [-1] * len(ids)
    keys = [sequence_key(i, int(p)) for i, p in zip(ids, passes)]
    return "" if keys == sorted(keys) else "holds appended sequences out of id order"


def _publish(loc: Location, version: str, notes: str, on_object) -> dict:
    existing = list_releases(loc)
    if version in existing:
        raise ReleaseError(f"release {version} already exists under {loc.url}; releases are immutable")
    if existing and parse_version(version) <= parse_version(existing[-1]):
        raise ReleaseError(f"release {version} must be newer than the latest release {existing[-1]}")
    missing = [f"{s}.zarr" for s in SUBSETS if not loc.exists(f"{s}.zarr/zarr.json")]
    if missing or not loc.exists("build.json"):
        raise ReleaseError(f"{loc.url} has no complete build to release (missing: {missing or ['build.json']}); "
                           "run `dynaset build` first")
    _clean_partial(loc, existing)
    problems = _validate_stores(loc)
    if problems:
        raise ReleaseError("current stores do not validate: " + "; ".join(problems))
    loose = {s: why for s in SUBSETS if (why := _not_compact(loc, s))}
    if loose:
        raise NotCompactError("; ".join(f"{s}.zarr {why}" for s, why in loose.items()))
    parent = existing[-1] if existing else None
    parent_objects = read_manifest(loc, parent)["objects"] if parent else {}
    build = json.loads(loc.read_bytes("build.json"))

    # the objects: every store file plus the side files, placed into the staging folder
    sources = [(f"{s}.zarr/{rel}", size) for s in SUBSETS for rel, size in loc.walk(f"{s}.zarr")]
    sources += [(name, -1) for name in SIDE_FILES if loc.exists(name)]  # sized when copied
    final = f"{RELEASES}/{version}"
    staging = f"{RELEASES}/.tmp-{version}-{uuid.uuid4().hex[:12]}" if loc.atomic_rename else final
    objects: dict[str, dict] = {}
    linked = 0
    try:
        for i, (rel, size) in enumerate(sources):
            if rel in SIDE_FILES:  # rewritten by every build: copied, never linked
                data = loc.read_bytes(rel)
                objects[rel] = {"sha256": _sha(data), "size": len(data)}
                loc.write_bytes(f"{staging}/{rel}", data)
            else:
                sha = loc.sha256(rel)
                objects[rel] = {"sha256": sha, "size": size}
                prev = parent_objects.get(rel)
                if prev is not None and prev["sha256"] == sha:
                    linked += loc.link_or_copy(f"{RELEASES}/{parent}/{rel}", f"{staging}/{rel}")
                else:  # store objects are immutable: a build writes a new store and swaps it in
                    linked += loc.link_or_copy(rel, f"{staging}/{rel}")
            if on_object is not None:
                on_object(i + 1, len(sources))
        summaries = {s: _read_store_summary(loc, s) for s in SUBSETS}
        seq_doc = {s: summaries[s].sequences for s in SUBSETS}
        seq_bytes = (json.dumps(seq_doc, indent=1, sort_keys=True) + "\n").encode()
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": version,
            "parent": parent,
            "created": now_iso(),
            "dynaset_version": __version__,
            "git_commit": git_commit(),
            "ledger_hash": build.get("ledger_hash"),
            "inputs_fingerprint": build.get("inputs_fingerprint"),
            "processing_key": _processing_key(loc),
            "build_run_id": build.get("run_id"),
            "notes": notes,
            "stores": {s: {"path": f"{s}.zarr", "schema": s, "schema_version": summaries[s].schema_version,
                           **summaries[s].counts()} for s in SUBSETS},
            "objects": objects,
        }
        diff = None
        if parent:
            diff = diff_releases(read_manifest(loc, parent), {**manifest, "objects": objects},
                                 read_sequences(loc, parent), seq_doc)
        card = render_card(manifest, summaries, build, diff, _dataset_doc(loc)).encode()
        for name, data in ((SEQUENCES, seq_bytes), (CARD, card)):
            loc.write_bytes(f"{staging}/{name}", data)
            objects[name] = {"sha256": _sha(data), "size": len(data)}
        manifest["objects"] = dict(sorted(objects.items()))
        loc.write_bytes(f"{staging}/{MANIFEST}", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
        if loc.is_local:
            _read_only(loc.local_path(staging))
        if staging != final:
            loc.rename_tree(staging, final)
    except BaseException:
        if staging != final or not loc.exists(f"{final}/{MANIFEST}"):
            loc.remove_tree(staging)
        raise
    manifest["_linked_objects"] = linked
    return manifest


def _read_only(path: Path) -> None:
    """Drop write permission on every file of a local release: an in-place write to a hard-linked
    object then fails loudly instead of changing a published release."""
    import os
    import stat

    for dirpath, _, files in os.walk(path):
        for name in files:
            p = os.path.join(dirpath, name)
            mode = os.stat(p).st_mode
            os.chmod(p, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _clean_partial(loc: Location, existing: list[str]) -> None:
    """Remove what crashed publishes left: ``.tmp-*`` folders and (S3) release prefixes without a manifest."""
    for name in loc.list_dirs(RELEASES):
        if name.startswith(".tmp-") or (_VERSION.match(name) and name not in existing):
            loc.remove_tree(f"{RELEASES}/{name}")


def _processing_key(loc: Location) -> str | None:
    doc = _dataset_doc(loc)
    if doc is None:
        return None
    from pipeline.dataset import DatasetConfig, processing_key

    cfg = DatasetConfig.from_json(json.dumps(doc))
    return processing_key(cfg.build, cfg.thresholds)


def _dataset_doc(loc: Location) -> dict | None:
    return json.loads(loc.read_bytes("dataset.json")) if loc.exists("dataset.json") else None


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _validate_stores(loc: Location, prefix: str = "") -> list[str]:
    from pipeline.store.schema import validate_store

    problems = []
    for s in SUBSETS:
        target, options = loc.zarr_target(f"{prefix}{s}.zarr")
        found = validate_store(target) if options is None else validate_store(target, storage_options=options)
        problems += [f"{s}: {p}" for p in found]
    return problems


# ---------------------------------------------------------------------------------------------
# Verification


def verify(loc: Location, version: str) -> list[str]:
    """Problems of release ``version`` (empty when it verifies): every object's size and sha256
    against the manifest, no missing or extra objects, every store valid against its schema."""
    manifest = read_manifest(loc, version)
    base = f"{RELEASES}/{version}"
    present = dict(loc.walk(base))
    present.pop(MANIFEST, None)
    problems = []
    for rel, meta in manifest["objects"].items():
        if rel not in present:
            problems.append(f"missing object {rel}")
            continue
        if present[rel] != meta["size"]:
            problems.append(f"{rel}: size {present[rel]} != manifest {meta['size']}")
            continue
        sha = loc.sha256(f"{base}/{rel}")
        if sha != meta["sha256"]:
            problems.append(f"{rel}: sha256 {sha[:12]}… != manifest {meta['sha256'][:12]}…")
    problems += [f"unexpected object {rel} (not in the manifest)" for rel in sorted(set(present) - set(manifest["objects"]))]
    if not problems:
        problems += _validate_stores(loc, prefix=f"{base}/")
        for s, meta in manifest["stores"].items():
            got = json.loads(loc.read_bytes(f"{base}/{s}.zarr/zarr.json"))["attributes"].get("schema_version")
            if got != meta["schema_version"]:
                problems.append(f"{s}: store schema {got} != manifest {meta['schema_version']}")
    return problems


# ---------------------------------------------------------------------------------------------
# The dataset card


def render_card(manifest: dict, summaries: dict[str, StoreSummary], build: dict, diff: dict | None,
                dataset: dict | None) -> str:
    """The release's ``README.md``: a dataset card (Hugging Face cards / Datasheets for Datasets)."""
    v = manifest["version"]
    lines = [
        "---",
        f"pretty_name: dynaset release {v}",
        "license: other",
        "task_categories: [human motion, inverse dynamics, ground reaction force estimation]",
        "---",
        "",
        f"# dynaset release {v}",
        "",
        "Human-dynamics data in four subsets — **motion** (canonical kinematics and virtual markers), **contact** "
        "(foot contact labels), **ground_reaction** (ground-reaction forces and moments: simulated full-body GRF "
        "from physics imitation, or measured force-plate GRF) and **torque** (simulated joint torques) — as "
        "chunked, sharded Zarr v3 stores with versioned schemas.",
        "",
        f"- created: {manifest['created']} by dynaset {manifest['dynaset_version']} "
        f"(git {manifest.get('git_commit') or 'unknown'})",
        f"- parent release: {manifest['parent'] or 'none (first release)'}",
        f"- ingestion-ledger hash: `{manifest.get('ledger_hash')}`",
        "",
        "## Contents",
        "",
        "| subset | schema | sequences | frames | hours | train | val | test |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in SUBSETS:
        st = manifest["stores"][s]
        sp = st["by_split"]
        lines.append(f"| {s} | {s} {st['schema_version']} | {st['sequences']} | {st['frames']} | {st['hours']:.3f} | "
                     + " | ".join(f"{sp[k]['sequences']} ({sp[k]['hours']:.2f} h)" for k in ("train", "val", "test"))
                     + " |")
    lines += ["", "## Sources and licences", ""]
    by_source: dict[tuple, int] = {}
    for row in summaries["motion"].sequences.values():
        by_source[(row["source"], row["path"].split("/")[0])] = by_source.get((row["source"], row["path"].split("/")[0]), 0) + 1
    licences = _licences(summaries)
    lines += ["| source | dataset folder | sequences | licence |", "|---|---|---:|---|"]
    for (src, top), n in sorted(by_source.items()):
        lines.append(f"| {src} | {top} | {n} | {licences.get((src, top), 'see the source') } |")
    if dataset:
        lines += ["", "Source roots: " + ", ".join(f"`{s['kind']}={s['root']}`" for s in dataset.get("sources", []))]
    lines += [
        "",
        "Licences are those of the source data and bind users of this release; synthetic demo data are CC0-1.0. "
        "AMASS and SMPL-family data are licence-gated (non-commercial, no redistribution): do not publish a "
        "release containing them outside the terms of those licences.",
        "",
        "## Conventions and units",
        "",
        "- World frame z up, metres, radians, seconds, newtons, newton-metres; ground plane z = 0.",
        f"- Canonical rate {summaries['motion'].fps_hz:g} FPS; frame times exactly k / fps from the first source frame.",
        "- SMPL 24-joint tree; joint 0 rotation global, the others local to their parent (axis-angle).",
        "- Polynomial windows: cubic for kinematics and GRF/moments, linear for torques; time u in [0, 1].",
        "- GRF are stored in N; divide by `seq_mass_kg * 9.81` for body-weight units.",
        "- Full definitions: `storage_layout.md` and `docs/conventions.md` of the dynaset version above.",
        "",
        "## Splits",
        "",
        "Subject-wise: every sequence of a subject is in the same split, chosen by a salted sha256 of "
        "(dataset, subject), so a subject never moves between splits across releases.",
        "",
        "## How to load",
        "",
        "```python",
        "import xarray as xr",
        f"motion = xr.open_zarr('releases/{v}/motion.zarr')",
        "",
        "from pipeline.loaders import open_release          # dynaset's loaders (index, filters, windows)",
        f"release = open_release('releases/{v}')",
        "```",
        "",
        "`sequences.json` lists every sequence per subset (split, frames, source file and its sha256); "
        "`manifest.json` the sha256 of every object: check them with `dynaset verify`.",
        "",
        "## Quality and known issues",
        "",
        f"- Files quarantined at ingestion: {build.get('files_quarantined', 0)} (`quarantine.json`, with reasons).",
        f"- Sequences excluded by quality rules: {build.get('sequences_excluded', 0)} (`exclusions.json`); "
        "all flags in `flags.json`, the data-quality report in `report.html`.",
        "- Simulated torques and GRF come from a humanoid imitating the motion with a root residual capped at "
        "5 % body weight; fast running is tracked less well (see docs/simulation.md).",
        "- Measured force-plate GRF exist only where a plate was hit by one foot; elsewhere they are NaN.",
    ]
    if manifest.get("notes"):
        lines += ["", "## Release notes", "", manifest["notes"]]
    if diff is not None:
        lines += ["", f"## Changes since {diff['from']}", "", "```", format_diff(diff), "```"]
    return "\n".join(lines) + "\n"


def _licences(summaries: dict[str, StoreSummary]) -> dict[tuple, str]:
    """(source, top folder) → the licences its sequences declare (``seq_licence``), joined."""
    found: dict[tuple, set] = {}
    for row in summaries["motion"].sequences.values():
        found.setdefault((row["source"], row["path"].split("/")[0]), set()).add(row.get("licence", "unknown"))
    return {k: "; ".join(sorted(v)) for k, v in found.items()}
