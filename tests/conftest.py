"""Test-session set-up: Prefect writes under a temporary PREFECT_HOME, never ~/.prefect.

The environment is set here, before any test module imports prefect.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="dynaset-test-prefect-"))
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
