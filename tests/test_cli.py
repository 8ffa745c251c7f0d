"""The command-line entry point: what building its parser costs."""

import subprocess
import sys

import pytest


def test_the_parser_does_not_import_the_simulator():
    """Every ``dynaset`` command builds the whole parser, whose build options list the simulator
    backends: that must not load MuJoCo, the dynamics pass or SciPy's signal package (≈ 1.2 s of
    every command, ``--help`` included, before ``pipeline.simulate`` loaded its names lazily)."""
    code = ("import sys\n"
            "from pipeline.cli import main\n"
            "try:\n"
            "    main(['build', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in ('mujoco', 'pipeline.dynamics', 'pipeline.simulate.engine', 'scipy.signal')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--sim-backend" in out and "warp-cpu" in out
    assert out.strip().splitlines()[-1] == "[]", out


def test_the_simulate_package_names_resolve_on_first_use():
    import pipeline.simulate as sim
    from pipeline.simulate.engine import SimConfig

    assert sim.SimConfig is SimConfig
    assert {"SimConfig", "ContactQP", "simulate"} <= set(dir(sim))
    with pytest.raises(AttributeError, match="no_such_name"):
        sim.no_such_name  # noqa: B018
