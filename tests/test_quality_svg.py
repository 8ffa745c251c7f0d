"""``pipeline.quality.svg``: the report's histograms and bars drawn from counts."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import pytest

from pipeline.quality import svg

NS = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("lo,hi,n,want", [
    (0, 37, 4, [0, 10, 20, 30]),
    (0, 1, 4, [0, 0.25, 0.5, 0.75, 1]),
    (-0.0123, 0.456, 5, [0, 0.1, 0.2, 0.3, 0.4]),
    (0.9, 1.1, 5, [0.9, 0.95, 1.0, 1.05, 1.1]),
    (5, 5, 4, [5]),
])
def test_nice_ticks(lo, hi, n, want):
    assert svg.nice_ticks(lo, hi, n) == pytest.approx(want)


def test_histogram_draws_one_bar_per_nonempty_bin_and_the_rules():
    edges = [0.0, 1.0, 2.0, 3.0, 4.0]
    doc = svg.histogram(edges, [("", [3, 0, 5, 1])], "x [m]", lines=[(2.5, " warn", "#ff7f0e")],
                        note=["exclude > 9 (off scale)"])
    root = ET.fromstring(doc)  # well-formed XML
    bars = [r for r in root.iter(f"{NS}rect") if r.get("fill") == "#4c72b0"]
    assert len(bars) == 3
    heights = sorted(float(r.get("height")) for r in bars)
    assert heights[2] == pytest.approx(5 * heights[0], rel=1e-2)  # bar heights ∝ counts (0.1 px)
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert " warn" in texts and "exclude > 9 (off scale)" in texts and "x [m]" in texts
    assert any(p.get("stroke-dasharray") for p in root.iter(f"{NS}path"))


def test_histogram_of_several_series_is_step_lines_with_a_legend():
    doc = svg.histogram([0, 1, 2], [("amass", [1, 2]), ("kit", [2, 0])], "x")
    root = ET.fromstring(doc)
    steps = [p for p in root.iter(f"{NS}path") if p.get("stroke-width") == "1.4" and "V" in p.get("d")]
    assert len(steps) == 2
    assert {"amass", "kit"} <= {t.text for t in root.iter(f"{NS}text")}


def test_stacked_bars_and_the_img_tag():
    doc = svg.stacked_bars([("hours", "h", ["a", "b"], [("train", [1.0, 2.0], "#111"), ("val", [0.5, 0.0], "#222")])])
    root = ET.fromstring(doc)
    assert len([r for r in root.iter(f"{NS}rect") if r.get("fill") in ("#111", "#222")]) == 3 + 2  # bars + legend
    tag = svg.img(doc, 'a "title"')
    assert tag.startswith('<img class="plot" alt="a &quot;title&quot;"')
    data = re.search(r"base64,([^\"]+)", tag).group(1)
    assert base64.b64decode(data).decode() == doc
