"""The ``addbiomechanics`` source: AddBiomechanics ``.b3d`` subject files (version 4), one sequence per trial
(docs/addbiomechanics.md). ``b3d`` decodes the format; ``source`` turns trials into ``RawMotion``."""

from pipeline.sources.addbiomechanics.source import AddBiomechanicsSource
from pipeline.sources.registry import register

register("addbiomechanics", AddBiomechanicsSource)

__all__ = ["AddBiomechanicsSource"]
