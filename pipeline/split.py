"""Subsets (which annotations a sequence carries) and subject-wise train/val/test splits.

Splits are assigned per subject (``Provenance.subject_id``), never per sequence, so all
sequences of a subject land in the same split and no subject leaks across splits. The
assignment is a pure function of the subject id and a salt: it does not depend on which other
subjects exist, on processing order, or on the run, so adding data never moves a subject.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

SUBSETS: tuple[str, ...] = ("motion", "contact", "ground_reaction", "torque")
"""Subset names, from the most to the least widely available annotation."""

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Split fractions (of subjects) and the hash salt.

    Attributes:
        train, val, test: fractions ≥ 0 summing to 1 (within 1e-9); defaults 0.8 / 0.1 / 0.1.
        salt: mixed into the hash; changing it re-draws every assignment (bump the version
            suffix only when a new, independent split is wanted).
    """

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    salt: str = "dynaset-split-v1"

    def __post_init__(self) -> None:
        ratios = (self.train, self.val, self.test)
        if any(not isinstance(r, (int, float)) or r != r or r < 0 for r in ratios):
            raise ValueError(f"split ratios must be ≥ 0, got train/val/test = {ratios}")
        if abs(sum(ratios) - 1.0) > 1e-9:
            raise ValueError(f"split ratios must sum to 1, got {sum(ratios)!r} for {ratios}")


def subject_unit(subject_id: str, salt: str) -> float:
    """Uniform number in [0, 1) derived from the subject id: the first 64 bits of
    ``sha256(salt + "\\0" + subject_id)`` (UTF-8) divided by 2**64."""
    digest = hashlib.sha256(f"{salt}\0{subject_id}".encode("utf-8")).hexdigest()
    return int(digest[:16], 16) / 2**64


def assign_split(subject_id: str, cfg: SplitConfig = SplitConfig()) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a subject, deterministically.

    With ``u = subject_unit(subject_id, cfg.salt)``: train if ``u < train``, val if
    ``u < train + val``, else test. Thus each subject is in train with probability ``train``
    (etc.), independently of all other subjects.
    """
    u = subject_unit(subject_id, cfg.salt)
    if u < cfg.train:
        return "train"
    if u < cfg.train + cfg.val:
        return "val"
    return "test"


def assign_splits(subject_ids: Iterable[str], cfg: SplitConfig = SplitConfig()) -> list[str]:
    """Split of each id in ``subject_ids`` (same order); each distinct id is hashed once."""
    ids = list(subject_ids)
    table = {sid: assign_split(sid, cfg) for sid in dict.fromkeys(ids)}
    return [table[sid] for sid in ids]


@dataclass(frozen=True)
class Availability:
    """Which annotations a sequence has besides motion.

    Attributes:
        has_contact: contact labels (derived from kinematics or measured).
        has_grf: measured ground-reaction forces/moments.
        has_torque: joint torques (inverse dynamics, which needs GRF to be meaningful).
    """

    has_contact: bool
    has_grf: bool
    has_torque: bool


def subsets_for(av: Availability) -> tuple[str, ...]:
    """Subsets a sequence belongs to, in ``SUBSETS`` order.

    ``motion`` always; ``contact`` if it has contact labels; ``ground_reaction`` if it has GRF;
    ``torque`` only if it has torques AND GRF (torques without measured external forces are
    not trusted).
    """
    member = {
        "motion": True,
        "contact": bool(av.has_contact),
        "ground_reaction": bool(av.has_grf),
        "torque": bool(av.has_grf and av.has_torque),
    }
    return tuple(name for name in SUBSETS if member[name])
