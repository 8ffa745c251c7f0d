"""The batched backend's host preparation in a process pool (``pipeline.simulate.prep_pool``): the
reference kinematics computed in other processes give bit-identical prepared sequences, with and
without a dynamics pass (stance gates from the reference's sole points), and the pool is only used
from ``POOL_MIN_MOTIONS`` motions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.simulate import SimConfig, prep_pool
from pipeline.simulate.engine import motion_dynamics, prepare_sequence
from pipeline.simulate.synthetic import demo_motion

FIELDS = ("rq", "rv", "ra", "ref_pos", "gate", "plan", "swing", "spring_q")


@pytest.fixture(scope="module")
def pool():
    yield
    prep_pool.shutdown()


def _same(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, f
            np.testing.assert_array_equal(x, y, err_msg=f)
    for f in ("time_s", "qpos", "qvel", "qacc"):
        np.testing.assert_array_equal(getattr(a.ref, f), getattr(b.ref, f), err_msg=f)
    np.testing.assert_array_equal(a.data.qpos, b.data.qpos)
    np.testing.assert_array_equal(a.model.dof_damping, b.model.dof_damping)


@pytest.mark.parametrize("with_dynamics", [True, False])
def test_pooled_reference_gives_bit_identical_preparation(pool, monkeypatch, with_dynamics):
    monkeypatch.setattr(prep_pool, "pool_workers", lambda: 2)
    cfg = SimConfig(passes=2) if with_dynamics else replace(SimConfig(passes=2), dynamics=None)
    mos = [demo_motion("walk", 1.2, duration_s=0.6, subject=1), demo_motion("run", 2.8, duration_s=0.6, subject=2)]
    dyns = [motion_dynamics(m, cfg) for m in mos]
    items = [(m, None if d is None else d.motion) for m, d in zip(mos, dyns)]
    assert prep_pool.reference_kinematics_many(items, cfg, min_motions=3) is None  # below the threshold
    kins = list(prep_pool.reference_kinematics_many(items, cfg, min_motions=2))
    assert len(kins) == 2
    assert all((k.ref_glob is None) == with_dynamics for k in kins)
    for m, d, k in zip(mos, dyns, kins):
        for p in (0, 1):
            _same(prepare_sequence(m, cfg, p, dynamics=d, reference=k), prepare_sequence(m, cfg, p, dynamics=d))
    bad = replace(kins[0], ref_pos=kins[0].ref_pos + 1.0)  # the given reference is the one used
    assert np.array_equal(prepare_sequence(mos[0], cfg, 0, dynamics=dyns[0], reference=bad).ref_pos, bad.ref_pos)


@pytest.mark.warp
@pytest.mark.timeout(1500)
def test_warp_backend_results_bit_identical_with_the_pool(pool, monkeypatch):
    pytest.importorskip("mujoco_warp")
    from pipeline.simulate import simulate_jobs

    cfg = SimConfig(passes=2)
    mos = [demo_motion("walk", 1.2, duration_s=0.5, subject=1), demo_motion("stand", 0.0, duration_s=0.5, subject=2)]
    dyns = [motion_dynamics(m, cfg) for m in mos]
    jobs = [(mos[0], 0), (mos[0], 1), (mos[1], 0), (mos[1], 1)]
    dyn = [dyns[0], dyns[0], dyns[1], dyns[1]]
    serial = simulate_jobs(jobs, cfg, "warp-cpu", dynamics=dyn)
    calls = []
    real = prep_pool.reference_kinematics_many
    monkeypatch.setattr(prep_pool, "POOL_MIN_MOTIONS", 1)
    monkeypatch.setattr(prep_pool, "pool_workers", lambda: 2)
    monkeypatch.setattr(prep_pool, "reference_kinematics_many", lambda *a, **k: calls.append(1) or real(*a, **k))
    pooled = simulate_jobs(jobs, cfg, "warp-cpu", dynamics=dyn)
    assert calls
    for a, b in zip(serial, pooled):
        for k, v in a.__dict__.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, getattr(b, k), err_msg=k)
        assert a.metrics == b.metrics
