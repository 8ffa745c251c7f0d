"""Quality metrics and flags on generated sequences, clean and deliberately broken (no Prefect, no stores)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import markers as mk
from pipeline import skeleton as sk
from pipeline.demo import generate_corpus
from pipeline.process import BuildConfig, process_motion
from pipeline.quality import (
    CATALOG,
    PROVIDERS,
    Thresholds,
    apply_flags,
    compute_metrics,
    evaluate_flags,
    metric_provider,
    metrics_table,
    read_metrics,
    sequence_inputs,
    write_metrics,
)
from pipeline.quality.integration import synthetic_ground_reaction
from pipeline.quality.metrics import G_MPS2, ArrayView, metrics_row, unregister_provider
from pipeline.sources.amass import read_amass


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """{motion label: (arrays, meta)} for one generated subject (8 motions)."""
    root = tmp_path_factory.mktemp("quality-corpus")
    files = generate_corpus(root, n_subjects=1, seed=3)
    out = {}
    for f in files:
        p = process_motion(read_amass(f, root), BuildConfig())
        arrays, meta = sequence_inputs(p)
        out[p.motion.provenance.name.rsplit("_t", 1)[0]] = (arrays, meta)
    return out


def _copy(arrays):
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def _by_metric(flags):
    return {f.metric: f for f in flags}


def test_clean_sequences_are_not_flagged(sequences):
    for label, (arrays, meta) in sequences.items():
        flags = evaluate_flags(metrics_row(arrays, meta))
        assert [f for f in flags if f.level != "info"] == [], (label, flags)
        assert flags == [], (label, [f.reason for f in flags])


def test_kinematic_metrics_are_computed_and_plausible(sequences):
    arrays, meta = sequences["walk_1p2"]
    m = compute_metrics(arrays, meta)
    for name in ("duration_s", "source_fps_hz", "nan_frame_frac", "gap_max_s", "joint_ang_vel_max_rad_s",
                 "joint_ang_acc_max_rad_s2", "foot_skate_p95_m_s", "ground_penetration_m", "joint_spike_max_m",
                 "pos_fit_rmse_max_m", "rot_fit_rmse_max_rad", "marker_cloud_dist_max_m"):
        assert math.isfinite(m[name]), name
    assert m["nan_frame_frac"] == 0 and m["gap_max_s"] == 0
    assert m["duration_s"] == pytest.approx(meta["duration_s"])
    assert m["source_fps_hz"] in (60.0, 100.0, 120.0, 250.0)
    assert 1.0 < m["joint_ang_vel_max_rad_s"] < 25.0  # walking: knees/hips a few rad/s
    assert m["foot_skate_p95_m_s"] < 0.1 and m["ground_penetration_m"] < 1e-6
    # simulation / force-plate providers are skipped without their arrays
    assert "grf_peak_bw" not in m and "mpjpe_p50_mm" not in m and "sim_success" not in m


def test_foot_skating_is_flagged_warn(sequences):
    arrays, meta = sequences["walk_1p2"]
    a = _copy(arrays)
    c = a["contact"].astype(bool)
    left = c[:, 0] | c[:, 1]
    fps = meta["fps_hz"]
    drift = np.cumsum(left) * (0.3 / fps)  # the planted left foot slides forward at 0.3 m/s
    a["foot_points_m"][:, :2, 0] += drift[:, None]
    feet = [mk.MARKER_NAMES.index(n) for n in ("LHEE", "LTOE", "LMT5", "LANK", "LMED")]
    a["marker_pos_m"][:, feet, 0] += drift[:, None]
    a["joint_pos_m"][:, [sk.JOINT_NAMES.index("left_ankle"), sk.JOINT_NAMES.index("left_foot")], 0] += drift[:, None]
    row = metrics_row(a, meta)
    assert row["foot_skate_p95_m_s"] == pytest.approx(0.3, abs=0.05)
    flags = _by_metric(evaluate_flags(row))
    f = flags["foot_skate_p95_m_s"]
    assert (f.name, f.level) == ("foot_skating", "warn")
    assert "foot_skate_p95_m_s = 0.3" in f.reason and "> 0.1 m/s" in f.reason
    assert {x.level for x in flags.values()} == {"warn"}


def test_glitch_frame_is_flagged_exclude(sequences):
    arrays, meta = sequences["walk_1p2"]
    a = _copy(arrays)
    a["joint_pos_m"][50] += np.array([0.3, 0.0, 0.0], dtype=np.float32)  # every joint jumps 0.3 m for one frame
    row = metrics_row(a, meta)
    assert row["joint_spike_max_m"] == pytest.approx(0.3, abs=0.03)
    f = _by_metric(evaluate_flags(row))["joint_spike_max_m"]
    assert (f.name, f.level) == ("glitch", "exclude")
    assert "joint_spike_max_m = 0.3" in f.reason and "> 0.25 m" in f.reason


def _grf(arrays, meta):
    return synthetic_ground_reaction(arrays["joint_pos_m"], arrays["foot_points_m"], arrays["contact"],
                                     meta["mass_kg"], meta["fps_hz"])


def test_force_without_contact_reads_simulated_forces_as_interval_means():
    # one foot lands: loaded from interval 3 (t_3 → t_4) on; its sample labels start at t_4
    # (process.sample_contact); the other foot is unloaded and in the air
    n = 10
    grf = np.zeros((n, 2, 3))
    grf[3:, 0, 2] = 700.0
    contact = np.zeros((n, 4), bool)
    contact[4:, 0] = True
    arrays = {"grf_n": grf, "contact": contact}
    m = compute_metrics(arrays, {"fps_hz": 30.0, "grf_source": "simulation"})
    assert m["force_without_contact_frac"] == 0.0
    # the same arrays read as samples (force plates): frame 3 is loaded without contact
    m = compute_metrics(arrays, {"fps_hz": 30.0, "grf_source": "force_plate"})
    assert m["force_without_contact_frac"] == pytest.approx(1 / n)
    # a simulated foot loaded with no contact at either end of its interval still counts
    contact[4:6, 0] = False
    m = compute_metrics(arrays, {"fps_hz": 30.0, "grf_source": "simulation"})
    assert m["force_without_contact_frac"] == pytest.approx(2 / n)


def test_clean_synthetic_grf_is_not_flagged(sequences):
    for label in ("walk_1p2", "run_2p5", "stand"):
        arrays, meta = sequences[label]
        row = metrics_row({**arrays, **_grf(arrays, meta)}, meta)
        assert 0.8 < row["grf_peak_bw"] < 3.5, (label, row["grf_peak_bw"])
        assert row["cop_outside_foot_frac"] == 0.0
        assert row["zero_force_in_contact_frac"] < 0.1 and row["force_without_contact_frac"] == 0.0
        assert row["newton_euler_imbalance_bw_p95"] < 0.5
        assert [f.reason for f in evaluate_flags(row) if f.level != "info"] == [], label


def test_implausible_5bw_force_is_flagged_exclude(sequences):
    arrays, meta = sequences["walk_1p2"]
    grf = _grf(arrays, meta)
    bw = meta["mass_kg"] * G_MPS2
    grf["grf_n"][60] = 0.0
    grf["grf_n"][60, 0, 2] = 5.0 * bw  # a 5 × body-weight spike on the left foot
    row = metrics_row({**arrays, **grf}, meta)
    assert row["grf_peak_bw"] == pytest.approx(5.0, rel=1e-5)
    f = _by_metric(evaluate_flags(row))["grf_peak_bw"]
    assert (f.name, f.level) == ("grf_implausible", "exclude")
    assert "grf_peak_bw = 5 BW >= 5 BW" in f.reason


def test_nan_gaps_in_markers_are_flagged(sequences):
    arrays, meta = sequences["walk_1p2"]
    a = _copy(arrays)
    a["marker_pos_m"][30:50, [mk.MARKER_NAMES.index("LTOE"), mk.MARKER_NAMES.index("RASI")]] = np.nan  # 20 frames
    row = metrics_row(a, meta)
    n = len(a["time_s"])
    assert row["nan_frame_frac"] == pytest.approx(20 / n)
    assert row["gap_max_s"] == pytest.approx(20 / meta["fps_hz"])
    assert row["marker_nan_frac"] == pytest.approx(40 / (n * len(mk.MARKER_NAMES)))
    flags = _by_metric(evaluate_flags(row))
    assert (flags["gap_max_s"].name, flags["gap_max_s"].level) == ("long_gap", "warn")
    assert "gap_max_s = 0.667 s > 0.5 s" in flags["gap_max_s"].reason
    assert flags["nan_frame_frac"].level in ("info", "warn")
    assert all(math.isfinite(row[k]) for k in ("foot_skate_p95_m_s", "marker_cloud_dist_max_m"))
    # a longer gap is excluded
    a["marker_pos_m"][30:120, 0] = np.nan
    f = _by_metric(evaluate_flags(metrics_row(a, meta)))["gap_max_s"]
    assert (f.name, f.level) == ("very_long_gap", "exclude")


def test_simulation_metrics_appear_with_their_arrays(sequences):
    arrays, meta = sequences["walk_1p2"]
    n = len(arrays["time_s"])
    bw = meta["mass_kg"] * G_MPS2
    good = {"mpjpe_m": np.full(n, 0.03), "reset": np.zeros(n, bool),
            "residual_wrench": np.tile([0.01 * bw, 0, 0, 0, 0, 0], (n, 1))}
    row = metrics_row({**arrays, **good}, meta)
    assert row["mpjpe_p50_mm"] == pytest.approx(30.0) and row["sim_success"] == 1.0 and row["sim_resets"] == 0
    assert row["residual_force_bw_p95"] == pytest.approx(0.01) and row["residual_force_le5pct_frac"] == 1.0
    assert evaluate_flags(row) == []
    bad = dict(good, reset=np.zeros(n, bool), mpjpe_m=np.full(n, 0.03))
    bad["reset"][40] = True
    bad["mpjpe_m"][38:41] = 0.7
    flags = _by_metric(evaluate_flags(metrics_row({**arrays, **bad}, meta)))
    assert flags["sim_resets"].level == "warn" and flags["sim_success"].level == "warn"
    assert (flags["mpjpe_max_mm"].name, flags["mpjpe_max_mm"].level) == ("mpjpe_fail", "exclude")


def test_new_provider_needs_no_other_change(sequences):
    arrays, meta = sequences["stand"]

    @metric_provider("test_com_height", requires=("joint_pos_m", "test_only_array"), stage="test",
                     metrics={"test_com_height_m": ("m", "mean pelvis height (test)")})
    def _p(a, m):
        return {"test_com_height_m": float(np.mean(a["joint_pos_m"][:, 0, 2]))}

    try:
        assert "test_com_height_m" in CATALOG and "test_com_height" in PROVIDERS
        assert "test_com_height_m" not in compute_metrics(arrays, meta)  # required array absent: skipped
        m = compute_metrics({**arrays, "test_only_array": np.zeros(1)}, meta)
        assert 0.8 < m["test_com_height_m"] < 1.2
        rules = Thresholds.default().with_overrides(
            {"test_low": {"metric": "test_com_height_m", "op": "<", "value": 2.0, "level": "info"}})
        assert [f.name for f in evaluate_flags(m, rules)] == ["test_low"]
    finally:
        unregister_provider("test_com_height")
    assert "test_com_height_m" not in CATALOG


def test_providers_see_read_only_arrays(sequences):
    arrays, meta = sequences["stand"]
    before = arrays["joint_pos_m"].copy()

    @metric_provider("test_writer", requires=("joint_pos_m",), metrics={"test_w": ("1", "writes (test)")})
    def _w(a, m):
        a["joint_pos_m"][0, 0, 0] = 99.0
        return {"test_w": 1.0}

    try:
        with pytest.raises(RuntimeError, match="test_writer.*read-only"):
            compute_metrics(arrays, meta)
    finally:
        unregister_provider("test_writer")
    np.testing.assert_array_equal(arrays["joint_pos_m"], before)


def test_derived_sole_points_match_canonical(sequences):
    arrays, meta = sequences["run_3p5"]
    a = dict(arrays)
    exact = a.pop("foot_points_m")
    derived = ArrayView(a, meta)["foot_points_m"]
    assert np.abs(derived - exact).max() < 1e-4  # float32 storage of rotations and positions


def test_thresholds_overrides_from_toml_and_json(tmp_path, sequences):
    arrays, meta = sequences["walk_1p2"]
    row = metrics_row(arrays, meta)
    (tmp_path / "t.toml").write_text('[rules.fast_joint]\nvalue = 1.0\nlevel = "exclude"\n'
                                     '[rules.has_gaps]\nenabled = false\n')
    th = Thresholds.load(tmp_path / "t.toml")
    assert th.rule("fast_joint").value == 1.0 and th.source.endswith("t.toml")
    f = _by_metric(evaluate_flags(row, th))["joint_ang_vel_max_rad_s"]
    assert (f.name, f.level) == ("fast_joint", "exclude") and "> 1 rad/s" in f.reason
    (tmp_path / "t.json").write_text('{"rules": {"fast_joint": 2.0}}')
    assert Thresholds.load(tmp_path / "t.json").rule("fast_joint").value == 2.0
    with pytest.raises(ValueError, match="level"):
        Thresholds.default().with_overrides({"fast_joint": {"level": "fatal"}})
    with pytest.raises(ValueError, match="lacks"):
        Thresholds.default().with_overrides({"brand_new": {"value": 1.0}})
    assert Thresholds.from_dict(th.to_dict()) == th


def test_apply_flags_table_and_parquet_roundtrip(tmp_path, sequences):
    rows = [metrics_row(a, m) for a, m in sequences.values()]
    a, m = sequences["walk_1p2"]
    broken = _copy(a)
    broken["joint_pos_m"][20] += 0.4
    rows.append({**metrics_row(broken, {**m, "seq_id": "amass/X/S9/glitch"}), "seq_id": "amass/X/S9/glitch"})
    table, exclusions = apply_flags(rows)
    assert [e["seq_id"] for e in exclusions] == ["amass/X/S9/glitch"]
    assert exclusions[0]["reasons"] and "glitch" in exclusions[0]["reasons"][0]
    assert table["excluded"].sum() == 1 and list(table["seq_id"]) == sorted(table["seq_id"])
    assert table["flag_level"].tolist().count("exclude") == 1
    write_metrics(tmp_path / "metrics.parquet", table)
    back = read_metrics(tmp_path / "metrics.parquet")
    assert list(back.columns) == list(table.columns) and len(back) == len(table)
    np.testing.assert_allclose(back["joint_spike_max_m"], table["joint_spike_max_m"])
    assert back.attrs["quality"]["catalog"]["foot_skate_p95_m_s"]["unit"] == "m/s"
    assert back.attrs["quality"]["thresholds"]["rules"][0]["name"] == "short_sequence"
    assert metrics_table([]).empty


def test_flag_accumulator_in_small_chunks_equals_apply_flags(sequences):
    """The driver flags rows one at a time into columnar chunks; the table, its flags and the
    exclusions must be those of ``apply_flags`` over the same rows, heterogeneous rows included."""
    import pandas as pd

    from pipeline.quality.flags import FlagAccumulator

    rows = [metrics_row(a, m) for a, m in sequences.values()]
    a, m = sequences["walk_1p2"]
    broken = _copy(a)
    broken["joint_pos_m"][20] += 0.4
    rows.append({**metrics_row(broken, {**m, "seq_id": "amass/X/S9/glitch"}), "seq_id": "amass/X/S9/glitch"})
    rows.insert(1, {"seq_id": "amass/A/odd", "source": "amass", "extra_column": 3.5})  # a row with other keys
    rows.reverse()
    expected, exclusions = apply_flags(rows)
    acc = FlagAccumulator(chunk=2)
    levels = [acc.add(r) for r in rows]
    table, got_exclusions = acc.finish()
    assert levels.count("exclude") == 1 and got_exclusions == exclusions
    pd.testing.assert_frame_equal(table, expected)
    assert table.attrs == expected.attrs and list(table.columns) == list(expected.columns)
