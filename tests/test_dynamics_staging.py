"""The dynamics pass computed by the per-file task and staged beside the canonical motion file
(``pipeline.dataset.simulation.stage_dynamics``): the simulate task uses it instead of computing it,
with bit-identical results, and never uses one written for another motion or configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import pytest

import pipeline.simulate.engine as engine
from pipeline.dataset.simulation import dynamics_file, simulate_parts, stage_dynamics, staged_dynamics
from pipeline.process import BuildConfig
from pipeline.simulate import SimConfig, simulate_jobs
from pipeline.simulate.synthetic import demo_motion
from pipeline.store.canonical_io import load_canonical, save_canonical


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    mo = demo_motion("walk", 1.2, duration_s=0.6, subject=1)
    canon = save_canonical(mo, tmp_path_factory.mktemp("entry") / "canonical" / "m.npz")
    cfg = SimConfig(passes=2)
    written = stage_dynamics(mo, canon, cfg)
    return load_canonical(canon), canon, cfg, written


def _no_dynamics_pass(*a, **k):
    raise AssertionError("the dynamics pass was computed although a valid one was staged")


def test_staged_dynamics_gives_bit_identical_simulations(staged, monkeypatch):
    mo, canon, cfg, written = staged
    assert written == dynamics_file(canon, cfg) and written.exists()
    computed = simulate_jobs([(mo, 0), (mo, 1)], cfg)  # the dynamics pass computed in the simulate task
    dyn = staged_dynamics(mo, canon, cfg)
    assert dyn is not None
    ref = engine.motion_dynamics(mo, cfg)
    for f in dataclasses.fields(dyn):
        a, b = getattr(dyn, f.name), getattr(ref, f.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f.name)
            assert a.dtype == b.dtype, f.name
    for name in ("root_pos_m", "joint_rot_aa_rad", "joint_pos_m", "marker_pos_m", "foot_points_m", "time_s"):
        np.testing.assert_array_equal(getattr(dyn.motion, name), getattr(ref.motion, name), err_msg=name)
    assert dyn.metrics == ref.metrics and dyn.cutoff_hz == ref.cutoff_hz
    monkeypatch.setattr(engine, "dynamics_pass", _no_dynamics_pass)
    loaded = simulate_jobs([(mo, 0), (mo, 1)], cfg, dynamics=[dyn, dyn])
    for a, b in zip(computed, loaded):
        assert a.pass_index == b.pass_index
        for k, v in a.__dict__.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, getattr(b, k), err_msg=k)
        assert a.metrics == b.metrics
        assert a.metrics["dyn_cutoff_hz"] == b.metrics["dyn_cutoff_hz"]


def test_simulate_task_uses_the_staged_dynamics_pass(staged, monkeypatch):
    """``simulate_parts`` (the build's simulate task) loads the staged file: with the dynamics pass
    made to fail, the motion still simulates, as it did with the pass computed in the task."""
    mo, canon, cfg, _ = staged
    bcfg = replace(BuildConfig(), simulate=cfg)
    item = (mo.provenance.sequence_id, str(canon), "train")
    before = simulate_parts([(item, (0,))], bcfg)[0]
    monkeypatch.setattr(engine, "dynamics_pass", _no_dynamics_pass)
    after = simulate_parts([(item, (0,))], bcfg)[0]
    assert before.quarantine is None and after.quarantine is None
    assert before.metrics[0].keys() == after.metrics[0].keys()
    for k, v in before.metrics[0].items():
        assert v == after.metrics[0][k] or (v != v and after.metrics[0][k] != after.metrics[0][k]), k


def test_stale_or_foreign_dynamics_are_never_used(staged, tmp_path):
    mo, canon, cfg, written = staged
    # another dynamics configuration, humanoid or physics step: another file name, and no file there
    for other in (replace(cfg, dynamics=replace(cfg.dynamics, mu=0.7)),
                  replace(cfg, humanoid=replace(cfg.humanoid, friction=0.9)), replace(cfg, physics_dt_s=1 / 960)):
        assert dynamics_file(canon, other) != written
        assert staged_dynamics(mo, canon, other) is None
    # the pass count or the gains do not change the dynamics pass: the file is reused
    assert dynamics_file(canon, replace(cfg, passes=5)) == written
    assert staged_dynamics(mo, canon, replace(cfg, passes=5)) is not None
    # no dynamics pass at all: nothing staged, nothing loaded
    assert stage_dynamics(mo, canon, replace(cfg, dynamics=None)) is None
    assert staged_dynamics(mo, canon, replace(cfg, dynamics=None)) is None
    # the file of another motion (or of this motion before it changed) under this name: rejected
    moved = replace(mo, root_pos_m=mo.root_pos_m + np.float32(0.01))
    other_canon = save_canonical(moved, tmp_path / "canonical" / "m.npz")
    dynamics_file(other_canon, cfg).write_bytes(written.read_bytes())
    assert staged_dynamics(moved, other_canon, cfg) is None
    # a heavier subject, same poses: rejected too (the humanoid differs)
    assert staged_dynamics(replace(mo, mass_kg=mo.mass_kg + 1.0), canon, cfg) is None
    # unreadable: rejected, not raised
    dynamics_file(other_canon, cfg).write_bytes(b"PK\x03\x04 truncated")
    assert staged_dynamics(moved, other_canon, cfg) is None
    dynamics_file(other_canon, cfg).write_bytes(b"not an npz")
    assert staged_dynamics(moved, other_canon, cfg) is None


def test_precomputed_dynamics_must_match_the_configuration(staged):
    mo, _, cfg, _ = staged
    dyn = engine.motion_dynamics(mo, cfg)
    with pytest.raises(ValueError, match="cfg.dynamics is None"):
        engine.prepare_sequence(mo, replace(cfg, dynamics=None), 0, dynamics=dyn)
    short = demo_motion("walk", 1.2, duration_s=0.4, subject=1)
    with pytest.raises(ValueError, match="frames"):
        engine.prepare_sequence(short, cfg, 0, dynamics=dyn)


def test_per_file_task_stages_the_dynamics_pass(tmp_path, monkeypatch):
    """``process_file`` writes each simulated motion's dynamics pass beside its canonical file (and
    times it as ``dynamics``); with ``--no-dynamics-pass`` it writes none; a dynamics pass that fails
    there neither quarantines the file nor writes anything (the simulate task computes it again and
    reports its error as before)."""
    from pipeline.dataset.files import process_file
    from pipeline.demo import generate_corpus
    from pipeline.sources.base import SourceSpec

    root = tmp_path / "amass"
    f = next(p for p in generate_corpus(root, n_subjects=1, seed=5) if "walk" in p.name)
    spec = SourceSpec("amass", str(root))
    cfg = BuildConfig()
    o = process_file(spec, str(f), str(tmp_path / "e1"), cfg)
    assert o.quarantine is None and o.to_simulate and o.seconds["dynamics"] > 0
    for seq_id, canon, _ in o.to_simulate:
        mo = load_canonical(canon)
        assert dynamics_file(canon, cfg.simulate).exists()
        assert staged_dynamics(mo, canon, cfg.simulate) is not None
    off = replace(cfg, simulate=replace(cfg.simulate, dynamics=None))
    o = process_file(spec, str(f), str(tmp_path / "e2"), off)
    assert o.to_simulate and "dynamics" not in o.seconds
    assert not list((tmp_path / "e2").rglob("*.dynamics-*.npz"))
    monkeypatch.setattr(engine, "dynamics_pass", _no_dynamics_pass)
    o = process_file(spec, str(f), str(tmp_path / "e3"), cfg)
    assert o.quarantine is None and o.to_simulate and o.staged
    assert not list((tmp_path / "e3").rglob("*.dynamics-*.npz"))
