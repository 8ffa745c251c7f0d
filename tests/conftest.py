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
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # first start migrates the DB
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# --- a real S3-compatible server (SeaweedFS) for the object-storage tests -------------------------

import pytest


@pytest.fixture(scope="session")
def s3_root(tmp_path_factory):
    """``s3://bucket/prefix`` on a real local SeaweedFS S3 server (tests/s3_server.py), with
    DYNASET_S3_ENDPOINT_URL / AWS_* set for the session. Fails (never skips) if the server cannot
    start: the test extra installs it."""
    import uuid

    from s3_server import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    print(f"\nSeaweedFS S3 server at {server.endpoint} ready in {server.startup_s:.2f} s")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "DYNASET_S3_LOCK_TTL_S"):
                mp.delenv(name, raising=False)
            for name, value in server.env().items():
                mp.setenv(name, value)
            yield f"s3://{server.bucket}/tests-{uuid.uuid4().hex[:8]}"
    finally:
        server.stop()
