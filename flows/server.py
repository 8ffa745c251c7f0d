"""A real Prefect server for a dataset root: ``dynaset server --root ROOT``.

Scheduled ingestion needs a persistent Prefect API (the ephemeral one lives only as long as the
process that started it). ``start_server`` runs ``prefect server start`` (uvicorn on Prefect's own
app, in the foreground of a child process) with

- ``PREFECT_HOME=ROOT/.prefect-server`` and its SQLite database at
  ``ROOT/.prefect-server/prefect.db`` (``PREFECT_SERVER_DATABASE_CONNECTION_URL``; pass
  ``database_url`` for e.g. PostgreSQL);
- analytics off, the UI off unless asked for, the scheduler and late-runs services on.

Every dynaset process then talks to it through ``PREFECT_API_URL=http://HOST:PORT/api``.

This module imports no Prefect at import time (the CLI sets the Prefect environment first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

SERVER_DIR = ".prefect-server"
DB_FILE = "prefect.db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200


def server_home(root: str | os.PathLike) -> Path:
    """``ROOT/.prefect-server``: the server's ``PREFECT_HOME`` (profiles, database)."""
    return Path(root).expanduser().resolve() / SERVER_DIR


def database_url(root: str | os.PathLike) -> str:
    """The server's default database: SQLite at ``ROOT/.prefect-server/prefect.db``."""
    return f"sqlite+aiosqlite:///{server_home(root) / DB_FILE}"


def api_url_for(host: str, port: int) -> str:
    """``http://HOST:PORT/api`` (IPv6 hosts bracketed); the value for ``PREFECT_API_URL``."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if shown in ("0.0.0.0", "[::]"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/api"


def server_env(root: str | os.PathLike, *, ui: bool = False, db_url: str | None = None,
               log_level: str | None = None, base: dict | None = None) -> dict[str, str]:
    """The environment of the server process: ``base`` (default ``os.environ``) plus the server's
    home, database, analytics off and the UI switch. ``PREFECT_API_URL`` is removed — the server
    does not need it and a stale value would point its UI elsewhere."""
    env = dict(os.environ if base is None else base)
    home = server_home(root)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = db_url or database_url(root)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_UI_ENABLED"] = "true" if ui else "false"
    env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] = "true"
    env["PREFECT_SERVER_LOGGING_LEVEL"] = (log_level or env.get("PREFECT_SERVER_LOGGING_LEVEL")
                                           or "WARNING").upper()
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # never prompt (prestart_check asks about profiles when run on a terminal)
    env["PREFECT_CLI_PROMPT"] = "false"
    return env


def sqlalchemy_compat() -> bool:
    """Make Prefect 3.8.8's server scheduler work with SQLAlchemy 2.1; returns whether it patched.

    The scheduler service bulk-inserts the flow runs of a schedule with a ``state`` key, which
    is a hybrid property of the ``FlowRun`` model (Prefect inserts the states itself right after).
    SQLAlchemy 2.0 ignored such keys in a bulk INSERT; 2.1 raises "Can't evaluate bulk DML
    statement; please supply a bulk_dml decorated function", so no cron run is ever created.
    Giving the hybrid a ``bulk_dml`` handler that ignores the value restores the 2.0 behaviour.
    Only applied where the hybrid has no handler (SQLAlchemy >= 2.1 and an unfixed Prefect).
    """
    from prefect.server.database import orm_models

    patched = False
    for model in (orm_models.FlowRun, orm_models.TaskRun):
        hybrid = model.__dict__.get("state")
        if hybrid is not None and hasattr(hybrid, "bulk_dml_setter") and hybrid.bulk_dml_setter is None:
            hybrid.inplace.bulk_dml(_ignore_in_bulk_insert)
            patched = True
    return patched


def _ignore_in_bulk_insert(cls, mapping, value) -> None:
    """A hybrid's bulk-INSERT handler that leaves the row as it is (SQLAlchemy 2.0 behaviour)."""


def start_server(root: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 ui: bool = False, db_url: str | None = None, log_level: str | None = None,
                 stdout: IO | int | None = None, stderr: IO | int | None = None) -> subprocess.Popen:
    """Start ``prefect server start`` for the dataset root ``root`` as a child process.

    Returns at once; use ``wait_healthy(api_url_for(host, port))`` before talking to it, and
    ``stop_server`` to end it. ``stdout``/``stderr`` default to this process's.
    """
    home = server_home(root)
    home.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "flows.server", "--host", host, "--port", str(port), "--analytics-off"]
    return subprocess.Popen(cmd, env=server_env(root, ui=ui, db_url=db_url, log_level=log_level),
                            cwd=str(home), stdout=stdout, stderr=stderr)


def wait_healthy(api_url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None,
                 interval: float = 0.25) -> float:
    """Wait until ``GET {api_url}/health`` answers ``true``; returns the seconds waited.

    Raises ``RuntimeError`` if ``proc`` (the server process, optional) exits first and
    ``TimeoutError`` after ``timeout`` seconds.
    """
    start = time.monotonic()
    url = api_url.rstrip("/") + "/health"
    last: object = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200 and json.loads(resp.read() or b"null") is True:
                    return time.monotonic() - start
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError) as exc:
            last = exc
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"no healthy Prefect API at {api_url} after {timeout:.0f} s (last: {last})")
        time.sleep(interval)


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> int | None:
    """Terminate (SIGTERM), then kill after ``timeout`` seconds; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def run_server(root: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
               ui: bool = False, db_url: str | None = None, log_level: str | None = None,
               ready_timeout: float = 120.0) -> int:
    """``dynaset server``: start the server, print what to export, and stay in the foreground
    until the server exits or Ctrl-C."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist (run `dynaset build --out {root}` first)")
    api_url = api_url_for(host, port)
    proc = start_server(root, host, port, ui=ui, db_url=db_url, log_level=log_level)
    try:
        waited = wait_healthy(api_url, ready_timeout, proc=proc)
        print(f"Prefect server for {root} ready in {waited:.1f} s", flush=True)
        print(f"  database:  {db_url or database_url(root)}")
        print(f"  home:      {server_home(root)}")
        if ui:
            print(f"  UI:        {api_url.removesuffix('/api')}")
        print("point every dynaset process at it:")
        print(f"  export PREFECT_API_URL={api_url}", flush=True)
        return proc.wait() or 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(proc)


def _server_main(argv: list[str]) -> None:
    """``python -m flows.server [options of prefect server start]``: ``prefect server start`` in
    this process, with ``sqlalchemy_compat`` applied first (``start_server`` runs this)."""
    sqlalchemy_compat()
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *argv]
    app()


if __name__ == "__main__":
    _server_main(sys.argv[1:])
