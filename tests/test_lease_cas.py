"""Leases are compare-and-swap (issue 14, "one job per video across replicas"):
claimants racing on the same lease, on a real SeaweedFS and on local disk,
and exactly one of them holds it, however the writes interleave.

Each claimant has its own store object (its own connection pool: a replica of
its own), and all start at one barrier. ``settle=0``: no read-back delay to
hide a race in, so only the conditional writes keep the claim single."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid

import pytest

from pix2video.store import LocalDiskStore
from pix2video.store.conditional import WriteConflict, conditional
from pix2video.store.lease import Lease, LeaseLost, lease_key, read_lease
from pix2video.store.s3 import S3Store
from pix2video.store.tenant import TenantStore

CLAIMANTS, ROUNDS = 8, 4


@pytest.fixture(params=["s3", "local"])
def make_store(request, tmp_path):
    """A factory of store objects that all reach the same objects."""
    if request.param == "s3":
        settings = dataclasses.replace(request.getfixturevalue("s3_settings"), prefix=f"lease-{uuid.uuid4().hex[:8]}")
        return lambda: S3Store(settings)
    return lambda: LocalDiskStore(tmp_path / "store")


def _race(stores, name: str) -> list[bool]:
    barrier = threading.Barrier(len(stores))
    leases = [Lease(s, name, f"claimant-{i}", ttl=30, settle=0) for i, s in enumerate(stores)]
    won = [False] * len(stores)

    def claim(i):
        barrier.wait()
        won[i] = leases[i].try_acquire()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if sum(won) == 1:  # the one that thinks it holds the lease is the one the store names
        assert read_lease(stores[0], name).owner == f"claimant-{won.index(True)}"
    return won


def test_the_store_offers_conditional_writes(make_store):
    store = make_store()
    assert conditional(store) is store
    assert conditional(TenantStore(store, "acme")) is not None  # through a tenant's view too
    tag = store.put_if_absent("leases/x.json", b"one")
    with pytest.raises(WriteConflict):
        store.put_if_absent("leases/x.json", b"two")
    with pytest.raises(WriteConflict):
        store.put_if_tag("leases/x.json", b"three", "0" * 32)
    new = store.put_if_tag("leases/x.json", b"four", tag)
    assert store.get_tagged("leases/x.json") == (b"four", new) and new != tag


def test_racing_claimants_on_a_free_lease_one_wins(make_store):
    for round_ in range(ROUNDS):
        won = _race([make_store() for _ in range(CLAIMANTS)], f"videos/free-{round_}")
        assert sum(won) == 1, won


def test_racing_claimants_on_an_expired_lease_one_takes_it_over(make_store):
    for round_ in range(ROUNDS):
        stores = [make_store() for _ in range(CLAIMANTS)]
        name = f"videos/expired-{round_}"
        dead = {"owner": "a-dead-replica", "expires": time.time() - 1, "renewed": time.time() - 31}
        stores[0].put(lease_key(name), json.dumps(dead).encode())
        won = _race(stores, name)
        assert sum(won) == 1, won


def test_a_holder_that_lapsed_loses_its_lease_to_the_one_that_took_it_over(make_store):
    slow = Lease(make_store(), "videos/lapsed", "slow", ttl=0.3, settle=0)
    assert slow.try_acquire()
    time.sleep(0.5)  # slow missed its renewals: the lease expired
    fast = Lease(make_store(), "videos/lapsed", "fast", ttl=30, settle=0)
    assert fast.try_acquire()
    with pytest.raises(LeaseLost):
        slow.renew()  # its write would have replaced fast's lease; the condition refuses it
    assert read_lease(fast.store, "videos/lapsed").owner == "fast"
    fast.renew()  # the holder renews as often as it likes
    assert read_lease(fast.store, "videos/lapsed").owner == "fast"


def test_waiters_count_while_live_and_a_dead_ones_record_is_collected(tmp_path):
    """A claimant waiting on another's lease announces itself (the holder's job
    runs on for it when its own caller leaves); a dead waiter stops counting
    when its record expires, and `store gc` removes the record."""
    from pix2video.store.gc import collect
    from pix2video.store.lease import Waiter, live_waiters

    store = LocalDiskStore(tmp_path)
    assert live_waiters(store, "videos/v") == 0
    live = Waiter(store, "videos/v", "replica-b", ttl=30)
    live.beat()
    dead = Waiter(store, "videos/v", "replica-c", ttl=1, clock=lambda: time.time() - 7200)
    dead.beat()
    assert live_waiters(store, "videos/v") == 1
    report = collect(store, grace=3600)
    assert report.deleted == ["leases/videos/v.waiters/replica-c.json"]
    live.withdraw()
    assert live_waiters(store, "videos/v") == 0 and not list(store.list("leases/"))
