"""Tests for pipeline.split: deterministic subject-wise splits and subset membership."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter

import pytest

from pipeline.records import Provenance
from pipeline.split import (
    SPLITS,
    SUBSETS,
    Availability,
    SplitConfig,
    assign_split,
    assign_splits,
    subject_unit,
    subsets_for,
)

SUBJECTS = [f"amass/CMU/{i:05d}" for i in range(10_000)]


def test_defaults():
    cfg = SplitConfig()
    assert (cfg.train, cfg.val, cfg.test, cfg.salt) == (0.8, 0.1, 0.1, "dynaset-split-v1")
    assert SUBSETS == ("motion", "contact", "ground_reaction", "torque")


def test_unit_matches_documented_formula():
    sid = "amass/BMLrub/rub001"
    h = hashlib.sha256(b"dynaset-split-v1\x00amass/BMLrub/rub001").hexdigest()
    assert subject_unit(sid, "dynaset-split-v1") == int(h[:16], 16) / 2**64
    u = subject_unit(sid, "dynaset-split-v1")
    expected = "train" if u < 0.8 else "val" if u < 0.9 else "test"
    assert assign_split(sid) == expected


def test_deterministic_across_calls():
    first = assign_splits(SUBJECTS[:500])
    assert assign_splits(SUBJECTS[:500]) == first
    assert [assign_split(s) for s in SUBJECTS[:500]] == first
    assert assign_splits(reversed(SUBJECTS[:500])) == first[::-1]  # order-independent
    assert set(first) <= set(SPLITS)


def test_all_sequences_of_a_subject_share_a_split():
    provs = [
        Provenance("amass", f"{ds}/{subj}/seq{k}_poses.npz", "0" * 64, ds, subj, f"seq{k}", 1)
        for ds, subj, k in itertools.product(["CMU", "KIT"], [f"s{i}" for i in range(50)], range(6))
    ]
    splits = assign_splits(p.subject_id for p in provs)
    by_subject: dict[str, set[str]] = {}
    for p, s in zip(provs, splits):
        by_subject.setdefault(p.subject_id, set()).add(s)
    assert len(by_subject) == 100
    assert all(len(v) == 1 for v in by_subject.values())


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.25, 0.15), (0.5, 0.0, 0.5)])
def test_ratios_approximately_honoured(ratios):
    cfg = SplitConfig(*ratios)
    counts = Counter(assign_splits(SUBJECTS, cfg))
    for name, r in zip(SPLITS, ratios):
        assert abs(counts[name] / len(SUBJECTS) - r) < 0.02, (name, counts)
    if ratios[1] == 0.0:
        assert counts["val"] == 0


def test_extreme_ratios():
    assert set(assign_splits(SUBJECTS[:200], SplitConfig(1.0, 0.0, 0.0))) == {"train"}
    assert set(assign_splits(SUBJECTS[:200], SplitConfig(0.0, 0.0, 1.0))) == {"test"}


def test_salt_changes_assignment():
    a = assign_splits(SUBJECTS[:2000])
    b = assign_splits(SUBJECTS[:2000], SplitConfig(salt="dynaset-split-v2"))
    changed = sum(x != y for x, y in zip(a, b)) / 2000
    # independent draws disagree with probability 1 - (0.8² + 0.1² + 0.1²) = 0.34
    assert 0.28 < changed < 0.40


@pytest.mark.parametrize(
    "ratios",
    [(0.8, 0.1, 0.2), (0.7, 0.1, 0.1), (1.1, -0.05, -0.05), (0.8, 0.2, -0.0001), (float("nan"), 0.5, 0.5)],
)
def test_invalid_ratios_raise(ratios):
    with pytest.raises(ValueError):
        SplitConfig(*ratios)


def test_ratio_tolerance():
    SplitConfig(0.7, 0.2, 0.1)  # 0.7 + 0.2 + 0.1 != 1.0 exactly in float, within 1e-9
    with pytest.raises(ValueError):
        SplitConfig(0.8, 0.1, 0.1 + 1e-8)


def test_subsets_rule():
    expected = {
        # (contact, grf, torque): subsets
        (False, False, False): ("motion",),
        (True, False, False): ("motion", "contact"),
        (False, True, False): ("motion", "ground_reaction"),
        (True, True, False): ("motion", "contact", "ground_reaction"),
        (False, False, True): ("motion",),  # torque without GRF is not trusted
        (True, False, True): ("motion", "contact"),
        (False, True, True): ("motion", "ground_reaction", "torque"),
        (True, True, True): ("motion", "contact", "ground_reaction", "torque"),
    }
    for flags, subsets in expected.items():
        assert subsets_for(Availability(*flags)) == subsets, flags
