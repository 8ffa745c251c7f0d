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
    def submit(self, fn: Callable, *args: Any, resources: dict | None = None) -> Future:
        """Run ``fn(*args)`` (possibly elsewhere); ``resources``: e.g. ``{"GPU": 1}``."""

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


class SerialExecutor:
    """Runs each function when it is submitted, in this process; ``call(fn, *args)`` runs it
    (default: ``fn(*args)``; ``flows.build`` runs the function's Prefect task in the flow's process)."""

    def __init__(self, call: Callable[..., Any] | None = None):
        self._call = call

    def submit(self, fn: Callable, *args: Any, resources: dict | None = None) -> _Done:
        try:
            return _Done(self._call(fn, *args) if self._call is not None else fn(*args))
        except Exception as exc:  # kept for result(), as a task runner would
            return _Done(error=exc)

    def as_completed(self, futures: Iterable[_Done]) -> Iterator[_Done]:
        return iter(list(futures))

    def wait(self, futures: Iterable[_Done]) -> None:
        return None
