"""Process-level wiring for Prefect and Dask: environment, the one Prefect API, the task runner.

Prefect's ephemeral API is a temporary server process. Dask worker processes would each start
their own unless ``PREFECT_API_URL`` points at one, so ``prefect_api`` starts the ephemeral
server once in the flow's process and exports its URL before the Dask cluster spawns workers.
Workers of an existing cluster (``--scheduler-address``) were started elsewhere; the flow sends them
its URL when it connects (``flows.dask_runner``, ``flows.worker``; docs/scaling.md).

A local cluster's workers are forked from a fork server that ``prefect_api(warm_workers=True)``
starts while the ephemeral server starts, with the workers' modules already imported
(``warm_worker_processes``; docs/scaling.md "Seventh round").
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path


STARTUP_TIMEOUT_S = 180
"""Default ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``: a first start on a fresh Prefect
home runs the database migrations (9 s on an idle 2-core machine, 26–32 s on a loaded one);
Prefect's own default (20 s) is shorter than that."""


MALLOC_TRIM_ENV = "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_"
"""Dask's nanny starts every worker process with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``). Setting that variable turns off glibc's dynamic mmap
threshold, so every numpy temporary above 128 KiB is a fresh ``mmap``/``munmap`` with its page faults:
the per-file stages ran at half speed in a worker (measured: read + canonicalize + contact + fit
10–11k frames/s with it, 20–21k without, same process, docs/scaling.md). dynaset processes
unset it (``None``) unless this variable is already in the environment."""


def malloc_trim_threshold() -> str | None:
    """The ``MALLOC_TRIM_THRESHOLD_`` local Dask workers start with: ``MALLOC_TRIM_ENV``'s value,
    ``None`` (unset) when it is ``"None"`` or absent."""
    trim = os.environ.get(MALLOC_TRIM_ENV, "None")
    return None if trim == "None" else trim


class PrefectStartError(RuntimeError):
    """The ephemeral Prefect API server did not come up; the message says which setting to change."""


def user_prefect_home() -> Path:
    """The per-user Prefect home of dynaset processes: ``$DYNASET_PREFECT_HOME``, else
    ``$XDG_CACHE_HOME/dynaset/prefect`` (``~/.cache/dynaset/prefect``).

    One home per user, not per dataset root: its database is migrated on the first build only
    (every later start, for any root, skips the migrations). It holds only the ephemeral API's
    run history; nothing a dataset root needs lives there.
    """
    env = os.environ.get("DYNASET_PREFECT_HOME")
    if env:
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(cache).expanduser() / "dynaset" / "prefect").resolve()


def prefect_environment(home: Path | None = None) -> None:
    """Default Prefect settings for a dynaset process; values already in the environment win.

    ``home``: the Prefect home when ``PREFECT_HOME`` is unset (default ``user_prefect_home()``).
    Must run before ``prefect`` is imported.
    """
    os.environ.setdefault("PREFECT_HOME", str(Path(home or user_prefect_home()).resolve()))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(STARTUP_TIMEOUT_S))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    os.environ.setdefault(MALLOC_TRIM_ENV, "None")  # read by `dask worker` processes (dynaset worker)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def prefect_api(warm_workers: bool = False) -> Iterator[str]:
    """Yield the Prefect API URL every process of this build uses.

    A configured ``PREFECT_API_URL`` (a real server) is used as is; otherwise Prefect's ephemeral
    server is started here, once, and its URL exported for the Dask workers.

    ``warm_workers``: also start the fork server local Dask workers are forked from
    (``warm_worker_processes``), before waiting for the ephemeral server, so that its imports run
    while the server starts; stopped on exit.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        with warm_worker_processes(url) if warm_workers else contextlib.nullcontext():
            yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if not warm_workers:
        yield from _serve(server)
        return
    server.port = server.find_available_port()  # what start() does first: the URL is known now
    with warm_worker_processes(server.api_url):
        yield from _serve(server)


def _serve(server) -> Iterator[str]:
    t0 = time.perf_counter()
    try:
        server.start()
    except Exception as exc:  # Prefect raises a bare RuntimeError with the server's output
        server.stop()
        from prefect.settings import get_current_settings

        limit = get_current_settings().server.ephemeral.startup_timeout_seconds
        raise PrefectStartError(
            f"the ephemeral Prefect API server did not start within {limit} s "
            f"(PREFECT_HOME={os.environ.get('PREFECT_HOME')}). Raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start a server once with "
            "`dynaset server --root ROOT` and set PREFECT_API_URL to its API. Prefect said: "
            f"{str(exc)[:400]}"
        ) from exc
    _say(f"[prefect] ephemeral API {server.api_url} ready in {time.perf_counter() - t0:.1f} s "
         f"(home {os.environ.get('PREFECT_HOME')})")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


WORKER_PRELOAD: tuple[str, ...] = (
    "distributed", "prefect", "flows.worker", "flows.build", "pipeline.store.writer", "pipeline.store.staging",
)
"""Modules the fork server imports once for every local Dask worker (≈ 2.9 s of imports per worker
process when each imports them itself)."""

WARM_WORKERS_ENV = "DYNASET_WARM_WORKERS"
"""Set to ``0`` to spawn local Dask workers as fresh interpreters instead (``warm_workers_enabled``)."""


def warm_workers_enabled() -> bool:
    """Whether a build with a local cluster forks its workers from a warm fork server (default yes;
    ``DYNASET_WARM_WORKERS=0``: no)."""
    return os.environ.get(WARM_WORKERS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


_warm: str | None = None  # the API URL of the running fork server ``warm_worker_processes`` started


def worker_process_environ(api_url: str) -> dict[str, str]:
    """The environment a local Dask worker process starts with: this process's, the Prefect API URL,
    and Dask's ``distributed.nanny.pre-spawn-environ`` (thread counts of the numeric libraries,
    ``MALLOC_TRIM_THRESHOLD_`` unless unset: ``MALLOC_TRIM_ENV``), which must be in place before the
    interpreter starts (glibc, OpenBLAS and OpenMP read them once)."""
    import dask

    env = dict(os.environ)
    env["PREFECT_API_URL"] = api_url
    pre = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    pre["MALLOC_TRIM_THRESHOLD_"] = malloc_trim_threshold()
    for k, v in pre.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


@contextlib.contextmanager
def warm_worker_processes(api_url: str) -> Iterator[bool]:
    """Start multiprocessing's fork server with ``WORKER_PRELOAD`` imported, in the background, in
    the environment of ``worker_process_environ(api_url)``; while it runs, local Dask clusters
    (``dask_task_runner``) fork their worker processes from it instead of spawning fresh
    interpreters that import everything again. Stopped on exit, so a later build (another API
    URL) gets a fresh one. Yields whether it started: not where fork servers do not exist, on
    one CPU (its imports would compete with the build), or when this process already runs a fork
    server it did not start this way (its environment is unknown)."""
    global _warm
    import multiprocessing as mp
    from multiprocessing import forkserver

    fs = forkserver._forkserver
    if ("forkserver" not in mp.get_all_start_methods() or (os.cpu_count() or 1) < 2
            or getattr(fs, "_forkserver_pid", None) is not None):
        yield False
        return
    env = worker_process_environ(api_url)
    # the fork server inherits this process's environment when it starts: swap in the workers' values
    # for that moment only (the few variables that differ)
    changed = {k: os.environ.get(k) for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)}
    try:
        for k in changed:
            if k in env:
                os.environ[k] = env[k]
            else:
                del os.environ[k]
        fs.set_forkserver_preload(list(WORKER_PRELOAD))
        fs.ensure_running()  # spawns the server; its imports run while this process goes on
    finally:
        for k, v in changed.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _warm = api_url
    try:
        yield True
    finally:
        _warm = None
        _stop_fork_server(fs)


def _stop_fork_server(fs) -> None:
    """Stop multiprocessing's fork server ``fs`` at once: a plain stop (``ForkServer._stop``: close
    its alive pipe, wait) lets it run the exit handlers of every module it preloaded (≈ 0.8 s); it
    holds nothing that needs them, so it is terminated first. Its forked workers are not affected."""
    import signal

    pid = getattr(fs, "_forkserver_pid", None)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    fs._stop()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_workers() -> int:
    """Local Dask worker processes when none are asked for: ``min(cpu count, 4)``."""
    return max(1, min(os.cpu_count() or 1, 4))


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a literal loopback IP (127.0.0.0/8, ::1); host names are not resolved."""
    import ipaddress

    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def scheduler_is_loopback(address: str) -> bool:
    """Whether a Dask scheduler address (``tcp://127.0.0.1:8786``, ``localhost:8786``,
    ``inproc://...``) is on this machine's loopback interface, so its workers run here too."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, loc = parse_address(address)
    if scheme == "inproc":
        return True
    host, _ = parse_host_port(loc, default_port=8786)
    return is_loopback_host(host)


def api_url_is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return is_loopback_host(urlsplit(url).hostname)


def dask_task_runner(workers: int | None = None, address: str | None = None, api_url: str | None = None,
                     shared_paths: tuple[str, ...] = ()):
    """A ``DaskTaskRunner``: an existing scheduler at ``address``, or a local process cluster.

    Local clusters use one thread per worker process (the stages are numpy/Python bound) and
    ``min(cpu count, 4)`` workers unless ``workers`` is given, each advertising ``CPU=1`` as a
    ``dynaset worker`` does; they inherit this process's
    environment, ``PREFECT_API_URL`` included. On an existing cluster the workers were started
    elsewhere, so the runner sends them the flow's Prefect API URL (``api_url``, default the
    flow's own client's) when it connects (``flows.worker.PrefectAPIPlugin``) and checks that
    every worker sees ``shared_paths`` (the dataset root, the source folders).
    """
    if address:
        from flows.dask_runner import ExternalDaskTaskRunner

        return ExternalDaskTaskRunner(address=address, api_url=api_url, shared_paths=tuple(shared_paths))
    import dask
    from prefect_dask import DaskTaskRunner

    # the local cluster's nannies live in this process, which may have read its dask config before
    # prefect_environment ran: apply MALLOC_TRIM_ENV here
    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": malloc_trim_threshold()})
    # forked from the warm fork server when one runs (``warm_worker_processes``), else spawned
    # (only for the API URL it was started with: the ephemeral server moves to another port when its
    # first one was taken meanwhile)
    warm = _warm is not None and _warm == os.environ.get("PREFECT_API_URL")
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver" if warm else "spawn"})
    n = workers or default_workers()
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": n,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",  # a free port: two clusters never clash on 8787
            "memory_limit": "auto",
            "resources": {"CPU": 1},  # as `dynaset worker` (CPU tasks of a GPU build ask for it)
            "preload": ["flows.worker"],  # as `dynaset worker`: no temporary server, shared TLS contexts
        },
    )
