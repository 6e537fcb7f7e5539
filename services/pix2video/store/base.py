"""The object-store interface that every latent store implements.

Keys are '/'-separated paths. Implementations only move bytes; the layout of
a video (objects first, manifest last, checksums) lives in :mod:`.videos`, so
a local folder and an S3 bucket behave the same.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator

from ..errors import InvalidInput
from ..limits import echo

# Longest key a store takes (a tenant's prefix plus a client's key fit well
# within it; S3's own limit is 1024 bytes), and longest part: most file
# systems refuse names over 255 bytes.
MAX_KEY_BYTES = 1024
MAX_PART_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: str) -> str:
    """Returns ``key`` if it is a valid object key, else raises InvalidInput.

    A key is one or more '/'-separated parts, none of them empty, '.' or '..':
    no leading, trailing or doubled slash, and nothing that could climb out of
    a folder; at most MAX_KEY_BYTES of UTF-8, parts at most MAX_PART_BYTES, no
    NUL or other control characters. Every store applies the same rule before
    any file system or network call, so a key valid for one is valid for all,
    and a bad key is InvalidInput, never an OS or S3 error.
    """
    if not isinstance(key, str):
        raise InvalidInput(f"key: must be a string, got {type(key).__name__}")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:  # lone surrogates
        raise InvalidInput(f"key: not valid Unicode: {echo(key)}") from None
    if size > MAX_KEY_BYTES:
        raise InvalidInput(f"key: at most {MAX_KEY_BYTES} bytes, got {size}")
    if _CONTROL.search(key):
        raise InvalidInput(f"key: must not contain NUL or control characters: {echo(key)}")
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"key: invalid object key {echo(key)}")
    if any(len(p.encode()) > MAX_PART_BYTES for p in parts):
        raise InvalidInput(f"key: each '/'-separated part at most {MAX_PART_BYTES} bytes: {echo(key)}")
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
