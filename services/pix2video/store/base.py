"""The object-store interface that every latent store implements.

Keys are '/'-separated paths. Implementations only move bytes; the layout of
a video (objects first, manifest last, checksums) lives in :mod:`.videos`, so
a local folder and an S3 bucket behave the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..errors import InvalidInput


def check_key(key: str) -> str:
    """Returns ``key`` if it is a valid object key, else raises InvalidInput.

    A key is one or more '/'-separated parts, none of them empty, '.' or '..':
    no leading, trailing or doubled slash, and nothing that could climb out of
    a folder. Every store applies the same rule, so a key valid for one is
    valid for all.
    """
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"key: invalid object key {key!r}")
    return key


class ObjectStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Writes ``data`` under ``key`` atomically: a reader sees all of it or nothing."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Reads ``key``; raises :class:`~pix2video.errors.NotFound` when absent."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Deletes every key under ``prefix`` (used to clear half-written videos)."""
