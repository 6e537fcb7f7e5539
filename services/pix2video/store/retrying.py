"""A store whose operations are retried while the store is briefly unreachable
(see :mod:`pix2video.retry`); refusals (credentials, NotFound, bad keys) are
raised at once."""

from __future__ import annotations

from typing import Iterator

from ..retry import RetryPolicy, transient
from .base import ObjectInfo, ObjectStore


class RetryingStore(ObjectStore):
    """``store`` with each operation retried under ``policy``. Every operation
    is idempotent (a put writes the same bytes again), so retrying is safe."""

    def __init__(self, store: ObjectStore, policy: RetryPolicy):
        self.store = store
        self.policy = policy

    def _call(self, what: str, fn):
        return self.policy.call(lambda _timeout: fn(), transient, what=f"store {what}")

    def put(self, key: str, data: bytes) -> None:
        self._call("put", lambda: self.store.put(key, data))

    def get(self, key: str) -> bytes:
        return self._call("get", lambda: self.store.get(key))

    def exists(self, key: str) -> bool:
        return self._call("exists", lambda: self.store.exists(key))

    def delete_prefix(self, prefix: str) -> None:
        self._call("delete", lambda: self.store.delete_prefix(prefix))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._call("list", lambda: list(self.store.list(prefix))))

    def delete(self, key: str) -> None:
        self._call("delete", lambda: self.store.delete(key))

    def check(self) -> None:
        self.store.check()  # readiness wants the answer now, not after a budget of retries

    def __getattr__(self, name):  # close() and the like of the wrapped store
        return getattr(self.store, name)
