"""Source registry (pipeline.sources.registry): every source package registers itself."""

from __future__ import annotations

import pytest

from pipeline.sources import registry
from pipeline.sources.base import get_source


def test_builtin_sources_register_themselves():
    kinds = registry.known_kinds()
    assert {"amass", "c3d", "opensim", "addbiomechanics"} <= set(kinds)
    for kind in kinds:
        assert get_source(kind).name == kind


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown source kind 'nope'; known: \[.*'c3d'"):
        get_source("nope")


def test_register_refuses_bad_or_conflicting_kinds():
    with pytest.raises(ValueError, match="lower-case"):
        registry.register("C3D", object)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("c3d", object)
