"""Where a dataset root lives: a local folder or an ``s3://`` prefix, behind one small interface.

Releases, the ingestion ledger and verification only use the operations below, so the same code
publishes to a local disk (hard links, atomic rename) and to an S3-compatible object store
(server-side copies; a release exists once its ``manifest.json`` is written, last).

Paths given to the methods are POSIX paths *relative to the root* (``"releases/1.0.0/manifest.json"``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

BLOCK = 1 << 20


class Location:
    """A dataset root. Subclasses: ``LocalLocation`` (a folder), ``S3Location`` (an ``s3://`` prefix)."""

    url: str
    is_local: bool = False
    atomic_rename: bool = False
    """True where ``rename_tree`` is one atomic step (local filesystems)."""

    def exists(self, rel: str) -> bool:
        """Whether an object (or, locally, a file or folder) ``rel`` exists."""
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one object; readers see the old object or the new one, never a partial one."""
        raise NotImplementedError

    def walk(self, rel: str) -> list[tuple[str, int]]:
        """Every object under ``rel`` as (path relative to ``rel``, size in bytes), sorted by path."""
        raise NotImplementedError

    def list_dirs(self, rel: str) -> list[str]:
        """Names of the immediate sub-folders (prefixes) of ``rel``, sorted."""
        raise NotImplementedError

    def sha256(self, rel: str) -> str:
        """Hex sha256 of object ``rel``, streamed in 1 MiB blocks."""
        raise NotImplementedError

    def link_or_copy(self, src: str, dst: str) -> bool:
        """Make object ``dst`` hold the bytes of ``src``: a hard link where possible (returns True),
        else a copy (server-side on S3; returns False)."""
        raise NotImplementedError

    def rename_tree(self, src: str, dst: str) -> None:
        """Move folder ``src`` to ``dst`` (must not exist). Atomic only if ``atomic_rename``."""
        raise NotImplementedError

    def remove_tree(self, rel: str) -> None:
        """Delete everything under ``rel`` (missing is fine)."""
        raise NotImplementedError

    def put_tree(self, local_dir: Path, rel: str) -> None:
        """Upload (or copy) the local folder ``local_dir`` to ``rel``, replacing what was there."""
        raise NotImplementedError

    def get_file(self, rel: str, local_path: Path) -> None:
        """Download (or copy) object ``rel`` to ``local_path``."""
        raise NotImplementedError

    def zarr_target(self, rel: str) -> tuple[str, dict | None]:
        """``(url_or_path, storage_options)`` to open the store at ``rel`` with ``xarray.open_zarr``."""
        raise NotImplementedError

    def lock(self, purpose: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive lock on the dataset root for a build or a release; raises ``LockError`` if held.

        A crashed holder never keeps it: locally the kernel drops a dead process's ``flock``; on S3
        the lock is a lease that expires unless its holder renews it.
        """
        raise NotImplementedError

    def local_path(self, rel: str = "") -> Path | None:
        """The local path of ``rel`` for a local root, else None."""
        return None


class LockError(RuntimeError):
    """The dataset root is locked by another build or release."""


def open_location(root: str | os.PathLike) -> Location:
    """The ``Location`` for a local path or an ``s3://bucket/prefix`` URL."""
    text = os.fspath(root)
    if text.startswith("s3://"):
        from .location_s3 import S3Location

        return S3Location(text)
    if "://" in text:
        raise ValueError(f"unsupported dataset root {text!r}: use a local path or s3://bucket/prefix")
    return LocalLocation(Path(text))


def sha256_stream(f, block: int = BLOCK) -> str:
    h = hashlib.sha256()
    while chunk := f.read(block):
        h.update(chunk)
    return h.hexdigest()


class LocalLocation(Location):
    """A dataset root on a local (POSIX) filesystem."""

    is_local = True
    atomic_rename = True

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def local_path(self, rel: str = "") -> Path:
        return self._p(rel)

    def exists(self, rel: str) -> bool:
        return self._p(rel).exists()

    def read_bytes(self, rel: str) -> bytes:
        return self._p(rel).read_bytes()

    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self._p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def walk(self, rel: str) -> list[tuple[str, int]]:
        base = self._p(rel)
        out = []
        for dirpath, _, files in os.walk(base):
            for name in files:
                p = Path(dirpath) / name
                out.append((p.relative_to(base).as_posix(), p.stat().st_size))
        return sorted(out)

    def list_dirs(self, rel: str) -> list[str]:
        base = self._p(rel)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def sha256(self, rel: str) -> str:
        with open(self._p(rel), "rb") as f:
            return sha256_stream(f)

    def link_or_copy(self, src: str, dst: str) -> bool:
        s, d = self._p(src), self._p(dst)
        d.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(s, d)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
        shutil.copy2(s, d)
        return False

    def rename_tree(self, src: str, dst: str) -> None:
        d = self._p(dst)
        d.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self._p(src), d)  # fails if dst exists and is not empty
        _fsync_dir(d.parent)

    def remove_tree(self, rel: str) -> None:
        p = self._p(rel)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()

    def put_tree(self, local_dir: Path, rel: str) -> None:
        dst = self._p(rel)
        if Path(local_dir).resolve() == dst.resolve():
            return
        tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex}")
        shutil.copytree(local_dir, tmp)
        from .staging import replace_dir

        replace_dir(tmp, dst)

    def get_file(self, rel: str, local_path: Path) -> None:
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self._p(rel), local_path)

    def zarr_target(self, rel: str) -> tuple[str, dict | None]:
        return str(self._p(rel)), None

    @contextlib.contextmanager
    def lock(self, purpose: str) -> Iterator[None]:
        import fcntl
        import json
        import socket
        import time

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".dynaset.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
                raise LockError(
                    f"dataset root {self.root} is busy: locked by {holder}; "
                    "wait for it to finish (a crashed process releases the lock automatically)"
                ) from None
            info = json.dumps({"purpose": purpose, "pid": os.getpid(), "host": socket.gethostname(),
                               "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a local text file by rename: readers (and hard links of the old file, e.g. in a
    release) keep the old bytes; nobody sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
