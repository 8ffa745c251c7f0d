"""Scheduled incremental ingestion on a real Prefect server (`dynaset server` / `dynaset schedule`).

A real ``prefect server start`` on a free loopback port, its home and SQLite database under the
dataset root; one ``dynaset build`` through it; new files added to the corpus; ``dynaset schedule``
serving the ``dynaset-ingest`` deployment in a subprocess; a run triggered through the API must
complete and ingest exactly the new files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from flows.schedule import (
    INGEST_FLOW,
    ScheduleError,
    default_deployment_name,
    register_only,
    resolve_api_url,
)
from flows.server import (
    api_url_for,
    database_url,
    server_env,
    start_server,
    stop_server,
    wait_healthy,
)
from pipeline.cli import main as cli_main
from pipeline.demo import generate_corpus
from pipeline.release import (
    diff_releases,
    publish,
    read_manifest,
    read_sequences,
    verify,
)
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.store.location import LocalLocation

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CRON = "0 3 * * 1"
TIMEZONE = "Europe/Berlin"
DEPLOYMENT = "weekly-test"
N_NEW = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Terminate, then kill; never leaves the process behind."""
    stop_server(proc, timeout)


def _motion_ids(root: Path) -> set[str]:
    import xarray as xr

    store = json.loads((root / "build.json").read_text())["subsets"]["motion"]["store"]
    with xr.open_zarr(store) as ds:
        return {str(s) for s in ds["seq_id"].values}


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def test_server_env_and_api_url_helpers(tmp_path, monkeypatch):
    env = server_env(tmp_path, base={"PREFECT_API_URL": "http://elsewhere/api", "PATH": "/bin"})
    assert env["PREFECT_HOME"] == str((tmp_path / ".prefect-server").resolve())
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == database_url(tmp_path)
    assert database_url(tmp_path).endswith("/.prefect-server/prefect.db")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert "PREFECT_API_URL" not in env
    assert api_url_for("127.0.0.1", 4200) == "http://127.0.0.1:4200/api"
    assert api_url_for("::1", 4200) == "http://[::1]:4200/api"
    assert default_deployment_name("/data/my set") == "ingest-my-set"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ScheduleError, match="dynaset server"):
        resolve_api_url(None)


def test_scheduled_ingest_on_a_real_server(tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    root = tmp_path / "root"
    corpus = tmp_path / "corpus"
    logs = tmp_path / "logs"
    logs.mkdir()
    port = _free_port()
    api_url = api_url_for("127.0.0.1", port)

    # a deployment run refused a concurrency slot is retried after this many seconds (default 30)
    monkeypatch.setenv("PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS", "3")
    server_log = (logs / "server.log").open("wb")
    server = start_server(root, "127.0.0.1", port, stdout=server_log, stderr=subprocess.STDOUT)
    serve: subprocess.Popen | None = None
    serve_log_path = logs / "schedule.log"
    try:
        try:
            wait_healthy(api_url, timeout=120, proc=server)
        except (TimeoutError, RuntimeError):
            server_log.flush()
            pytest.fail(f"server did not start:\n{_tail(logs / 'server.log')}")
        timings["server_start"] = time.monotonic() - t0
        assert (root / ".prefect-server" / "prefect.db").is_file()

        # --- the first build, through the real server ---------------------------------------
        first = generate_corpus(corpus, n_subjects=1, seed=3)
        assert len(first) == 8
        monkeypatch.setenv("PREFECT_API_URL", api_url)
        t = time.monotonic()
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            rc = cli_main(["build", "--source", f"amass={corpus}", "--out", str(root), "--no-simulate",
                           "--workers", "1"])
        timings["first_build"] = time.monotonic() - t
        assert rc == 0
        with Ledger(root / LEDGER_FILE) as ledger:
            runs = ledger.runs()
        assert len(runs) == 1 and runs[0].files_new == len(first)
        before = _motion_ids(root)
        assert len(before) == len(first)
        publish(LocalLocation(root), "1.0.0")

        # --- one file changes (its content), as a re-exported capture would ------------------------
        changed = sorted(first)[0]
        data = dict(np.load(changed, allow_pickle=False))
        data["trans"] = data["trans"] + np.array([0.2, 0.0, 0.0])
        np.savez(changed, **data)
        changed_rel = changed.relative_to(corpus).as_posix()

        # --- new files: a second dataset (3 sequences of a new subject) -------------------------
        extra = generate_corpus(tmp_path / "extra", n_subjects=1, seed=4, dataset="DynasetExtra")
        keep = extra[:N_NEW]
        for f in extra[N_NEW:]:
            f.unlink()
        shutil.copytree(tmp_path / "extra" / "DynasetExtra", corpus / "DynasetExtra")
        new_rel = {f.relative_to(tmp_path / "extra").as_posix() for f in keep}

        # --- dynaset schedule, served in a subprocess -------------------------------------------
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)  # given by --api-url
        env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"
        env["PYTHONUNBUFFERED"] = "1"
        with serve_log_path.open("wb") as serve_log:
            serve = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "schedule", "--root", str(root), "--cron", CRON,
                 "--timezone", TIMEZONE, "--api-url", api_url, "--name", DEPLOYMENT, "--workers", "1"],
                cwd=str(tmp_path), env=env, stdout=serve_log, stderr=subprocess.STDOUT,
            )
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            deployment = None
            deadline = time.monotonic() + 90
            while deployment is None:
                assert serve.poll() is None, f"dynaset schedule exited:\n{_tail(serve_log_path)}"
                assert time.monotonic() < deadline, f"deployment never registered:\n{_tail(serve_log_path)}"
                try:
                    deployment = client.read_deployment_by_name(f"{INGEST_FLOW}/{DEPLOYMENT}")
                except ObjectNotFound:
                    time.sleep(0.5)
            timings["registered"] = time.monotonic() - t0

            # the deployment: cron schedule, concurrency limit one, parameters
            assert not deployment.paused
            assert len(deployment.schedules) == 1
            sched = deployment.schedules[0]
            assert sched.active and sched.schedule.cron == CRON and sched.schedule.timezone == TIMEZONE
            assert deployment.global_concurrency_limit is not None
            assert deployment.global_concurrency_limit.limit == 1
            assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
            assert deployment.parameters == {"root": str(root.resolve()), "workers": 1}
            assert deployment.entrypoint == "flows.ingest.ingest"

            # --- trigger two runs now through the API: the second waits for the first's slot ----
            triggered = [client.create_flow_run_from_deployment(deployment.id) for _ in range(2)]
            deadline = time.monotonic() + 240
            while True:
                done = [client.read_flow_run(r.id) for r in triggered]
                if all(r.state is not None and r.state.is_final() for r in done):
                    break
                assert serve.poll() is None, f"dynaset schedule exited:\n{_tail(serve_log_path)}"
                assert time.monotonic() < deadline, (
                    f"runs still {[r.state.name for r in done]}:\n{_tail(serve_log_path)}")
                time.sleep(1)
            timings["runs"] = time.monotonic() - t0 - timings["registered"]
            for r in done:
                assert r.state.is_completed(), f"{r.state.name}: {r.state.message}\n{_tail(serve_log_path)}"
            first_run, second_run = sorted(done, key=lambda r: r.start_time)
            assert first_run.end_time <= second_run.start_time  # never overlapping
            waited = [st.name for st in client.read_flow_run_states(second_run.id)]
            assert "AwaitingConcurrencySlot" in waited, waited
            # the scheduler service has queued the upcoming cron runs of the deployment
            # (the sync client's read_flow_runs sends sort=null unless given one: a 422 from the server)
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=10)
            scheduled = [r for r in runs if r.id not in {t.id for t in triggered}]
            assert scheduled and all(r.state.is_scheduled() for r in scheduled)
            for r in scheduled:  # Mondays 03:00 Berlin time
                start = r.expected_start_time.astimezone(ZoneInfo(TIMEZONE))
                assert (start.weekday(), start.hour, start.minute) == (0, 3, 0)

        # --- exactly the new files were processed ---------------------------------------------
        with Ledger(root / LEDGER_FILE) as ledger:
            runs = ledger.runs()
            files = ledger.files()
        assert len(runs) == 3  # the build, then the two triggered runs in order
        last, again = runs[1], runs[2]
        assert (last.files_new, last.files_changed, last.files_unchanged, last.files_removed) == (
            N_NEW, 1, len(first) - 1, 0)
        assert (again.files_new, again.files_changed, again.files_unchanged, again.stores_written) == (
            0, 0, len(first) + N_NEW, 0)
        new_records = [r for r in files if r.path in new_rel]
        assert {r.path for r in new_records} == new_rel
        assert all(r.status == "built" and r.first_run == last.run_id for r in new_records)
        new_ids = {s for r in new_records for s in r.sequences}
        assert len(new_ids) == N_NEW
        after = _motion_ids(root)
        assert after == before | new_ids
        changed_ids = [s for r in files if r.path == changed_rel and r.status == "built" for s in r.sequences]
        assert any(r.path == changed_rel and r.status == "superseded" for r in files)

        # --- release 1.1.0: 1.0.0 still verifies, the diff lists exactly the changes -------------------
        loc = LocalLocation(root)
        publish(loc, "1.1.0")
        assert verify(loc, "1.0.0") == [] and verify(loc, "1.1.0") == []
        d = diff_releases(read_manifest(loc, "1.0.0"), read_manifest(loc, "1.1.0"),
                          read_sequences(loc, "1.0.0"), read_sequences(loc, "1.1.0"))
        assert d["subsets"]["motion"]["added"] == sorted(new_ids)
        assert d["subsets"]["motion"]["changed"] == changed_ids
        assert d["subsets"]["motion"]["removed"] == []

        # --- stopping `dynaset schedule` (SIGTERM) pauses the schedule; registering the deployment
        # again (a new cron) un-pauses it and keeps the concurrency limit ----------------------------
        serve.send_signal(signal.SIGTERM)
        try:
            rc = serve.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"dynaset schedule did not stop within 60 s of SIGTERM:\n{_tail(serve_log_path)}") from None
        assert rc == 0, _tail(serve_log_path)
        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            assert client.read_deployment(deployment.id).paused
            assert register_only(root, "30 4 * * *", api_url=api_url, name=DEPLOYMENT, workers=1) == str(
                deployment.id)
            again = client.read_deployment(deployment.id)
        assert not again.paused
        assert [(s.schedule.cron, s.schedule.timezone) for s in again.schedules] == [("30 4 * * *", "UTC")]
        assert again.global_concurrency_limit.limit == 1
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
        server_log.close()
        timings["total"] = time.monotonic() - t0
        print(f"\nschedule test timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
    assert serve.returncode == 0 and server.returncode is not None


def test_s3_root_is_checked_on_the_object_store(s3_root):
    from flows.schedule import ScheduleError, check_root, client_home
    from pipeline.store.location import open_location

    root = f"{s3_root}/schedule-check"  # the session's prefix is shared with other S3 tests
    with pytest.raises(ScheduleError, match="not a dataset root"):
        check_root(root)
    open_location(root).write_bytes("dataset.json", b"{}")
    assert check_root(root) == root
    assert client_home(root).name == ".prefect" and "s3:" not in str(client_home(root))
