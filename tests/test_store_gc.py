"""Leases and `pix2video store gc` on real stores: a local folder, tenants'
views of it, and the S3 server (SeaweedFS)."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest
import torch

from pix2video.cli import main
from pix2video.errors import FailedPrecondition, InvalidInput, Unavailable
from pix2video.retry import RetryPolicy, deadline, transient
from pix2video.store import LocalDiskStore, Manifest, read_manifest, write_video_record
from pix2video.store.gc import collect, parse_duration
from pix2video.store.lease import Lease, lease_key, read_lease
from pix2video.store.retrying import RetryingStore
from pix2video.store.s3 import S3Store, StoreDenied
from pix2video.store.tenant import TenantStore
from pix2video.store.videos import frame_key

HOUR = 3600.0


def _video(store, video_id: str, frames: int = 3) -> Manifest:
    m = Manifest(video_id, frames, 64, 64, 4, "a ball", "{}", 10.0)
    return write_video_record(store, m, torch.zeros(frames, 4, 8, 8), torch.zeros(frames, 1, 8, 8))


def _orphan(store, video_id: str, attempt: str = "deadbeef0000", frames: int = 2) -> list[str]:
    keys = [frame_key(video_id, i, attempt) for i in range(frames)]
    for k in keys:
        store.put(k, b"half-written")
    return keys


def _age(root, keys, seconds: float) -> None:
    """Backdates local objects (what time does to them)."""
    then = time.time() - seconds
    for k in keys:
        os.utime(os.path.join(root, *k.split("/")), (then, then))


def _all(store) -> set[str]:
    return {o.key for o in store.list()}


# ---------------------------------------------------------------- gc


def test_gc_deletes_orphan_attempts_past_grace_and_keeps_videos(tmp_path):
    store = LocalDiskStore(tmp_path)
    kept = _video(store, "v1")
    old = _orphan(store, "v1", "old000000000")  # a dead attempt beside a complete video
    lone = _orphan(store, "v2")  # a video whose only attempt died
    young = _orphan(store, "v3")  # may still be written
    _age(tmp_path, old + lone + list(kept.checksums) + ["videos/v1/manifest.json"], 2 * HOUR)  # all past grace
    before = _all(store)

    dry = collect(store, grace=HOUR, dry_run=True)
    assert sorted(dry.deleted) == sorted(old + lone)
    assert _all(store) == before  # dry run: nothing goes

    report = collect(store, grace=HOUR)
    assert sorted(report.deleted) == sorted(old + lone)
    left = _all(store)
    assert left == before - set(old + lone)
    assert set(young) <= left
    assert read_manifest(store, "v1") == kept  # the video is whole
    assert set(kept.checksums) <= left


def test_gc_spares_an_attempt_under_a_live_lease_and_drops_expired_leases(tmp_path):
    store = LocalDiskStore(tmp_path)
    writing = _orphan(store, "v1")
    _age(tmp_path, writing, 2 * HOUR)  # a long job: its first frames are old
    live = Lease(store, "videos/v1", "replica-a", ttl=60, settle=0)
    assert live.try_acquire()
    stale = Lease(store, "videos/v2", "replica-b", ttl=1, settle=0, clock=lambda: time.time() - 2 * HOUR)
    assert stale.try_acquire()
    report = collect(store, grace=HOUR)
    assert report.deleted == [lease_key("videos/v2")]
    assert set(writing) <= _all(store)


def test_gc_retention_removes_old_videos_manifest_first(tmp_path):
    store = LocalDiskStore(tmp_path)
    old, new = _video(store, "old"), _video(store, "new")
    old_keys = [k for k in _all(store) if k.startswith("videos/old/")]
    _age(tmp_path, old_keys, 40 * 86400)
    report = collect(store, grace=HOUR, retention=30 * 86400)
    assert report.videos_removed == 1
    assert report.deleted[0] == "videos/old/manifest.json"  # readers see no video before objects go
    assert read_manifest(store, "old") is None and not [k for k in _all(store) if k.startswith("videos/old/")]
    assert read_manifest(store, "new") == new
    assert old.video_id == "old"


def test_gc_walks_every_tenant_on_the_bare_store_and_one_through_a_view(tmp_path):
    bare = LocalDiskStore(tmp_path)
    a, b = TenantStore(bare, "acme"), TenantStore(bare, "globex")
    _video(a, "v1")
    orphans_a = _orphan(a, "v2")
    orphans_b = _orphan(b, "v3")
    _age(tmp_path, ["tenants/acme/" + k for k in orphans_a] + ["tenants/globex/" + k for k in orphans_b], 2 * HOUR)

    view = collect(a, grace=HOUR, tenants=False)  # one tenant's view: its own part only
    assert sorted(view.deleted) == sorted(orphans_a)
    assert set(orphans_b) <= {o.key for o in b.list()}

    whole = collect(bare, grace=HOUR)
    assert whole.deleted == ["tenants/globex/" + k for k in orphans_b]
    assert read_manifest(a, "v1") is not None


def test_gc_leaves_a_corrupt_manifest_for_someone_to_look_at(tmp_path):
    store = LocalDiskStore(tmp_path)
    keys = _orphan(store, "v1")
    store.put("videos/v1/manifest.json", b"{not json")
    _age(tmp_path, keys, 2 * HOUR)
    report = collect(store, grace=HOUR)
    assert report.deleted == [] and report.skipped and "videos/v1/" in report.skipped[0]


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("30d", 2592000)])
def test_durations(text, seconds):
    assert parse_duration(text, "--grace") == seconds


@pytest.mark.parametrize("text", ["", "x", "-1h", "1w", "inf", "nan"])
def test_bad_durations_name_the_flag(text):
    with pytest.raises(InvalidInput, match="--grace"):
        parse_duration(text, "--grace")


def test_store_gc_command(tmp_path, capsys):
    store = LocalDiskStore(tmp_path)
    _video(store, "v1")
    orphans = _orphan(store, "v2")
    _age(tmp_path, orphans, 2 * HOUR)
    assert main(["store", "gc", "--dry-run", "--store", "local", "--store-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out.split() == sorted(orphans) and "would delete 2 objects" in out.err
    assert set(orphans) <= _all(store)
    assert main(["store", "gc", "--grace", "30m", "--store", "local", "--store-dir", str(tmp_path)]) == 0
    assert not set(orphans) & _all(store)
    capsys.readouterr()
    assert main(["store", "gc", "--grace", "soon", "--store", "local", "--store-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--grace" in err
    assert main(["store", "gc", "--store", "s3"]) == 2  # no endpoint: names the setting
    assert "s3_endpoint" in capsys.readouterr().err


# ---------------------------------------------------------------- leases


def test_lease_is_exclusive_until_it_expires(tmp_path):
    store = LocalDiskStore(tmp_path)
    now = [1000.0]
    a = Lease(store, "videos/v", "a", ttl=10, settle=0, clock=lambda: now[0])
    b = Lease(store, "videos/v", "b", ttl=10, settle=0, clock=lambda: now[0])
    assert a.try_acquire() and not b.try_acquire()
    now[0] += 9
    a.renew()  # a heartbeat
    now[0] += 9
    assert not b.try_acquire()  # renewed: still a's
    now[0] += 2
    assert b.try_acquire()  # a stopped renewing (died): b takes over
    assert read_lease(store, "videos/v").owner == "b"
    b.release()
    assert read_lease(store, "videos/v") is None


def test_heartbeat_renews_then_releases(tmp_path):
    store = LocalDiskStore(tmp_path)
    lease = Lease(store, "videos/v", "a", ttl=0.3, settle=0)
    assert lease.try_acquire()
    first = read_lease(store, "videos/v").expires
    with lease.heartbeat():
        time.sleep(0.5)
        assert read_lease(store, "videos/v").expires > first  # renewed past its first expiry
        assert not Lease(store, "videos/v", "b", ttl=1, settle=0).try_acquire()
    assert read_lease(store, "videos/v") is None


def test_leases_through_a_tenant_view_live_in_its_prefix(tmp_path):
    bare = LocalDiskStore(tmp_path)
    lease = Lease(TenantStore(bare, "acme"), "videos/v", "a", ttl=10, settle=0)
    assert lease.try_acquire()
    assert _all(bare) == {"tenants/acme/leases/videos/v.json"}
    assert Lease(TenantStore(bare, "globex"), "videos/v", "b", ttl=10, settle=0).try_acquire()  # another tenant's


def test_a_torn_lease_object_counts_as_free(tmp_path):
    store = LocalDiskStore(tmp_path)
    store.put(lease_key("videos/v"), b"{")
    assert read_lease(store, "videos/v") is None
    assert Lease(store, "videos/v", "a", ttl=10, settle=0).try_acquire()
    assert json.loads(store.get(lease_key("videos/v")))["owner"] == "a"


# ---------------------------------------------------------------- S3: list, delete, denied, retries


def test_s3_list_and_delete(s3_settings):
    store = S3Store(dataclasses.replace(s3_settings, prefix="gc-list"))
    store.delete_prefix("videos")
    _video(store, "v1", frames=2)
    keys = {o.key for o in store.list("videos/")}
    assert keys == {"videos/v1/manifest.json", *read_manifest(store, "v1").checksums}
    assert all(o.size > 0 and o.modified > time.time() - 600 for o in store.list("videos/"))
    store.delete("videos/v1/manifest.json")
    store.delete("videos/v1/manifest.json")  # absent: nothing
    assert read_manifest(store, "v1") is None
    report = collect(store, grace=0)
    assert len(report.deleted) == 2 and not list(store.list("videos/"))


def test_s3_refused_credentials_are_failed_precondition_and_not_retried(s3_settings):
    denied = S3Store(dataclasses.replace(s3_settings, secret_key="wrong", prefix="gc-denied"))
    with pytest.raises(StoreDenied) as info:
        denied.check()
    assert isinstance(info.value, FailedPrecondition) and not transient(info.value)
    calls = []

    def get():
        calls.append(1)
        return denied.get("k")

    retrying = RetryingStore(denied, RetryPolicy(budget=10, initial_backoff=0.01))
    retrying.get = lambda key: retrying._call("get", get)
    start = time.monotonic()
    with pytest.raises(StoreDenied):
        retrying.get("k")
    assert calls == [1] and time.monotonic() - start < 5


def test_retries_back_off_inside_the_budget_and_the_deadline():
    failures = []

    def flaky(_timeout):
        failures.append(time.monotonic())
        if len(failures) < 4:
            raise Unavailable("down")
        return "up"

    policy = RetryPolicy(budget=10, initial_backoff=0.05, max_backoff=1, jitter=0)
    assert policy.call(flaky, transient) == "up"
    gaps = [b - a for a, b in zip(failures, failures[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # doubling

    def down(_timeout):
        raise Unavailable("down")

    start = time.monotonic()
    with deadline(0.5), pytest.raises(Unavailable):
        RetryPolicy(budget=30, initial_backoff=0.05, max_backoff=0.1).call(down, transient)
    assert time.monotonic() - start < 0.6  # the caller's deadline, not the 30 s budget
    with pytest.raises(InvalidInput):
        RetryPolicy(budget=30).call(lambda _t: (_ for _ in ()).throw(InvalidInput("bad")), transient)


def test_uneven_attempts_still_end_inside_the_callers_deadline():
    """Attempts of uneven length (a store attempt that first waits on a lock
    held by a readiness probe) are judged by the longest so far: judged by the
    last, a short attempt is followed by a long one that outruns the deadline,
    and the caller gets DEADLINE_EXCEEDED instead of the store's error."""
    lengths = iter([0.3, 0.02, 0.02] * 10)  # judged by the last, the seventh attempt ends at 1.04 s

    def uneven(_timeout):
        time.sleep(next(lengths))
        raise Unavailable("down")

    start = time.monotonic()
    with deadline(1.0), pytest.raises(Unavailable):
        RetryPolicy(budget=30, initial_backoff=0.01, max_backoff=0.01, jitter=0).call(uneven, transient)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"max_running_jobs": 0}, "max_running_jobs"),
        ({"max_waiting_jobs": -1}, "max_waiting_jobs"),
        ({"upload_timeout_seconds": 0}, "upload_timeout_seconds"),
        ({"max_temp_bytes": 10, "max_upload_bytes": 11}, "max_upload_bytes"),
        ({"lease_ttl_seconds": -1}, "lease_ttl_seconds"),
        ({"retry_budget_seconds": -1}, "retry_budget_seconds"),
        ({"retry_initial_backoff_seconds": 9, "retry_max_backoff_seconds": 1}, "retry_initial_backoff_seconds"),
        ({"readiness_interval_seconds": 0}, "readiness_interval_seconds"),
        ({"retry_after_seconds": float("nan")}, "retry_after_seconds"),
    ],
)
def test_inversion_settings_are_checked_naming_the_field(tmp_path, kw, field):
    from pix2video.servers.inversion.settings import InversionServerSettings

    with pytest.raises(InvalidInput, match=field):
        InversionServerSettings(store_dir=str(tmp_path), **kw)
