"""How simulations are grouped into batches of worlds for a batched backend (MuJoCo Warp).

Pure functions, no Warp: ``length_buckets`` (the backend's own grouping of one call's sequences)
and the build's GPU batch planner (``GpuBatchPlanner``), which accumulates the motions ready to
imitate across processing batches into batches of ``worlds`` (motion, pass) sequences:

* **by length**: the pending motions are ordered by length (``length_buckets``' order: frames,
  then arrival), so a batch pads its worlds to a length close to their own;
* **all passes of a motion together** where they fit (a motion whose passes do not fit in what is
  left of a batch starts the next one; only a motion with more passes than a batch holds is split);
* **capped by memory**: a batch's worlds are all padded to its longest sequence, so it takes
  ``worlds × world_bytes(longest)`` of device memory; a batch never exceeds ``memory_bytes``
  (at least one world per batch, whatever its length);
* **streaming**: ``add`` returns the batches that are full (the shortest of the pending motions
  first) while keeping at least ``lookahead − 1`` batches' worth pending to sort the next
  arrivals into; ``flush`` returns the rest, the last one partial.

Deterministic: the same ``add``/``flush`` calls give the same batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MIB = 1 << 20

MJW_BYTES_PER_WORLD = int(0.35 * MIB)
"""Per-world device memory independent of the length: MuJoCo Warp's ``Model`` + ``Data`` arrays
(0.17–0.30 MiB per world measured at 4–1 worlds with the default buffers, the shared model
amortised; ``BatchStats.device_bytes``) and the controller's fixed-size scratch (force plan)."""

CONTROLLER_BYTES_PER_TICK = 3700
"""Per-world device memory per control tick of the padded length: the device controller's float64
references (qpos, qvel, qacc, joint positions, plan: 327 values), gates, and the recordings per
output frame spread over its ticks; ≈ 0.42 MiB per world per second of motion at 120 Hz
(``BatchStats.controller_bytes``; docs/simulation.md "GPU backend")."""


def length_buckets(lengths: Sequence[int], max_worlds: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``max_worlds``, sorted by length (least padding)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + max_worlds] for i in range(0, len(order), max_worlds)]


def steps_per_frame(fps_hz: float, control_hz: float) -> int:
    """Control ticks per canonical frame (the rate ``simulate.reference.build_reference`` uses)."""
    return max(1, int(round(control_hz / fps_hz)))


def world_bytes(n_frames: int, steps_per_frame: int) -> int:
    """Estimated device memory of one world padded to ``n_frames`` frames (``steps_per_frame``
    control ticks each)."""
    return MJW_BYTES_PER_WORLD + CONTROLLER_BYTES_PER_TICK * (int(n_frames) * int(steps_per_frame) + 1)


@dataclass(frozen=True)
class MotionJob:
    """A motion ready to imitate: the simulate stage's item (sequence id, canonical motion file,
    split) and its length in frames."""

    item: tuple[str, str, str]
    n_frames: int


@dataclass(frozen=True)
class BatchPart:
    """Some passes of one motion inside a batch (one world per pass)."""

    item: tuple[str, str, str]
    passes: tuple[int, ...]
    n_frames: int


@dataclass(frozen=True)
class WorldBatch:
    """One batch for the batched backend: its parts, in length order."""

    parts: tuple[BatchPart, ...]

    @property
    def worlds(self) -> int:
        return sum(len(p.passes) for p in self.parts)

    @property
    def max_frames(self) -> int:
        return max((p.n_frames for p in self.parts), default=0)

    def memory_bytes(self, steps_per_frame: int) -> int:
        """Estimated device memory: every world padded to the longest part."""
        return self.worlds * world_bytes(self.max_frames, steps_per_frame)


@dataclass(frozen=True)
class GpuBatching:
    """How the build groups simulations for a batched (GPU) backend.

    Attributes:
        worlds: (motion, pass) sequences per batch (``dynaset build --gpu-batch-worlds``); the
            default fills an H100/H200 (MuJoCo Warp's published humanoid throughput peaks at
            4k–8k worlds).
        memory_gib: cap on a batch's estimated device memory (``--gpu-batch-memory-gib``): long
            sequences get fewer worlds (``world_bytes``).
        lookahead: batches' worth of motions kept pending while more arrive, to sort by length.
    """

    worlds: int = 4096
    memory_gib: float = 32.0
    lookahead: int = 2

    def __post_init__(self) -> None:
        if self.worlds < 1:
            raise ValueError(f"GPU batch worlds must be ≥ 1, got {self.worlds}")
        if not self.memory_gib > 0:
            raise ValueError(f"GPU batch memory must be > 0 GiB, got {self.memory_gib}")
        if self.lookahead < 1:
            raise ValueError(f"lookahead must be ≥ 1, got {self.lookahead}")

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * (1 << 30))


def pack_batches(parts: Sequence[BatchPart], worlds: int, memory_bytes: int, steps_per_frame: int
                 ) -> tuple[list[WorldBatch], list[BatchPart]]:
    """Pack motions' passes (one world each) into batches in length order.

    Returns (the closed batches, the parts of the last, still open one). A batch closes when the
    next motion's passes do not fit: ``worlds`` sequences, or ``memory_bytes`` with every world
    padded to the longest (at least one world per batch). A motion is split over batches only
    when it alone has more passes than a batch holds.
    """
    order = length_buckets([p.n_frames for p in parts], max(1, len(parts)))
    closed: list[WorldBatch] = []
    cur: list[BatchPart] = []
    used = 0
    for i in (order[0] if order else []):
        part = parts[i]
        cap = max(1, min(worlds, memory_bytes // world_bytes(part.n_frames, steps_per_frame)))
        todo = part.passes
        while todo:
            if used + len(todo) <= cap:  # the rest of the motion fits (length order: it is the longest)
                cur.append(BatchPart(part.item, todo, part.n_frames))
                used, todo = used + len(todo), ()
            elif used == 0:  # more passes than a batch holds: split the motion
                cur.append(BatchPart(part.item, todo[:cap], part.n_frames))
                used, todo = cap, todo[cap:]
            if used >= cap or (todo and used):
                closed.append(WorldBatch(tuple(cur)))
                cur, used = [], 0
    return closed, cur


class GpuBatchPlanner:
    """Accumulates motions into ``WorldBatch``es across calls (module docstring).

    ``passes``: worlds per motion; ``steps_per_frame``: control ticks per canonical frame (memory
    estimate).
    """

    def __init__(self, batching: GpuBatching, passes: int, steps_per_frame: int) -> None:
        if passes < 1:
            raise ValueError(f"passes must be ≥ 1, got {passes}")
        self.batching = batching
        self.passes = int(passes)
        self.steps_per_frame = int(steps_per_frame)
        self._pending: list[BatchPart] = []

    @property
    def pending_worlds(self) -> int:
        return sum(len(p.passes) for p in self._pending)

    def add(self, jobs: Iterable[MotionJob]) -> list[WorldBatch]:
        """Queue motions; returns the batches now full, keeping ``lookahead − 1`` batches' worth
        of worlds pending."""
        all_passes = tuple(range(self.passes))
        self._pending.extend(BatchPart(j.item, all_passes, int(j.n_frames)) for j in jobs)
        closed, _ = self._pack()
        hold = (self.batching.lookahead - 1) * self.batching.worlds
        out: list[WorldBatch] = []
        left = self.pending_worlds
        for batch in closed:
            if left - batch.worlds < hold:
                break
            out.append(batch)
            left -= batch.worlds
        sent: dict[tuple[str, str, str], set[int]] = {}
        for batch in out:
            for p in batch.parts:
                sent.setdefault(p.item, set()).update(p.passes)
        self._pending = [q for q in (BatchPart(p.item, tuple(k for k in p.passes if k not in sent.get(p.item, ())),
                                               p.n_frames) for p in self._pending) if q.passes]
        return out

    def flush(self) -> list[WorldBatch]:
        """Every pending motion, in batches (the last one partial); the planner is empty after."""
        closed, rest = self._pack()
        self._pending = []
        return closed + ([WorldBatch(tuple(rest))] if rest else [])

    def _pack(self) -> tuple[list[WorldBatch], list[BatchPart]]:
        b = self.batching
        return pack_batches(self._pending, b.worlds, b.memory_bytes, self.steps_per_frame)
