"""Local Dask workers forked from a warm fork server (``flows.runtime.warm_worker_processes``):
they must start with the environment a spawned worker gets (the flow's Prefect API URL, Dask's
pre-spawn variables) and the preloaded modules already imported; the fork server stops with the
build, and a build whose API URL is not the fork server's spawns its workers as before."""

from __future__ import annotations

import os
import sys

import dask
import prefect_dask  # noqa: F401 - imported before a test sets PREFECT_API_URL: Prefect reads its
import pytest  # process-global settings once, when imported (a later test would see the fake URL)
from distributed import Client, LocalCluster

from flows import runtime

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or (os.cpu_count() or 1) < 2, reason="fork servers need POSIX and two CPUs")

URL = "http://127.0.0.1:1/api"


@pytest.fixture(autouse=True)
def _no_fork_server():
    """Each test starts without a fork server (an earlier test's PyTorch loader may have left its own
    running; the warm path then rightly spawns, which is tested on its own below)."""
    from multiprocessing import forkserver

    runtime._stop_fork_server(forkserver._forkserver)
    yield


def _probe() -> dict:
    import os
    import sys

    return {"ppid": os.getppid(), "url": os.environ.get("PREFECT_API_URL"),
            "omp": os.environ.get("OMP_NUM_THREADS"), "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            "preloaded": [m for m in runtime.WORKER_PRELOAD if m in sys.modules]}


def _cluster_info(monkeypatch, url: str) -> tuple[str, dict]:
    monkeypatch.setenv("PREFECT_API_URL", url)
    key = "distributed.worker.multiprocessing-method"
    before = dask.config.get(key)
    try:
        runtime.dask_task_runner(workers=1)  # sets the start method in Dask's global config
        method = dask.config.get(key)
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            info = next(iter(client.run(_probe).values()))
    finally:
        dask.config.set({key: before})
    return method, info


def test_workers_fork_from_the_warm_server_with_the_spawn_environment(monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv(runtime.MALLOC_TRIM_ENV, "None")
    from multiprocessing import forkserver

    fs = forkserver._forkserver
    with runtime.warm_worker_processes(URL) as started:
        assert started
        pid = fs._forkserver_pid
        assert pid is not None
        method, info = _cluster_info(monkeypatch, URL)
    assert method == "forkserver"
    assert info["ppid"] == pid  # forked by the fork server, not spawned by the nanny
    assert info["url"] == URL
    assert info["omp"] == "1"  # Dask's pre-spawn variables are in place before numpy loads
    assert info["trim"] is None  # dynaset unsets MALLOC_TRIM_THRESHOLD_ (MALLOC_TRIM_ENV)
    assert info["preloaded"] == list(runtime.WORKER_PRELOAD)
    assert fs._forkserver_pid is None and runtime._warm is None  # stopped with the build


def test_a_build_on_another_api_url_spawns_its_workers(monkeypatch):
    before = dict(os.environ)
    with runtime.warm_worker_processes(URL) as started:
        assert started
        assert dict(os.environ) == before  # the workers' environment was swapped in for the start only
        method, info = _cluster_info(monkeypatch, "http://127.0.0.1:2/api")
    assert method == "spawn"
    assert info["url"] == "http://127.0.0.1:2/api"


def test_an_unknown_running_fork_server_is_left_alone():
    from multiprocessing import forkserver

    fs = forkserver._forkserver
    fs.ensure_running()  # someone else's (e.g. a torch DataLoader's), environment unknown
    pid = fs._forkserver_pid
    try:
        with runtime.warm_worker_processes(URL) as started:
            assert not started and runtime._warm is None
        assert fs._forkserver_pid == pid  # not stopped either
    finally:
        fs._stop()


def test_worker_environment_follows_the_dask_pre_spawn_settings(monkeypatch):
    monkeypatch.setenv(runtime.MALLOC_TRIM_ENV, "65536")
    monkeypatch.setenv("SOME_USER_SETTING", "kept")
    with dask.config.set({"distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS": 2}):
        env = runtime.worker_process_environ(URL)
    assert env["PREFECT_API_URL"] == URL and env["SOME_USER_SETTING"] == "kept"
    assert env["MALLOC_TRIM_THRESHOLD_"] == "65536" and env["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv(runtime.MALLOC_TRIM_ENV, "None")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")
    assert "MALLOC_TRIM_THRESHOLD_" not in runtime.worker_process_environ(URL)


def test_warm_workers_can_be_turned_off(monkeypatch):
    monkeypatch.delenv(runtime.WARM_WORKERS_ENV, raising=False)
    assert runtime.warm_workers_enabled()
    for off in ("0", "false", "OFF"):
        monkeypatch.setenv(runtime.WARM_WORKERS_ENV, off)
        assert not runtime.warm_workers_enabled()
