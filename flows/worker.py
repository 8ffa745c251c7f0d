"""Dask workers for dynaset builds on an existing cluster, and the Prefect API they report to.

``dynaset worker SCHEDULER`` runs ``dask worker`` (``distributed.cli.dask_worker``) with the
settings a build needs: one thread per process (the stages are numpy/Python bound), ``GPU=1``
with ``--gpu`` (simulate tasks carry ``resources={"GPU": 1}`` with ``--sim-backend gpu``) and
``CPU=<threads>`` without (every other task of such a build asks for ``CPU``, so none occupies a GPU
worker; ``pipeline.dataset.build.CPU_RESOURCES``), the
Prefect environment of every dynaset process (``flows.runtime.prefect_environment``: analytics off,
quiet logging, a per-user ``PREFECT_HOME``) and this module as ``--preload``, which makes sure such
a worker never starts a temporary Prefect server of its own.

A flow run on an existing cluster sends its Prefect API URL to every worker, including workers it
did not start and workers that join later: ``flows.runtime.dask_task_runner(address=...)``
registers ``PrefectAPIPlugin`` on the scheduler when it connects, and unregisters it when the
flow's task runner closes. Why an environment variable is enough (Prefect 3.8): a task on a Dask
worker runs inside the flow's *serialized* settings context, rebuilt on the worker; Prefect's
settings are read from the environment when such a context is built (and, for the process-global
context, once when ``prefect`` is imported, refreshed here), and the flow process's serialized
settings hold ``api.url`` only if ``PREFECT_API_URL`` was set before that process imported
``prefect``, which is not the case for the ephemeral API that ``flows.runtime.prefect_api``
starts. Without a URL, Prefect's task engine starts a temporary server in every worker process.

This module imports neither Prefect nor the pipeline at import time (it is every worker's preload).
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

logger = logging.getLogger("dynaset.worker")

PLUGIN_NAME = "dynaset-prefect-api"
TEMPORARY_SERVER_REFUSED = "dynaset worker: refusing to start a temporary Prefect server"
_SERVER_MODULE = "prefect.server.api.server"
_UNSET: Any = object()
_start_api_url: Any = _UNSET  # this process's PREFECT_API_URL before any flow set one (None: unset)


# --- the flow's Prefect API on every worker ------------------------------------------------------


class PrefectAPIPlugin(WorkerPlugin):
    """Set the flow's Prefect API URL (and dynaset's Prefect defaults) in each worker process.

    ``setup`` runs on every worker before it runs a task of the flow (the scheduler also sends
    the plugin to workers that connect later); ``teardown`` (the flow's task runner unregisters the
    plugin at the end of the run) delivers the task-run events still queued in the worker to the
    flow's API, then restores the worker's own ``PREFECT_API_URL`` (or none).

    The flow's URL wins over a ``PREFECT_API_URL`` the worker was started with, for the flow's
    tasks: all task runs of a flow must be recorded where its flow run is (Prefect itself sends
    the flow's URL along with every task when the flow's process had one when it started). A worker
    whose own URL differs logs a warning; the flow prints one too.
    """

    name = PLUGIN_NAME
    idempotent = False  # a newer flow's registration replaces an older one (setup runs again)

    def __init__(self, api_url: str):
        self.api_url = api_url

    async def setup(self, worker) -> None:
        global _start_api_url
        if _start_api_url is _UNSET:
            _start_api_url = os.environ.get("PREFECT_API_URL")
        if _start_api_url and _start_api_url != self.api_url:
            logger.warning("worker %s: started with PREFECT_API_URL=%s; this flow's tasks report to %s",
                           worker.address, _start_api_url, self.api_url)
        from flows.runtime import prefect_environment

        prefect_environment()
        await _switch_api_url(self.api_url)

    async def teardown(self, worker) -> None:
        if _start_api_url is _UNSET:
            return
        await _switch_api_url(_start_api_url, flush=True)


def worker_api_url() -> str | None:
    """The Prefect API URL of this process (what ``PrefectAPIPlugin`` set); run on workers."""
    return os.environ.get("PREFECT_API_URL")


async def _switch_api_url(url: str | None, flush: bool = False) -> None:
    """Point this process's Prefect at ``url`` (None: unset). Queued Prefect events (task-run
    states) are delivered first to the URL they were meant for when ``flush`` or the URL changes:
    Prefect's events worker is a process-wide singleton bound to the URL it started with."""
    current = os.environ.get("PREFECT_API_URL")
    if (flush or current != url) and "prefect.events.worker" in sys.modules:
        from prefect.events.worker import EventsWorker

        await EventsWorker.drain_all(timeout=30, at_exit=False)
    if url:
        os.environ["PREFECT_API_URL"] = url
    else:
        os.environ.pop("PREFECT_API_URL", None)
    if current != url and "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()  # the process-global settings were read at import


# --- the preload of `dynaset worker`: no temporary Prefect server, ever ----------------------------


class _NoTemporaryServer(importlib.abc.MetaPathFinder):
    """Patch ``SubprocessASGIServer.start`` of ``prefect.server.api.server`` to raise, when (if
    ever) that module is imported in this process. Importing it eagerly would cost each worker
    about 2 s and 80 MB; a dynaset worker only imports it when a task lacks a Prefect API URL."""

    def find_spec(self, name, path=None, target=None):
        if name != _SERVER_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _refuse_temporary_server(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _refuse_temporary_server(module) -> None:
    def start(self, *args, **kwargs):
        msg = (f"{TEMPORARY_SERVER_REFUSED}: this task has no Prefect API URL. Run builds with dynaset "
               "(it sends its API URL to every worker), or set PREFECT_API_URL for the worker, e.g. to "
               "a `dynaset server` (docs/scaling.md)")
        logger.error(msg)
        raise RuntimeError(msg)

    module.SubprocessASGIServer.start = start


def install_guard() -> None:
    """Make this process refuse to start Prefect's temporary server (see ``_NoTemporaryServer``)."""
    mod = sys.modules.get(_SERVER_MODULE)
    if mod is not None:
        _refuse_temporary_server(mod)
    elif not any(isinstance(f, _NoTemporaryServer) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoTemporaryServer())


# --- one TLS context per CA bundle, not one per Prefect client -------------------------------------

_TLS_MODULES = ("prefect.client.orchestration", "prefect._internal.version_checking", "prefect._internal.websockets")


def reuse_tls_contexts() -> int:
    """Make Prefect's API clients in this process share one verified ``SSLContext`` per CA bundle.

    Prefect's task engine builds new API clients for every task run on a worker, and each client
    builds an ``SSLContext`` loading the CA bundle (``ssl.create_default_context(cafile=...)``,
    ≈ 21 ms here), even for a plain ``http://`` API: ≈ 60 ms of a worker's CPU per task run
    (``py-spy``, docs/scaling.md "Fifth round"). A context is read-only once built (httpx only
    uses it), so one per CA file serves every client. Contexts Prefect modifies after creating them
    (the insecure ``create_default_context()`` without a CA file) are still built each time.
    Returns the number of Prefect modules patched."""
    import functools
    import importlib
    import ssl
    import types

    @functools.lru_cache(maxsize=8)
    def verified(purpose, cafile, capath, cadata):
        return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)

    def create_default_context(purpose=ssl.Purpose.SERVER_AUTH, *, cafile=None, capath=None, cadata=None):
        if cafile is None and capath is None and cadata is None:
            return ssl.create_default_context(purpose)  # callers mutate this one (insecure mode)
        return verified(purpose, cafile, capath, cadata)

    shim = types.SimpleNamespace(**{k: getattr(ssl, k) for k in dir(ssl) if not k.startswith("__")})
    shim.create_default_context = create_default_context
    n = 0
    for name in _TLS_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(mod, "ssl", None) is ssl:
            mod.ssl = shim
            n += 1
    return n


def dask_setup(worker) -> None:
    """Dask preload hook (``--preload flows.worker``), run in every worker process at start: dynaset's
    Prefect defaults, the temporary-server guard, shared TLS contexts (``reuse_tls_contexts``)."""
    from flows.runtime import prefect_environment

    prefect_environment()
    install_guard()
    reuse_tls_contexts()
    logger.info("dynaset worker %s ready (PREFECT_API_URL=%s)", worker.address,
                os.environ.get("PREFECT_API_URL") or "from the flow")


# --- `dynaset worker` ----------------------------------------------------------------------------


def worker_argv(scheduler: str, *, gpu: bool = False, nworkers: int | None = None, nthreads: int = 1,
                memory_limit: str = "auto", local_directory: str | None = None, name: str | None = None,
                host: str | None = None, dashboard: bool = False) -> list[str]:
    """The ``dask worker`` command line of ``dynaset worker`` (without the interpreter)."""
    from flows.runtime import default_workers

    n = nworkers or (1 if gpu else default_workers())
    argv = ["-m", "distributed.cli.dask_worker", scheduler, "--nworkers", str(n), "--nthreads", str(nthreads),
            "--memory-limit", str(memory_limit), "--preload", "flows.worker"]
    # GPU workers advertise only GPU: a build with a GPU backend sends them its GPU tasks and nothing else
    argv += ["--resources", "GPU=1" if gpu else f"CPU={int(nthreads)}"]
    argv += ["--dashboard"] if dashboard else ["--no-dashboard"]
    if local_directory:
        argv += ["--local-directory", local_directory]
    if name:
        argv += ["--name", name]
    if host:
        argv += ["--host", host]
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    """``dynaset worker``: exec ``dask worker`` with the settings above (it never returns)."""
    from flows.runtime import prefect_environment

    if args.nthreads < 1 or (args.nworkers is not None and args.nworkers < 1):
        raise ValueError("--nworkers and --nthreads must be at least 1")
    prefect_environment()  # values already in the environment (PREFECT_API_URL, PREFECT_HOME, ...) win
    if args.gpu:  # the batched backend's host preparation uses a process pool (pipeline.simulate.prep_pool)
        os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    argv = worker_argv(args.scheduler, gpu=args.gpu, nworkers=args.nworkers, nthreads=args.nthreads,
                       memory_limit=args.memory_limit, local_directory=args.local_directory, name=args.name,
                       host=args.host, dashboard=args.dashboard)
    print(f"dynaset worker: {' '.join(argv[2:])} (PREFECT_HOME={os.environ['PREFECT_HOME']}, "
          f"PREFECT_API_URL={os.environ.get('PREFECT_API_URL') or 'sent by each flow'})", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, *argv])
    return 0  # not reached


def add_worker_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "worker", help="a Dask worker for builds on an existing cluster (docs/scaling.md)",
        description="Run `dask worker` for dynaset builds: one thread per process, CPU=<nthreads> (GPU=1 "
                    "with --gpu), "
                    "dynaset's Prefect defaults, never a temporary Prefect server (each flow sends "
                    "its Prefect API URL). See docs/scaling.md.")
    p.add_argument("scheduler", help="Dask scheduler address, e.g. tcp://scheduler:8786")
    p.add_argument("--gpu", action="store_true",
                   help="advertise GPU=1 per worker process instead of CPU=<nthreads>: with --sim-backend gpu "
                        "the worker runs the GPU simulate tasks (simulate-batch) and nothing else; their host "
                        "preparation and finishing run in CPU tasks on the other workers; default --nworkers 1")
    p.add_argument("--nworkers", type=int, default=None,
                   help="worker processes (default min(cpus, 4); 1 with --gpu)")
    p.add_argument("--nthreads", type=int, default=1, help="threads per process (default 1)")
    p.add_argument("--memory-limit", default="auto",
                   help="memory per process: bytes, 4GB, a fraction, or auto (default: total / nworkers)")
    p.add_argument("--local-directory", default=None, help="folder for the workers' spill and scratch files")
    p.add_argument("--name", default=None, help="worker name (with --nworkers > 1: NAME-0, NAME-1, ...)")
    p.add_argument("--host", default=None, help="address the worker serves on (visible to the scheduler)")
    p.add_argument("--dashboard", action="store_true", help="serve each worker's dashboard (off by default)")
    p.set_defaults(func=cmd_worker)
