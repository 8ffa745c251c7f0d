"""The simulate stage's batch wiring (plain function, no Prefect run): batching, isolation of
failures, one staged sequence per pass, the merge of a motion's passes simulated in several GPU
batches (``merge_parts``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import pipeline.dataset.simulation as fb
from pipeline.dataset.records import SimOutcome
from pipeline.dataset.simulation import merge_parts
from pipeline.demo import generate_corpus
from pipeline.process import BuildConfig, process_motion
from pipeline.records import QuarantineEntry
from pipeline.sources.amass import read_amass
from pipeline.store import StagedSequence
from pipeline.store.canonical_io import save_canonical


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = [f for f in generate_corpus(root, n_subjects=1, seed=5) if "stand" in f.name or "squat" in f.name]
    out, cfg = [], BuildConfig()
    for i, f in enumerate(files):
        p = process_motion(read_amass(f, root), cfg)
        staging = tmp_path_factory.mktemp(f"file{i}")
        path = save_canonical(p.motion, staging / "canonical" / "m.npz")
        out.append((p.motion.provenance.sequence_id, str(path), p.split))
    return out


def test_every_pass_is_staged_with_its_metrics(items):
    cfg = replace(BuildConfig(), simulate=replace(BuildConfig().simulate, passes=2))
    outs = fb.simulate_motions(items, cfg)
    assert [o.sequence_id for o in outs] == [k for k, _, _ in items]
    for o in outs:
        assert o.quarantine is None
        assert [s.key for s in o.staged] == [f"{o.sequence_id}#pass0", f"{o.sequence_id}#pass1"]
        assert [r["seq_id"] for r in o.metrics] == [s.key for s in o.staged]
        assert all(s.subsets == ("ground_reaction", "torque") for s in o.staged)


def test_a_failing_motion_is_quarantined_alone(items, monkeypatch, tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an npz")
    batch = [items[0], ("amass/X/Y/broken", str(broken), "train"), items[1]]
    calls = []
    real = fb.simulate_jobs

    def batch_refusing(jobs, cfg, backend="cpu", max_worlds=None, dynamics=None):
        calls.append(len(jobs))
        if len(jobs) > 1:
            raise RuntimeError("batch backend failure")
        return real(jobs, cfg, backend, max_worlds, dynamics=dynamics)

    monkeypatch.setattr(fb, "simulate_jobs", batch_refusing)
    outs = fb.simulate_motions(batch, BuildConfig())
    assert calls[0] == 2 and calls[1:] == [1, 1]  # one batched call, then one motion at a time
    assert outs[1].quarantine is not None and outs[1].quarantine.stage == "simulate"
    assert outs[0].quarantine is None and outs[2].quarantine is None
    assert len(outs[0].staged) == len(outs[2].staged) == 1


def _staged(key: str) -> StagedSequence:
    return StagedSequence(key, Path("/x") / key, 10, 2, ("ground_reaction", "torque"))


def test_merge_parts_in_pass_order():
    a = SimOutcome("s", "/m.npz", (_staged("s#pass2"),), ({"seq_id": "s#pass2"},), None, 1.0, 10)
    b = SimOutcome("s", "/m.npz", (_staged("s#pass0"), _staged("s#pass1")),
                   ({"seq_id": "s#pass0"}, {"seq_id": "s#pass1"}), None, 2.0, 20)
    m = merge_parts([((2,), a), ((0, 1), b)])
    assert [s.key for s in m.staged] == ["s#pass0", "s#pass1", "s#pass2"]
    assert [r["seq_id"] for r in m.metrics] == ["s#pass0", "s#pass1", "s#pass2"]
    assert m.seconds == 3.0 and m.frames == 30 and m.quarantine is None
    assert merge_parts([((0, 1), b)]) is b


def test_merge_parts_quarantines_the_motion_if_a_part_failed():
    ok = SimOutcome("s", "/m.npz", (_staged("s#pass0"),), ({"seq_id": "s#pass0"},), None, 1.0, 10)
    bad = SimOutcome("s", "/m.npz", quarantine=QuarantineEntry(path="s", stage="simulate", reason="overflow"),
                     seconds=0.5)
    m = merge_parts([((0,), ok), ((1,), bad)])
    assert m.quarantine is not None and m.quarantine.reason == "overflow"
    assert m.staged == () and m.metrics == () and m.seconds == 1.5
