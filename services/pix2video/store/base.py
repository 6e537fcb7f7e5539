"""The object-store interface that every latent store implements.

Keys are '/'-separated paths. Implementations only move bytes; the layout of
a video (objects first, manifest last, checksums) lives in :mod:`.videos`, so
a local folder and an S3 bucket behave the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator

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


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key (relative to the store), size and last write (Unix seconds)."""

    key: str
    size: int
    modified: float


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

    # The operations below serve clean-up, leases and readiness; they are not
    # abstract so that a store written before them still loads (and says what
    # it lacks when one is used).

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` ("" = all), in no set order."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its objects")

    def delete(self, key: str) -> None:
        """Deletes the one object ``key`` (nothing if absent)."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete single objects")

    def check(self) -> None:  # noqa: B027 - optional, with nothing to check by default
        """Raises :class:`~pix2video.errors.Unavailable` unless the store can be used
        now (readiness checks); the default has nothing to check."""
