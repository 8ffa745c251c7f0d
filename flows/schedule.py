"""Scheduled incremental ingestion: ``dynaset schedule`` and ``dynaset server`` (docs/scheduling.md).

``dynaset schedule --root ROOT --cron "0 3 * * 1"`` registers a deployment of the
``dynaset-ingest`` flow (``flows.ingest.ingest``) on a real Prefect server with

- parameters ``{"root": ROOT, "workers": N}`` (everything else comes from ``ROOT/dataset.json``);
- one cron schedule (with an IANA timezone);
- a deployment concurrency limit of one: Prefect's server refuses a second run of the deployment
  while one holds the slot; with the ``enqueue`` strategy (default) it waits in the
  ``AwaitingConcurrencySlot`` state and is retried, with ``cancel-new`` it is cancelled;

and then serves it: this process is the runner that polls the server and starts each scheduled
(or manually triggered) run in a child process. That child and the Dask workers of the ingest flow
inherit ``PREFECT_API_URL`` and ``PREFECT_HOME`` from this process, so every process of a run talks
to the one server.

Prefect is imported only inside functions: the Prefect environment must be set first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flows.server import DEFAULT_HOST, DEFAULT_PORT

INGEST_FLOW = "dynaset-ingest"
COLLISION_STRATEGIES = ("enqueue", "cancel-new")


class ScheduleError(ValueError):
    """A schedule cannot be registered (no server, no dataset root, a bad cron)."""


def default_deployment_name(root: str | os.PathLike) -> str:
    """``ingest-<root folder name>`` with characters Prefect refuses in names replaced."""
    base = Path(root).name or "root"
    return "ingest-" + re.sub(r"[/%&<>\s]+", "-", base)


def resolve_api_url(api_url: str | None) -> str:
    """``api_url``, else ``$PREFECT_API_URL``; the ephemeral API cannot hold a schedule."""
    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise ScheduleError(
            "no Prefect server: pass --api-url or export PREFECT_API_URL (start one with "
            "`dynaset server --root ROOT`; Prefect's ephemeral API lives only as long as one "
            "process and cannot run schedules)"
        )
    return url.rstrip("/")


def schedule_environment(root: Path | str, api_url: str) -> None:
    """Set this process's Prefect environment (call before ``prefect`` is imported).

    ``PREFECT_API_URL`` is forced to ``api_url``; ``PREFECT_HOME`` defaults to ``ROOT/.prefect``
    (the client home ``dynaset build --out ROOT`` uses). The runner's flow-run processes and
    their Dask workers inherit both.
    """
    from flows.runtime import prefect_environment

    os.environ["PREFECT_API_URL"] = api_url
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    prefect_environment(client_home(root))


def client_home(root: Path | str) -> Path:
    """The Prefect client home of a root: ``ROOT/.prefect``, or in the local mirror of an S3 root."""
    from pipeline.store.remote_root import is_remote, mirror_dir

    return mirror_dir(str(root)) / ".prefect" if is_remote(root) else Path(root) / ".prefect"


@contextlib.contextmanager
def _api(api_url: str) -> Iterator[None]:
    """Prefect settings pointing at ``api_url`` in this process, even if ``prefect`` was imported
    (and its settings read) before ``PREFECT_API_URL`` was set."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def check_root(root: str | os.PathLike) -> Path | str:
    """The resolved dataset root (a local path, or an ``s3://`` URL as is); it must hold
    ``dataset.json`` (written by ``dynaset build``)."""
    from pipeline.dataset import DATASET_FILE
    from pipeline.store.remote_root import is_remote

    if is_remote(root):
        from pipeline.store.location import open_location

        if not open_location(str(root)).exists(DATASET_FILE):
            raise ScheduleError(f"{root} is not a dataset root (no {DATASET_FILE}); build it once with "
                                f"`dynaset build --source KIND=DIR --out {root}`")
        return str(root)
    path = Path(root).expanduser().resolve()
    if not (path / DATASET_FILE).is_file():
        raise ScheduleError(
            f"{path} is not a dataset root (no {DATASET_FILE}); build it once with "
            f"`dynaset build --source KIND=DIR --out {path}`"
        )
    return path


def _concurrency(collision: str = "enqueue"):
    from prefect.client.schemas.objects import (
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )

    if collision not in COLLISION_STRATEGIES:
        raise ScheduleError(f"collision strategy must be one of {COLLISION_STRATEGIES}, got {collision!r}")
    strategy = (ConcurrencyLimitStrategy.ENQUEUE if collision == "enqueue"
                else ConcurrencyLimitStrategy.CANCEL_NEW)
    return ConcurrencyLimitConfig(limit=1, collision_strategy=strategy)


def ingest_deployment(root: str | os.PathLike, cron: str, timezone: str = "UTC", name: str | None = None,
                      workers: int | None = None, collision: str = "enqueue"):
    """The ``RunnerDeployment`` of ``flows.ingest.ingest`` for ``root`` (not yet registered)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.ingest import ingest

    root = root if str(root).startswith("s3://") else Path(root)
    try:
        return ingest.to_deployment(
            name=name or default_deployment_name(root),
            schedules=[Cron(cron, timezone=timezone)],
            concurrency_limit=_concurrency(collision),
            parameters={"root": str(root), "workers": workers},
            paused=False,
            description=f"Incremental ingestion of the dataset root {root} (dynaset schedule).",
            tags=["dynaset", "ingest"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
    except ValueError as exc:  # pydantic validation of the cron string / timezone / name
        raise ScheduleError(f"invalid deployment (cron {cron!r}, timezone {timezone!r}, name {name!r}): "
                            f"{exc}") from exc


def register_only(root: str | os.PathLike, cron: str, timezone: str = "UTC", api_url: str | None = None,
                  name: str | None = None, workers: int | None = None, collision: str = "enqueue") -> str:
    """Register (create or update) the deployment without serving it; returns its id.

    Runs are only executed while some ``dynaset schedule`` process serves the deployment.
    """
    from flows.runtime import prefect_environment

    root = check_root(root)
    url = resolve_api_url(api_url)
    prefect_environment(client_home(root))
    with _api(url):
        deployment = ingest_deployment(root, cron, timezone, name, workers, collision)
        return str(deployment.apply())


def serve_schedule(root: str | os.PathLike, cron: str, timezone: str = "UTC", api_url: str | None = None,
                   name: str | None = None, workers: int | None = None, collision: str = "enqueue",
                   ready_timeout: float = 10.0) -> int:
    """Register the deployment and serve it (blocking) until SIGINT/SIGTERM.

    On shutdown Prefect pauses the deployment's schedule (no runs pile up with nobody to run them);
    the next ``dynaset schedule`` un-pauses it.
    """
    from flows.server import wait_healthy

    root = check_root(root)
    url = resolve_api_url(api_url)
    try:
        wait_healthy(url, timeout=ready_timeout)
    except (TimeoutError, RuntimeError) as exc:
        raise ScheduleError(f"{exc}; start it with `dynaset server --root {root}`") from None
    schedule_environment(root, url)
    with _api(url):
        deployment = ingest_deployment(root, cron, timezone, name, workers, collision)
        runner = _runner(deployment.name)
        runner.add_deployment(deployment)  # registers (creates or updates) it
        print(f"serving {INGEST_FLOW}/{deployment.name}: cron {cron!r} ({timezone}), concurrency limit 1 "
              f"({collision}), root {root}, API {url}", flush=True)
        try:
            asyncio.run(runner.start())
        except KeyboardInterrupt:
            pass
    print(f"stopped serving {INGEST_FLOW}/{deployment.name}; its schedule is paused until the next "
          "`dynaset schedule`", flush=True)
    return 0


def _runner(name: str):
    """What ``prefect.serve`` builds (a ``Runner`` that pauses the schedules on shutdown), except that
    SIGTERM stops it like Ctrl-C.

    Prefect 3.8.8's own SIGTERM handler calls the sync ``Runner.stop`` from inside the running event
    loop — it gets an un-awaited coroutine back ("coroutine 'Runner.astop' was never awaited") — and
    then ``sys.exit(0)``, which tears the loop down with tracebacks. Re-raising the signal as SIGINT
    lets ``asyncio.run`` cancel the runner like Ctrl-C does; its ``__aexit__`` pauses the schedule.
    """
    from prefect.runner import Runner

    class _Runner(Runner):
        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            self._logger.info("SIGTERM received, shutting down")
            # a process started with SIGINT ignored (inherited from a parent that ignores it, as
            # test runners and process supervisors may) never gets Python's KeyboardInterrupt
            # handler: re-raising SIGINT would then do nothing and the runner would never stop
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.raise_signal(signal.SIGINT)

    return _Runner(name=f"dynaset-schedule-{name}", pause_on_shutdown=True)


# --- CLI ----------------------------------------------------------------------------------------

def cmd_server(args: argparse.Namespace) -> int:
    from flows.server import run_server

    return run_server(args.root, args.host, args.port, ui=args.ui, db_url=args.database_url,
                      log_level=args.log_level)


def cmd_schedule(args: argparse.Namespace) -> int:
    try:
        return serve_schedule(args.root, args.cron, args.timezone, args.api_url, args.name,
                              args.workers, args.collision)
    except ScheduleError as exc:
        print(f"dynaset: error: {exc}", file=sys.stderr)
        return 2


def add_server_parsers(subparsers: Any) -> None:
    """Add ``dynaset server`` and ``dynaset schedule`` to the CLI's subparsers."""
    p = subparsers.add_parser("server", help="run a Prefect server for a dataset root (foreground)")
    p.add_argument("--root", required=True, help="dataset root; the server's data goes to ROOT/.prefect-server")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"bind address (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--ui", action="store_true", help="also serve Prefect's web UI")
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL of the server database (default SQLite at ROOT/.prefect-server/prefect.db)")
    p.add_argument("--log-level", default=None, help="server log level (default WARNING)")
    p.set_defaults(func=cmd_server)

    p = subparsers.add_parser("schedule", help="serve a scheduled incremental ingestion of a dataset root")
    p.add_argument("--root", required=True, help="dataset root (built once with `dynaset build --out ROOT`)")
    p.add_argument("--cron", required=True, help='cron expression, e.g. "0 3 * * 1" (Mondays 03:00)')
    p.add_argument("--timezone", default="UTC", help="IANA timezone of the cron schedule (default UTC)")
    p.add_argument("--api-url", default=None,
                   help="Prefect API URL (default $PREFECT_API_URL; start one with `dynaset server`)")
    p.add_argument("--name", default=None, help="deployment name (default ingest-<root folder name>)")
    p.add_argument("--workers", type=int, default=None, help="Dask worker processes per run (default min(cpus, 4))")
    p.add_argument("--collision", choices=COLLISION_STRATEGIES, default="enqueue",
                   help="a run due while one is running: wait for the slot (enqueue) or cancel it (cancel-new)")
    p.set_defaults(func=cmd_schedule)
