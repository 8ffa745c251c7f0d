"""Builds on an existing Dask cluster (docs/scaling.md): `dask scheduler` + two `dynaset worker`
processes started on their own (fresh Prefect homes, no PREFECT_API_URL), one Prefect API.

The slow test starts the scheduler and the workers as subprocesses, builds a small generated
corpus on them and on a local cluster, and checks that the stores are equal, that no worker
started a temporary Prefect server and that the flow's Prefect API holds every task run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main as cli_main
from pipeline.demo import MotionSpec, generate_corpus
from pipeline.split import SUBSETS

TEMPORARY_SERVER = "Starting temporary server"


# --- fast: no cluster ------------------------------------------------------------------------------


def test_local_root_with_a_remote_scheduler_is_refused(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    out = tmp_path / "out"
    rc = cli_main(["build", "--source", f"amass={corpus}", "--out", str(out),
                   "--scheduler-address", "tcp://10.255.0.1:8786"])
    err = capsys.readouterr().err
    assert rc == 2
    line = [ln for ln in err.splitlines() if ln.startswith("dynaset: error:")]
    assert len(line) == 1 and str(out) in line[0] and "--shared-root" in line[0], err
    assert not out.exists()  # refused before anything is written or started


def test_s3_root_with_a_remote_scheduler_names_its_mirror(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DYNASET_WORK_DIR", str(tmp_path / "work"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rc = cli_main(["build", "--source", f"amass={corpus}", "--out", "s3://bucket/prefix",
                   "--scheduler-address", "scheduler.example:8786"])
    err = capsys.readouterr().err
    assert rc == 2 and "DYNASET_WORK_DIR" in err and str(tmp_path / "work") in err and "--shared-root" in err


def test_loopback_addresses():
    from flows.runtime import api_url_is_loopback, scheduler_is_loopback

    for a in ("tcp://127.0.0.1:8786", "127.0.0.1:8786", "localhost:8786", "tcp://[::1]:8786", "tls://127.0.0.2:1"):
        assert scheduler_is_loopback(a), a
    for a in ("tcp://10.0.0.2:8786", "tcp://scheduler:8786", "tcp://0.0.0.0:8786", "192.168.1.4:8786"):
        assert not scheduler_is_loopback(a), a
    assert api_url_is_loopback("http://127.0.0.1:4200/api")
    assert not api_url_is_loopback("http://prefect:4200/api")


def test_worker_command_line():
    from flows.worker import worker_argv

    cpu = worker_argv("tcp://s:8786", nworkers=3)
    assert cpu[:3] == ["-m", "distributed.cli.dask_worker", "tcp://s:8786"]
    opts = dict(zip(cpu[3::2], cpu[4::2]))
    assert opts["--nworkers"] == "3" and opts["--nthreads"] == "1" and opts["--memory-limit"] == "auto"
    assert opts["--preload"] == "flows.worker" and opts["--resources"] == "CPU=1"
    two = worker_argv("tcp://s:8786", nthreads=2)
    assert two[two.index("--resources") + 1] == "CPU=2"
    gpu = worker_argv("tcp://s:8786", gpu=True, local_directory="/scratch")
    assert gpu[gpu.index("--resources") + 1] == "GPU=1" and gpu[gpu.index("--nworkers") + 1] == "1"
    assert "CPU=1" not in gpu  # a GPU worker takes no CPU task of a GPU build
    assert gpu[gpu.index("--local-directory") + 1] == "/scratch"


def test_paths_the_workers_cannot_see_are_refused(tmp_path):
    from flows.dask_runner import ExternalDaskTaskRunner

    class OneWorker:  # stands in for a distributed.Client: client.run(fn, *args) on each worker
        def run(self, fn, *args):
            return {"tcp://w1:1": fn(*args)}

    runner = ExternalDaskTaskRunner(address="tcp://w1:8786", shared_paths=(str(tmp_path), str(tmp_path / "no")))
    with pytest.raises(ValueError, match=f"tcp://w1:1 lacks {tmp_path / 'no'}"):
        runner._prepare_workers(OneWorker())
    assert runner.duplicate().shared_paths == runner.shared_paths


def test_worker_plugin_sets_and_restores_the_api_url():
    """In a worker process whose Prefect was imported with its own PREFECT_API_URL: the plugin's
    setup switches it (and Prefect's cached global settings) to the flow's URL, teardown back."""
    code = (
        "import asyncio, os, types\n"
        "from prefect.settings import get_current_settings as cur\n"
        "from flows.worker import PrefectAPIPlugin\n"
        "w = types.SimpleNamespace(address='tcp://w:1')\n"
        "p = PrefectAPIPlugin('http://flow:4200/api')\n"
        "asyncio.run(p.setup(w)); print(os.environ['PREFECT_API_URL'], cur().api.url)\n"
        "asyncio.run(p.teardown(w)); print(os.environ['PREFECT_API_URL'], cur().api.url)\n"
    )
    env = {**os.environ, "PREFECT_API_URL": "http://own:4200/api"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["http://flow:4200/api"] * 2 + ["http://own:4200/api"] * 2
    assert "started with PREFECT_API_URL=http://own:4200/api" in res.stderr  # the worker says so


def test_worker_guard_refuses_a_temporary_server():
    code = (
        "import flows.worker as w; w.install_guard()\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "try:\n    SubprocessASGIServer().start()\nexcept RuntimeError as e:\n    print('refused', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("refused dynaset worker: refusing") and TEMPORARY_SERVER not in res.stderr


def test_worker_prefect_clients_share_one_tls_context():
    """After ``reuse_tls_contexts`` (every worker's preload), Prefect API clients built per task run
    share one verified SSLContext instead of loading the CA bundle each (in a fresh process)."""
    code = (
        "import ssl\n"
        "calls = []\n"
        "real = ssl.create_default_context\n"
        "def counting(*a, **k):\n    calls.append(k.get('cafile'))\n    return real(*a, **k)\n"
        "ssl.create_default_context = counting\n"
        "import flows.worker as w\n"
        "print('patched', w.reuse_tls_contexts())\n"
        "from prefect.client.orchestration import SyncPrefectClient, PrefectClient\n"
        "SyncPrefectClient('http://127.0.0.1:9/api')\n"
        "before = len(calls)\n"
        "cs = [SyncPrefectClient('http://127.0.0.1:9/api') for _ in range(3)] + [PrefectClient('http://127.0.0.1:9/api')]\n"
        "print('contexts', len(calls) - before)\n"
    )
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["patched", "3", "contexts", "0"], res.stdout  # the first client's, reused


# --- slow: a real external cluster ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dynaset() -> list[str]:
    script = Path(sys.executable).with_name("dynaset")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipeline.cli"]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:  # workers first (listed first), then the scheduler
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def _task_runs(api_url: str, out_dir: str, deadline_s: float = 60.0):
    """The flow run of the build into ``out_dir`` and its task runs, read through ``api_url`` once
    every task run is final (the API records them from events, asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=["build"])), sort=FlowRunSort.ID_DESC, limit=100)
                if r.parameters.get("out_dir") == out_dir]
        assert len(runs) == 1, [r.parameters.get("out_dir") for r in runs]
        t_end = time.monotonic() + deadline_s
        seen = -1
        while True:  # until every task run is final and no new one appeared for a second
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id])),
                                          sort=TaskRunSort.ID_DESC, limit=200)
            final = tasks and all(t.state and t.state.is_final() for t in tasks)
            if (final and len(tasks) == seen) or time.monotonic() > t_end:
                return runs[0], tasks
            seen = len(tasks)
            time.sleep(1.0)


def _store_files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_build_on_an_external_cluster_uses_one_prefect_api(tmp_path):
    import xarray as xr
    from distributed import Client

    from flows.runtime import prefect_api

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, n_subjects=1, seed=3, duration_s=(2.0, 2.5),
                    motions=(MotionSpec("walk", 1.2), MotionSpec("stand")))
    address = f"tcp://127.0.0.1:{_free_port()}"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DYNASET_PREFECT"))}
    # INFO: a temporary Prefect server would announce itself ("Starting temporary server on ...")
    env.update(PREFECT_LOGGING_LEVEL="INFO", DASK_LOGGING__DISTRIBUTED="info")
    procs: list[subprocess.Popen] = []
    files = []
    try:
        f = open(logs / "scheduler.log", "w")
        files.append(f)
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
            env=env, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
        t0 = time.perf_counter()
        for i in range(2):
            f = open(logs / f"worker-{i}.log", "w")
            files.append(f)
            home = tmp_path / f"worker-{i}-prefect"  # fresh, never migrated: a server would take seconds
            procs.append(subprocess.Popen(
                [*_dynaset(), "worker", address, "--nworkers", "1", "--name", f"ext-{i}",
                 "--local-directory", str(tmp_path / f"worker-{i}-scratch")],
                env={**env, "PREFECT_HOME": str(home)}, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT))
        procs.append(scheduler)
        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=240)
            t_workers = time.perf_counter() - t0
            assert all(v == 1 for v in client.nthreads().values())

        local_out, ext_out = tmp_path / "local", tmp_path / "external"
        common = ["--source", f"amass={corpus}", "--no-simulate", "--workers", "2"]
        with prefect_api() as api_url:
            t1 = time.perf_counter()
            assert cli_main(["build", *common, "--out", str(local_out)]) == 0
            t_local = time.perf_counter() - t1
            t1 = time.perf_counter()
            assert cli_main(["build", *common, "--out", str(ext_out), "--scheduler-address", address]) == 0
            t_ext = time.perf_counter() - t1
            ext_run, ext_tasks = _task_runs(api_url, str(ext_out))
            local_run, local_tasks = _task_runs(api_url, str(local_out))

        summary = json.loads((ext_out / "build.json").read_text())
        print(f"\n2 `dynaset worker` processes connected {t_workers:.1f} s after launch; build wall "
              f"(CLI call) external {t_ext:.1f} s vs local cluster {t_local:.1f} s; flow's own total "
              f"{summary['wall_seconds']['total']:.1f} s for {summary['frames_in']} source / "
              f"{summary['frames_out']} canonical frames; {len(ext_tasks)} task runs in the flow's API")
        for f in files:
            f.flush()

        # (b) no worker started a temporary Prefect server (or tried to: the guard would refuse)
        for i in range(2):
            text = (logs / f"worker-{i}.log").read_text()
            assert "Start worker at" in text, text[-2000:]  # the log is really captured
            assert TEMPORARY_SERVER not in text and "refusing to start a temporary" not in text, text[-4000:]

        # (c) every task run of the flow is in the flow's API, completed
        assert ext_run.state.is_completed()
        assert ext_tasks and all(t.state.is_completed() for t in ext_tasks), \
            [(t.name, t.state_type) for t in ext_tasks]
        names = sorted(t.name.rsplit("-", 1)[0] for t in ext_tasks)
        assert names == sorted(t.name.rsplit("-", 1)[0] for t in local_tasks), names

        # (a) the stores equal the local-cluster build's, value for value and file for file
        for s in SUBSETS:
            a, b = xr.open_zarr(local_out / f"{s}.zarr"), xr.open_zarr(ext_out / f"{s}.zarr")
            xr.testing.assert_identical(a, b)
            assert _store_files(local_out / f"{s}.zarr") == _store_files(ext_out / f"{s}.zarr"), s
    finally:
        _stop(procs)
        for f in files:
            f.close()


def test_sim_backend_choices_are_the_registry():
    """Every registered backend name (``warp`` included, the CUDA backend's other name) is a
    ``--sim-backend`` choice, and a GPU backend's build restricts its other tasks to ``CPU`` workers."""
    import argparse

    from pipeline.cli import _add_build_options
    from pipeline.simulate.backends import BACKENDS, GPU_BACKENDS

    p = argparse.ArgumentParser()
    _add_build_options(p)
    action = next(a for a in p._actions if a.dest == "sim_backend")
    assert list(action.choices) == list(BACKENDS) and "warp" in action.choices
    assert p.parse_args(["--sim-backend", "warp"]).sim_backend == "warp" and "warp" in GPU_BACKENDS
