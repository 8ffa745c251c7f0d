"""AddBiomechanics ``.b3d`` files (version 4) decoded with a small protobuf wire decoder (no codegen, no
nimblephysics); field numbers from ``../shared/formats/b3d.md`` (nimblephysics ``SubjectOnDisk.proto``).

Layout: int64 little-endian header length H, the ``SubjectOnDiskHeader`` message (H bytes), then per trial,
per frame one ``SubjectOnDiskSensorFrame`` of ``raw_sensor_frame_size`` bytes followed by one
``SubjectOnDiskProcessingPassFrame`` of ``processing_pass_frame_size`` bytes per processing pass of that
trial. The byte arithmetic must add up to the file size; anything else is a ``B3DError`` (one line).
Units SI, OpenSim's y-up world.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

SUPPORTED_VERSION = 4


class B3DError(ValueError):
    """A malformed, truncated or unsupported .b3d file (one line)."""


# ------------------------------------------------------------------------------------------- wire format
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(buf):
            raise B3DError("truncated varint")
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7
        if shift > 63:
            raise B3DError("varint longer than 10 bytes")


def parse_message(buf: bytes) -> dict[int, list]:
    """Field number → list of raw values: ints (varint), ``bytes`` (length-delimited), 8-/4-byte ``bytes``
    (fixed64/fixed32). A zero tag ends the message (zero padding of a fixed-size record)."""
    out: dict[int, list] = {}
    i, n = 0, len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        if tag == 0:
            break
        field, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            if i + 8 > n:
                raise B3DError(f"truncated fixed64 field {field}")
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise B3DError(f"field {field}: length {ln} runs past the end of its message")
            v, i = buf[i:i + ln], i + ln
        elif wt == 5:
            if i + 4 > n:
                raise B3DError(f"truncated fixed32 field {field}")
            v, i = buf[i:i + 4], i + 4
        else:
            raise B3DError(f"unsupported wire type {wt} (field {field})")
        out.setdefault(field, []).append(v)
    return out


def _int(msg: dict, f: int, default: int = 0) -> int:
    v = msg.get(f)
    return int(v[-1]) if v and isinstance(v[-1], int) else default


def _double(msg: dict, f: int, default: float = float("nan")) -> float:
    v = msg.get(f)
    return struct.unpack("<d", v[-1])[0] if v and isinstance(v[-1], bytes) and len(v[-1]) == 8 else default


def _str(msg: dict, f: int) -> str:
    v = msg.get(f)
    return v[-1].decode("utf-8", errors="replace") if v and isinstance(v[-1], bytes) else ""


def _strs(msg: dict, f: int) -> list[str]:
    return [v.decode("utf-8", errors="replace") for v in msg.get(f, []) if isinstance(v, bytes)]


def _packed(msg: dict, f: int, dtype: str) -> np.ndarray:
    """Packed doubles (``<f8``) / floats (``<f4``), also unpacked repeated fixed values."""
    parts = msg.get(f, [])
    raw = b"".join(p for p in parts if isinstance(p, bytes))
    size = np.dtype(dtype).itemsize
    if len(raw) % size:
        raise B3DError(f"field {f}: {len(raw)} bytes is not a whole number of {dtype}")
    return np.frombuffer(raw, dtype=dtype).astype(np.float64)


def _packed_varints(msg: dict, f: int) -> np.ndarray:
    out = []
    for p in msg.get(f, []):
        if isinstance(p, int):
            out.append(p)
            continue
        i = 0
        while i < len(p):
            v, i = _varint(p, i)
            out.append(v)
    return np.asarray(out, dtype=np.int64)


# ------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class B3DPassHeader:
    """One processing pass of a trial: ``type`` (0 kinematics, 1 dynamics, 2 low-pass, 3 acc-minimizing) and
    AddBiomechanics' own per-frame quality: marker RMS/max (m), linear (N) and angular (N·m) residuals."""

    type: int
    marker_rms_m: np.ndarray
    marker_max_m: np.ndarray
    linear_residual_n: np.ndarray
    angular_residual_nm: np.ndarray


@dataclass(frozen=True)
class B3DTrialHeader:
    name: str
    length: int
    timestep_s: float
    missing_grf_reason: np.ndarray  # (T,) 0 = forces known
    passes: tuple[B3DPassHeader, ...]
    num_force_plates: int


@dataclass(frozen=True)
class B3DHeader:
    """The subject: DOFs, contact bodies, markers, body parameters, embedded .osim text of each pass."""

    version: int
    num_dofs: int
    sensor_frame_size: int
    pass_frame_size: int
    osim_texts: tuple[str, ...]
    contact_bodies: tuple[str, ...]
    marker_names: tuple[str, ...]
    trials: tuple[B3DTrialHeader, ...]
    sex: str
    height_m: float
    mass_kg: float
    header_bytes: int


@dataclass(frozen=True)
class B3DTrial:
    """One trial's frames (OpenSim y-up world, SI).

    Attributes:
        markers_m: (T, M, 3) marker observations, NaN where unseen.
        pos, tau: (T, D) DOF positions (rad/m) and inverse-dynamics generalized forces (N·m / N) of the last
            pass that has them, in the embedded model's DOF order.
        contact_force_n, contact_cop_m, contact_torque_nm: (T, C, 3) per ground-contact body of that pass.
        pass_index: which processing pass these come from (−1: none).
    """

    header: B3DTrialHeader
    markers_m: np.ndarray
    pos: np.ndarray
    tau: np.ndarray
    contact_force_n: np.ndarray
    contact_cop_m: np.ndarray
    contact_torque_nm: np.ndarray
    pass_index: int


def parse_header(data: bytes) -> B3DHeader:
    """Header of a .b3d file (all of its bytes) with the byte arithmetic checked against the file size."""
    if len(data) < 8:
        raise B3DError(f"truncated file: {len(data)} bytes, shorter than the 8-byte header length")
    (h,) = struct.unpack_from("<q", data, 0)
    if h == 424242 or struct.unpack_from("<i", data, 0)[0] == 424242:
        raise B3DError("old .b3d layout (raw C struct, magic 424242) is not supported; re-export with AddBiomechanics ≥ 2023")
    if h <= 0 or 8 + h > len(data):
        raise B3DError(f"header length {h} does not fit in the file ({len(data)} bytes): truncated or not a .b3d file")
    try:
        msg = parse_message(data[8:8 + h])
    except B3DError as exc:
        raise B3DError(f"corrupt header ({exc})") from None
    version = _int(msg, 10, 0)
    if version != SUPPORTED_VERSION:
        raise B3DError(f"unsupported .b3d version {version} (only version {SUPPORTED_VERSION} is read)")
    trials = []
    for t in msg.get(9, []):
        tm = parse_message(t)
        passes = []
        for p in tm.get(5, []):
            pm = parse_message(p)
            passes.append(B3DPassHeader(type=_int(pm, 1), marker_rms_m=_packed(pm, 5, "<f4"),
                                        marker_max_m=_packed(pm, 6, "<f4"), linear_residual_n=_packed(pm, 7, "<f4"),
                                        angular_residual_nm=_packed(pm, 8, "<f4")))
        trials.append(B3DTrialHeader(name=_str(tm, 1), length=_int(tm, 3), timestep_s=_double(tm, 4),
                                     missing_grf_reason=_packed_varints(tm, 2), passes=tuple(passes),
                                     num_force_plates=_int(tm, 7)))
    osims = tuple(_str(parse_message(p), 2) for p in msg.get(5, []))
    hdr = B3DHeader(version=version, num_dofs=_int(msg, 1), sensor_frame_size=_int(msg, 3),
                    pass_frame_size=_int(msg, 4), osim_texts=osims, contact_bodies=tuple(_strs(msg, 6)),
                    marker_names=tuple(_strs(msg, 17)), trials=tuple(trials), sex=_str(msg, 13),
                    height_m=_double(msg, 14), mass_kg=_double(msg, 15), header_bytes=h)
    expected = 8 + h + sum(t.length * (hdr.sensor_frame_size + len(t.passes) * hdr.pass_frame_size) for t in trials)
    if expected != len(data):
        what = "truncated" if expected > len(data) else "has trailing bytes"
        raise B3DError(f"file {what}: header and frame sizes add up to {expected} bytes, the file has {len(data)}")
    for t in trials:
        if not np.isfinite(t.timestep_s) or t.timestep_s <= 0:
            raise B3DError(f"trial {t.name!r}: invalid timestep {t.timestep_s}")
    return hdr


def read_trial(data: bytes, hdr: B3DHeader, index: int) -> B3DTrial:
    """Decode every frame of trial ``index`` (the last pass with positions gives pos/tau/contact data)."""
    s, p = hdr.sensor_frame_size, hdr.pass_frame_size
    off = 8 + hdr.header_bytes + sum(t.length * (s + len(t.passes) * p) for t in hdr.trials[:index])
    th = hdr.trials[index]
    n_pass, m = len(th.passes), len(hdr.marker_names)
    nc = len(hdr.contact_bodies)
    markers = np.full((th.length, m, 3), np.nan)
    pos = np.full((th.length, hdr.num_dofs), np.nan)
    tau = np.full((th.length, hdr.num_dofs), np.nan)
    cf, cp, ct = (np.full((th.length, nc, 3), np.nan) for _ in range(3))
    use = n_pass - 1
    for t in range(th.length):
        base = off + t * (s + n_pass * p)
        sm = parse_message(data[base:base + s])
        obs = _packed(sm, 2, "<f8")
        if obs.size == 3 * m:
            markers[t] = obs.reshape(m, 3)
        elif obs.size:
            raise B3DError(f"trial {th.name!r} frame {t}: {obs.size} marker values for {m} markers")
        if use < 0:
            continue
        pm = parse_message(data[base + s + use * p: base + s + (use + 1) * p])
        for arr, f in ((pos, 1), (tau, 4)):
            v = _packed(pm, f, "<f8")
            if v.size == hdr.num_dofs:
                arr[t] = v
        for arr, f in ((cf, 8), (cp, 6), (ct, 7)):
            v = _packed(pm, f, "<f8")
            if v.size == 3 * nc:
                arr[t] = v.reshape(nc, 3)
    return B3DTrial(header=th, markers_m=markers, pos=pos, tau=tau, contact_force_n=cf, contact_cop_m=cp,
                    contact_torque_nm=ct, pass_index=use)
