"""How the build driver runs its stage functions: ``submit(fn, *args)`` → a future with ``result()``.

The driver (``pipeline.dataset.build``) only ever calls the stage functions through an executor,
so the same code runs serially in one process (``SerialExecutor``: tests, ``build_in_process``)
and on a Prefect/Dask cluster (``flows.build.PrefectExecutor`` maps each function to its task).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from pipeline.memory import release_memory  # noqa: F401 - re-exported: the stage functions' import

TASK_LOG_ENV = "DYNASET_TASK_LOG"
"""When set (a file path), every probed stage function (``probed``) appends one JSON line per call:
process id, function, wall start/end (epoch s), RSS at start and end and the process's peak RSS so
far (MiB), CPU seconds of the calling thread and of the whole process over the call. Benchmarks
(``benchmarks/build_bench.py --task-log``) use it to see which task raises a worker's peak and how
much of a worker's CPU lies outside its tasks."""


class Future(Protocol):
    def result(self) -> Any:
        """The function's return value; re-raises its exception."""


class Executor(Protocol):
    remote: bool
    """Whether tasks run in other, long-lived processes (workers) rather than the driver's."""

    def submit(self, fn: Callable, *args: Any, resources: dict | None = None, priority: int = 0) -> Future:
        """Run ``fn(*args)`` (possibly elsewhere); ``resources``: e.g. ``{"GPU": 1}``; ``priority``:
        higher runs first among queued tasks. An argument may be a future of this executor, or a
        list of them: ``fn`` then runs once they are done, with their results."""

    def as_completed(self, futures: Iterable[Future]) -> Iterator[Future]:
        """The futures in completion order."""

    def wait(self, futures: Iterable[Future]) -> None:
        """Block until every future is done (failed ones included); never raises."""


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def probed(fn: Callable) -> Callable:
    """``fn``, logging each call to ``$TASK_LOG_ENV`` when that is set (else a plain call)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        path = os.environ.get(TASK_LOG_ENV)
        if not path:
            return fn(*args, **kwargs)
        t0, rss0, th0, pr0 = time.time(), _rss_mib(), time.thread_time(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            rec = {"pid": os.getpid(), "task": fn.__name__, "t0": t0, "t1": time.time(), "rss0": rss0,
                   "rss1": _rss_mib(), "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "thread_cpu": time.thread_time() - th0, "process_cpu": time.process_time() - pr0}
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(rec) + "\n").encode())
            finally:
                os.close(fd)

    return wrapper


class _Done:
    __slots__ = ("_value", "_error")

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self._value, self._error = value, error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


def _resolved(arg: Any) -> Any:
    """A future's result, or a list/tuple with its futures replaced by their results."""
    if isinstance(arg, _Done):
        return arg.result()
    if isinstance(arg, (list, tuple)) and any(isinstance(a, _Done) for a in arg):
        return type(arg)(a.result() if isinstance(a, _Done) else a for a in arg)
    return arg


class WithResources:
    """An executor whose tasks without ``resources`` of their own get ``default`` (e.g.
    ``{"CPU": 1}``: a build with GPU workers keeps its CPU tasks off them, ``pipeline.dataset.build``)."""

    def __init__(self, executor: Executor, default: dict):
        self.executor, self.default = executor, dict(default)

    @property
    def remote(self) -> bool:
        return bool(getattr(self.executor, "remote", False))

    def submit(self, fn: Callable, *args: Any, resources: dict | None = None, priority: int = 0) -> Future:
        return self.executor.submit(fn, *args, resources=self.default if resources is None else resources,
                                    priority=priority)

    def as_completed(self, futures: Iterable[Future]) -> Iterator[Future]:
        return self.executor.as_completed(futures)

    def wait(self, futures: Iterable[Future]) -> None:
        self.executor.wait(futures)


class SerialExecutor:
    """Runs each function when it is submitted, in this process; ``call(fn, *args)`` runs it
    (default: ``fn(*args)``; ``flows.build`` runs the function's Prefect task in the flow's process)."""

    remote = False

    def __init__(self, call: Callable[..., Any] | None = None):
        self._call = call

    def submit(self, fn: Callable, *args: Any, resources: dict | None = None, priority: int = 0) -> _Done:
        try:
            args = tuple(_resolved(a) for a in args)
            return _Done(self._call(fn, *args) if self._call is not None else fn(*args))
        except Exception as exc:  # kept for result(), as a task runner would
            return _Done(error=exc)

    def as_completed(self, futures: Iterable[_Done]) -> Iterator[_Done]:
        return iter(list(futures))

    def wait(self, futures: Iterable[_Done]) -> None:
        return None
