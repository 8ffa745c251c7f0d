"""The ``Location`` contract, on a local folder and on a real S3 server (SeaweedFS, tests/s3_server.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.store.location import LocalLocation, LockError, open_location
from pipeline.store.location_s3 import (
    LOCK_NAME,
    S3Location,
    parse_s3_url,
    storage_options_from_env,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def loc(request, tmp_path):
    if request.param == "local":
        return LocalLocation(tmp_path / "root")
    return open_location(f"{request.getfixturevalue('s3_root')}/{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3loc(s3_root):
    return open_location(f"{s3_root}/{uuid.uuid4().hex[:12]}")


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


# -- configuration ------------------------------------------------------------------------------

def test_open_location_kinds(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    assert isinstance(open_location(tmp_path), LocalLocation)
    s3 = open_location("s3://bucket/some//prefix/")
    assert isinstance(s3, S3Location) and not s3.is_local and not s3.atomic_rename
    assert s3.url == "s3://bucket/some/prefix" and s3.local_path("x") is None
    assert s3.zarr_target("motion.zarr")[0] == "s3://bucket/some/prefix/motion.zarr"
    assert open_location("s3://bucket").zarr_target("a.zarr")[0] == "s3://bucket/a.zarr"
    with pytest.raises(ValueError):
        open_location("gs://bucket/x")
    with pytest.raises(ValueError):
        parse_s3_url("s3:///x")
    with pytest.raises(ValueError):
        open_location("s3://bucket/p").read_bytes("../escape")


def test_storage_options_from_env(monkeypatch):
    for name in ("DYNASET_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert storage_options_from_env() == {"client_kwargs": {"region_name": "us-east-1"}}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://fallback:1")
    assert storage_options_from_env()["endpoint_url"] == "http://fallback:1"
    monkeypatch.setenv("DYNASET_S3_ENDPOINT_URL", "http://dynaset:2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert storage_options_from_env() == {"endpoint_url": "http://dynaset:2", "key": "k", "secret": "s",
                                          "client_kwargs": {"region_name": "eu-central-1"}}
    monkeypatch.setenv("DYNASET_S3_LOCK_TTL_S", "7.5")
    assert S3Location("s3://b/p").lock_ttl_s == 7.5
    assert S3Location("s3://b/p", lock_ttl_s=3).lock_ttl_s == 3


# -- objects ------------------------------------------------------------------------------------

def test_write_read_exists(loc):
    assert not loc.exists("a/b.json")
    loc.write_bytes("a/b.json", b'{"v": 1}')
    assert loc.read_bytes("a/b.json") == b'{"v": 1}'
    loc.write_bytes("a/b.json", b'{"v": 2}')  # overwrite
    assert loc.read_bytes("a/b.json") == b'{"v": 2}'
    assert loc.exists("a/b.json") and loc.exists("a") and not loc.exists("a/c") and not loc.exists("b")
    with pytest.raises(FileNotFoundError):
        loc.read_bytes("a/missing")


def test_walk_and_list_dirs(loc):
    files = {"r/x.bin": b"1", "r/a/1": b"22", "r/a/2": b"", "r/b/c/3": b"4444", "top": b"55555"}
    for rel, data in files.items():
        loc.write_bytes(rel, data)
    assert loc.walk("r") == [("a/1", 2), ("a/2", 0), ("b/c/3", 4), ("x.bin", 1)]
    assert loc.walk("r/b") == [("c/3", 4)]
    assert loc.walk("nope") == []
    assert [p for p, _ in loc.walk("") if not p.startswith(".")] == sorted(files)
    assert loc.list_dirs("") == ["r"]
    assert loc.list_dirs("r") == ["a", "b"]
    assert loc.list_dirs("r/a") == [] and loc.list_dirs("nope") == []


def test_sha256_streams(loc):
    data = np.random.default_rng(0).integers(0, 256, int(2.5 * 2**20), dtype=np.uint8).tobytes()
    loc.write_bytes("big.bin", data)
    loc.write_bytes("empty", b"")
    assert loc.sha256("big.bin") == hashlib.sha256(data).hexdigest()
    assert loc.sha256("empty") == hashlib.sha256(b"").hexdigest()


def test_link_or_copy(loc):
    loc.write_bytes("src/a.bin", b"payload")
    linked = loc.link_or_copy("src/a.bin", "dst/deep/a.bin")
    assert loc.read_bytes("dst/deep/a.bin") == b"payload"
    if loc.is_local:
        assert linked is True
        assert loc.local_path("src/a.bin").stat().st_ino == loc.local_path("dst/deep/a.bin").stat().st_ino
    else:
        assert linked is False  # server-side copy
        loc.write_bytes("src/a.bin", b"changed")
        assert loc.read_bytes("dst/deep/a.bin") == b"payload"
    with pytest.raises(FileNotFoundError):
        loc.link_or_copy("src/missing", "dst/missing")


def test_rename_tree(loc):
    for rel in ("stage/a", "stage/sub/b"):
        loc.write_bytes(rel, rel.encode())
    loc.rename_tree("stage", "releases/1.0.0")
    assert loc.walk("releases/1.0.0") == [("a", 7), ("sub/b", 11)]
    assert loc.read_bytes("releases/1.0.0/sub/b") == b"stage/sub/b"
    assert not loc.exists("stage") and loc.walk("stage") == []
    assert loc.list_dirs("") == ["releases"]
    loc.write_bytes("stage2/a", b"x")
    with pytest.raises(OSError):  # destination exists (and is not empty)
        loc.rename_tree("stage2", "releases/1.0.0")
    assert loc.read_bytes("releases/1.0.0/a") == b"stage/a"
    with pytest.raises(FileNotFoundError):
        loc.rename_tree("missing", "releases/2")


def test_remove_tree(loc):
    for rel in ("t/a", "t/b/c", "keep/d", "single"):
        loc.write_bytes(rel, b"x")
    loc.remove_tree("t")
    assert not loc.exists("t") and loc.walk("t") == []
    assert loc.list_dirs("") == ["keep"]  # an emptied folder is not listed (SeaweedFS keeps it)
    loc.remove_tree("single")
    assert not loc.exists("single")
    loc.remove_tree("missing")  # fine
    assert loc.read_bytes("keep/d") == b"x"


def test_put_tree_replaces(loc, tmp_path):
    v1 = _tree(tmp_path / "v1", {"a": b"old a", "b/c": b"old c", "b/d/e": b"e"})
    loc.put_tree(v1, "store.zarr")
    assert loc.walk("store.zarr") == [("a", 5), ("b/c", 5), ("b/d/e", 1)]
    v2 = _tree(tmp_path / "v2", {"a": b"new a!", "f/g": b"g"})
    loc.put_tree(v2, "store.zarr")
    assert loc.walk("store.zarr") == [("a", 6), ("f/g", 1)]  # stale b/c, b/d/e deleted
    assert loc.read_bytes("store.zarr/a") == b"new a!"
    assert loc.list_dirs("store.zarr") == ["f"]


def test_get_file(loc, tmp_path):
    loc.write_bytes("x/y.json", b"[1, 2]")
    out = tmp_path / "down" / "deep" / "y.json"
    loc.get_file("x/y.json", out)
    assert out.read_bytes() == b"[1, 2]"
    with pytest.raises(FileNotFoundError):
        loc.get_file("x/missing", tmp_path / "m")


@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")
def test_zarr_target_opens_v3_store(loc, tmp_path):
    """A sharded Zarr v3 group with consolidated metadata (like a dynaset store), uploaded with
    put_tree, opens with plain xarray.open_zarr(url, storage_options=...)."""
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {"joint_pos_m": (("frame", "joint", "xyz"), rng.normal(size=(300, 4, 3)).astype("float32")),
         "seq_frame_count": (("sequence",), np.array([100, 200], dtype="int64"))},
        coords={"joint": np.array(["pelvis", "l_hip", "r_hip", "spine"], dtype=np.dtypes.StringDType()),
                "xyz": np.array(["x", "y", "z"], dtype=np.dtypes.StringDType())},
        attrs={"schema_version": "1.0.0"},
    )
    local = tmp_path / "motion.zarr"
    ds.to_zarr(local, zarr_format=3, consolidated=True, mode="w",
               encoding={"joint_pos_m": {"chunks": (32, 4, 3), "shards": (128, 4, 3)}})
    meta = json.loads((local / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["consolidated_metadata"] is not None
    assert json.loads((local / "joint_pos_m" / "zarr.json").read_text())["codecs"][0]["name"] == "sharding_indexed"
    loc.put_tree(local, "stores/motion.zarr")
    url, opts = loc.zarr_target("stores/motion.zarr")
    assert (opts is None) == loc.is_local
    with xr.open_zarr(url, storage_options=opts) as back:
        xr.testing.assert_identical(back.load(), ds)


# -- lock ---------------------------------------------------------------------------------------

PROBE = r"""
import sys, time
from pipeline.store.location import LockError, open_location
try:
    with open_location(sys.argv[1]).lock("probe"):
        print("ACQUIRED")
except LockError as exc:
    print("REFUSED", exc)
"""


def _probe(url: str) -> str:
    """Try the root's lock from a second process (flock is per open file: a thread would not do)."""
    out = subprocess.run([sys.executable, "-c", PROBE, url], capture_output=True, text=True, timeout=120,
                         check=False, cwd=REPO, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_lock_exclusive_across_processes(loc):
    with loc.lock("release 1.2.0"):
        answer = _probe(loc.url)
        assert answer.startswith("REFUSED") and "release 1.2.0" in answer, answer
        if not loc.is_local:
            lease = json.loads(loc.read_bytes(LOCK_NAME))
            assert lease["purpose"] == "release 1.2.0" and lease["pid"] == os.getpid()
    assert _probe(loc.url) == "ACQUIRED"
    if not loc.is_local:
        assert not loc.exists(LOCK_NAME)  # released = deleted
    # released when the body raises, and its error is not masked
    with pytest.raises(RuntimeError, match="boom"), loc.lock("build"):
        raise RuntimeError("boom")
    with loc.lock("again"):
        pass


def _foreign_lease(loc: S3Location, ttl_s: float, purpose: str = "crashed build") -> None:
    now = time.time()
    loc.write_bytes(LOCK_NAME, json.dumps({
        "owner": "someone-else", "purpose": purpose, "host": "elsewhere", "pid": 424242,
        "acquired_at": "2026-01-01T00:00:00+00:00", "renewed_at": "2026-01-01T00:00:00+00:00",
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now + ttl_s)), "ttl_s": ttl_s,
    }).encode())


def test_s3_lock_refuses_valid_lease_takes_over_expired(s3loc):
    _foreign_lease(s3loc, ttl_s=60)
    with pytest.raises(LockError, match=r"crashed build \(pid 424242 on elsewhere"), s3loc.lock("build"):
        pass
    assert json.loads(s3loc.read_bytes(LOCK_NAME))["owner"] == "someone-else"  # untouched
    _foreign_lease(s3loc, ttl_s=1)
    time.sleep(2.5)  # not renewed for > ttl (LastModified / Date have 1 s resolution)
    with s3loc.lock("build"):
        assert json.loads(s3loc.read_bytes(LOCK_NAME))["purpose"] == "build"
    assert not s3loc.exists(LOCK_NAME)


def test_s3_lock_is_renewed_while_held(s3loc):
    holder = S3Location(s3loc.url, lock_ttl_s=3)
    with holder.lock("long build"):
        first = s3loc.read_bytes(LOCK_NAME)
        time.sleep(4.5)  # > ttl: only renewals keep it valid
        assert s3loc.read_bytes(LOCK_NAME) != first
        with pytest.raises(LockError, match="long build"), S3Location(s3loc.url).lock("other"):
            pass
    with S3Location(s3loc.url).lock("other"):
        pass


def test_s3_lock_lost_while_held_raises(s3loc):
    with pytest.raises(LockError, match="lost while held"), \
            S3Location(s3loc.url, lock_ttl_s=1.5).lock("stalled build"):
        _foreign_lease(s3loc, ttl_s=60, purpose="usurper")  # e.g. taken over after a long stall
        time.sleep(1.5)  # a renewal (every 0.5 s) notices
    assert json.loads(s3loc.read_bytes(LOCK_NAME))["purpose"] == "usurper"  # not deleted: not ours


RACER = r"""
import sys
from pipeline.store.location import LockError, open_location
loc = open_location(sys.argv[1])
loc.exists("warm-up")  # connect before the race
print("READY", flush=True)
for command in sys.stdin:
    if command.strip() != "GO":
        break
    try:
        with loc.lock("racer " + sys.argv[2]):
            print("ACQUIRED", flush=True)
            sys.stdin.readline()  # RELEASE
        print("RELEASED", flush=True)
    except LockError as exc:
        print("REFUSED", exc, flush=True)
"""


class Racers:
    """n processes (own event loop and S3 connection each) that try the lock at the same instant."""

    def __init__(self, url: str, n: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", RACER, url, str(i)], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, cwd=REPO, env=os.environ.copy())
                      for i in range(n)]
        for p in self.procs:
            assert p.stdout.readline().strip() == "READY"

    def round(self) -> tuple[list[int], list[str]]:
        for p in self.procs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        answers = [p.stdout.readline().strip() for p in self.procs]  # the winner holds meanwhile
        winners = [i for i, a in enumerate(answers) if a == "ACQUIRED"]
        for i in winners:
            self.procs[i].stdin.write("RELEASE\n")
            self.procs[i].stdin.flush()
            assert self.procs[i].stdout.readline().strip() == "RELEASED"
        return winners, [a for a in answers if a != "ACQUIRED"]

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def race_root(s3_root):
    return f"{s3_root}/race-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def racers(race_root):
    r = Racers(race_root, 4)
    yield r
    r.close()


def test_s3_lock_concurrent_create_one_winner(race_root, racers):
    s3loc = open_location(race_root)
    for _ in range(5):
        winners, refusals = racers.round()
        assert len(winners) == 1 and len(refusals) == 3, (winners, refusals)
        assert all(r.startswith("REFUSED") and "is busy: locked by racer" in r for r in refusals), refusals
        assert not s3loc.exists(LOCK_NAME)


def test_s3_lock_concurrent_takeover_one_winner(race_root, racers):
    s3loc = open_location(race_root)
    for _ in range(2):
        _foreign_lease(s3loc, ttl_s=1)
        time.sleep(2.5)
        winners, refusals = racers.round()
        assert len(winners) == 1 and len(refusals) == 3, (winners, refusals)
        assert all("is busy: locked by racer" in r for r in refusals), refusals
