"""The build's GPU batch planner (``pipeline.simulate.batching``), without Warp: sizes, length
order, all passes of a motion together, the memory cap, the flush of the remainder, determinism."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import _add_build_options
from pipeline.simulate.batching import (
    MIB, BatchPart, GpuBatching, GpuBatchPlanner, MotionJob, WorldBatch, length_buckets, pack_batches,
    steps_per_frame, world_bytes)


def job(i: int, n: int) -> MotionJob:
    return MotionJob((f"seq{i}", f"/stage/{i}.npz", "train"), n)


def parts_of(batches):
    return [[(p.item[0], p.passes) for p in b.parts] for b in batches]


def sent(batches) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for b in batches:
        for p in b.parts:
            out.setdefault(p.item[0], []).extend(p.passes)
    return out


def test_length_buckets():
    assert length_buckets([5, 3, 9, 3], 2) == [[1, 3], [0, 2]]
    assert length_buckets([], 4) == []


def test_full_batches_in_length_order_and_the_rest_flushed():
    planner = GpuBatchPlanner(GpuBatching(worlds=4, memory_gib=1024, lookahead=1), passes=1, steps_per_frame=4)
    lengths = [50, 10, 40, 20, 30, 60, 5]
    out = planner.add([job(i, n) for i, n in enumerate(lengths)])
    assert [b.worlds for b in out] == [4]
    assert parts_of(out) == [[("seq6", (0,)), ("seq1", (0,)), ("seq3", (0,)), ("seq4", (0,))]]  # shortest 4
    assert planner.pending_worlds == 3
    rest = planner.flush()
    assert parts_of(rest) == [[("seq2", (0,)), ("seq0", (0,)), ("seq5", (0,))]]  # the partial last batch
    assert planner.pending_worlds == 0 and planner.flush() == []


def test_accumulates_across_calls_until_a_batch_is_full():
    planner = GpuBatchPlanner(GpuBatching(worlds=4, lookahead=1), passes=2, steps_per_frame=4)
    assert planner.add([job(0, 30)]) == []  # 2 worlds: waits
    out = planner.add([job(1, 20), job(2, 10)])  # 6 worlds: one full batch of 2 motions × 2 passes
    assert parts_of(out) == [[("seq2", (0, 1)), ("seq1", (0, 1))]]
    assert parts_of(planner.flush()) == [[("seq0", (0, 1))]]


def test_all_passes_of_a_motion_stay_together():
    """worlds 4, passes 3: a motion never straddles two batches when its passes fit in one."""
    planner = GpuBatchPlanner(GpuBatching(worlds=4, lookahead=1), passes=3, steps_per_frame=4)
    batches = planner.add([job(i, 10 + i) for i in range(5)]) + planner.flush()
    assert all(b.worlds <= 4 for b in batches)
    assert all(p.passes == (0, 1, 2) for b in batches for p in b.parts)
    assert sorted(sent(batches)) == [f"seq{i}" for i in range(5)]


def test_a_motion_with_more_passes_than_a_batch_is_split():
    planner = GpuBatchPlanner(GpuBatching(worlds=2, lookahead=1), passes=3, steps_per_frame=4)
    out = planner.add([job(0, 10), job(1, 20)])
    assert parts_of(out) == [[("seq0", (0, 1))], [("seq0", (2,))], [("seq1", (0, 1))]]  # full ones only
    assert planner.pending_worlds == 1
    assert parts_of(planner.flush()) == [[("seq1", (2,))]]


def test_lookahead_keeps_motions_pending_to_sort_the_next_ones_into():
    planner = GpuBatchPlanner(GpuBatching(worlds=2, lookahead=2), passes=1, steps_per_frame=4)
    assert planner.add([job(0, 50), job(1, 40), job(2, 30)]) == []  # 3 worlds: 2 must stay pending
    out = planner.add([job(3, 5)])
    assert parts_of(out) == [[("seq3", (0,)), ("seq2", (0,))]]  # the short newcomer went first
    assert parts_of(planner.flush()) == [[("seq1", (0,)), ("seq0", (0,))]]


def test_memory_cap_shrinks_batches_of_long_sequences():
    spf = 4
    short, long_ = 30, 30 * 60  # 1 s and 60 s at 30 FPS
    budget = 8 * world_bytes(long_, spf)
    assert world_bytes(short, spf) < world_bytes(long_, spf)
    parts = [BatchPart((f"s{i}", "p", "train"), (0,), short) for i in range(40)]
    parts += [BatchPart((f"l{i}", "p", "train"), (0,), long_) for i in range(20)]
    closed, rest = pack_batches(parts, worlds=32, memory_bytes=budget, steps_per_frame=spf)
    batches = closed + [WorldBatch(tuple(rest))]
    # 32 short ones fill a batch; the next 8 would fit 32 too, but a long one next to them would pad
    # all to 60 s: over the budget, so they close their batch; then the long ones, 8 per batch
    assert [b.worlds for b in batches] == [32, 8, 8, 8, 4]
    assert [p.item[0][0] for b in batches for p in b.parts] == ["s"] * 40 + ["l"] * 20
    assert all(b.memory_bytes(spf) <= budget for b in batches)
    assert batches[2].memory_bytes(spf) == budget


def test_a_sequence_over_the_memory_budget_still_gets_a_batch_of_its_own():
    closed, rest = pack_batches([BatchPart(("a", "p", "t"), (0, 1), 10_000)], worlds=16, memory_bytes=1,
                                steps_per_frame=4)
    assert parts_of(closed) == [[("a", (0,))], [("a", (1,))]] and rest == []  # one world each, both full


def test_world_bytes_matches_the_documented_figure():
    """≈ 0.42 MiB per world per second of motion at 120 Hz control (docs/simulation.md)."""
    per_second = (world_bytes(30 * 10, 4) - world_bytes(0, 4)) / 10
    assert 0.40 * MIB < per_second < 0.45 * MIB
    assert steps_per_frame(30.0, 120.0) == 4 and steps_per_frame(120.0, 120.0) == 1


def test_deterministic():
    jobs = [job(i, (i * 37) % 23 + 5) for i in range(40)]

    def run():
        p = GpuBatchPlanner(GpuBatching(worlds=8, lookahead=2), passes=2, steps_per_frame=4)
        out = []
        for k in range(0, 40, 7):
            out += p.add(jobs[k:k + 7])
        return out + p.flush()

    a, b = run(), run()
    assert a == b
    assert sent(a) == {f"seq{i}": [0, 1] for i in range(40)}  # every pass exactly once
    assert all(bt.worlds <= 8 for bt in a) and sum(bt.worlds for bt in a) == 80


def test_settings_are_checked():
    with pytest.raises(ValueError):
        GpuBatching(worlds=0)
    with pytest.raises(ValueError):
        GpuBatching(memory_gib=0)
    assert GpuBatching().worlds == 4096


def test_cli_options():
    from pipeline.cli import _sim_batching

    parse = argparse.ArgumentParser()
    _add_build_options(parse)
    assert _sim_batching(parse.parse_args([])) is None  # the defaults
    b = _sim_batching(parse.parse_args(["--sim-backend", "warp-cpu", "--gpu-batch-worlds", "2"]))
    assert b == GpuBatching(worlds=2, memory_gib=GpuBatching().memory_gib)
    b = _sim_batching(parse.parse_args(["--gpu-batch-memory-gib", "60"]))
    assert b.worlds == 4096 and b.memory_bytes == 60 << 30
