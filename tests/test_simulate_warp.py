"""The MuJoCo Warp backend on Warp's CPU device against the CPU backend (same controller, same
recording): a batch of two demo walks of different subjects and lengths (padding included).

Marked ``warp``: the first MuJoCo Warp step in a fresh kernel cache compiles its kernels
(≈ 90–180 s on one core); later runs load them from the cache (pipeline.simulate.warp.runtime).
"""

import numpy as np
import pytest

pytest.importorskip("mujoco_warp")

from pipeline.simulate import SimConfig, simulate  # noqa: E402
from pipeline.simulate.synthetic import demo_motion  # noqa: E402
from pipeline.simulate.warp.backend import (  # noqa: E402
    MjWarpBackend, SimulationOverflowError, WarpBatchSettings, length_buckets)

pytestmark = [pytest.mark.warp, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def pair():
    mos = [demo_motion("walk", 1.2, duration_s=1.0, subject=0), demo_motion("walk", 1.0, duration_s=0.8, subject=1)]
    cfg = SimConfig()  # the default engine, landing seat included
    backend = MjWarpBackend(device="cpu")
    return mos, simulate(mos, cfg, backend="cpu"), backend.simulate(mos, cfg), backend.last_stats


def test_same_result_layout(pair):
    mos, cpu, gpu, stats = pair
    assert len(stats) == 1 and stats[0].worlds == 2 and stats[0].overflow_worlds == ()
    for mo, a, b in zip(mos, cpu, gpu):
        assert b.sequence_id == mo.provenance.sequence_id and b.mass_kg == a.mass_kg
        assert b.n_frames == mo.n_frames
        for k, v in a.__dict__.items():
            if isinstance(v, np.ndarray):
                assert getattr(b, k).shape == v.shape, k
        assert set(b.metrics) == set(a.metrics)


def test_parity_with_cpu_backend(pair):
    """Targets of issue 13: MPJPE within 2 mm, per-foot GRF within 0.2 N/kg (mean ‖ΔF‖ / mass),
    joint torques within 0.1 N·m/kg RMSE (figures in docs/simulation.md)."""
    _, cpu, gpu, stats = pair
    assert stats[0].force_plan_kkt_max < 1e-6
    for a, b in zip(cpu, gpu):
        assert not b.reset.any()
        assert abs(a.metrics["mpjpe_median_mm"] - b.metrics["mpjpe_median_mm"]) < 2.0
        assert np.linalg.norm(a.sim_joint_pos_m - b.sim_joint_pos_m, axis=-1).mean() < 2e-3
        assert np.linalg.norm(a.grf_n - b.grf_n, axis=-1).mean() / a.mass_kg < 0.2
        assert np.sqrt(np.mean((a.joint_torque_nm - b.joint_torque_nm) ** 2)) / a.mass_kg < 0.1
        # the feet carry the body: the recorded forces are the simulation's, not zeros
        assert b.grf_total_n[:, 2].mean() > 0.8 * b.mass_kg * 9.81


def test_overflowing_world_is_rerun_then_refused(pair):
    mos = [demo_motion("stand", duration_s=0.3, subject=0)]
    tiny = MjWarpBackend(device="cpu", settings=WarpBatchSettings(contact_budget=1))
    with pytest.raises(SimulationOverflowError, match="overflowed twice"):
        tiny.simulate(mos, SimConfig())
    assert len(tiny.last_stats) == 2 and all(s.overflow_worlds == (0,) for s in tiny.last_stats)


def test_landing_seat_is_ported(pair):
    """The first walk has a seated touch-down (on the CPU backend the seat moves its forces by
    ≈ 0.2 N/kg); the Warp backend's seat does the same: with it on both backends agree
    (``test_parity_with_cpu_backend``), and without it they agree again and differ from it."""
    mos, cpu, gpu, _ = pair
    cfg = SimConfig(landing_seat=False)
    cpu_off = simulate(mos[:1], cfg, backend="cpu")[0]
    gpu_off = MjWarpBackend(device="cpu").simulate(mos[:1], cfg)[0]
    mass = cpu_off.mass_kg

    def diff(a, b):
        return np.linalg.norm(a.grf_n - b.grf_n, axis=-1).mean() / mass

    assert diff(cpu[0], cpu_off) > 0.1
    assert diff(gpu[0], gpu_off) > 0.1
    assert diff(gpu[0], cpu[0]) < 0.01 and diff(gpu_off, cpu_off) < 0.01


def test_backend_names():
    from pipeline.simulate.backends import get_backend

    assert isinstance(get_backend("warp-cpu"), MjWarpBackend) and get_backend("warp-cpu").device == "cpu"


def test_length_buckets():
    assert length_buckets([5, 3, 9, 3], 2) == [[1, 3], [0, 2]]
    assert length_buckets([], 4) == []


def test_batch_memory_estimate_covers_the_measured_arrays(pair):
    """The build's GPU batch planner caps batches by ``batching.world_bytes``: it must not
    undercount the batch's MuJoCo Warp and controller arrays (nor be far above them)."""
    from pipeline.simulate.batching import steps_per_frame, world_bytes

    mos, _, _, stats = pair
    spf = steps_per_frame(mos[0].fps_hz, SimConfig().control_hz)
    estimate = stats[0].worlds * world_bytes(max(m.n_frames for m in mos), spf)
    used = stats[0].device_bytes + stats[0].controller_bytes
    print(f"estimate {estimate / 2**20:.2f} MiB, measured {used / 2**20:.2f} MiB "
          f"(device {stats[0].device_bytes / 2**20:.2f}, controller {stats[0].controller_bytes / 2**20:.2f})")
    assert used <= estimate <= 2 * used


def test_precomputed_dynamics_pass_gives_identical_batches(pair, monkeypatch):
    """The build's path (dynamics pass computed by the per-file task, handed to the batch): the same
    batch of worlds, bit for bit, as with the dynamics pass computed by the backend."""
    import pipeline.simulate.engine as engine

    mos, _, gpu, _ = pair
    cfg = SimConfig()
    dyns = [engine.motion_dynamics(m, cfg) for m in mos]

    def refuse(*a, **k):
        raise AssertionError("dynamics pass recomputed")

    monkeypatch.setattr(engine, "dynamics_pass", refuse)
    again = MjWarpBackend(device="cpu").simulate(mos, cfg, dynamics=dyns)
    for a, b in zip(gpu, again):
        for k, v in a.__dict__.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, getattr(b, k), err_msg=k)
        assert a.metrics == b.metrics
