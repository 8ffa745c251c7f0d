"""Process-level wiring for Prefect and Dask: environment, the one Prefect API, the task runner.

Prefect's ephemeral API is a temporary server process. Dask worker processes would each start
their own unless ``PREFECT_API_URL`` points at one, so ``prefect_api`` starts the ephemeral
server once in the flow's process and exports its URL before the Dask cluster spawns workers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def prefect_environment(home: Path) -> None:
    """Default Prefect settings for a dynaset process; values already in the environment win.

    Must run before ``prefect`` is imported.
    """
    os.environ.setdefault("PREFECT_HOME", str(Path(home).resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL every process of this build uses.

    A configured ``PREFECT_API_URL`` (a real server) is used as is; otherwise Prefect's ephemeral
    server is started here, once, and its URL exported for the Dask workers.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def default_workers() -> int:
    """Local Dask worker processes when none are asked for: ``min(cpu count, 4)``."""
    return max(1, min(os.cpu_count() or 1, 4))


def dask_task_runner(workers: int | None = None, address: str | None = None):
    """A ``DaskTaskRunner``: an existing scheduler at ``address``, or a local process cluster.

    Local clusters use one thread per worker process (the stages are numpy/Python bound) and
    ``min(cpu count, 4)`` workers unless ``workers`` is given.
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    n = workers or default_workers()
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": n,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",  # a free port: two clusters never clash on 8787
            "memory_limit": "auto",
        },
    )
