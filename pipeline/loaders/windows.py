"""Window assembly and heading canonicalization (pure numpy, no torch, no I/O).

Everything here works on a *frame source*: any object with ``gather(name, idx, sub=None)``
returning ``array[idx]`` (``array[idx, sub]`` when ``sub`` is given) for integer arrays ``idx`` of
global frame (or window) indices. ``InMemorySource`` wraps numpy arrays; the Zarr loader's
``pipeline.loaders.sources.ZarrSource`` reads the same arrays through a bounded chunk cache. The
very same ``assemble_imdys`` / ``assemble_zell`` code runs on both.

Conventions of an ImDyS window centred on frame ``t`` of a sequence of ``n`` frames
-------------------------------------------------------------------------------------
* **States** ``s^{t-w} .. s^{t+w+1}``: ``L = 2w + 2`` frames, state ``k`` (0-based) is frame
  ``f_k = t - w + k``. Frames outside ``[0, n)`` are clamped to the nearest edge frame and flagged
  in ``state_is_pad`` (``edge="clamp"``); ``edge="exclude"`` only yields centres whose states and
  targets all lie inside the sequence. Windows never read another sequence's frames.
* **Velocities** are per-frame forward differences at the store rate: ``v(f) = (x[f+1] - x[f]) * fps``
  for ``f < n - 1`` and the backward difference ``(x[n-1] - x[n-2]) * fps`` at the last frame
  (0 for a one-frame sequence). A clamped state carries the velocity of the frame it repeats.
* **Heading** ``psi_t``: yaw of the pelvis forward axis at frame ``t`` (template +z mapped to the
  world by the root rotation ``joint_rot_aa_rad[t, 0]``, projected on the ground plane):
  ``psi = atan2(f_y, f_x)``. If that projection is shorter than ``0.2`` (forward axis within
  ~11.5 degrees of vertical: lying, somersault), the pelvis left axis (template +x) is used:
  ``psi = atan2(l_y, l_x) - pi/2``.
* **Canonical frame of the window**: origin at the root's ground projection at ``t``
  ``(root_x(t), root_y(t), 0)``, x = heading direction (forward), y = left, z = up. Points
  (markers, joints, root, centre of pressure) map as ``p' = Rz(-psi_t) (p - (root_x, root_y, 0))``:
  x/y are relative, **z stays the absolute height above the ground** (physically meaningful: the
  ground is z = 0). World-frame vectors (velocities, ground reaction forces and moments, body
  contact forces) map as ``v' = Rz(-psi_t) v``. Joint-local quantities (joint torques, imposed
  angular momentum, local joint rotations) are heading invariant and returned as stored.
* **rot6d**: per joint the first two columns of its rotation matrix (``pipeline.rotations``):
  joint 0 is the global root rotation, pre-multiplied by ``Rz(-psi_t)``; joints 1..23 are local to
  their parent as stored. Its velocity is the forward difference of these 6-D features times fps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.rotations import aa_to_rotmat

REPRESENTATIONS: dict[str, str] = {
    "markers": "marker_pos_m",
    "joints": "joint_pos_m",
    "rot6d": "joint_rot_aa_rad",
}
"""ImDyS state representation → the stored frame array it is built from."""

ROOT_POS = "root_pos_m"
ROOT_ROT = "joint_rot_aa_rad"

HEADING_MIN_PROJECTION = 0.2
"""Below this ground-plane length of the pelvis forward axis, the left axis sets the heading."""

# How a per-frame target array transforms under the window canonicalization.
WORLD_POINT = "world_point"
WORLD_VECTOR = "world_vector"
LOCAL = "local"

TARGET_KINDS: dict[str, str] = {
    "joint_torque_nm": LOCAL,
    "imposed_angmom_nms": LOCAL,
    "grf_n": WORLD_VECTOR,
    "grm_nm": WORLD_VECTOR,
    "grf_total_n": WORLD_VECTOR,
    "body_contact_force_n": WORLD_VECTOR,
    "cop_m": WORLD_POINT,
    "residual_force_n": WORLD_VECTOR,
    "residual_torque_nm": WORLD_VECTOR,
    "ref_root_pos_m": WORLD_POINT,
    "ref_joint_pos_m": WORLD_POINT,
    "ref_marker_pos_m": WORLD_POINT,
    "free_moment_nm": LOCAL,  # a moment about the vertical axis: yaw invariant
    "contact": LOCAL,
    "foot_contact": LOCAL,
    "mpjpe_m": LOCAL,
    "reset": LOCAL,
}
"""Known per-frame target arrays and how they are canonicalized; others: see ``target_kind``."""

DEFAULT_TARGETS: dict[str, tuple[int, ...]] = {
    "joint_torque_nm": (0,),
    "imposed_angmom_nms": (0,),
    "grf_n": (0, 1),
    "body_contact_force_n": (0, 1),
}
"""ImDyS targets: torques tau^t and imposed angular momentum at t, GRF lambda^{t..t+1} per foot
and per body; name → frame offsets relative to the window centre. Taken when present."""


def target_kind(name: str, attrs: Mapping | None = None) -> str:
    """How target ``name`` transforms: ``TARGET_KINDS``, else the array's ``frame`` attr
    (``"world"``/``"local"``), else ``world_vector`` if its description says "world", else local."""
    if name in TARGET_KINDS:
        return TARGET_KINDS[name]
    attrs = attrs or {}
    frame = str(attrs.get("frame", "")).lower()
    if frame in ("world", "local"):
        return WORLD_VECTOR if frame == "world" else LOCAL
    return WORLD_VECTOR if "world" in str(attrs.get("description", "")).lower() else LOCAL


# ---------------------------------------------------------------------------------------------
# Geometry


def _rodrigues_axis(aa: np.ndarray, axis: int) -> np.ndarray:
    """R(aa) e_axis for axis-angle vectors (..., 3), float64, exact at small angles."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1)
    a = np.sinc(theta / np.pi)  # sin(theta)/theta
    b = 0.5 * np.sinc(theta / (2.0 * np.pi)) ** 2  # (1 - cos(theta))/theta^2
    c = np.cos(theta)
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    comp = (x, y, z)[axis]
    e = np.zeros(aa.shape, dtype=np.float64)
    e[..., axis] = 1.0
    cross = np.cross(aa, e)  # aa × e_axis
    return c[..., None] * e + a[..., None] * cross + (b * comp)[..., None] * aa


def heading_from_root_aa(root_aa: np.ndarray) -> np.ndarray:
    """Heading (yaw, rad, float64) of the pelvis for root axis-angles (..., 3): see module docs."""
    fwd = _rodrigues_axis(root_aa, 2)
    left = _rodrigues_axis(root_aa, 0)
    psi_f = np.arctan2(fwd[..., 1], fwd[..., 0])
    psi_l = np.arctan2(left[..., 1], left[..., 0]) - 0.5 * np.pi
    use_f = np.hypot(fwd[..., 0], fwd[..., 1]) >= HEADING_MIN_PROJECTION
    return np.where(use_f, psi_f, psi_l)


def _bcast(v: np.ndarray, ndim: int) -> np.ndarray:
    """(B,) → (B, 1, ..., 1) with ``ndim`` dims."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def rotate_vectors(v: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """``Rz(-yaw) v`` for vectors (B, ..., 3) and yaws (B,); returns float32."""
    v = np.asarray(v)
    c = _bcast(np.cos(yaw), v.ndim - 1).astype(np.float32)
    s = _bcast(np.sin(yaw), v.ndim - 1).astype(np.float32)
    out = np.empty(v.shape, dtype=np.float32)
    x, y = v[..., 0], v[..., 1]
    out[..., 0] = c * x + s * y
    out[..., 1] = c * y - s * x
    out[..., 2] = v[..., 2]
    return out


def canonicalize_points(p: np.ndarray, origin_xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """``Rz(-yaw) (p - (ox, oy, 0))`` for points (B, ..., 3), origins (B, 2), yaws (B,); float32."""
    p = np.asarray(p)
    ox = _bcast(origin_xy[:, 0], p.ndim - 1).astype(np.float32)
    oy = _bcast(origin_xy[:, 1], p.ndim - 1).astype(np.float32)
    c = _bcast(np.cos(yaw), p.ndim - 1).astype(np.float32)
    s = _bcast(np.sin(yaw), p.ndim - 1).astype(np.float32)
    out = np.empty(p.shape, dtype=np.float32)
    x = p[..., 0] - ox
    y = p[..., 1] - oy
    out[..., 0] = c * x + s * y
    out[..., 1] = c * y - s * x
    out[..., 2] = p[..., 2]
    return out


def rot6d_from_aa(aa: np.ndarray) -> np.ndarray:
    """6-D rotation features (..., 6) (first two matrix columns) of axis-angles (..., 3); float32."""
    R = aa_to_rotmat(aa)
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1).astype(np.float32)


def canonicalize_rot6d(d6: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Apply ``Rz(-yaw)`` to the root (joint 0) of 6-D joint features (B, ..., 24, 6)."""
    out = np.array(d6, dtype=np.float32, copy=True)
    root = out[..., 0, :]
    shape = root.shape
    out[..., 0, :] = rotate_vectors(root.reshape(shape[:-1] + (2, 3)), yaw).reshape(shape)
    return out


# ---------------------------------------------------------------------------------------------
# Frame sources


class InMemorySource:
    """Frame source over in-memory numpy arrays (the ceiling the Zarr loader is measured against)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays = dict(arrays)

    def gather(self, name: str, idx: np.ndarray, sub: int | None = None) -> np.ndarray:
        arr = self.arrays[name]
        return arr[idx] if sub is None else arr[idx, sub]


# ---------------------------------------------------------------------------------------------
# Sample tables


@dataclass(frozen=True)
class SampleTable:
    """Which (sequence, centre) pairs a dataset yields, in order.

    Attributes:
        seq: (S,) store sequence index of each selected sequence, store order.
        frame_offset: (S,) global index of each sequence's first record (frame or window).
        count: (S,) records (frames or windows) of each sequence.
        first: (S,) first local centre of each sequence.
        n_samples: (S,) centres of each sequence.
        cum: (S + 1,) cumulative ``n_samples`` (sample ``i`` of sequence ``j`` is ``cum[j] + k``).
    """

    seq: np.ndarray
    frame_offset: np.ndarray
    count: np.ndarray
    first: np.ndarray
    n_samples: np.ndarray
    cum: np.ndarray

    def __len__(self) -> int:
        return int(self.cum[-1])

    def locate(self, indices: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(row in the table, local centre) of sample indices (negative indices allowed)."""
        i = np.asarray(indices, dtype=np.int64)
        n = len(self)
        if i.size and (i.min() < -n or i.max() >= n):
            raise IndexError(f"sample index out of range for {n} samples")
        i = np.where(i < 0, i + n, i)
        row = np.searchsorted(self.cum, i, side="right") - 1
        return row, self.first[row] + (i - self.cum[row])

    def global_record(self, indices: np.ndarray) -> np.ndarray:
        """Global record index (frame or window) of each sample's centre."""
        row, t = self.locate(indices)
        return self.frame_offset[row] + t


def sample_table(
    seq: np.ndarray, offset: np.ndarray, count: np.ndarray, lo_pad: int = 0, hi_pad: int = 0,
    edge: str = "clamp",
) -> SampleTable:
    """Sample table of every record of each sequence (``edge="clamp"``), or only records ``t``
    with ``t - lo_pad >= 0`` and ``t + hi_pad <= count - 1`` (``edge="exclude"``)."""
    if edge not in ("clamp", "exclude"):
        raise ValueError(f"edge must be 'clamp' or 'exclude', got {edge!r}")
    seq = np.asarray(seq, dtype=np.int64)
    offset = np.asarray(offset, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    if edge == "clamp":
        first = np.zeros_like(count)
        n = count.copy()
    else:
        first = np.full_like(count, lo_pad)
        n = np.maximum(count - lo_pad - hi_pad, 0)
    cum = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    return SampleTable(seq, offset, count, first, n, cum)


# ---------------------------------------------------------------------------------------------
# ImDyS assembly


@dataclass(frozen=True)
class ImDySConfig:
    """What an ImDyS window holds.

    Attributes:
        w: half width; states s^{t-w} .. s^{t+w+1} (``2w + 2`` frames).
        representation: ``markers`` | ``joints`` | ``rot6d``.
        fps: frame rate of the store (velocities are differences times fps).
        targets: target array → (frame offsets relative to t, kind); only arrays in the store.
    """

    w: int = 2
    representation: str = "markers"
    fps: float = 30.0
    targets: tuple[tuple[str, tuple[int, ...], str], ...] = ()

    def __post_init__(self) -> None:
        if int(self.w) != self.w or self.w < 0:
            raise ValueError(f"w must be an integer >= 0, got {self.w!r}")
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {sorted(REPRESENTATIONS)}, got {self.representation!r}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps!r}")

    @property
    def length(self) -> int:
        return 2 * self.w + 2

    @property
    def state_array(self) -> str:
        return REPRESENTATIONS[self.representation]

    @property
    def arrays(self) -> tuple[str, ...]:
        """Frame arrays read by the assembly."""
        names = [ROOT_POS, ROOT_ROT, self.state_array] + [t[0] for t in self.targets]
        return tuple(dict.fromkeys(names))

    @property
    def extent(self) -> tuple[int, int]:
        """(frames needed before t, frames needed after t) by states and targets."""
        offs = [-self.w, self.w + 1] + [o for _, offsets, _ in self.targets for o in offsets]
        return max(0, -min(offs)), max(0, max(offs))


def _pair(src, name: str, ga: np.ndarray, gb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x[ga], x[gb]`` with one gather."""
    both = src.gather(name, np.stack([ga, gb], axis=0))
    return both[0], both[1]


def assemble_imdys(
    src, cfg: ImDySConfig, offset: np.ndarray, count: np.ndarray, t: np.ndarray
) -> dict[str, np.ndarray]:
    """ImDyS windows of a batch of centres (numpy, batch first; see the module docs).

    Args:
        src: frame source (``gather``).
        cfg: window configuration.
        offset: (B,) global index of each centre's sequence's first frame.
        count: (B,) frames of each centre's sequence.
        t: (B,) local centre frame of each sample.

    Returns:
        ``state`` (B, L, K, D) and ``state_vel``; ``root_pos`` (B, L, 3) and ``root_vel``;
        ``state_is_pad`` (B, L); ``heading_rad`` (B,) and ``origin_xy_m`` (B, 2) of the
        canonical frame; for each target ``name`` (B, n_offsets, ...) and ``name_is_pad``.
        Float arrays are float32.
    """
    offset = np.asarray(offset, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    last = (count - 1)[:, None]
    k = np.arange(-cfg.w, cfg.w + 2, dtype=np.int64)[None, :]
    raw = t[:, None] + k
    f = np.clip(raw, 0, last)  # (B, L) local clamped state frames
    pad = raw != f
    a = np.clip(np.minimum(f, last - 1), 0, None)  # forward-difference base frame
    b = np.minimum(a + 1, last)  # == a only in one-frame sequences: zero velocity

    # Every state frame f is a or b (f == b only at a sequence's last frame), so one gather of
    # (a, b) per array gives both the states and their forward differences.
    ga, gb = offset[:, None] + a, offset[:, None] + b
    use_b = (f != a)[..., None]
    fps = np.float32(cfg.fps)
    yaw = heading_from_root_aa(src.gather(ROOT_ROT, offset + t, sub=0))
    ra, rb = _pair(src, ROOT_POS, ga, gb)
    origin = np.asarray(np.where(use_b, rb, ra)[:, cfg.w, :2], dtype=np.float64)  # state w is frame t
    root = canonicalize_points(np.where(use_b, rb, ra), origin, yaw)
    root_v = rotate_vectors((rb.astype(np.float32) - ra.astype(np.float32)) * fps, yaw)
    if cfg.representation == "rot6d":
        xa, xb = _pair(src, ROOT_ROT, ga, gb)
        da, db = rot6d_from_aa(xa), rot6d_from_aa(xb)
        state = canonicalize_rot6d(np.where(use_b[..., None], db, da), yaw)
        state_v = canonicalize_rot6d((db - da) * fps, yaw)
    else:
        xa, xb = _pair(src, cfg.state_array, ga, gb)
        state = canonicalize_points(np.where(use_b[..., None], xb, xa), origin, yaw)
        state_v = rotate_vectors((xb.astype(np.float32) - xa.astype(np.float32)) * fps, yaw)

    out: dict[str, np.ndarray] = {
        "state": state,
        "state_vel": state_v,
        "root_pos": root,
        "root_vel": root_v,
        "state_is_pad": pad,
        "heading_rad": yaw.astype(np.float32),
        "origin_xy_m": origin.astype(np.float32),
    }
    for name, offsets, kind in cfg.targets:
        ko = np.asarray(offsets, dtype=np.int64)[None, :]
        traw = t[:, None] + ko
        tf = np.clip(traw, 0, last)
        val = src.gather(name, offset[:, None] + tf)
        if kind == WORLD_VECTOR:
            val = rotate_vectors(val, yaw)
        elif kind == WORLD_POINT:
            val = canonicalize_points(val, origin, yaw)
        elif val.dtype.kind == "f":
            val = val.astype(np.float32, copy=False)
        out[name] = val
        out[f"{name}_is_pad"] = traw != tf
    return out


# ---------------------------------------------------------------------------------------------
# Zell assembly


ZELL_Q = {"rot": "joint_rot_coef_rad", "pos": "joint_pos_coef_m"}
"""Zell kinematics coefficients gamma_q: joint rotations (default) or joint positions."""

ZELL_FORCE = ("grf_coef_n", "grm_coef_nm")
ZELL_TORQUE = ("torque_coef_nm",)


def assemble_zell(src, names: Sequence[str], windows: np.ndarray) -> dict[str, np.ndarray]:
    """Stored polynomial-window arrays ``names`` at global window indices (B,), float32 copies."""
    windows = np.asarray(windows, dtype=np.int64)
    out = {}
    for name in names:
        v = src.gather(name, windows)
        out[name] = v.astype(np.float32, copy=False) if v.dtype.kind == "f" else v
    return out
