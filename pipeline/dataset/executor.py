"""How the build driver runs its stage functions: ``submit(fn, *args)`` → a future with ``result()``.

The driver (``pipeline.dataset.build``) only ever calls the stage functions through an executor,
so the same code runs serially in one process (``SerialExecutor``: tests, ``build_in_process``)
and on a Prefect/Dask cluster (``flows.build.PrefectExecutor`` maps each function to its task).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol


class Future(Protocol):
    def result(self) -> Any:
        """The function's return value; re-raises its exception."""


class Executor(Protocol):
    def submit(self, fn: Callable, *args: Any, resources: dict | None = None, priority: int = 0) -> Future:
        """Run ``fn(*args)`` (possibly elsewhere); ``resources``: e.g. ``{"GPU": 1}``; ``priority``:
        higher runs first among queued tasks. An argument may be a future of this executor, or a
        list of them: ``fn`` then runs once they are done, with their results."""

    def as_completed(self, futures: Iterable[Future]) -> Iterator[Future]:
        """The futures in completion order."""

    def wait(self, futures: Iterable[Future]) -> None:
        """Block until every future is done (failed ones included); never raises."""


def release_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    The driver calls it after each phase and the heavy stage functions at their end: glibc keeps
    freed blocks in its arenas, so without it a process's RSS is the sum of what its phases and
    tasks left behind rather than the largest of them. (Dask's own remedy,
    ``MALLOC_TRIM_THRESHOLD_``, trims on every free and halved the per-file stages' speed:
    ``flows.runtime.MALLOC_TRIM_ENV``.)"""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
