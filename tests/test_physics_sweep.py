"""benchmarks/physics_sweep.py: the paired comparison of simulator variants on the real trials."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "physics_sweep.py"
C3D_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "c3d"


@pytest.fixture(scope="module")
def sweep():
    if not C3D_ROOT.is_dir():
        pytest.skip("real C3D samples absent (shared/data/MANIFEST.md)")
    spec = importlib.util.spec_from_file_location("physics_sweep", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_identical_variants_pair_to_zero(sweep, tmp_path, capsys):
    """The engine is deterministic: the same configuration written two ways gives the same runs, so
    the paired change is exactly 0; the figures are the build's validation metrics of a real walk."""
    out = tmp_path / "sweep.json"
    rc = sweep.main(["--trials", "kit walk", "--passes", "2", "--workers", "1", "--json", str(out),
                     "--variant", "a=SimConfig()", "--variant", "b=replace(SimConfig(), passes=3)"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["paired"]["b"] == {"mean": 0.0, "median": 0.0, "better": 0, "worse": 0, "runs": 2,
                                  "per_trial": {"kit walk": 0.0}}
    runs = [r for r in res["runs"] if r["variant"] == "a"]
    assert sorted(r["pass"] for r in runs) == [0, 1]
    for r in runs:
        assert 0.1 < r["lam"] < 1.0, r  # the per-foot target on a shared walk (0.46 / 0.67 measured)
        assert 0.0 < r["tau"] < 1.0 and r["rf"] > 0.0 and 0.0 <= r["dem5"] <= 1.0
    s = res["summary"]["a"]
    assert s["runs"] == 2 and s["four_walks"]["lam"] == pytest.approx(sum(r["lam"] for r in runs) / 2)
    text = capsys.readouterr().out
    assert "vs a, run by run: λ change mean +0.000" in text
    # tracking the plan solved with the plates as force targets: closer to the plates than blind
    guided = tmp_path / "guided.json"
    assert sweep.main(["--trials", "kit walk", "--passes", "1", "--workers", "1", "--plates-plan",
                       "--json", str(guided)]) == 0
    g = json.loads(guided.read_text())
    assert g["plates_plan"] is True
    lam_guided = g["runs"][0]["lam"]
    lam_blind = next(r["lam"] for r in runs if r["pass"] == 0)
    assert lam_guided < lam_blind - 0.05, (lam_guided, lam_blind)


def test_bad_variants_are_refused_before_simulating(sweep):
    with pytest.raises(SystemExit):
        sweep.main(["--variant", "no-equals-sign"])
    with pytest.raises(ValueError, match="not a SimConfig"):
        sweep.main(["--variant", "x=DynamicsConfig()"])
    with pytest.raises(NameError):
        sweep.main(["--variant", "x=open('/etc/passwd')"])  # no builtins in the namespace
