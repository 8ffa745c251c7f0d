"""Where a build's tasks run (``pipeline.dataset.placement``) and the driver's switch to its in-process
executor for small runs."""

from __future__ import annotations

import pytest

from pipeline.dataset import placement
from pipeline.dataset.executor import SerialExecutor


def test_per_file_seconds_accumulate_over_the_roots_builds():
    first = {"processing_rate": placement.update_rate(None, 100, 10.0)}
    assert placement.per_file_seconds(first)[0] == pytest.approx(0.1)
    assert "100 processed files" in placement.per_file_seconds(first)[1]
    # a one-file run that took long barely moves the estimate; a run that processed nothing keeps it
    second = {"processing_rate": placement.update_rate(first, 1, 0.9)}
    assert placement.per_file_seconds(second)[0] == pytest.approx(10.9 / 101)
    assert placement.update_rate(second, 0, 0.0) == second["processing_rate"]
    for empty in (None, {}, {"processing_rate": {"files": 0, "task_seconds": 0.0}}, {"task_seconds": {"fit": 1.0}}):
        assert placement.per_file_seconds(empty)[0] == placement.DEFAULT_FILE_TASK_SECONDS


def test_auto_runs_in_process_below_the_cluster_overhead():
    last = {"processing_rate": {"files": 100, "task_seconds": 10.0}}  # 0.1 s/file
    assert placement.choose(100, last, overhead_s=10.0).in_process  # 10 task-s: not more than the overhead
    assert not placement.choose(101, last, overhead_s=10.0).in_process
    assert placement.choose(0, last).in_process  # removals only
    first = placement.choose(20, None)  # no measurement: the default rate
    assert first.in_process and first.estimate_s == pytest.approx(20 * placement.DEFAULT_FILE_TASK_SECONDS)
    assert not placement.choose(21, None).in_process
    # compacting appended stores rewrites everything: a full build's writes
    assert not placement.choose(0, last, rewrite_all=True).in_process
    assert "in this process" in placement.choose(1, last).describe(1)


def test_forced_modes_and_the_environment():
    last = {"processing_rate": {"files": 10, "task_seconds": 1.0}}
    assert not placement.choose(1, last, "cluster").in_process
    assert placement.choose(10_000, last, "in-process").in_process
    assert placement.mode_from_env({}) == "auto"
    assert placement.mode_from_env({placement.PLACEMENT_ENV: " In-Process "}) == "in-process"
    with pytest.raises(ValueError, match="DYNASET_PLACEMENT"):
        placement.mode_from_env({placement.PLACEMENT_ENV: "dask"})
    with pytest.raises(ValueError):
        placement.choose(1, last, "dask")


class _Recording(SerialExecutor):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def submit(self, fn, *args, resources=None, priority=0):
        self.calls.append(fn.__name__)
        return super().submit(fn, *args, resources=resources, priority=priority)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from pipeline.demo import generate_corpus

    base = tmp_path_factory.mktemp("placement")
    files = sorted(generate_corpus(base / "corpus", n_subjects=2, hours=0.05, seed=5))
    return base, files


def test_driver_sends_small_runs_to_its_in_process_executor(corpus, tmp_path, capsys):
    """``small_executor`` gets every task of a run the rule calls small, ``executor`` every task of
    one it does not; a no-op run submits nothing; the stores are the same."""
    import hashlib
    import shutil

    from pipeline.dataset.build import build_dataset
    from pipeline.process import BuildConfig
    from pipeline.sources.base import SourceSpec

    base, files = corpus
    src = [SourceSpec("amass", base / "corpus")]
    cfg = BuildConfig(simulate=None)

    def run(root, mode):
        big, small = _Recording(), _Recording()
        build_dataset(src, root, cfg, workers=1, report=False, executor=big, small_executor=small, placement=mode)
        return big.calls, small.calls

    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.glob("*.zarr/**/*")) if p.is_file()}

    big, small = run(tmp_path / "a", "cluster")
    assert "process_files" in big and small == []
    assert "on the Dask cluster" in capsys.readouterr().err
    big, small = run(tmp_path / "b", "in-process")
    assert big == [] and "process_files" in small
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert run(tmp_path / "b", "auto") == ([], [])  # nothing changed: nothing submitted anywhere
    # one file changed: auto, with this root's own measured rate, keeps it in process
    shutil.copyfile(files[0], base / "corpus" / "DynasetSynth" / files[0].parent.name / "extra_copy_poses.npz")
    big, small = run(tmp_path / "b", "auto")
    assert big == [] and small.count("process_files") == 1
    assert "measured on this root over" in capsys.readouterr().err
