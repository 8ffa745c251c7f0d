"""C3D reader (ezc3d): markers, calibrated analog channels, force-platform descriptions, metadata.

I/O only: this module opens one C3D file with ``ezc3d`` and returns a frozen ``C3DRecord`` holding the
file's data in the file's own lab frame and units; all physics (plate calibration, baseline, COP,
filtering, resampling, gap filling, vertical axis) lives in the pure modules ``pipeline.lab.forceplate``
and ``pipeline.lab.markers``. See docs/c3d.md.

What ezc3d already does (checked against the real sample files, tests/test_c3d_reader.py):

* analog values come back calibrated, ``(raw - ANALOG:OFFSET) * ANALOG:SCALE * ANALOG:GEN_SCALE``,
  in the units of ``ANALOG:UNITS`` (the record keeps SCALE/OFFSET/GEN_SCALE for provenance);
* point coordinates come back multiplied by ``|POINT:SCALE|`` for integer files; samples whose
  residual is negative (invalid) come back as NaN.

What this reader adds: a structural pre-check of the header and parameter-section block layout before
ezc3d sees the file (ezc3d 1.7.2 *segfaults* on a file truncated inside its parameter section and
silently returns fewer frames for a file truncated inside its data), the processor type read from the
parameter header (ezc3d does not expose it; SGI/MIPS files are rejected since ezc3d 1.7.2 cannot read
them), all-zero marker samples -> NaN, consistency checks of header vs parameters, duplicate labels.
Every problem is a one-line ``SourceError``; soft problems are collected in ``C3DRecord.warnings``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.lab.forceplate import PlateSpec
from pipeline.sources.base import SourceError, find_licence, sha256_of

PROCESSORS = {84: "Intel", 85: "DEC", 86: "SGI/MIPS"}
"""Parameter-section header byte 4 (83 + processor type) -> processor name."""

SUPPORTED_PLATE_TYPES = (1, 2, 3, 4)
UNSUPPORTED_PLATE_TYPES = {
    5: "TYPE-5 (strain-gauge 8-channel with CAL_MATRIX)",
    6: "TYPE-6 (12-channel)",
    7: "TYPE-7 (8-channel with CAL_MATRIX)",
    11: "TYPE-11 (Kistler split-belt treadmill)",
    12: "TYPE-12 (Gaitway treadmill)",
    21: "TYPE-21 (AMTI stairs)",
}
PLATE_CHANNELS = {1: 6, 2: 6, 3: 8, 4: 6}
NON_MARKER_POINT_GROUPS = ("ANGLES", "FORCES", "MOMENTS", "POWERS", "SCALARS", "REACTIONS", "MODELED_MARKERS")
"""POINT parameters listing points that are model outputs, not measured markers (Vicon, Nexus)."""

_LENGTH_TO_M = {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "meter": 1.0, "meters": 1.0, "millimeters": 1e-3}


@dataclass(frozen=True)
class C3DEvent:
    label: str
    context: str
    time_s: float


@dataclass(frozen=True)
class C3DRecord:
    """Everything read from one C3D file; arrays are read-only."""

    path: str  # relative POSIX path
    sha256: str
    size_bytes: int
    processor: str  # Intel | DEC | SGI/MIPS
    manufacturer: dict[str, str]
    point_rate_hz: float
    analog_rate_hz: float
    first_frame: int
    point_units: str
    point_unit_to_m: float
    point_scale: float  # POINT:SCALE (< 0: float file; |scale| = int quantization step, point units)
    marker_labels: tuple[str, ...]
    markers: np.ndarray  # (T, M, 3) lab frame, point units, NaN = invalid/missing
    residuals: np.ndarray  # (T, M), NaN where invalid
    other_points: dict[str, tuple[str, ...]]  # non-marker point groups (ANGLES, ...) -> labels (dropped)
    analog_labels: tuple[str, ...]
    analog_units: tuple[str, ...]
    analog: np.ndarray  # (n_channels, S) calibrated by ezc3d (SCALE*GEN_SCALE, OFFSET)
    analog_scale: np.ndarray
    analog_offset: np.ndarray
    analog_gen_scale: float
    plates: tuple[PlateSpec, ...]
    events: tuple[C3DEvent, ...]
    subject: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def plate_types(self) -> tuple[int, ...]:
        return tuple(p.type for p in self.plates)


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _precheck(data: bytes, rel: PurePosixPath) -> tuple[str, int, int]:
    """Check the header / parameter-section layout that ezc3d trusts blindly.

    Returns (processor, frame count from header words 4-5, data start block).
    """
    size = len(data)
    if size < 512:
        raise SourceError(rel, f"truncated file: {size} bytes, shorter than the 512-byte C3D header")
    param_block, key = data[0], data[1]
    if key != 0x50:
        raise SourceError(rel, f"not a C3D file: header byte 2 is {key:#x}, expected 0x50")
    if param_block < 2:
        raise SourceError(rel, f"corrupt header: parameter section starts at block {param_block}")
    pstart = (param_block - 1) * 512
    if size < pstart + 4:
        raise SourceError(rel, f"truncated file: {size} bytes, parameter section should start at byte {pstart}")
    n_blocks, proc_byte = data[pstart + 2], data[pstart + 3]
    if proc_byte not in PROCESSORS:
        raise SourceError(rel, f"corrupt parameter section: processor byte {proc_byte} (expected 84 Intel, 85 DEC, 86 SGI)")
    processor = PROCESSORS[proc_byte]
    if processor == "SGI/MIPS":
        raise SourceError(rel, "SGI/MIPS (big-endian) processor format is not supported by ezc3d 1.7.2")
    if n_blocks < 1:
        raise SourceError(rel, "corrupt parameter section: 0 parameter blocks")
    pend = pstart + n_blocks * 512
    if size < pend:
        raise SourceError(
            rel, f"truncated file: {size} bytes, but the parameter section ({n_blocks} blocks) ends at byte {pend}"
        )
    (data_start,) = struct.unpack_from("<H", data, 16)  # header word 9 (Intel and DEC ints are little-endian)
    if data_start < param_block + n_blocks:
        raise SourceError(
            rel,
            f"wrong parameter blocks: data starts at block {data_start} inside the parameter section "
            f"(blocks {param_block}..{param_block + n_blocks - 1})",
        )
    if size < (data_start - 1) * 512:
        raise SourceError(rel, f"truncated file: {size} bytes, data section should start at block {data_start}")
    first, last = struct.unpack_from("<HH", data, 6)  # header words 4-5: first and last frame
    return processor, last - first + 1, data_start


def _param(params, group: str, name: str, default=None):
    try:
        return params[group][name]["value"]
    except (KeyError, TypeError):
        return default


def _strings(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v).strip() for v in np.asarray(value, dtype=object).reshape(-1)]


def _first_float(value, default: float | None = None) -> float | None:
    try:
        return float(np.asarray(value, dtype=float).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return default


def _plates(params, n_analog: int, analog_units: list[str], rel) -> tuple[PlateSpec, ...]:
    fp = params["FORCE_PLATFORM"] if "FORCE_PLATFORM" in params else None
    if fp is None:
        return ()
    used = _first_float(_param(params, "FORCE_PLATFORM", "USED"), 0.0)
    n_used = int(used or 0)
    if n_used <= 0:
        return ()
    types = np.asarray(_param(params, "FORCE_PLATFORM", "TYPE", []), dtype=float).reshape(-1)
    if types.size < n_used:
        raise SourceError(rel, f"FORCE_PLATFORM:TYPE has {types.size} entries for USED={n_used} plates")
    channel = _param(params, "FORCE_PLATFORM", "CHANNEL")
    corners = _param(params, "FORCE_PLATFORM", "CORNERS")
    origin = _param(params, "FORCE_PLATFORM", "ORIGIN")
    if channel is None or corners is None or origin is None:
        missing = [k for k, v in (("CHANNEL", channel), ("CORNERS", corners), ("ORIGIN", origin)) if v is None]
        raise SourceError(rel, f"FORCE_PLATFORM:{'/'.join(missing)} missing for {n_used} plate(s)")
    channel = np.asarray(channel, dtype=float)
    corners = np.asarray(corners, dtype=float)
    origin = np.asarray(origin, dtype=float)
    if channel.ndim == 1:
        channel = channel[:, None]
    if corners.ndim == 2:
        corners = corners[:, :, None]
    if origin.ndim == 1:
        origin = origin[:, None]
    cal = _param(params, "FORCE_PLATFORM", "CAL_MATRIX")
    cal = None if cal is None else np.asarray(cal, dtype=float)
    out = []
    for i in range(n_used):
        t = int(types[i])
        if t in UNSUPPORTED_PLATE_TYPES:
            raise SourceError(rel, f"force plate {i + 1}: unsupported {UNSUPPORTED_PLATE_TYPES[t]}")
        if t not in SUPPORTED_PLATE_TYPES:
            raise SourceError(rel, f"force plate {i + 1}: unknown FORCE_PLATFORM:TYPE {t}")
        nch = PLATE_CHANNELS[t]
        if channel.shape[0] < nch or channel.shape[1] <= i:
            raise SourceError(rel, f"force plate {i + 1} (TYPE-{t}): FORCE_PLATFORM:CHANNEL {channel.shape} lacks {nch} channels")
        if corners.shape[:2] != (3, 4) or corners.shape[2] <= i:
            raise SourceError(rel, f"force plate {i + 1}: FORCE_PLATFORM:CORNERS has shape {corners.shape}, need (3, 4, {n_used})")
        if origin.shape[0] != 3 or origin.shape[1] <= i:
            raise SourceError(rel, f"force plate {i + 1}: FORCE_PLATFORM:ORIGIN has shape {origin.shape}, need (3, {n_used})")
        chans = tuple(int(c) - 1 for c in channel[:nch, i])
        bad = [c + 1 for c in chans if not 0 <= c < n_analog]
        if bad:
            raise SourceError(
                rel, f"force plate {i + 1}: FORCE_PLATFORM:CHANNEL refers to analog channel(s) {bad} but the file has {n_analog}"
            )
        cm = None
        if t == 4:
            if cal is None or cal.ndim < 2 or cal.shape[0] < 6 or cal.shape[1] < 6 or (cal.ndim == 3 and cal.shape[2] <= i):
                raise SourceError(rel, f"force plate {i + 1} (TYPE-4): FORCE_PLATFORM:CAL_MATRIX missing or not 6x6 per plate")
            cm = (cal[:6, :6, i] if cal.ndim == 3 else cal[:6, :6]).copy()
        units = tuple(analog_units[c] if c < len(analog_units) else "" for c in chans)
        out.append(PlateSpec(index=i, type=t, channels=chans, corners=_ro(corners[:, :, i].T.copy()),
                             origin=_ro(origin[:, i].copy()), cal_matrix=None if cm is None else _ro(cm),
                             channel_units=units))
    return tuple(out)


def _events(params, rel, warnings: list[str]) -> tuple[C3DEvent, ...]:
    if "EVENT" not in params:
        return ()
    n = int(_first_float(_param(params, "EVENT", "USED"), 0) or 0)
    if n <= 0:
        return ()
    labels = _strings(_param(params, "EVENT", "LABELS"))
    contexts = _strings(_param(params, "EVENT", "CONTEXTS"))
    times = np.asarray(_param(params, "EVENT", "TIMES", []), dtype=float)
    if times.ndim == 1 and times.size == 2 * n:
        times = times.reshape(n, 2).T
    if times.ndim != 2 or times.shape[0] != 2 or times.shape[1] < n or len(labels) < n:
        warnings.append(f"EVENT group inconsistent (USED={n}, TIMES {times.shape}, {len(labels)} labels); events dropped")
        return ()
    out = []
    for k in range(n):
        ctx = contexts[k] if k < len(contexts) else ""
        out.append(C3DEvent(label=labels[k], context=ctx, time_s=float(times[0, k] * 60.0 + times[1, k])))
    return tuple(sorted(out, key=lambda e: e.time_s))


def read_c3d(path: Path, root: Path | None = None) -> C3DRecord:
    """Read one C3D file; ``SourceError`` (one line, naming the file) for anything wrong with it."""
    path = Path(path)
    rel = PurePosixPath(path.relative_to(root).as_posix()) if root is not None else PurePosixPath(path.name)
    try:
        sha, size = sha256_of(path)
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(rel, f"cannot read file ({exc.strerror or exc})") from None
    processor, n_frames_raw_header, _ = _precheck(data, rel)

    import ezc3d  # local: only this module needs it

    try:
        c = ezc3d.c3d(str(path))
        params = c["parameters"]
        header = c["header"]
        points = np.asarray(c["data"]["points"], dtype=float)
        residuals = np.asarray(c["data"]["meta_points"]["residuals"], dtype=float) if "meta_points" in c["data"] else None
        analogs = np.asarray(c["data"]["analogs"], dtype=float)
    except Exception as exc:  # ezc3d raises RuntimeError/OSError/IndexError... with free-form messages
        msg = " ".join(str(exc).split())[:200]
        raise SourceError(rel, f"ezc3d cannot parse the file ({type(exc).__name__}: {msg})") from None

    warnings: list[str] = []
    if "POINT" not in params:
        raise SourceError(rel, "missing POINT parameter group")
    for key in ("USED", "RATE"):
        if _param(params, "POINT", key) is None:
            raise SourceError(rel, f"missing parameter POINT:{key}")
    n_points_param = int(_first_float(_param(params, "POINT", "USED"), 0) or 0)
    if n_points_param != header["points"]["size"]:
        raise SourceError(rel, f"inconsistent header vs parameters: header has {header['points']['size']} points, POINT:USED={n_points_param}")
    rate = _first_float(_param(params, "POINT", "RATE"))
    if rate is None or not np.isfinite(rate) or rate <= 0:
        raise SourceError(rel, f"invalid POINT:RATE {rate}")
    if abs(rate - header["points"]["frame_rate"]) > 1e-3 * rate:
        warnings.append(f"header frame rate {header['points']['frame_rate']} != POINT:RATE {rate}; using POINT:RATE")
    # ezc3d's header dict reflects the frames it managed to read; the raw header words and POINT:FRAMES
    # say how many the file should hold.
    n_frames_param = int(_first_float(_param(params, "POINT", "FRAMES"), 0) or 0)
    n_frames_header = max(n_frames_raw_header, n_frames_param)
    n_frames = points.shape[2]
    if n_frames < n_frames_header:
        raise SourceError(rel, f"truncated data section: header promises {n_frames_header} frames, file holds {n_frames}")
    if n_frames < 2:
        raise SourceError(rel, f"only {n_frames} frame(s); need at least 2")

    labels = _strings(_param(params, "POINT", "LABELS"))
    # Long files continue labels in LABELS2, LABELS3...
    k = 2
    while len(labels) < n_points_param and _param(params, "POINT", f"LABELS{k}") is not None:
        labels += _strings(_param(params, "POINT", f"LABELS{k}"))
        k += 1
    if n_points_param > 0 and len(labels) < n_points_param:
        raise SourceError(rel, f"POINT:LABELS has {len(labels)} labels for {n_points_param} points")
    labels = labels[:n_points_param]
    units = (_strings(_param(params, "POINT", "UNITS")) or [""])[0].lower()
    if units not in _LENGTH_TO_M:
        if n_points_param == 0:
            units = "mm"
        else:
            raise SourceError(rel, f"unknown POINT:UNITS {units!r} (expected mm, cm or m)")

    other: dict[str, tuple[str, ...]] = {}
    non_marker: set[str] = set()
    for grp in NON_MARKER_POINT_GROUPS:
        names = [s for s in _strings(_param(params, "POINT", grp)) if s]
        if names:
            other[grp] = tuple(names)
            non_marker.update(names)
    keep = [i for i, lab in enumerate(labels) if lab not in non_marker]
    marker_labels = [labels[i] for i in keep]
    if any(lab == "" for lab in marker_labels):
        raise SourceError(rel, "empty marker label in POINT:LABELS")
    # Duplicate labels (old 4-character label limits, e.g. medial markers): the first keeps the label,
    # later ones become LABEL_2, LABEL_3, ... with a warning naming their POINT:DESCRIPTIONS.
    descriptions = _strings(_param(params, "POINT", "DESCRIPTIONS"))
    count: dict[str, int] = {}
    renamed = []
    for j, i in enumerate(keep):
        lab = marker_labels[j]
        count[lab] = count.get(lab, 0) + 1
        if count[lab] > 1:
            new = f"{lab}_{count[lab]}"
            while new in labels:
                new += "_"
            desc = descriptions[i] if i < len(descriptions) else ""
            renamed.append(f"{lab}->{new}" + (f" ({desc})" if desc else ""))
            marker_labels[j] = new
    if renamed:
        warnings.append(f"duplicate marker labels renamed: {', '.join(renamed)}")

    xyz = points[:3, keep, :].transpose(2, 1, 0).copy()  # (T, M, 3)
    res = residuals[0, keep, :].T.copy() if residuals is not None else np.zeros(xyz.shape[:2])
    invalid = ~np.isfinite(xyz).all(axis=2) | (res < 0) | (np.abs(xyz) == 0).all(axis=2)
    xyz[invalid] = np.nan
    res = np.where(invalid, np.nan, res)

    # Analog channels.
    n_analog = analogs.shape[1]
    analog = analogs[0] if n_analog else np.zeros((0, 0))
    analog_rate = float(header["analogs"]["frame_rate"]) if n_analog else 0.0
    if n_analog:
        a_rate_param = _first_float(_param(params, "ANALOG", "RATE"))
        if a_rate_param is not None and abs(a_rate_param - analog_rate) > 1e-3 * analog_rate:
            warnings.append(f"header analog rate {analog_rate} != ANALOG:RATE {a_rate_param}")
        if analog.shape[1] < n_frames * round(analog_rate / rate) and abs(analog_rate / rate - round(analog_rate / rate)) < 1e-6:
            raise SourceError(rel, f"truncated analog data: {analog.shape[1]} samples for {n_frames} frames")
    a_labels = _strings(_param(params, "ANALOG", "LABELS"))[:n_analog] if n_analog else []
    a_units = _strings(_param(params, "ANALOG", "UNITS"))[:n_analog] if n_analog else []
    a_units += [""] * (n_analog - len(a_units))
    a_scale = np.asarray(_param(params, "ANALOG", "SCALE", []), dtype=float).reshape(-1)[:n_analog]
    a_offset = np.asarray(_param(params, "ANALOG", "OFFSET", []), dtype=float).reshape(-1)[:n_analog]
    gen = _first_float(_param(params, "ANALOG", "GEN_SCALE"), 1.0) or 1.0

    plates = _plates(params, n_analog, a_units, rel)
    if plates and analog_rate <= 0:
        raise SourceError(rel, "force plates declared but no analog data")

    manufacturer = {}
    if "MANUFACTURER" in params:
        for key in ("COMPANY", "SOFTWARE", "VERSION_LABEL"):
            v = _strings(_param(params, "MANUFACTURER", key))
            if v and v[0]:
                manufacturer[key.lower()] = v[0]
    subject = {}
    if "SUBJECTS" in params:
        names = _strings(_param(params, "SUBJECTS", "NAMES"))
        if names and names[0]:
            subject["name"] = names[0]
    for key in ("MASS", "BODYMASS", "Bodymass"):
        v = _first_float(_param(params, "PROCESSING", key))
        if v is not None and np.isfinite(v) and v > 0:
            subject["mass_kg"] = str(v)
            break

    return C3DRecord(
        path=rel.as_posix(), sha256=sha, size_bytes=size, processor=processor, manufacturer=manufacturer,
        point_rate_hz=float(rate), analog_rate_hz=analog_rate, first_frame=int(header["points"]["first_frame"]),
        point_units=units, point_unit_to_m=_LENGTH_TO_M[units],
        point_scale=float(_first_float(_param(params, "POINT", "SCALE"), -1.0) or -1.0), marker_labels=tuple(marker_labels),
        markers=_ro(xyz), residuals=_ro(res), other_points=other, analog_labels=tuple(a_labels),
        analog_units=tuple(a_units), analog=_ro(np.asarray(analog, dtype=float)), analog_scale=_ro(a_scale),
        analog_offset=_ro(a_offset), analog_gen_scale=float(gen), plates=plates,
        events=_events(params, rel, warnings), subject=subject, warnings=tuple(warnings),
    )


def discover_c3d(root: Path) -> list[Path]:
    """All ``*.c3d`` files (any case) under ``root``, sorted by relative path."""
    root = Path(root)
    return sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".c3d"),
                  key=lambda p: p.relative_to(root).as_posix())
