"""Leases: one holder at a time for a named piece of work, across processes
that share only an object store (replicas of the inversion service).

    leases/<name>.json    {"owner": ..., "expires": <Unix seconds>, "renewed": ...}

A holder renews its lease (a heartbeat) well before it expires; a holder that
dies stops renewing, its lease expires, and the next claimant takes over. The
store offers no compare-and-swap, so a claim is a write followed, after a
short settle delay, by a read-back: of several claimants racing on a free
lease the last write wins and only its owner proceeds (the others see a live
lease held by someone else and wait). A claimant whose write lands later than
``settle`` after a rival's read-back can still win a second time; the work is
idempotent and written under per-attempt prefixes (see :mod:`.videos`), so the
worst case is the work done twice, never a corrupt result.

Expiry is compared with this machine's wall clock: replicas need clocks in
step to well under the lease's time to live (NTP gives milliseconds).

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


def read_lease(store: ObjectStore, name: str) -> LeaseRecord | None:
    """The lease as stored (live or expired), or None when there is none or it is unreadable."""
    try:
        data = json.loads(store.get(lease_key(name)))
        return LeaseRecord(str(data["owner"]), float(data["expires"]), float(data.get("renewed", 0.0)))
    except NotFound:
        return None
    except (ValueError, TypeError, KeyError):
        return None  # a torn or foreign object: treated as free, the next claim overwrites it


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

    def _write(self) -> None:
        now = self.clock()
        body = {"owner": self.owner, "expires": now + self.ttl, "renewed": now}
        self.store.put(self.key, json.dumps(body).encode())

    def holder(self) -> LeaseRecord | None:
        """The live lease of someone else, or None when it is free, expired or ours."""
        rec = read_lease(self.store, self.name)
        if rec is None or rec.owner == self.owner or not rec.live(self.clock()):
            return None
        return rec

    def try_acquire(self) -> bool:
        """Claims the lease if nobody else holds a live one; True when we hold it."""
        if self.holder() is not None:
            return False
        self._write()
        time.sleep(self.settle)  # let a racing claimant's write land before reading back
        rec = read_lease(self.store, self.name)
        self.held = rec is not None and rec.owner == self.owner
        return self.held

    def renew(self) -> None:
        """Extends our lease; raises LeaseLost when another owner holds it now."""
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
