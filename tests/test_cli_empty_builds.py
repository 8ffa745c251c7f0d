"""Every corner of `dynaset build` that can come out empty ends cleanly (issue 14).

Each case runs the real command line in a subprocess (Prefect's ephemeral API, a local Dask
cluster) and checks: the documented exit status, one summary line, ``quarantine.json``,
``exclusions.json`` and ``report.html`` written, and no traceback anywhere in the output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import EXIT_EMPTY
from pipeline.demo import MotionSpec, generate_corpus

pytestmark = pytest.mark.slow

GAIT = Path(__file__).resolve().parents[2] / "shared" / "data" / "c3d" / "btk" / "others" / "Gait.c3d"


def _dynaset(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)  # each run starts (and stops) its own ephemeral API
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _check_clean_end(proc: subprocess.CompletedProcess, out: Path, status: int, line_start: str) -> list[str]:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    assert proc.returncode == status, text[-3000:]
    summary = [ln for ln in proc.stdout.splitlines() if ln.startswith(("OK:", "EMPTY:", "INCOMPLETE:"))]
    assert len(summary) == 1 and summary[0].startswith(line_start), proc.stdout
    for name in ("quarantine.json", "exclusions.json", "report.html", "build.json"):
        assert (out / name).is_file(), name
    return summary


def _tiny_corpus(root: Path) -> list[Path]:
    return generate_corpus(root, n_subjects=1, seed=3, duration_s=(2.0, 2.5),
                           motions=(MotionSpec("walk", 1.2), MotionSpec("stand")))


def test_all_files_unreadable(tmp_path):
    src = tmp_path / "lab"
    src.mkdir()
    (src / "truncated.c3d").write_bytes(GAIT.read_bytes()[:5000])
    (src / "noise.c3d").write_bytes(bytes(range(256)) * 40)
    out = tmp_path / "out"
    proc = _dynaset("build", "--source", f"c3d={src}", "--out", str(out), "--workers", "1")
    _check_clean_end(proc, out, EXIT_EMPTY, "EMPTY: all 2 files quarantined")
    quarantine = {q["path"]: q["reason"] for q in json.loads((out / "quarantine.json").read_text())}
    assert set(quarantine) == {"c3d:truncated.c3d", "c3d:noise.c3d"}
    assert "truncated" in quarantine["c3d:truncated.c3d"]
    assert json.loads((out / "build.json").read_text())["files_built"] == 0


def test_empty_source_folder(tmp_path):
    src = tmp_path / "nothing"
    src.mkdir()
    out = tmp_path / "out"
    proc = _dynaset("build", "--source", f"amass={src}", "--out", str(out), "--workers", "1", "--no-simulate")
    _check_clean_end(proc, out, EXIT_EMPTY, "EMPTY: no source files found")
    assert json.loads((out / "quarantine.json").read_text()) == []
    import xarray as xr

    assert xr.open_zarr(out / "motion.zarr").sizes.get("sequence", 0) == 0


def test_missing_source_folder_is_a_usage_error(tmp_path):
    proc = _dynaset("build", "--source", f"amass={tmp_path / 'absent'}", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr and "absent" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything started


def test_every_sequence_excluded_by_quality(tmp_path):
    files = _tiny_corpus(tmp_path / "corpus")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": {"exclude_all": {
        "metric": "duration_s", "op": ">", "value": 0.0, "level": "exclude"}}}))
    out = tmp_path / "out"
    proc = _dynaset("build", "--source", f"amass={tmp_path / 'corpus'}", "--out", str(out), "--workers", "1",
                    "--no-simulate", "--thresholds", str(rules))
    _check_clean_end(proc, out, EXIT_EMPTY, "EMPTY:")
    assert "excluded by quality rules" in proc.stdout
    exclusions = json.loads((out / "exclusions.json").read_text())
    assert len(exclusions) == len(files)
    assert all("exclude_all" in e["flags"] for e in exclusions)


def test_every_simulation_failed(tmp_path):
    files = _tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    # the IsaacGym adapter cannot run here: every simulate call raises, every motion is quarantined
    proc = _dynaset("build", "--source", f"amass={tmp_path / 'corpus'}", "--out", str(out), "--workers", "1",
                    "--sim-backend", "isaacgym")
    _check_clean_end(proc, out, EXIT_EMPTY, "INCOMPLETE:")
    quarantine = json.loads((out / "quarantine.json").read_text())
    assert len(quarantine) == len(files) and {q["stage"] for q in quarantine} == {"simulate"}
    summary = json.loads((out / "build.json").read_text())
    assert summary["files_built"] == len(files) and summary["files_quarantined"] == 0
    assert summary["simulations_failed"] == len(files)
    assert summary["subsets"]["motion"]["sequences"] == len(files)
    assert summary["subsets"]["torque"]["sequences"] == 0
