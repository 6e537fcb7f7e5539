"""The object-store interface that every latent store implements.

Keys are '/'-separated paths. Implementations only move bytes; the layout of
a video (objects first, manifest last, checksums) lives in :mod:`.videos`, so
a local folder and an S3 bucket behave the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


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
