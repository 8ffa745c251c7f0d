"""A batched backend's simulate task split in two (issue 13): ``simulate_results`` (the GPU
worker: the batch only, each pass's ``SimulationResult`` written to the staging area) and
``finish_results`` (CPU workers: staging and metrics rows). Together they stage the same bytes and
metrics rows as ``simulate_parts`` (everything in one task), and a failure still quarantines only
the failing motion. CPU engine here (the same code path for every backend); the Warp CPU device's
batch in ``test_build_gpu_batches.py``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.dataset.simulation import (
    finish_groups,
    finish_results,
    result_file,
    simulate_parts,
    simulate_results,
    stage_dynamics,
)
from pipeline.process import BuildConfig
from pipeline.simulate import SimConfig, simulate_jobs
from pipeline.simulate.synthetic import demo_motion
from pipeline.store.canonical_io import load_result, save_canonical, save_result


def corpus(root: Path, cfg: SimConfig) -> list[tuple[str, str, str]]:
    """Two short motions handed over as the per-file task does (canonical file + dynamics pass),
    each in its own cache entry; their (sequence id, canonical file, split) items."""
    items = []
    for i, (kind, speed) in enumerate((("walk", 1.2), ("stand", 0.0))):
        mo = demo_motion(kind, speed, duration_s=0.6, subject=i + 1)
        canon = save_canonical(mo, root / f"entry{i}" / "canonical" / "m.npz")
        stage_dynamics(mo, canon, cfg)
        items.append((mo.provenance.sequence_id, str(canon), "train"))
    return items


def staged_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("entry*/sim/**/*")) if p.is_file()}


def rows_repr(outs) -> list:
    return [[sorted((k, type(v).__name__, repr(v)) for k, v in r.items()) for r in o.metrics] for o in outs]


def clear_sim(root: Path) -> None:
    import shutil

    for d in root.glob("entry*/sim"):
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finish")
    cfg = replace(BuildConfig(), simulate=SimConfig(passes=2))
    items = corpus(root, cfg.simulate)
    return root, cfg, items


def assert_same(a, b):
    assert [o.sequence_id for o in a] == [o.sequence_id for o in b]
    assert [o.quarantine for o in a] == [o.quarantine for o in b]
    assert [o.frames for o in a] == [o.frames for o in b]
    assert [[s.key for s in o.staged] for o in a] == [[s.key for s in o.staged] for o in b]
    assert rows_repr(a) == rows_repr(b)


def test_split_task_stages_the_same_bytes_as_one_task(setup):
    root, cfg, items = setup
    parts = [(items[0], (0, 1)), (items[1], (1,))]
    clear_sim(root)
    one = simulate_parts(parts, cfg, 4)
    want = staged_bytes(root)
    assert want and all(o.quarantine is None for o in one)
    clear_sim(root)
    handles = simulate_results(parts, cfg, 4)
    assert [h.passes for h in handles] == [(0, 1), (1,)] and all(h.error is None for h in handles)
    assert all(Path(f).is_file() and "sim-results" in f for h in handles for f in h.files)
    assert not staged_bytes(root)  # the simulate task staged nothing
    split = finish_results(handles, cfg)
    assert staged_bytes(root) == want
    assert_same(split, one)
    assert not list(root.glob("entry*/sim-results/*"))  # result files are deleted once staged
    assert all(o.seconds > 0 for o in split)


def test_result_file_round_trip(setup):
    root, cfg, items = setup
    from pipeline.store.canonical_io import load_canonical

    mo = load_canonical(Path(items[0][1]))
    res = simulate_jobs([(mo, 1)], cfg.simulate)[0]
    back = load_result(save_result(res, result_file(items[0][1], items[0][0], 1)))
    for k, v in res.__dict__.items():
        w = getattr(back, k)
        if isinstance(v, np.ndarray):
            assert w.dtype == v.dtype and w.shape == v.shape and not w.flags.writeable, k
            np.testing.assert_array_equal(w, v, err_msg=k)
        elif k == "metrics":
            assert sorted((a, type(b).__name__, repr(b)) for a, b in w.items()) == \
                sorted((a, type(b).__name__, repr(b)) for a, b in v.items())
        else:
            assert w == v and type(w) is type(v), k
    no_dyn = replace(res, dyn_root_correction_m=None, swing_penetration_m=None)
    back = load_result(save_result(no_dyn, result_file(items[0][1], items[0][0], 1)))
    assert back.dyn_root_correction_m is None and back.swing_penetration_m is None
    Path(result_file(items[0][1], items[0][0], 1)).unlink()


def test_finish_failure_quarantines_only_that_motion(setup):
    root, cfg, items = setup
    clear_sim(root)
    handles = simulate_results([(items[0], (0, 1)), (items[1], (0,))], cfg)
    Path(handles[0].files[1]).write_bytes(b"not an npz")  # pass 1 of the first motion is unreadable
    outs = finish_results(handles, cfg)
    assert outs[0].quarantine is not None and outs[0].quarantine.stage == "simulate"
    assert outs[0].quarantine.path == items[0][0] and not outs[0].staged
    assert outs[1].quarantine is None and len(outs[1].staged) == 1 and len(outs[1].metrics) == 1
    assert not list(root.glob("entry*/sim-results/*"))


def test_unreadable_motion_is_reported_by_the_batch_task(setup, tmp_path):
    root, cfg, items = setup
    missing = ("ghost", str(tmp_path / "entry" / "canonical" / "ghost.npz"), "train")
    parts = [(missing, (0,)), (items[1], (0,))]
    handles = simulate_results(parts, cfg)
    assert handles[0].error and not handles[0].files and handles[1].error is None
    outs = finish_results(handles, cfg)
    one = simulate_parts(parts, cfg)
    assert outs[0].quarantine == one[0].quarantine and outs[0].quarantine.path == "ghost"
    assert_same(outs[1:], one[1:])


def test_finish_groups_keep_parts_whole():
    from pipeline.dataset.records import SimResults

    hs = [SimResults(("k", f"p{i}", "train"), (0, 1, 2), ("a", "b", "c")) for i in range(5)]
    hs.append(SimResults(("k", "bad", "train"), (0,), (), "boom"))
    groups = finish_groups(hs, 7)
    assert [len(g) for g in groups] == [3, 3]
    assert [h for g in groups for h in g] == hs
    assert finish_groups([], 32) == []
