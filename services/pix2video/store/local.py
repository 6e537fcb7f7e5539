"""Latent store on local disk (embedded mode)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from pix2video_client.atomic import write_bytes_atomic

from ..errors import NotFound, Unavailable
from ..limits import echo
from .base import ObjectStore, check_key


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

    def usage_bytes(self, prefix: str) -> int:
        """Bytes stored under ``prefix`` (storage quotas)."""
        path = self._path(prefix.rstrip("/"))
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
