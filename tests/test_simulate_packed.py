"""The batched backend's host inputs as packed arrays, and the build's three batched tasks (issue 13):
a CPU prepare task packs and stages each chunk's worlds (``prepare_chunk``), the GPU task only
loads, simulates and writes recordings (``simulate_prepared``), a CPU finish task turns them into
results and stages them (``finish_chunk``). Results, staged bytes and metrics rows are those of
one ``simulate_parts`` task on the same batch, to the bit.

The packing tests need no Warp; the ones marked ``warp`` simulate on Warp's CPU device (4 worlds:
Warp's float32 bits depend on the world count below 4).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mujoco
import numpy as np
import pytest

from pipeline.simulate import SimConfig
from pipeline.simulate.engine import motion_dynamics, prepare_sequence
from pipeline.simulate.packed import (
    MOTION_FIELDS,
    WORLD_FIELDS,
    concat_packed,
    load_packed,
    model_bytes,
    pack_prepared,
    save_packed,
)
from pipeline.simulate.synthetic import demo_motion


def _pad(a, k):
    return a[:k] if a.shape[0] >= k else np.concatenate([a, np.repeat(a[-1:], k - a.shape[0], 0)], 0)


@pytest.fixture(scope="module")
def preps():
    """A walk (2 passes, dynamics pass) and a shorter stand without a dynamics pass (other gates,
    no plan or swing clearance) of two subjects."""
    cfg = SimConfig(passes=2)
    walk = demo_motion("walk", 1.2, duration_s=0.5, subject=0)
    stand = demo_motion("stand", 0.0, duration_s=0.3, subject=1)
    dyn = motion_dynamics(walk, cfg)
    a0 = prepare_sequence(walk, cfg, 0, dynamics=dyn)
    a1 = prepare_sequence(walk, cfg, 1, like=a0)
    b0 = prepare_sequence(stand, replace(cfg, dynamics=None), 0)
    return cfg, [a0, a1], [b0]


def _same(a, b):
    for f in MOTION_FIELDS + WORLD_FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape, f
        np.testing.assert_array_equal(x, y, err_msg=f)
    assert a.subjects == b.subjects


def test_batch_inputs_are_what_the_batch_pads_per_world(preps, tmp_path):
    """Packed in two chunks of different lengths, staged, loaded and concatenated: every world's
    batch arrays equal its own preparation padded to the batch length (the previous per-world
    ``_pad``), passes of one motion share its rows, subjects are stored once each."""
    _, walk, stand = preps
    chunks = [pack_prepared(walk), pack_prepared(stand)]
    assert chunks[0].seq_id.shape == (1,) and list(chunks[0].motion) == [0, 0] and len(chunks[0].subjects) == 1
    back = [load_packed(save_packed(c, tmp_path / f"c{i}.npz")) for i, c in enumerate(chunks)]
    for c, b in zip(chunks, back):
        _same(c, b)
    pk = concat_packed(back)
    world = walk + stand
    assert pk.worlds == 3 and len(pk.subjects) == 2 and list(pk.subject) == [0, 0, 1]
    kmax = max(p.rq.shape[0] for p in world) - 1 + 7  # longer than any: padding
    got = pk.batch_inputs(kmax)
    for w, p in enumerate(world):
        np.testing.assert_array_equal(got["rq"][w], _pad(p.rq, kmax + 1))
        np.testing.assert_array_equal(got["ref_pos"][w], _pad(p.ref_pos, kmax + 1))
        gate = _pad(p.gate, kmax) if p.gate is not None else np.repeat(p.ctrl._plannable[None], kmax, 0)
        np.testing.assert_array_equal(got["gate"][w], gate)
        plan = _pad(p.plan, kmax + 1) if p.plan is not None else np.zeros((kmax + 1, 2, 3))
        np.testing.assert_array_equal(got["plan"][w], plan)
        swing = _pad(p.swing, kmax) if p.swing is not None else np.zeros((kmax, 2), bool)
        np.testing.assert_array_equal(got["swing"][w], swing)
        np.testing.assert_array_equal(pk.qpos0[w], p.data.qpos)
        np.testing.assert_array_equal(pk.damping[w], p.ctrl.damping)
        np.testing.assert_array_equal(pk.jnt_stiffness[w], p.model.jnt_stiffness)
        assert pk.subjects[pk.subject[w]] == model_bytes(p.hum.model)
        assert set(np.flatnonzero(pk.spring_mask[w])) == set(p.spring_q)
    assert not pk.has_plan[pk.motion[2]] and pk.has_plan[pk.motion[0]]
    assert isinstance(pk.rq, tuple) and pk.rq[0] is back[0].rq  # concatenated without copying the references
    again = load_packed(save_packed(pk, tmp_path / "all.npz")).batch_inputs(kmax)  # written joined
    for f, v in got.items():
        np.testing.assert_array_equal(again[f], v, err_msg=f)
    one = pk.take([2, 0])  # a subset in another order shares the motion arrays
    assert list(one.motion) == [pk.motion[2], pk.motion[0]] and one.rq is pk.rq
    for f, v in one.batch_inputs(kmax - 7).items():  # and cut to a shorter batch
        want = got[f][[2, 0]] if v.ndim == 1 else got[f][[2, 0], : v.shape[1]]
        np.testing.assert_array_equal(v, want, err_msg=f)


def test_initial_model_and_data_are_the_preparations(preps):
    """The GPU task rebuilds world 0's model copy and initial ``MjData`` (the template of the batch's
    device data) from the packed arrays: the same as ``prepare_sequence`` left them."""
    from pipeline.simulate.warp.backend import initial_model_data

    _, walk, _ = preps
    p = walk[1]  # a perturbed pass: its own gains, damping and initial state
    m, d = initial_model_data(pack_prepared([p]))
    assert model_bytes(m) == model_bytes(p.model)
    for name in dir(d):
        v = getattr(d, name, None)
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, getattr(p.data, name), err_msg=name)
    assert d.time == p.data.time


def test_packed_file_refuses_other_files(tmp_path):
    from pipeline.store.canonical_io import save_bundle

    save_bundle(tmp_path / "x.npz", {"a": np.zeros(3)}, {"format": 2})
    with pytest.raises(ValueError, match="not a packed-worlds file"):
        load_packed(tmp_path / "x.npz")


def test_subject_model_bytes_round_trip(preps):
    from pipeline.simulate.packed import model_from_bytes

    _, walk, _ = preps
    m = walk[0].hum.model
    back = model_from_bytes(model_bytes(m))
    assert model_bytes(back) == model_bytes(m)
    assert back.nq == m.nq and mujoco.mj_name2id(back, mujoco.mjtObj.mjOBJ_GEOM, "floor") >= 0


# --- the build's three tasks on Warp's CPU device ------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("mujoco_warp")
    from test_sim_finish import corpus

    from pipeline.process import BuildConfig

    root = tmp_path_factory.mktemp("packed")
    cfg = BuildConfig()
    cfg = replace(cfg, sim_backend="warp-cpu", simulate=replace(cfg.simulate, passes=2))
    return root, cfg, corpus(root, cfg.simulate)


def _three_tasks(parts, cfg, per_chunk: int):
    from pipeline.dataset.simulation import finish_chunk, prepare_chunk, prepare_groups, simulate_prepared

    chunks = [prepare_chunk(g, cfg) for g in prepare_groups(parts, per_chunk)]
    simulated = simulate_prepared(chunks, cfg, sum(len(p) for _, p in parts))
    return chunks, simulated, [o for c in simulated for o in finish_chunk(c, cfg)]


@pytest.mark.warp
@pytest.mark.timeout(1500)
def test_three_tasks_stage_the_bytes_of_one_task(built):
    """2 motions × 2 passes, prepared in two chunks (one per motion, different lengths): the staged
    bytes and metrics rows equal one ``simulate_parts`` task's (prepare, simulate and finish in
    one process), and every staging file is gone afterwards."""
    from test_sim_finish import assert_same, clear_sim, staged_bytes

    from pipeline.dataset.simulation import simulate_parts

    root, cfg, items = built
    parts = [(items[0], (0, 1)), (items[1], (0, 1))]
    clear_sim(root)
    one = simulate_parts(parts, cfg, 4)
    want = staged_bytes(root)
    assert want and all(o.quarantine is None for o in one)
    clear_sim(root)
    chunks, simulated, outs = _three_tasks(parts, cfg, 2)
    assert len(chunks) == 2 and [c.jobs for c in chunks] == [((0, 0), (0, 1)), ((0, 0), (0, 1))]
    assert all(Path(c.file).name.endswith(".npz") and "sim-prep" in c.file for c in chunks)
    assert all(s.file is not None and "sim-raw" in s.file and not s.errors for s in simulated)
    assert staged_bytes(root) == want
    assert_same(outs, one)
    assert all(o.seconds > 0 for o in outs)
    assert not list(root.glob("entry*/sim-prep/*")) and not list(root.glob("entry*/sim-raw/*"))


@pytest.mark.warp
@pytest.mark.timeout(1500)
def test_a_motion_that_cannot_be_prepared_is_quarantined_alone(built, tmp_path):
    from test_sim_finish import clear_sim

    root, cfg, items = built
    ghost = ("ghost", str(tmp_path / "entry" / "canonical" / "ghost.npz"), "train")
    parts = [(ghost, (0, 1)), (items[0], (0, 1)), (items[1], (0, 1))]
    clear_sim(root)
    chunks, simulated, outs = _three_tasks(parts, cfg, 4)
    assert chunks[0].errors and chunks[0].errors[0][0] == ghost[1]
    assert outs[0].quarantine is not None and outs[0].quarantine.path == "ghost" and not outs[0].staged
    assert all(o.quarantine is None and len(o.staged) == 2 for o in outs[1:])
    assert not list(root.glob("entry*/sim-prep/*")) and not list(root.glob("entry*/sim-raw/*"))


@pytest.mark.warp
@pytest.mark.timeout(1500)
def test_a_batch_that_raises_is_retried_world_by_world(built, monkeypatch):
    """The GPU task's batch raises: its worlds run one at a time and only the motion whose world
    still fails is quarantined."""
    from test_sim_finish import clear_sim

    from pipeline.simulate.warp.backend import MjWarpBackend

    root, cfg, items = built
    real = MjWarpBackend.run_packed
    bad = items[1][0]

    def flaky(self, packed, sim):
        if packed.worlds > 1 or packed.seq_id[packed.motion[0]] == bad:
            raise RuntimeError("device lost")
        return real(self, packed, sim)

    monkeypatch.setattr(MjWarpBackend, "run_packed", flaky)
    clear_sim(root)
    _, simulated, outs = _three_tasks([(items[0], (0, 1)), (items[1], (0, 1))], cfg, 2)
    assert simulated[1].errors and "device lost" in simulated[1].errors[0][1] and simulated[1].file is None
    assert outs[0].quarantine is None and len(outs[0].staged) == 2
    assert outs[1].quarantine is not None and "device lost" in outs[1].quarantine.reason
    assert not list(root.glob("entry*/sim-prep/*")) and not list(root.glob("entry*/sim-raw/*"))
