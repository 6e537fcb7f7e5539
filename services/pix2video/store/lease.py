"""Leases: one holder at a time for a named piece of work, across processes
that share only an object store (replicas of the inversion service).

    leases/<name>.json    {"owner": ..., "expires": <Unix seconds>, "renewed": ...}

A holder renews its lease (a heartbeat) well before it expires; a holder that
dies stops renewing, its lease expires, and the next claimant takes over.

Claims are compare-and-swap where the store offers conditional writes (see
:mod:`.conditional`: S3 with If-None-Match / If-Match, SeaweedFS and AWS
included, and the local store): a free lease is created only if absent, an
expired one replaced only if it is still the version read, and a renewal
replaces only our own last version. Of any number of claimants racing, exactly
one holds the lease (tests/test_lease_cas.py races them).

On a store without them (an S3 server that ignores the headers), a claim is a
write followed, after a short settle delay, by a read-back: the last write
wins and only its owner proceeds. A claimant whose write lands later than
``settle`` after a rival's read-back can then still win a second time; the
work is idempotent and written under per-attempt prefixes (see
:mod:`.videos`), so the worst case there is the work done twice, never a
corrupt result.

Expiry is compared with this machine's wall clock: replicas need clocks in
step to well under the lease's time to live (NTP gives milliseconds).

A claimant that waits for another's lease announces itself (a
:class:`Waiter`: a lease-shaped record under ``leases/<name>.waiters/``,
renewed while it waits), so that the holder, whose own caller went away,
runs the job on for a caller on another replica (:func:`live_waiters`).

Keys are relative to the store it is handed, so a lease taken through a
:class:`~.tenant.TenantStore` lives under that tenant's prefix.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from ..errors import NotFound, Pix2VideoError
from .base import ObjectStore, check_key
from .conditional import WriteConflict, conditional

log = logging.getLogger(__name__)

LEASE_PREFIX = "leases/"


def lease_key(name: str) -> str:
    return LEASE_PREFIX + check_key(name) + ".json"


def new_owner() -> str:
    """A name for one claimant (one replica process, one job)."""
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class LeaseRecord:
    owner: str
    expires: float
    renewed: float

    def live(self, now: float) -> bool:
        return self.expires > now


def _parse(data: bytes) -> LeaseRecord | None:
    try:
        body = json.loads(data)
        return LeaseRecord(str(body["owner"]), float(body["expires"]), float(body.get("renewed", 0.0)))
    except (ValueError, TypeError, KeyError):
        return None  # a torn or foreign object: treated as free, the next claim overwrites it


def read_lease(store: ObjectStore, name: str) -> LeaseRecord | None:
    """The lease as stored (live or expired), or None when there is none or it is unreadable."""
    try:
        return _parse(store.get(lease_key(name)))
    except NotFound:
        return None


class LeaseLost(Pix2VideoError):
    """Our lease was taken by another claimant (we stopped renewing in time)."""


class Lease:
    """A claim on ``name`` in ``store`` by ``owner``, ``ttl`` seconds at a time.

    ``try_acquire`` claims it when free or expired; while held, ``heartbeat``
    (a context manager) renews it every ``ttl / 3`` seconds in a thread.
    """

    def __init__(
        self,
        store: ObjectStore,
        name: str,
        owner: str,
        ttl: float,
        *,
        settle: float = 0.2,
        clock: Callable[[], float] = time.time,
    ):
        if ttl <= 0:
            raise ValueError(f"ttl: must be > 0, got {ttl}")
        self.store, self.name, self.owner, self.ttl = store, name, owner, ttl
        self.key = lease_key(name)
        self.settle, self.clock = settle, clock
        self.held = False
        self._cas = conditional(store)  # None: no conditional writes, write and read back
        self._tag: str | None = None  # our last version of the lease object (conditional writes)

    def _body(self) -> bytes:
        now = self.clock()
        return json.dumps({"owner": self.owner, "expires": now + self.ttl, "renewed": now}).encode()

    def _write(self) -> None:
        self.store.put(self.key, self._body())

    def _read_tagged(self) -> tuple[LeaseRecord | None, str | None]:
        try:
            data, tag = self._cas.get_tagged(self.key)
        except NotFound:
            return None, None
        return _parse(data), tag

    def _cas_acquire(self) -> bool:
        rec, tag = self._read_tagged()
        if rec is not None and rec.owner != self.owner and rec.live(self.clock()):
            return False
        try:
            if tag is None:
                self._tag = self._cas.put_if_absent(self.key, self._body())
            else:  # expired, torn or ours: replace exactly the version read
                self._tag = self._cas.put_if_tag(self.key, self._body(), tag)
        except WriteConflict:
            # A rival got there first, unless our own write landed and only its
            # answer was lost (a retried request): the read-back says which.
            rec, tag = self._read_tagged()
            if rec is None or rec.owner != self.owner:
                return False
            self._tag = tag
        return True

    def holder(self) -> LeaseRecord | None:
        """The live lease of someone else, or None when it is free, expired or ours."""
        rec = read_lease(self.store, self.name)
        if rec is None or rec.owner == self.owner or not rec.live(self.clock()):
            return None
        return rec

    def try_acquire(self) -> bool:
        """Claims the lease if nobody else holds a live one; True when we hold it."""
        if self._cas is not None:
            self.held = self._cas_acquire()
            return self.held
        if self.holder() is not None:
            return False
        self._write()
        time.sleep(self.settle)  # let a racing claimant's write land before reading back
        rec = read_lease(self.store, self.name)
        self.held = rec is not None and rec.owner == self.owner
        return self.held

    def renew(self) -> None:
        """Extends our lease; raises LeaseLost when another owner holds it now."""
        if self._cas is not None:
            try:
                self._tag = self._cas.put_if_tag(self.key, self._body(), self._tag or "")
                return
            except WriteConflict:
                rec, tag = self._read_tagged()
                if tag is None:  # deleted under us (nobody else held it): claim it again
                    self._tag = self._cas.put_if_absent(self.key, self._body())
                    return
                if rec is None or rec.owner != self.owner:  # taken over: no longer ours
                    self.held = False
                    raise LeaseLost(
                        f"lease {self.name!r}: taken over by {rec.owner if rec else 'a torn write'}"
                    ) from None
                self._tag = self._cas.put_if_tag(self.key, self._body(), tag)  # ours; only an answer was lost
                return
        rec = read_lease(self.store, self.name)
        if rec is not None and rec.owner != self.owner and rec.live(self.clock()):
            self.held = False
            raise LeaseLost(f"lease {self.name!r}: taken over by {rec.owner}")
        self._write()

    def release(self) -> None:
        """Gives the lease up (deletes it if it is still ours); best effort."""
        if not self.held:
            return
        self.held = False
        try:
            rec = read_lease(self.store, self.name)
            if rec is not None and rec.owner == self.owner:
                self.store.delete(self.key)
        except Pix2VideoError as exc:  # the store is down: the lease expires on its own
            log.warning("lease %s: not released (%s); it expires in %.0f s", self.name, exc, self.ttl)

    def heartbeat(self) -> "_Heartbeat":
        return _Heartbeat(self)


class _Heartbeat:
    """Renews a held lease every ttl/3 seconds until the block ends, then releases it.

    A renewal that fails (store down) is retried at the next beat; the lease
    expires only if the store stays unreachable for a whole ttl.
    """

    def __init__(self, lease: Lease):
        self.lease = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.name}", daemon=True)
        self.lost = False

    def _run(self) -> None:
        while not self._stop.wait(self.lease.ttl / 3):
            try:
                self.lease.renew()
            except LeaseLost as exc:
                self.lost = True
                log.warning("%s", exc)
                return
            except Pix2VideoError as exc:
                log.warning("lease %s: renewal failed (%s); retrying", self.lease.name, exc)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.lease.release()


WAITERS = ".waiters/"


def _waiters_prefix(name: str) -> str:
    return LEASE_PREFIX + check_key(name) + WAITERS


class Waiter:
    """``owner`` waits for the holder of lease ``name``: a record that says so,
    written at most every ``ttl / 3`` seconds by :meth:`beat` and expiring
    after ``ttl`` (a waiter that dies stops counting; ``store gc`` removes the
    record as it does an expired lease). Best effort: a store error is logged,
    never raised, since waiting goes on without it."""

    def __init__(self, store: ObjectStore, name: str, owner: str, ttl: float, clock: Callable[[], float] = time.time):
        self.store, self.owner, self.ttl, self.clock = store, owner, ttl, clock
        self.key = _waiters_prefix(name) + check_key(owner) + ".json"
        self._written = 0.0

    def beat(self) -> None:
        now = self.clock()
        if self._written and now - self._written < self.ttl / 3:
            return
        body = {"owner": self.owner, "expires": now + self.ttl, "renewed": now}
        try:
            self.store.put(self.key, json.dumps(body).encode())
            self._written = now
        except Pix2VideoError as exc:
            log.warning("waiter %s: not announced (%s)", self.key, exc)

    def withdraw(self) -> None:
        if not self._written:
            return
        self._written = 0.0
        try:
            self.store.delete(self.key)
        except Pix2VideoError as exc:  # it expires on its own
            log.warning("waiter %s: not withdrawn (%s); it expires in %.0f s", self.key, exc, self.ttl)


def live_waiters(store: ObjectStore, name: str, clock: Callable[[], float] = time.time) -> int:
    """Claimants (on any replica) waiting now for the holder of lease ``name``."""
    now, count = clock(), 0
    for info in store.list(_waiters_prefix(name)):
        try:
            rec = _parse(store.get(info.key))
        except NotFound:
            continue  # withdrawn while we looked
        if rec is not None and rec.live(now):
            count += 1
    return count
