"""The object-store interface that every latent store implements.

Keys are '/'-separated paths. Implementations only move bytes; the layout of
a video (objects first, manifest last, checksums) lives in :mod:`.videos`, so
a local folder and an S3 bucket behave the same.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

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
