"""End to end without Prefect: a generated corpus with deliberately broken sequences → serial build
with quality metrics (``build_in_process``) → stores without the excluded sequences, exclusions,
flags → HTML report checked in headless Chromium (screenshot artifact), JSON, exit codes, diff."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import markers as mk
from pipeline.demo import generate_corpus, write_bad_files
from pipeline.quality import add_report_parser, build_in_process, build_report, exit_code, read_metrics, report_json
from pipeline.quality.browser import check_page, find_chromium
from pipeline.quality.integration import synthetic_ground_reaction
from pipeline.quality.metrics import G_MPS2, ArrayView
from pipeline.split import SUBSETS
from pipeline.store import open_store, sequence_index

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

GLITCH = "amass/DynasetSynth/S01/walk_1p2_t01"
SKATE = "amass/DynasetSynth/S01/walk_1p6_t01"
GAPS = "amass/DynasetSynth/S02/walk_0p8_t01"
FORCE = "amass/DynasetSynth/S02/run_2p5_t01"
EXPECTED = {  # seq id: (rule, level)
    GLITCH: ("glitch", "exclude"),
    SKATE: ("foot_skating", "warn"),
    GAPS: ("long_gap", "warn"),
    FORCE: ("grf_implausible", "exclude"),
}


def _break(sid, frame, window, values, extras):
    """The ``build_in_process`` hook: GRF for walks/runs; one broken sequence per problem."""
    fps = 30.0
    if sid == GLITCH:
        frame["joint_pos_m"][45] += np.array([0.3, 0.0, 0.0], np.float32)
    if sid == SKATE:
        c = frame["contact"].astype(bool)
        drift = (np.cumsum(c[:, 0] | c[:, 1]) * (0.3 / fps)).astype(np.float32)
        feet = ArrayView(frame, {"height_m": values["seq_height_m"]})["foot_points_m"].copy()
        feet[:, :2, 0] += drift[:, None]
        extras["foot_points_m"] = feet  # the planted left foot slides forward at 0.3 m/s
        idx = [mk.MARKER_NAMES.index(n) for n in ("LHEE", "LTOE", "LMT5", "LANK", "LMED")]
        frame["marker_pos_m"][:, idx, 0] += drift[:, None]
        frame["joint_pos_m"][:, [7, 10], 0] += drift[:, None]
    if sid == GAPS:
        frame["marker_pos_m"][30:50, mk.MARKER_NAMES.index("RTOE")] = np.nan
    if "/walk" in sid or "/run" in sid:
        fp = extras.get("foot_points_m")
        if fp is None:
            fp = ArrayView(frame, {"height_m": values["seq_height_m"]})["foot_points_m"]
        extras.update(synthetic_ground_reaction(frame["joint_pos_m"], fp, frame["contact"], values["seq_mass_kg"], fps))
        if sid == FORCE:
            extras["grf_n"][40] = 0.0
            extras["grf_n"][40, 1, 2] = 5.0 * values["seq_mass_kg"] * G_MPS2
            extras["grf_total_n"][40] = extras["grf_n"][40].sum(axis=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality-build")
    corpus = root / "corpus"
    files = generate_corpus(corpus, n_subjects=2, seed=0)
    bad = write_bad_files(corpus)
    out = root / "out"
    summary = build_in_process(corpus, out, modify=_break)
    return {"out": out, "files": files, "bad": bad, "summary": summary, "root": root}


@pytest.fixture(scope="module")
def report(built):
    path = build_report(built["out"], sequence_plots=4)
    return path


def test_broken_sequences_flagged_and_excluded_ones_missing_from_subsets(built):
    out = built["out"]
    table = read_metrics(out / "metrics.parquet")
    assert len(table) == len(built["files"])  # every built sequence has a metrics row, excluded ones too
    flags = json.loads((out / "flags.json").read_text())["sequences"]
    for sid, (rule, level) in EXPECTED.items():
        assert sid in flags, sid
        worst = flags[sid][0]
        assert (worst["name"], worst["level"]) == (rule, level), (sid, flags[sid])
        assert worst["metric"] in worst["reason"] and "[" + rule in worst["reason"]
    clean = set(table["seq_id"]) - set(EXPECTED)
    assert not set(flags) & clean, {k: flags[k] for k in set(flags) & clean}

    exclusions = json.loads((out / "exclusions.json").read_text())
    assert {e["seq_id"] for e in exclusions} == {GLITCH, FORCE}
    assert all(e["reasons"] for e in exclusions)
    for subset in SUBSETS:
        ids = set(sequence_index(open_store(out / f"{subset}.zarr"))["seq_id"]) if subset != "torque" else set()
        assert not ids & {GLITCH, FORCE}, subset
    motion = set(sequence_index(open_store(out / "motion.zarr"))["seq_id"])
    assert motion == set(table["seq_id"]) - {GLITCH, FORCE}
    assert {SKATE, GAPS} <= motion  # warned sequences stay, with their flags as metadata
    gr = set(sequence_index(open_store(out / "ground_reaction.zarr"))["seq_id"])
    assert gr and all("/walk" in s or "/run" in s for s in gr)
    previews = json.loads((out / "quality_previews" / "index.json").read_text())
    assert set(previews) == {GLITCH, FORCE}
    q = json.loads((out / "quarantine.json").read_text())
    assert len(q) == len(built["bad"])


def test_html_report_renders_in_chromium(built, report):
    html = report.read_text()
    assert report == built["out"] / "report.html"
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # self-contained
    for sid in (GLITCH, FORCE, SKATE, GAPS):
        assert sid in html
    n_metric_plots = html.count('class="metric"')
    assert n_metric_plots >= 20
    assert 'id="validation"' not in html  # no measured forces in this corpus: no "Simulated vs measured"
    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium); the report HTML was generated")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "quality_report.png"
    res = check_page(report, screenshot=shot, width=1400, height=3000)
    print(f"\nscreenshot: {shot}\nprobe: {res.probe}")
    assert res.console_errors == []
    p = res.probe
    assert p["images"] >= n_metric_plots + 1 + 4  # distributions + summary + 4 sequence plots
    assert p["images_rendered"] == p["images"] and p["images_broken"] == 0
    assert p["links_dangling"] == 0
    assert {"summary", "quarantine", "exclusions", "worst", "distributions", "sequences"} <= set(p["sections"])
    # the screenshot shows rendered plots: the summary figure region is not blank
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[:2] == (3000, 1400)
    band = img[250:650, 0:1400, :3]  # header + cards + summary figure
    assert band.std() > 0.05
    assert len(np.unique((band * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def test_report_json_and_exit_codes(built, capsys):
    out = built["out"]
    doc = report_json(out)
    s = doc["summary"]
    n = len(built["files"])
    assert s["sequences"] == n and s["sequences_excluded"] == 2 and s["exclusion_rate"] == pytest.approx(2 / n)
    assert s["files_quarantined"] == len(built["bad"])
    assert s["by_source"][0]["source"] == "amass" and s["subjects"] == 2
    assert {r["split"] for r in s["by_split"]} <= {"train", "val", "test"}
    assert s["subsets"]["ground_reaction"]["sequences"] > 0
    assert doc["metrics"]["grf_peak_bw"]["max"] == pytest.approx(5.0, rel=1e-4)
    assert [w["seq_id"] for w in doc["worst"][:2]] and {w["seq_id"] for w in doc["worst"][:2]} == {GLITCH, FORCE}
    json.dumps(doc, allow_nan=False)  # strict JSON
    assert exit_code(s, None) == 0 and exit_code(s, 0.5) == 0 and exit_code(s, 0.05) == 1
    assert exit_code(doc, 0.05) == 1

    parser = argparse.ArgumentParser(prog="dynaset")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(out), "--format", "json", "--max-exclusion-rate", "0.05"])
    assert args.func(args) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"]["sequences_excluded"] == 2
    args = parser.parse_args(["report", str(out), "--format", "json", "--max-exclusion-rate", "0.5"])
    assert args.func(args) == 0


def test_diff_against_parent_and_recompute_from_stores(built, tmp_path):
    out = built["out"]
    parent = tmp_path / "parent"
    parent.mkdir()
    for name in ("metrics.parquet", "flags.json", "exclusions.json", "quarantine.json", "build.json"):
        shutil.copy(out / name, parent / name)
    t = read_metrics(parent / "metrics.parquet")
    gone = t["seq_id"].iloc[0]
    t = t.iloc[1:].copy()
    t.loc[t["seq_id"] == SKATE, "sha256"] = "0" * 64
    t["joint_ang_vel_max_rad_s"] *= 0.5
    from pipeline.quality import write_metrics

    write_metrics(parent / "metrics.parquet", t)
    d = report_json(out, parent)["diff"]
    assert d["added"] == [gone] and d["removed"] == [] and d["changed"] == [SKATE]
    shift = {x["metric"]: x for x in d["metric_shifts"]}
    assert shift["joint_ang_vel_max_rad_s"]["status"] == "shifted"
    assert shift["duration_s"]["status"] == "stable"
    path = build_report(out, parent=parent, path=tmp_path / "with_parent.html", sequence_plots=0)
    html = path.read_text()
    assert 'id="diff"' in html and gone in html

    # a folder with stores but no quality files (an older build): metrics are recomputed
    old = tmp_path / "old"
    old.mkdir()
    for sub in SUBSETS:
        shutil.copytree(out / f"{sub}.zarr", old / f"{sub}.zarr")
    d = report_json(old)
    kept = len(built["files"]) - 2
    assert d["summary"]["recomputed_from_stores"] and d["summary"]["sequences"] == kept
    new = read_metrics(out / "metrics.parquet").set_index("seq_id")
    again = pd.DataFrame([w for w in d["worst"]])
    flagged = set(again["seq_id"]) if len(again) else set()
    assert flagged == {SKATE, GAPS}, again[["seq_id", "flag_reasons"]].to_dict("records") if "flag_reasons" in again else again.to_dict("records")[:3]
    assert d["metrics"]["joint_spike_max_m"]["max"] == pytest.approx(
        new.drop([GLITCH, FORCE])["joint_spike_max_m"].max(), rel=1e-3)


C3D_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "c3d"
if not C3D_ROOT.is_dir():
    C3D_ROOT = Path("/work/shared/data/c3d")


@pytest.mark.skipif(not (C3D_ROOT / "btk/others/Gait.c3d").is_file(), reason=f"real C3D samples absent ({C3D_ROOT})")
def test_simulated_vs_measured_section(tmp_path):
    """A measured walk (btk/others/Gait.c3d) and its simulated pass through the build's per-file and
    simulate tasks (no Prefect), stores written, report built: the "Simulated vs measured" section
    lists the pass with its validation metrics and draws force/torque curves read from the stores
    (the plate sequence ``<id>`` and the pass ``<id>#pass0`` in ground_reaction and torque)."""
    from pipeline.dataset.assembly import store_attrs
    from pipeline.dataset.files import process_file
    from pipeline.dataset.simulation import simulate_motions
    from pipeline.process import BuildConfig
    from pipeline.quality import finish_quality
    from pipeline.sources.base import SourceSpec
    from pipeline.store import load_schema, plan_store, write_store

    cfg = BuildConfig()
    o = process_file(SourceSpec("c3d", str(C3D_ROOT)), str(C3D_ROOT / "btk/others/Gait.c3d"), str(tmp_path / "entry"),
                     cfg)
    assert o.quarantine is None and o.to_simulate
    sims = simulate_motions(list(o.to_simulate), cfg)
    assert sims[0].quarantine is None, sims[0].quarantine
    staged = sorted([*o.staged, *sims[0].staged], key=lambda s: s.key)
    rows = [*o.metrics, *sims[0].metrics]
    out = tmp_path / "out"
    out.mkdir()
    finish_quality(out, rows)
    attrs, coords = store_attrs(cfg)
    for subset in SUBSETS:  # every sequence, excluded or not: this test is about the section
        members = [s for s in staged if subset in s.subsets]
        declared = load_schema(subset).coords
        write_store(plan_store(subset, members, attrs, {k: v for k, v in coords.items() if k in declared}),
                    out / f"{subset}.zarr")
    base = o.staged[0].key
    pass0 = f"{base}#pass0"
    import xarray as xr

    tq = xr.open_zarr(out / "torque.zarr")  # the measured sequence and its pass share seq_id
    assert sorted(zip(tq.seq_id.values.tolist(), tq.seq_pass.values.tolist(), tq.seq_torque_source.values.tolist())) == [
        (base, -1, "inverse_dynamics"), (base, 0, "simulation")]
    row = next(r for r in sims[0].metrics if r["seq_id"] == pass0)
    assert np.isfinite(row["grf_vs_plate_err_left_n_per_kg"]) and np.isfinite(row["torque_vs_id_rmse_nm_per_kg"])

    html = build_report(out).read_text()
    assert 'id="validation"' in html and "Simulated vs measured" in html and 'href="#validation"' in html
    section = html[html.index('id="validation"'):html.index('id="sequences"')]
    assert pass0 in section and f'alt="simulated vs measured: {pass0}"' in section
    assert f"{row['torque_vs_id_rmse_nm_per_kg']:.3g}" in section  # the table shows the row's value
    assert 0.0 < row["cop_vs_plate_err_left_m"] < 0.15 and "CoP err left [cm]" in section
    assert f"{100 * row['cop_vs_plate_err_left_m']:.3g}" in section
    from pipeline.quality.collect import BuildReader

    reader = BuildReader(out)  # the pass is read on its own, not mixed with the measured sequence
    assert reader.subsets_of(base) == list(SUBSETS) and reader.subsets_of(pass0) == ["ground_reaction", "torque"]
    meas, _ = reader.sequence(base, names={"joint_torque_nm"})
    sim, values = reader.sequence(pass0, names={"joint_torque_nm"})
    assert values["seq_pass"] == 0 and np.isnan(meas["joint_torque_nm"]).any() and np.isfinite(sim["joint_torque_nm"]).all()


def _without_times(html: str) -> str:
    """A report without its generation time and duration (the only parts that differ between runs)."""
    import re

    html = re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated –", html)
    return re.sub(r"report generated in [0-9.]+ s", "report generated in – s", html)


def test_cached_figures_make_the_same_report_as_a_full_redraw(built, tmp_path):
    """Reports of the same build — every figure drawn, drawn into an empty cache, all taken from the
    cache — are identical; a change to one metric redraws only that metric's histogram, a change that
    leaves every value in its bin redraws nothing; figures no longer used are pruned."""
    import dataclasses

    from pipeline.quality.report import FigureCache, _write_html, load_build, metric_columns

    out, cache_dir = built["out"], tmp_path / "figures"
    full = build_report(out, path=tmp_path / "full.html", sequence_plots=4).read_text()
    cold = FigureCache(cache_dir)
    a = build_report(out, path=tmp_path / "cold.html", sequence_plots=4, figures=cold).read_text()
    warm = FigureCache(cache_dir)
    b = build_report(out, path=tmp_path / "warm.html", sequence_plots=4, figures=warm).read_text()
    assert cold.drawn > 20 and cold.reused == 0  # summary, every metric, the sequence plots
    assert {"summary", "metric", "sequence"} <= set(cold.seconds)
    assert (warm.drawn, warm.reused) == (0, cold.drawn)
    assert _without_times(a) == _without_times(full) == _without_times(b)
    assert a.count('<img class="plot"') == cold.drawn
    assert a.count("data:image/svg+xml;base64,") == len(metric_columns(load_build(out).table)) + 1  # + summary

    q = load_build(out)
    metric = "root_height_std_m" if "root_height_std_m" in q.table else next(
        m for m in q.table.columns if m.endswith("_m") and pd.api.types.is_float_dtype(q.table[m]))
    # a value that stays inside its bin: the histogram, and so its figure, is the same
    table = q.table.copy()
    vals = pd.to_numeric(table[metric], errors="coerce")
    j = int((vals - vals.median()).abs().idxmin())  # a middle value, not an end of the range
    table.loc[j, metric] = float(vals[j]) + 1e-9
    same = FigureCache(cache_dir)
    _write_html(dataclasses.replace(q, table=table), None, tmp_path / "same.html", 25, 4, same)
    assert same.drawn == 0, (metric, same.seconds)

    table = q.table.copy()
    col = pd.to_numeric(table[metric], errors="coerce")
    i = int(col.idxmax())
    table.loc[i, metric] = float(col[i]) * 1.5  # the maximum moves: the bins change
    changed = FigureCache(cache_dir)
    html = _write_html(dataclasses.replace(q, table=table), None, tmp_path / "changed.html", 25, 4, changed).read_text()
    assert (changed.drawn, changed.reused) == (1, cold.drawn - 1), (metric, changed.seconds)
    assert _without_times(html) == _without_times(
        _write_html(dataclasses.replace(q, table=table), None, tmp_path / "redrawn.html", 25, 4,
                    FigureCache(None)).read_text())
    assert changed.prune() == 1 and len(list(cache_dir.iterdir())) == cold.drawn  # the old histogram


def test_isolated_report_equals_the_in_process_one(built, tmp_path):
    """The report drawn in a child process (what a Dask worker does, ``report_task(isolate=True)``)
    is the report drawn in this process, figure cache included; a failing child raises with its
    error output."""
    from pipeline.quality.isolated import draw, draw_isolated

    out = tmp_path / "out"
    shutil.copytree(built["out"], out)
    summary = json.loads((out / "build.json").read_text())
    said = draw_isolated(out, summary)
    assert "in a child process" in said and "0 reused from the cache" in said
    child = (out / "report.html").read_text()
    again = draw(out, summary)
    assert "0 figures drawn" in again  # the child filled the cache this process reads
    assert _without_times(child) == _without_times((out / "report.html").read_text())
    with pytest.raises(RuntimeError, match="report process exited"):
        draw_isolated(tmp_path / "no-such-root", None)


def test_the_report_process_does_not_import_the_lab_stack():
    """The report's child process (``draw_isolated``) imports only what reading metrics and drawing
    needs: not ``pipeline.lab.measured`` (the marker IK, SciPy's signal package: ≈ 1.3 s of its
    start), whose GRF source names now live with the records (the same strings)."""
    import subprocess
    import sys

    from pipeline.lab import measured
    from pipeline.quality import metrics
    from pipeline.records import GRF_SOURCE_PLATES, GRF_SOURCE_SIMULATION

    assert measured.GRF_SOURCE_SIMULATION == metrics.GRF_SOURCE_SIMULATION == GRF_SOURCE_SIMULATION == "simulation"
    assert measured.GRF_SOURCE_PLATES == GRF_SOURCE_PLATES == "force_plate"
    code = ("import sys, pipeline.quality.isolated, pipeline.quality.report; "
            "print(sorted(m for m in ('pipeline.lab.measured', 'pipeline.lab.marker_ik', 'scipy.signal') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
