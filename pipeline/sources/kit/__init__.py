"""KIT native MMM motions (``--source kit=DIR``); see ``source.py`` and docs/kit.md.

Modules: ``mmm_model`` (Simox robot XML → arrays, reference segment table), ``mmm_motion`` (MMM motion XML →
arrays), ``fk`` (forward kinematics, Simox roll-pitch-yaw), ``joint_fit`` (SMPL skeleton fitted to the MMM
joint centres with ``pipeline.lab.marker_ik``'s solver), ``source`` (``KITSource``: discover/read).
"""

from pipeline.sources.kit.source import KITSource
from pipeline.sources.registry import register

register("kit", KITSource)

__all__ = ["KITSource"]
