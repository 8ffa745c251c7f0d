"""The ``amass`` source: AMASS-format npz files (SMPL, SMPL-H, SMPL-X), one file one sequence."""

from pipeline.sources.amass.reader import AmassSource, parse_ids, read_amass
from pipeline.sources.registry import register

register("amass", AmassSource)

__all__ = ["AmassSource", "parse_ids", "read_amass"]
