"""Source registry: each source package registers its kind when imported; ``get_source`` finds it.

A source lives in its own package ``pipeline/sources/<kind>/`` whose ``__init__`` calls
``register("<kind>", SourceClass)``. ``get_source`` imports every sub-package of ``pipeline.sources`` once
(``pkgutil``), so adding a source is adding a package: no other source or list changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

_FACTORIES: dict[str, Callable[[], object]] = {}
_LOADED = False


def register(kind: str, factory: Callable[[], object]) -> None:
    """Register a source kind (lower-case ``--source`` key) with a zero-argument factory (its class)."""
    if not kind or kind != kind.lower() or "=" in kind:
        raise ValueError(f"source kind must be a non-empty lower-case name without '=', got {kind!r}")
    known = _FACTORIES.get(kind)
    if known is not None and known is not factory:
        raise ValueError(f"source kind {kind!r} registered twice ({known!r} and {factory!r})")
    _FACTORIES[kind] = factory


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import pipeline.sources as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg:
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _LOADED = True


def known_kinds() -> list[str]:
    """Sorted registered source kinds (after importing every source package)."""
    _load_all()
    return sorted(_FACTORIES)


def get_source(kind: str):
    """A new instance of the registered source of that kind; ``ValueError`` naming the known kinds."""
    _load_all()
    try:
        return _FACTORIES[kind]()
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r}; known: {sorted(_FACTORIES)}") from None
