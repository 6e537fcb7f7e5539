"""Latent store on local disk (embedded mode)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pix2video_client.atomic import write_bytes_atomic

from ..errors import NotFound
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
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"object {key!r} not found in {str(self.root)!r}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
