"""The ``opensim`` source: OpenSim / AddBiomechanics raw uploads — markers ``.trc``, forces ``.mot`` (with an
optional ExternalLoads ``.xml``) and the subject's ``.osim`` model (docs/opensim.md)."""

from pipeline.sources.opensim.source import OpenSimSource, find_trial_files
from pipeline.sources.registry import register

register("opensim", OpenSimSource)

__all__ = ["OpenSimSource", "find_trial_files"]
