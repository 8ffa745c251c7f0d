"""A dataset root on S3-compatible object storage (``s3://bucket/prefix``), through s3fs.

Configuration comes from the environment (docs/object_storage.md):

``DYNASET_S3_ENDPOINT_URL``   endpoint of an S3-compatible server (falls back to ``AWS_ENDPOINT_URL``;
                              unset: AWS S3)
``AWS_ACCESS_KEY_ID``         credentials (unset: botocore's usual chain: profile, instance role, ...)
``AWS_SECRET_ACCESS_KEY``
``AWS_SESSION_TOKEN``         optional
``AWS_DEFAULT_REGION``        default ``us-east-1``
``DYNASET_S3_LOCK_TTL_S``     lifetime of the root's lock lease in seconds (default 60)

What is atomic here: one object write (a PUT, or a completed multipart upload). Nothing spanning
several objects is: ``rename_tree`` copies then deletes (``atomic_rename`` is False), so releases are
published manifest-last. The root lock is a lease object created with a conditional PUT
(``If-None-Match: *``) and renewed / taken over / released with ``If-Match`` on its ETag.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .location import BLOCK, Location, LockError

log = logging.getLogger(__name__)

LOCK_NAME = ".dynaset.lock"
DEFAULT_LOCK_TTL_S = 60.0
CONCURRENCY = 32
"""Parallel requests for tree operations (uploads, copies)."""


def storage_options_from_env() -> dict:
    """s3fs ``storage_options`` (also what ``xarray.open_zarr`` takes) from the environment."""
    opts: dict = {}
    endpoint = os.environ.get("DYNASET_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        opts["key"], opts["secret"] = key, secret
        if token := os.environ.get("AWS_SESSION_TOKEN"):
            opts["token"] = token
    opts["client_kwargs"] = {"region_name": os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    return opts


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    prefix = "/".join(p for p in prefix.split("/") if p)
    if any(p in (".", "..") for p in prefix.split("/")):
        raise ValueError(f"'.' or '..' in {url!r}")
    return bucket, prefix


def _s3_error(exc: BaseException) -> tuple[str, int]:
    """(error code, HTTP status) of an s3fs-translated botocore error; ("", 0) if none."""
    for e in (exc, exc.__cause__):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            code = str(resp.get("Error", {}).get("Code", ""))
            status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return code, status
    return "", 0


def _precondition_failed(exc: BaseException) -> bool:
    """412 (the condition did not hold) or 409 (a concurrent conditional write won)."""
    code, status = _s3_error(exc)
    return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


def _not_implemented(exc: BaseException) -> bool:
    code, status = _s3_error(exc)
    return status == 501 or code == "NotImplemented"


class S3Location(Location):
    """A dataset root at ``s3://bucket/prefix`` on AWS S3 or an S3-compatible server."""

    is_local = False
    atomic_rename = False

    def __init__(self, url: str, *, lock_ttl_s: float | None = None, storage_options: dict | None = None):
        import s3fs

        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.storage_options = storage_options if storage_options is not None else storage_options_from_env()
        if lock_ttl_s is None:
            lock_ttl_s = float(os.environ.get("DYNASET_S3_LOCK_TTL_S") or DEFAULT_LOCK_TTL_S)
        if not lock_ttl_s > 0:
            raise ValueError(f"lock TTL must be > 0 s, got {lock_ttl_s}")
        self.lock_ttl_s = float(lock_ttl_s)
        # own instance, no listings cache: other processes write the same root
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **self.storage_options)

    def __repr__(self) -> str:
        return f"S3Location({self.url!r})"

    # -- paths -------------------------------------------------------------------------------

    def _key(self, rel: str) -> str:
        """Object key (no bucket) of ``rel``; ``""`` is the root prefix itself."""
        parts = [p for p in os.fspath(rel).split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"'.' or '..' in path {rel!r}")
        return "/".join(([self.prefix] if self.prefix else []) + parts)

    def _dir(self, rel: str) -> str:
        """Listing prefix of folder ``rel``: its key plus ``/`` (``""`` at a bucket's root)."""
        key = self._key(rel)
        return key + "/" if key else ""

    def _path(self, rel: str) -> str:
        """s3fs path (``bucket/key``)."""
        key = self._key(rel)
        return f"{self.bucket}/{key}" if key else self.bucket

    # -- async plumbing ----------------------------------------------------------------------

    def _sync(self, coro_fn, *args, **kwargs):
        from fsspec.asyn import sync

        return sync(self.fs.loop, coro_fn, *args, **kwargs)

    async def _call(self, method: str, **kwargs):
        return await self.fs._call_s3(method, Bucket=self.bucket, **kwargs)

    async def _list(self, prefix: str, delimiter: str | None = None) -> tuple[list[dict], list[str]]:
        """All objects (dicts with Key, Size, ...) and common prefixes under ``prefix``."""
        objects: list[dict] = []
        prefixes: list[str] = []
        kw = {"Prefix": prefix}
        if delimiter:
            kw["Delimiter"] = delimiter
        token = None
        while True:
            if token:
                kw["ContinuationToken"] = token
            resp = await self._call("list_objects_v2", **kw)
            objects += resp.get("Contents", [])
            prefixes += [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
            if not resp.get("IsTruncated"):
                return objects, prefixes
            token = resp.get("NextContinuationToken")
            if not token:  # very old servers: continue after the last key
                kw.pop("ContinuationToken", None)
                kw["StartAfter"] = (objects[-1]["Key"] if objects else prefixes[-1])

    async def _keys(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every real object under ``prefix`` (folder markers ``…/`` left out)."""
        objects, _ = await self._list(prefix)
        return [(o["Key"], int(o.get("Size", 0))) for o in objects if not o["Key"].endswith("/")]

    async def _has_objects(self, prefix: str) -> bool:
        """Whether a real object exists under ``prefix`` (SeaweedFS lists emptied folders, and consoles
        create zero-byte ``…/`` markers: neither counts)."""
        kw = {"Prefix": prefix, "MaxKeys": 100}
        while True:
            resp = await self._call("list_objects_v2", **kw)
            if any(not o["Key"].endswith("/") for o in resp.get("Contents", [])):
                return True
            if not resp.get("IsTruncated") or not resp.get("NextContinuationToken"):
                return False
            kw["ContinuationToken"] = resp["NextContinuationToken"]

    async def _gather(self, coros) -> list:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(c):
            async with sem:
                return await c

        return await asyncio.gather(*(one(c) for c in coros))

    async def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            resp = await self._call("delete_objects", Delete={"Objects": [{"Key": k} for k in batch],
                                                              "Quiet": True})
            if errors := resp.get("Errors"):
                e = errors[0]
                raise OSError(f"could not delete {len(errors)} object(s) from s3://{self.bucket}, first "
                              f"{e.get('Key')}: {e.get('Code')} {e.get('Message')}")

    # -- Location ----------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        async def run():
            key = self._key(rel)
            if key:
                try:
                    await self._call("head_object", Key=key)
                    return True
                except FileNotFoundError:
                    pass
            return await self._has_objects(self._dir(rel))

        return self._sync(run)

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        # one PUT (a multipart upload above s3fs's block size): readers see the old or the new object
        self.fs.pipe_file(self._path(rel), bytes(data))

    def walk(self, rel: str) -> list[tuple[str, int]]:
        prefix = self._dir(rel)
        keys = self._sync(self._keys, prefix)
        return sorted((k[len(prefix):], size) for k, size in keys)

    def list_dirs(self, rel: str) -> list[str]:
        async def run():
            prefix = self._dir(rel)
            _, prefixes = await self._list(prefix, delimiter="/")
            real = await self._gather([self._has_objects(p) for p in prefixes])
            return sorted(p[len(prefix):].rstrip("/") for p, ok in zip(prefixes, real) if ok)

        return self._sync(run)

    def sha256(self, rel: str) -> str:
        async def run():
            resp = await self._call("get_object", Key=self._key(rel))
            body = resp["Body"]
            h = hashlib.sha256()
            try:
                while chunk := await body.read(BLOCK):
                    h.update(chunk)
            finally:
                body.close()
            return h.hexdigest()

        return self._sync(run)

    def link_or_copy(self, src: str, dst: str) -> bool:
        # server-side CopyObject (a multipart copy above 5 GB)
        self._sync(self.fs._cp_file, self._path(src), self._path(dst))
        return False

    def rename_tree(self, src: str, dst: str) -> None:
        """Server-side copy of every object, then delete the sources: NOT atomic (a crash leaves both,
        or a partial ``dst``); publish by writing a marker object last."""

        async def run():
            src_prefix, dst_prefix = self._dir(src), self._dir(dst)
            if await self._has_objects(dst_prefix):
                raise FileExistsError(f"{self.url}/{dst} exists and is not empty")
            keys = await self._keys(src_prefix)
            if not keys:
                raise FileNotFoundError(f"{self.url}/{src}: no such folder")
            await self._gather([self.fs._cp_file(f"{self.bucket}/{k}",
                                                   f"{self.bucket}/{dst_prefix}{k[len(src_prefix):]}")
                                for k, _ in keys])
            await self._delete_keys([k for k, _ in keys])

        self._sync(run)

    def remove_tree(self, rel: str) -> None:
        async def run():
            keys = [o["Key"] for o in (await self._list(self._dir(rel)))[0]]  # folder markers too
            key = self._key(rel)
            if key:
                try:
                    await self._call("head_object", Key=key)
                    keys.append(key)
                except FileNotFoundError:
                    pass
            await self._delete_keys(keys)

        self._sync(run)

    def put_tree(self, local_dir: Path, rel: str) -> None:
        """Upload every file of ``local_dir`` under ``rel`` (new objects first), then delete the objects
        under ``rel`` that are not in the new tree. Readers during the upload may see a mix."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise NotADirectoryError(f"{local_dir} is not a folder")
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        prefix = self._dir(rel)
        new_keys = {prefix + p.relative_to(local_dir).as_posix(): p for p in files}

        async def run():
            await self._gather([self.fs._put_file(str(p), f"{self.bucket}/{k}") for k, p in new_keys.items()])
            objects, _ = await self._list(prefix)
            await self._delete_keys([o["Key"] for o in objects if o["Key"] not in new_keys])

        self._sync(run)

    def get_file(self, rel: str, local_path: Path) -> None:
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = local_path.with_name(f".{local_path.name}.tmp-{uuid.uuid4().hex}")
        try:
            self.fs.get_file(self._path(rel), str(tmp))
            os.replace(tmp, local_path)
        finally:
            tmp.unlink(missing_ok=True)

    def zarr_target(self, rel: str) -> tuple[str, dict | None]:
        return f"s3://{self._path(rel)}", json.loads(json.dumps(self.storage_options))

    @contextlib.contextmanager
    def lock(self, purpose: str) -> Iterator[None]:
        lease = S3Lease(self, purpose)
        lease.acquire()
        try:
            yield
        except BaseException:
            try:
                lease.release(raise_if_lost=False)
            except Exception:  # never mask the body's own error
                log.exception("could not release the lock on %s", self.url)
            raise
        lease.release(raise_if_lost=True)


class S3Lease:
    """The lock of an S3 dataset root: object ``<root>/.dynaset.lock`` holding
    ``{owner, purpose, host, pid, acquired_at, renewed_at, expires_at, ttl_s}``.

    - acquire: ``PUT If-None-Match: *`` (create only if absent). If a lease exists and is still valid,
      ``LockError`` names its holder. If it expired (not renewed for ``ttl_s`` — its holder crashed or
      hung), it is taken over with ``PUT If-Match: <its ETag>``, so of several processes taking over
      the same expired lease exactly one wins.
    - Expiry uses the server's clock only: the lease's ``LastModified`` (set by the server at each
      renewal) against the ``Date`` header of the server's response, so client clock skew does not
      matter. ``expires_at`` in the body is informative.
    - while held, a daemon thread rewrites it every ``ttl_s / 3`` with ``If-Match`` on our last ETag;
      if that fails because someone else now holds it (we stalled past the TTL), the lease is lost
      and leaving the ``with`` block raises ``LockError``.
    - release: ``DELETE If-Match: <our ETag>``: only our own lease is deleted (a server without
      conditional DELETE: read back, delete if still ours — a small race window).
    """

    def __init__(self, loc: S3Location, purpose: str):
        self.loc = loc
        self.purpose = purpose
        self.ttl_s = loc.lock_ttl_s
        self.key = loc._key(LOCK_NAME)
        self.owner = uuid.uuid4().hex
        self.acquired_at = _now_iso()
        self.etag: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- requests ----------------------------------------------------------------------------

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({
            "owner": self.owner, "purpose": self.purpose, "host": socket.gethostname(), "pid": os.getpid(),
            "acquired_at": self.acquired_at, "renewed_at": _iso(now), "expires_at": _iso(now + self.ttl_s),
            "ttl_s": self.ttl_s,
        }).encode()

    def _put(self, **cond) -> str:
        resp = self.loc.fs.call_s3("put_object", Bucket=self.loc.bucket, Key=self.key, Body=self._body(),
                                   ContentType="application/json", **cond)
        return resp["ETag"]

    def _read(self) -> tuple[dict, str, bool] | None:
        """(lease body, ETag, expired by the server's clock) of the current lease, None if absent."""
        try:
            resp = self.loc.fs.call_s3("get_object", Bucket=self.loc.bucket, Key=self.key)
        except FileNotFoundError:
            return None
        body = resp["Body"]
        try:
            raw = self.loc._sync(body.read)
        finally:
            body.close()
        try:
            info = json.loads(raw)
        except ValueError:
            info = None
        if not isinstance(info, dict):
            info = {"owner": None, "holder": f"an unreadable lease ({raw[:80]!r})"}
        try:
            ttl = float(info.get("ttl_s") or self.ttl_s)
        except (TypeError, ValueError):
            ttl = self.ttl_s
        modified = resp.get("LastModified")
        date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if modified is not None and date:
            server_now = email.utils.parsedate_to_datetime(date)
            expired = (server_now - modified).total_seconds() >= ttl
        else:  # no server clock to go by: the holder's own expiry time
            try:
                expired = dt.datetime.fromisoformat(info["expires_at"]).timestamp() <= time.time()
            except (KeyError, TypeError, ValueError):
                expired = True
        return info, resp["ETag"], expired

    # -- protocol ----------------------------------------------------------------------------

    def acquire(self) -> None:
        for _ in range(10):
            try:
                self.etag = self._put(IfNoneMatch="*")
                break
            except (FileExistsError, OSError) as exc:
                if _not_implemented(exc):
                    raise LockError(f"{self.loc.url}: this S3 server does not support conditional writes "
                                    "(If-None-Match), which the dynaset lock needs") from exc
                if not (isinstance(exc, FileExistsError) or _precondition_failed(exc)):
                    raise
            current = self._read()
            if current is None:  # released in between: try again
                continue
            info, etag, expired = current
            if info.get("owner") == self.owner:  # our own create landed (a retried request)
                self.etag = etag
                break
            if not expired:
                raise LockError(f"dataset root {self.loc.url} is busy: locked by {_holder(info)}; wait for it "
                                f"to finish (a crashed holder's lease expires {info.get('ttl_s', '?')} s after "
                                "its last renewal)")
            log.warning("taking over the expired lock of %s on %s", _holder(info), self.loc.url)
            try:
                self.etag = self._put(IfMatch=etag)
                break
            except OSError as exc:
                if not _precondition_failed(exc):
                    raise
                # someone else took it over (or its holder renewed it): look again
        else:
            raise LockError(f"dataset root {self.loc.url}: could not acquire its lock (contention)")
        self._thread = threading.Thread(target=self._renew_loop, name=f"dynaset-lease-{self.owner[:8]}",
                                        daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except Exception as exc:  # noqa: BLE001 - the thread must not die on a transient error
                if not _precondition_failed(exc):
                    log.warning("could not renew the lock on %s (will retry): %s", self.loc.url, exc)
                    continue
                try:
                    current = self._read()
                except Exception as exc2:  # noqa: BLE001
                    log.warning("could not read the lock on %s (will retry): %s", self.loc.url, exc2)
                    continue
                if current is not None and current[0].get("owner") == self.owner:
                    self.etag = current[1]  # our renewal landed but its response was lost
                    continue
                holder = "nobody (deleted)" if current is None else _holder(current[0])
                self.lost = f"the lock on {self.loc.url} was lost while held (now held by {holder})"
                log.error("%s", self.lost)
                return

    def release(self, raise_if_lost: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost is None:
            try:
                self.loc.fs.call_s3("delete_object", Bucket=self.loc.bucket, Key=self.key, IfMatch=self.etag)
            except FileNotFoundError:
                self.lost = f"the lock on {self.loc.url} was deleted by someone else while held"
            except OSError as exc:
                unconditional = _not_implemented(exc)  # a server without conditional DELETE
                if not (unconditional or _precondition_failed(exc)):
                    raise
                current = self._read()
                if current is not None and current[0].get("owner") == self.owner:
                    # still ours; without conditional DELETE a takeover could slip in right here
                    cond = {} if unconditional else {"IfMatch": current[1]}
                    self.loc.fs.call_s3("delete_object", Bucket=self.loc.bucket, Key=self.key, **cond)
                elif current is not None:
                    self.lost = (f"the lock on {self.loc.url} was taken over while held "
                                 f"(now held by {_holder(current[0])})")
        if self.lost:
            if raise_if_lost:
                raise LockError(self.lost + "; another process may have written the root concurrently")
            log.error("%s", self.lost)


def _holder(info: dict) -> str:
    if "holder" in info:
        return info["holder"]
    return (f"{info.get('purpose', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"since {info.get('acquired_at', '?')}, lease until {info.get('expires_at', '?')})")


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def _now_iso() -> str:
    return _iso(time.time())
