"""A tenant's view of an object store: every key under ``tenants/<tenant>/``.

Services hand this view, never the bare store, to code that serves a request,
so one tenant's videos, cache entries and uploads cannot be named by another:
a key of tenant A simply does not exist in tenant B's view (NOT_FOUND, the
same answer as for a key that never existed).
"""

from __future__ import annotations

from typing import Any, Iterator

from ..tenancy import check_tenant
from .base import ObjectInfo, ObjectStore, check_key


def tenant_prefix(tenant: str) -> str:
    return f"tenants/{check_tenant(tenant)}/"


class TenantStore(ObjectStore):
    """``store`` seen by ``tenant``: keys are relative to the tenant's prefix."""

    def __init__(self, store: ObjectStore, tenant: str):
        self.store = store
        self.tenant = tenant
        self.prefix = tenant_prefix(tenant)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes) -> None:
        self.store.put(self._key(key), data)

    def get(self, key: str) -> bytes:
        return self.store.get(self._key(key))

    def exists(self, key: str) -> bool:
        return self.store.exists(self._key(key))

    def delete_prefix(self, prefix: str) -> None:
        self.store.delete_prefix(self._key(prefix.rstrip("/")) + "/")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for info in self.store.list(self.prefix + prefix):
            yield ObjectInfo(info.key[len(self.prefix) :], info.size, info.modified)

    def delete(self, key: str) -> None:
        self.store.delete(self._key(key))

    def check(self) -> None:
        self.store.check()

    # Conditional writes (see .conditional), when the store underneath has them.
    def conditional_writes(self) -> bool:
        supported = getattr(self.store, "conditional_writes", None)
        return bool(supported and supported())

    # Only called after conditional_writes() said yes, so the store underneath has
    # them; they are not part of ObjectStore (see .conditional), hence the Any.
    def get_tagged(self, key: str) -> tuple[bytes, str]:
        store: Any = self.store
        return store.get_tagged(self._key(key))

    def put_if_absent(self, key: str, data: bytes) -> str:
        store: Any = self.store
        return store.put_if_absent(self._key(key), data)

    def put_if_tag(self, key: str, data: bytes, tag: str) -> str:
        store: Any = self.store
        return store.put_if_tag(self._key(key), data, tag)
