"""The build's GPU batches end to end on Warp's CPU device (``--sim-backend warp-cpu``): motions of
two processing batches accumulate into batches of 2 worlds (3 passes each, so a motion's passes
span batches and are merged back), and every simulated sequence equals the one a build that runs
all of them as one batch stores: to float32 rounding, as MuJoCo Warp's results on Warp's CPU
device change in the last bits with the world count below 4 worlds (1, 2, 3 differ; 4, 6, 9 are
identical), whatever the other worlds hold (docs/simulation.md, "GPU batches in the build").

Also: the build's split of a batch into the batch task (``simulate_results``) and CPU finish
tasks (``finish_results``) stages the very bytes one ``simulate_parts`` task stages for the same
batch.

Marked ``warp`` (the first MuJoCo Warp step in a fresh kernel cache compiles its kernels); two
short motions (0.6–0.7 s), serial executor, no Prefect: the two builds take ≈ 21 s in a warm
process on this 2-core machine, 60–85 s for the whole test under other jobs' load (warm kernel
cache).
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("mujoco_warp")

from pipeline.dataset.build import build_dataset  # noqa: E402
from pipeline.dataset.executor import SerialExecutor  # noqa: E402
from pipeline.demo import MotionSpec, plan_corpus, write_sequence  # noqa: E402
from pipeline.process import BuildConfig  # noqa: E402
from pipeline.simulate.batching import GpuBatching  # noqa: E402
from pipeline.sources.base import SourceSpec  # noqa: E402

pytestmark = [pytest.mark.warp, pytest.mark.timeout(1500)]

PASSES = 3


def _corpus(root):
    specs = plan_corpus(n_subjects=2, seed=3, duration_s=(0.6, 0.6),
                        motions=(MotionSpec("stand"), MotionSpec("walk", 1.2)))
    picked = [specs[0], specs[3]]  # subject 1 stands 0.6 s, subject 2 walks 0.7 s
    picked = [replace(picked[0], n_frames=int(0.6 * picked[0].fps_hz)),
              replace(picked[1], n_frames=int(0.7 * picked[1].fps_hz))]
    for s in picked:
        write_sequence(root, s)
    return root


def _build(corpus, out, batching, capsys):
    cfg = BuildConfig()
    cfg = replace(cfg, sim_backend="warp-cpu", simulate=replace(cfg.simulate, passes=PASSES))
    summary = build_dataset([SourceSpec("amass", corpus)], out, cfg, workers=1, executor=SerialExecutor(),
                            report=False, sim_batching=batching)
    err = capsys.readouterr().err
    sent = [int(n) for n in re.findall(r"\[simulate\] batch of (\d+) worlds", err)]
    processed = len(re.findall(r"\[process\] \d+/\d+ files done", err))
    return summary, sent, processed


def test_gpu_batches_across_processing_batches_equal_one_batch(tmp_path, capsys):
    import xarray as xr

    corpus = _corpus(tmp_path / "corpus" / "amass")
    small, sent_small, n_proc = _build(corpus, tmp_path / "small", GpuBatching(worlds=2, lookahead=1), capsys)
    assert n_proc == 2  # two processing batches (one file each)
    # 2 motions × 3 passes in batches of 2 worlds: each motion's passes split over two batches
    assert sum(sent_small) == 2 * PASSES and max(sent_small) == 2 and len(sent_small) >= 3
    one, sent_one, _ = _build(corpus, tmp_path / "one", GpuBatching(worlds=64), capsys)
    assert sent_one == [6]  # everything pending until the flush: one batch
    for s in (small, one):
        assert s["subsets"]["torque"]["sequences"] == 2 * PASSES
        assert s.get("simulations_failed", 0) == 0
    for root in (tmp_path / "small", tmp_path / "one"):  # the finish tasks deleted every result file
        assert not list(root.rglob("sim-results/*.npz"))
    for subset in ("ground_reaction", "torque"):
        a = xr.open_zarr(tmp_path / "small" / f"{subset}.zarr")
        b = xr.open_zarr(tmp_path / "one" / f"{subset}.zarr")
        assert list(a["seq_id"].values) == list(b["seq_id"].values)
        assert sorted(map(int, a["seq_pass"].values)) == sorted(list(range(PASSES)) * 2)
        assert set(a.data_vars) == set(b.data_vars) and a.sizes == b.sizes
        for name in a.data_vars:
            x, y = a[name].values, b[name].values
            if x.dtype.kind != "f":
                assert np.array_equal(x, y), name
                continue
            assert np.array_equal(np.isnan(x), np.isnan(y)), name
            scale = float(np.nanmax(np.abs(y))) if np.isfinite(y).any() else 0.0
            # observed: ≤ 2e-5 of the variable's scale (GRF 0.008 N of 736 N, positions 6e-7 m)
            assert np.nanmax(np.abs(x - y), initial=0.0) <= 2e-4 * scale + 1e-6, name


def test_split_batch_task_stages_the_same_bytes_on_warp_cpu(tmp_path):
    """The build's batched path (``simulate_results`` then CPU ``finish_results``) stages the very
    bytes and metrics rows that one ``simulate_parts`` task did for the same batch of worlds (here
    2 motions × 2 passes on Warp's CPU device)."""
    from test_sim_finish import assert_same, clear_sim, corpus, staged_bytes

    from pipeline.dataset.simulation import finish_results, simulate_parts, simulate_results

    cfg = BuildConfig()
    cfg = replace(cfg, sim_backend="warp-cpu", simulate=replace(cfg.simulate, passes=2))
    items = corpus(tmp_path, cfg.simulate)
    parts = [(items[0], (0, 1)), (items[1], (0, 1))]
    one = simulate_parts(parts, cfg, 4)
    want = staged_bytes(tmp_path)
    assert want and all(o.quarantine is None for o in one)
    clear_sim(tmp_path)
    split = finish_results(simulate_results(parts, cfg, 4), cfg)
    assert staged_bytes(tmp_path) == want
    assert_same(split, one)
    assert not list(tmp_path.glob("entry*/sim-results/*"))
