"""Per-tenant quotas: work running at once, and bytes stored (no gRPC here).

The one place quota state lives. A tenant over a quota gets
:class:`~pix2video.errors.Busy` (RESOURCE_EXHAUSTED at the gRPC edge) whose
message names the quota's setting, so the caller knows which limit it hit;
other tenants are not affected. A limit of 0 means no limit.

Quotas are per process (per replica): N replicas let a tenant run N times
``max_inversions_per_tenant`` at once. Stored bytes are measured from the
store (a listing under the tenant's prefix) when first needed and again every
``refresh_seconds``, plus what this process wrote since, so writes by other
replicas are seen at the next measurement.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from .errors import Busy
from .store.base import ObjectStore


class ConcurrencyQuota:
    """At most ``limit`` units of work held at once per tenant.

    ``acquire(tenant)`` returns the release function (safe to call twice), so
    a slot can outlive the call that took it (an inversion job that goes on
    after its client left keeps its slot until it ends).
    """

    def __init__(self, name: str, limit: int):
        self.name, self.limit = name, limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def held(self, tenant: str) -> int:
        with self._lock:
            return self._held.get(tenant, 0)

    def acquire(self, tenant: str) -> Callable[[], None]:
        with self._lock:
            n = self._held.get(tenant, 0)
            if self.limit and n >= self.limit:
                raise Busy(f"{self.name}: quota reached, {n} of {self.limit} already running for this tenant")
            self._held[tenant] = n + 1
        released = [False]

        def release() -> None:
            with self._lock:
                if released[0]:
                    return
                released[0] = True
                left = self._held[tenant] - 1
                if left:
                    self._held[tenant] = left
                else:
                    del self._held[tenant]

        return release


class StorageQuota:
    """Bytes a tenant stores, checked before new work that adds to them.

    Args:
        name: the setting that holds the limit (named in the error).
        limit: bytes (0: no limit).
        measure: tenant -> bytes stored now (a listing; may be slow).
        refresh_seconds: how long a measurement is trusted.
    """

    def __init__(self, name: str, limit: int, measure: Callable[[str], int], refresh_seconds: float = 300.0):
        self.name, self.limit, self.measure, self.refresh_seconds = name, limit, measure, refresh_seconds
        self._used: dict[str, tuple[float, int]] = {}  # tenant -> (measured at, bytes)
        self._lock = threading.Lock()

    def used(self, tenant: str) -> int:
        now = time.monotonic()
        with self._lock:
            entry = self._used.get(tenant)
        if entry is None or now - entry[0] > self.refresh_seconds:
            measured = self.measure(tenant)
            with self._lock:
                self._used[tenant] = entry = (now, measured)
        return entry[1]

    def check(self, tenant: str) -> None:
        """Raises Busy when ``tenant`` is at or over the limit."""
        if not self.limit:
            return
        used = self.used(tenant)
        if used >= self.limit:
            raise Busy(f"{self.name}: quota reached, this tenant stores {used} bytes of its {self.limit}")

    def add(self, tenant: str, nbytes: int) -> None:
        """Counts bytes this process just wrote for ``tenant``."""
        with self._lock:
            entry = self._used.get(tenant)
            if entry is not None:
                self._used[tenant] = (entry[0], entry[1] + nbytes)


class CountedStore(ObjectStore):
    """A tenant's store whose writes are added to its storage quota."""

    def __init__(self, inner: ObjectStore, quota: StorageQuota, tenant: str):
        self.inner, self.quota, self.tenant = inner, quota, tenant

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        self.quota.add(self.tenant, len(data))

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete_prefix(self, prefix: str) -> None:
        self.inner.delete_prefix(prefix)

    # Leases and clean-up (store/lease.py, store/gc.py) go through the view too.
    def list(self, prefix: str = ""):
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def check(self) -> None:
        self.inner.check()

    # Conditional writes (store/conditional.py), for leases: through to the store when it has them.
    def conditional_writes(self) -> bool:
        supported = getattr(self.inner, "conditional_writes", None)
        return bool(supported and supported())

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_tagged(key)

    def put_if_absent(self, key: str, data: bytes) -> str:
        tag = self.inner.put_if_absent(key, data)
        self.quota.add(self.tenant, len(data))
        return tag

    def put_if_tag(self, key: str, data: bytes, tag: str) -> str:
        new = self.inner.put_if_tag(key, data, tag)
        self.quota.add(self.tenant, len(data))
        return new
