"""The simulate stage's batch wiring (plain function, no Prefect run): batching, isolation of
failures, one staged sequence per pass."""

from __future__ import annotations

from dataclasses import replace

import pytest

import pipeline.dataset.simulation as fb
from pipeline.demo import generate_corpus
from pipeline.process import BuildConfig, process_motion
from pipeline.sources.amass import read_amass
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
    real = fb.simulate

    def batch_refusing(motions, cfg, pass_index=0, backend="cpu"):
        calls.append(len(motions))
        if len(motions) > 1:
            raise RuntimeError("batch backend failure")
        return real(motions, cfg, pass_index, backend)

    monkeypatch.setattr(fb, "simulate", batch_refusing)
    outs = fb.simulate_motions(batch, BuildConfig())
    assert calls[0] == 2 and calls[1:] == [1, 1]  # one batched call, then one motion at a time
    assert outs[1].quarantine is not None and outs[1].quarantine.stage == "simulate"
    assert outs[0].quarantine is None and outs[2].quarantine is None
    assert len(outs[0].staged) == len(outs[2].staged) == 1
