"""MMM motion XML (the KIT Whole-Body Human Motion Database's native format), parsed into arrays.

Layout read (``<MMM>`` root; only the FIRST ``<Motion>`` is read — it is the subject; later ones are
objects or other people):

    <MMM>
      <Motion name='...'>
        <Model><File>mmm.xml</File></Model>                       model file the angles refer to
        <ModelProcessorConfig type='Winter'>                       optional subject size
          <Height>1.82</Height> <Mass>100</Mass>                   m, kg
        </ModelProcessorConfig>
        <JointOrder> <Joint name='BLNx_joint'/> ... </JointOrder>  names of the JointPosition columns
        <MotionFrames>
          <MotionFrame>
            <Timestep>0.01</Timestep>                              s
            <RootPosition>x y z</RootPosition>                     mm, world (z up)
            <RootRotation>r p y</RootRotation>                     rad, Simox roll-pitch-yaw
            <JointPosition>q1 ... qn</JointPosition>               rad, JointOrder order
          </MotionFrame> ...

Velocities, accelerations, CoM, angular momentum and markers in the frames are ignored. Every problem is a
``MotionError`` with a one-line message (the source adds the file name).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

MAX_TIMESTEP_JITTER = 0.1
"""Largest deviation of one frame interval from the median interval, as a fraction of it."""


class MotionError(ValueError):
    """A motion file that cannot be used; ``str()`` is the problem (the caller names the file)."""


@dataclass(frozen=True)
class MMMMotion:
    """The subject's motion of an MMM file.

    Attributes:
        name: ``<Motion name>``.
        model_file: ``<Model><File>`` as written (path relative to the motion file), ``""`` if absent.
        height_m, mass_kg: subject size from ``<ModelProcessorConfig>``; ``None`` when absent.
        joint_names: (J,) ``JointOrder``.
        time_s: (T,) ``Timestep`` of each frame, s (strictly increasing).
        root_pos_mm: (T, 3) ``RootPosition``, mm, world frame (z up).
        root_rpy_rad: (T, 3) ``RootRotation`` (roll, pitch, yaw), rad.
        joint_pos_rad: (T, J) ``JointPosition``, rad.
        n_motions: number of ``<Motion>`` elements in the file (only the first is read).
    """

    name: str
    model_file: str
    height_m: float | None
    mass_kg: float | None
    joint_names: tuple[str, ...]
    time_s: np.ndarray
    root_pos_mm: np.ndarray
    root_rpy_rad: np.ndarray
    joint_pos_rad: np.ndarray
    n_motions: int = 1

    @property
    def n_frames(self) -> int:
        return int(self.time_s.shape[0])

    @property
    def fps_hz(self) -> float:
        """Frame rate from the median ``Timestep`` interval, Hz."""
        return float(1.0 / np.median(np.diff(self.time_s)))


def _numbers(text: str | None, n: int | None, what: str, frame: int) -> np.ndarray:
    parts = (text or "").split()
    try:
        v = np.array([float(x) for x in parts], dtype=np.float64)
    except ValueError:
        raise MotionError(f"frame {frame}: <{what}> holds a value that is not a number") from None
    if n is not None and v.size != n:
        raise MotionError(f"frame {frame}: <{what}> has {v.size} values, expected {n}")
    if not np.isfinite(v).all():
        raise MotionError(f"frame {frame}: <{what}> has non-finite values")
    return v


def _positive(el: ET.Element | None, what: str) -> float | None:
    if el is None or el.text is None or not el.text.strip():
        return None
    try:
        v = float(el.text)
    except ValueError:
        raise MotionError(f"<ModelProcessorConfig><{what}> is not a number: {el.text.strip()!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise MotionError(f"<ModelProcessorConfig><{what}> must be positive, got {v}")
    return v


def parse_motion(text: str | bytes) -> MMMMotion:
    """Parse an MMM motion XML (module docstring); ``MotionError`` (one line) for anything unusable."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise MotionError(f"not well-formed XML, truncated or corrupt ({exc})") from None
    if root.tag != "MMM":
        raise MotionError(f"not an MMM motion file: root element <{root.tag}>, expected <MMM>")
    motions = root.findall("Motion")
    if not motions:
        raise MotionError("no <Motion> element")
    m = motions[0]
    model_el = m.find("Model/File")
    model_file = (model_el.text or "").strip() if model_el is not None else ""
    cfg = m.find("ModelProcessorConfig")
    height = _positive(cfg.find("Height"), "Height") if cfg is not None else None
    mass = _positive(cfg.find("Mass"), "Mass") if cfg is not None else None
    order = m.find("JointOrder")
    if order is None:
        raise MotionError("first <Motion> has no <JointOrder>")
    names = tuple((j.get("name") or "").strip() for j in order.findall("Joint"))
    if any(not n for n in names):
        raise MotionError("<JointOrder> has a <Joint> without a name")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MotionError(f"<JointOrder> lists {', '.join(dup)} more than once")
    frames = m.findall("MotionFrames/MotionFrame")
    if len(frames) < 2:
        raise MotionError(f"first <Motion> has {len(frames)} <MotionFrame>(s); need at least 2")
    n, nj = len(frames), len(names)
    t = np.empty(n)
    pos = np.empty((n, 3))
    rpy = np.empty((n, 3))
    q = np.empty((n, nj))
    for k, fr in enumerate(frames):
        for tag in ("Timestep", "RootPosition", "RootRotation"):
            if fr.find(tag) is None:
                raise MotionError(f"frame {k}: missing <{tag}>")
        t[k] = _numbers(fr.findtext("Timestep"), 1, "Timestep", k)[0]
        pos[k] = _numbers(fr.findtext("RootPosition"), 3, "RootPosition", k)
        rpy[k] = _numbers(fr.findtext("RootRotation"), 3, "RootRotation", k)
        jp = fr.find("JointPosition")
        if jp is None:
            if nj:
                raise MotionError(f"frame {k}: missing <JointPosition>")
            continue
        q[k] = _numbers(jp.text, nj, "JointPosition", k)
    dt = np.diff(t)
    if np.any(dt <= 0):
        k = int(np.flatnonzero(dt <= 0)[0]) + 1
        raise MotionError(f"Timestep does not increase at frame {k} ({t[k - 1]:g} s then {t[k]:g} s)")
    med = float(np.median(dt))
    jitter = np.abs(dt - med) / med
    if np.any(jitter > MAX_TIMESTEP_JITTER):
        k = int(np.argmax(jitter)) + 1
        raise MotionError(f"uneven Timestep: interval before frame {k} is {dt[k - 1]:g} s, median {med:g} s "
                          f"(dropped frames?)")
    return MMMMotion(name=m.get("name", ""), model_file=model_file, height_m=height, mass_kg=mass,
                     joint_names=names, time_s=t, root_pos_mm=pos, root_rpy_rad=rpy, joint_pos_rad=q,
                     n_motions=len(motions))
