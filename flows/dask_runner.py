"""``ExternalDaskTaskRunner``: prefect_dask's runner on an existing Dask cluster, sharing the flow's
Prefect API with workers it did not start (``flows.runtime.dask_task_runner(address=...)``).

A module of its own because it imports Prefect; ``flows.runtime`` must not (``prefect_environment``
runs before Prefect is imported). Prefect pickles the flow's task runner with every task, so the
workers import this module too.
"""

from __future__ import annotations

import os

from prefect_dask import DaskTaskRunner

from flows.runtime import _say


class ExternalDaskTaskRunner(DaskTaskRunner):
    """``DaskTaskRunner(address=...)`` that shares the flow's Prefect API with the workers.

    When the flow's process first connects (the first task submitted), it registers
    ``PrefectAPIPlugin`` on the scheduler: every worker, present or joining later, gets the
    flow's ``PREFECT_API_URL`` before it runs a task of the flow. When the task runner closes,
    the plugin is unregistered (each worker flushes its queued task-run events to the flow's
    API and gets its own setting back). Copies of the runner on the workers (Prefect enters
    one per task) do nothing of this.
    """

    def __init__(self, *args, api_url: str | None = None, shared_paths: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.api_url = api_url
        self.shared_paths = tuple(shared_paths)
        self._plugin_registered = False

    def duplicate(self):
        new = super().duplicate()
        new.api_url, new.shared_paths = self.api_url, self.shared_paths
        return new

    @property
    def client(self):
        fresh = self._client is None
        client = super().client
        if fresh and not _in_dask_worker():
            self._prepare_workers(client)
        return client

    def _prepare_workers(self, client) -> None:
        from flows.worker import PLUGIN_NAME, PrefectAPIPlugin, worker_api_url

        if self.shared_paths:
            missing = {w: m for w, m in client.run(_missing_paths, list(self.shared_paths)).items() if m}
            if missing:
                w, m = sorted(missing.items())[0]
                raise ValueError(
                    f"{len(missing)} Dask worker(s) cannot see paths this build needs, e.g. {w} lacks "
                    f"{', '.join(m)}: mount the dataset root and the source folders at the same path "
                    "on every worker (docs/scaling.md)")
        url = self.api_url or _flow_api_url()
        if not url:
            _say("[prefect] warning: no Prefect API URL to send to the Dask workers")
            return
        client.register_plugin(PrefectAPIPlugin(url), name=PLUGIN_NAME)
        self._plugin_registered = True
        seen = client.run(worker_api_url)
        odd = sorted(w for w, u in seen.items() if u != url)
        _say(f"[prefect] {len(seen) - len(odd)} Dask workers at {self.address} report to the flow's API {url}"
             + (f"; not: {', '.join(odd)}" if odd else "") + " (workers that join later too)")

    def __exit__(self, *exc_info) -> None:
        if self._plugin_registered and self._client is not None:
            from flows.worker import PLUGIN_NAME

            try:
                self._client.unregister_worker_plugin(PLUGIN_NAME)
            except Exception as exc:  # a worker gone, a scheduler gone: nothing to undo there
                _say(f"[prefect] warning: could not unregister the workers' Prefect plugin: {exc}")
            self._plugin_registered = False
        super().__exit__(*exc_info)


def _in_dask_worker() -> bool:
    from distributed import get_worker

    try:
        get_worker()
        return True
    except ValueError:
        return False


def _missing_paths(paths: list[str]) -> list[str]:
    """The ``paths`` that are not present on this machine (run on each worker)."""
    return [p for p in paths if not os.path.exists(p)]


def _flow_api_url() -> str | None:
    """The API URL of the running flow's Prefect client, else ``PREFECT_API_URL``."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client = getattr(ctx, "client", None) if ctx else None
    url = getattr(client, "api_url", None)
    return str(url).rstrip("/") if url else os.environ.get("PREFECT_API_URL")
