"""Latent store on local disk (embedded mode)."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pix2video_client.atomic import write_bytes_atomic

from ..errors import NotFound, Unavailable
from ..limits import echo
from .base import ObjectInfo, ObjectStore, check_key
from .conditional import WriteConflict, content_tag


class LocalDiskStore(ObjectStore):
    """Objects as files under ``root``; writes go to a temporary file first and
    are renamed into place, so a crash never leaves a half-written object."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data, fsync=True)  # a crash never leaves a half-written object

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            # The message names no folder: it may reach a client; the detail is for logs.
            raise NotFound(f"object {echo(key)} not found", detail=f"no file {str(path)!r}") from None
        except OSError as exc:
            raise Unavailable(
                f"local store: reading an object failed ({errno.errorcode.get(exc.errno or 0, type(exc).__name__)})",
                detail=f"reading {str(path)!r}: {exc}",
            ) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".tmp-"):
                    continue  # a put in progress (or one that died): not an object
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue  # deleted while listing
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_file():
            path.unlink(missing_ok=True)

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise Unavailable(f"local store at {str(self.root)!r} is not a writable folder")

    def usage_bytes(self, prefix: str) -> int:
        """Bytes stored under ``prefix`` (storage quotas)."""
        path = self._path(prefix.rstrip("/"))
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0

    # ------------------------------------------------ conditional writes (see .conditional)

    def conditional_writes(self) -> bool:
        return True

    @contextmanager
    def _folder_locked(self, path: Path):
        """An exclusive flock on the object's folder: conditional writes there
        (from any thread or process on this machine) happen one at a time."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, content_tag(data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        path = self._path(key)
        with self._folder_locked(path):
            if path.exists():
                raise WriteConflict(f"object {echo(key)} exists")
            write_bytes_atomic(path, data, fsync=True)
        return content_tag(data)

    def put_if_tag(self, key: str, data: bytes, tag: str) -> str:
        path = self._path(key)
        with self._folder_locked(path):
            try:
                current = content_tag(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != tag:
                raise WriteConflict(f"object {echo(key)} changed")
            write_bytes_atomic(path, data, fsync=True)
        return content_tag(data)
