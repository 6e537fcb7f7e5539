"""S3Store against a real S3 server (SeaweedFS, see s3server.py): the same
behaviours as LocalDiskStore and the video records in test_store.py, plus
credentials, dead endpoints, prefixes and the video-id cache over S3."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest
import torch
from ports import free_port
from test_store import MODEL, SETTINGS, FakeStages, _record

from pix2video.errors import CorruptObject, InvalidInput, NotFound
from pix2video.jobs import invert_video, prepare_frames
from pix2video.store import LocalDiskStore, StoredVideo, read_manifest
from pix2video.store.s3 import S3Settings, S3Store, StoreUnavailable
from pix2video.store.videos import frame_key, manifest_key


@pytest.fixture
def settings(s3_settings):
    """The session server's settings with a prefix of this test's own."""
    return dataclasses.replace(s3_settings, prefix=f"t-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def store(settings):
    s = S3Store(settings)
    yield s
    s.close()


def _names(store: S3Store) -> list[str]:
    """Every object name under the store's prefix, as the bucket lists it."""
    return sorted(
        o.object_name
        for o in store.client.list_objects(store.settings.bucket, prefix=store.prefix + "/", recursive=True)
        if not o.is_dir
    )


# ---------------------------------------------------------------- the ObjectStore contract


def test_s3_store_round_trip(store):
    payload = bytes(range(256)) * 10
    store.put("a/b/c.bin", payload)
    store.put("a/b/d.bin", b"")
    store.put("a/e.bin", b"x")
    store.put("a/bc.bin", b"not under a/b")
    store.put("other.bin", b"keep me")

    assert store.exists("a/b/c.bin") and store.exists("a/b/d.bin")
    assert store.get("a/b/c.bin") == payload
    assert store.get("a/b/d.bin") == b""
    assert not store.exists("a/b/missing.bin")
    assert not store.exists("a/b")  # a folder is not an object

    store.put("a/b/c.bin", b"new")  # overwrite
    assert store.get("a/b/c.bin") == b"new"

    store.delete_prefix("a/b")  # a/b and a/b/..., not a/bc.bin
    assert not store.exists("a/b/c.bin") and not store.exists("a/b/d.bin")
    assert store.get("a/bc.bin") == b"not under a/b" and store.get("a/e.bin") == b"x"
    store.delete_prefix("a/")
    for key in ("a/e.bin", "a/bc.bin"):
        assert not store.exists(key)
    assert store.get("other.bin") == b"keep me"
    store.delete_prefix("nothing/here/")  # deleting nothing is fine
    store.delete_prefix("other.bin")  # a prefix that is one object
    assert _names(store) == []


def test_s3_store_large_object_round_trip(store):
    """Above minio's 5 MiB part size the upload is multipart; still one object."""
    payload = torch.randint(
        0, 256, (6 * 1024 * 1024 + 17,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    payload = payload.numpy().tobytes()
    store.put("big/object.bin", payload)
    assert store.get("big/object.bin") == payload


def test_s3_store_missing_key_is_not_found(store):
    with pytest.raises(NotFound, match="nope") as info:
        store.get("videos/nope/manifest.json")
    # The message may reach a client: no endpoint; the logged detail has it.
    assert store.settings.endpoint not in str(info.value) and store.settings.endpoint in info.value.detail
    store.put("videos/x/manifest.json", b"{}")
    with pytest.raises(NotFound):
        store.get("videos/x")  # a folder, not an object
    with pytest.raises(NotFound):
        store.get("videos/x/manifest.json/deeper")


@pytest.mark.parametrize("key", ["", "../escape", "a/../../b", "a/./b", "a//b", "/abs", "trailing/", "..", "."])
def test_s3_store_rejects_bad_keys_like_local(tmp_path, key):
    # No server needed: keys are checked before any request.
    s3 = S3Store(
        S3Settings(
            endpoint=f"127.0.0.1:{free_port()}", bucket="any-bucket", access_key="a", secret_key="b", secure=False
        )
    )
    local = LocalDiskStore(tmp_path)
    for store in (s3, local):
        for op, args in ((store.put, (key, b"x")), (store.get, (key,)), (store.exists, (key,))):
            with pytest.raises(InvalidInput, match="key"):
                op(*args)
    with pytest.raises(InvalidInput, match="key"):
        s3.put("k" * 1100, b"x")  # S3's 1024-byte limit on names


def test_prefix_isolates_stores_in_one_bucket(s3_settings):
    one = S3Store(dataclasses.replace(s3_settings, prefix="iso-one"))
    two = S3Store(dataclasses.replace(s3_settings, prefix="/iso-two/nested/"))  # slashes trimmed
    one.put("videos/k", b"one")
    two.put("videos/k", b"two")
    assert one.get("videos/k") == b"one" and two.get("videos/k") == b"two"
    assert one.client.stat_object(s3_settings.bucket, "iso-two/nested/videos/k").size == 3
    one.delete_prefix("videos/")
    assert not one.exists("videos/k") and two.get("videos/k") == b"two"
    assert _names(two) == ["iso-two/nested/videos/k"]
    with pytest.raises(InvalidInput, match="prefix"):
        S3Store(dataclasses.replace(s3_settings, prefix="a/../b"))


def test_bucket_is_created_on_first_use(s3_settings):
    bucket = f"fresh-{uuid.uuid4().hex[:8]}"
    store = S3Store(dataclasses.replace(s3_settings, bucket=bucket))
    assert not store.client.bucket_exists(bucket)
    assert not store.exists("k")  # creates the bucket, then finds nothing
    assert store.client.bucket_exists(bucket)
    store.check()


def test_missing_bucket_without_create_is_unavailable(s3_settings):
    store = S3Store(dataclasses.replace(s3_settings, bucket=f"absent-{uuid.uuid4().hex[:8]}", create_bucket=False))
    for op in (lambda: store.get("k"), lambda: store.exists("k"), store.check):
        with pytest.raises(StoreUnavailable, match="bucket|NoSuchBucket") as info:
            op()
        assert "absent-" in info.value.detail and "absent-" not in str(info.value)


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("change", [{"secret_key": "wrong-secret"}, {"access_key": "nobody"}])
@pytest.mark.parametrize("create_bucket", [True, False])
def test_wrong_credentials_are_unavailable(settings, change, create_bucket):
    store = S3Store(dataclasses.replace(settings, create_bucket=create_bucket, **change))
    for op in (
        lambda: store.get("k"),
        lambda: store.exists("k"),
        lambda: store.put("k", b"x"),
        lambda: store.delete_prefix("k"),
    ):
        with pytest.raises(StoreUnavailable) as info:
            op()
        message, detail = str(info.value), info.value.detail
        assert settings.endpoint in detail and settings.bucket in detail and "'k'" in detail
        assert settings.endpoint not in message and settings.bucket not in message
        assert "access key" in message and "\n" not in message and "\n" not in detail
        assert "wrong-secret" not in message and "wrong-secret" not in detail
    assert "wrong-secret" not in repr(store.settings)


def test_dead_endpoint_fails_fast(settings):
    dead = dataclasses.replace(settings, endpoint=f"127.0.0.1:{free_port()}")
    for create_bucket in (True, False):
        store = S3Store(dataclasses.replace(dead, create_bucket=create_bucket))
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="refused") as info:
            store.get("videos/x/manifest.json")
        assert time.monotonic() - start < 10
        assert dead.endpoint in info.value.detail and "videos/x/manifest.json" in info.value.detail
        assert dead.endpoint not in str(info.value) and "videos/x" not in str(info.value)


# ---------------------------------------------------------------- video records


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_video_record_round_trip_is_bitwise(store, dtype):
    manifest, latents, depth = _record(store, dtype=dtype)
    assert _names(store) == sorted(
        [f"{store.prefix}/{frame_key(manifest.video_id, i, manifest.attempt)}" for i in range(3)]
        + [f"{store.prefix}/{manifest_key(manifest.video_id)}"]
    )
    assert read_manifest(store, manifest.video_id) == manifest

    video = StoredVideo(S3Store(store.settings), manifest.video_id)  # a second client reads it
    assert video.num_frames == 3 and video.num_steps == 4
    for i in (0, 2, 1, 1, 0):
        lat, dep = video.latent(i), video.depth(i)
        assert lat.dtype == dtype and dep.dtype == torch.float32
        assert torch.equal(lat, latents[i]) and torch.equal(dep, depth[i])
    with pytest.raises(IndexError):
        video.latent(3)


def test_frames_without_manifest_are_not_a_video(store):
    manifest, _, _ = _record(store)
    vid = manifest.video_id
    store.delete_prefix(manifest_key(vid))  # as if the writer died before the manifest
    assert store.exists(frame_key(vid, 0, manifest.attempt)) and store.exists(frame_key(vid, 2, manifest.attempt))
    assert read_manifest(store, vid) is None
    with pytest.raises(NotFound, match="video_id"):
        StoredVideo(store, vid)


def test_flipped_byte_is_corrupt(store):
    manifest, latents, _ = _record(store)
    key = frame_key(manifest.video_id, 1, manifest.attempt)
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0x01
    store.put(key, bytes(data))

    video = StoredVideo(store, manifest.video_id)
    assert torch.equal(video.latent(0), latents[0])
    with pytest.raises(CorruptObject, match="checksum"):
        video.latent(1)


def test_missing_frame_object_is_corrupt(store):
    manifest, _, _ = _record(store)
    store.delete_prefix(frame_key(manifest.video_id, 2, manifest.attempt))
    with pytest.raises(CorruptObject, match="missing"):
        StoredVideo(store, manifest.video_id).latent(2)


def test_invert_video_second_call_is_cache_hit(settings, clip_frames):
    frames = prepare_frames(list(clip_frames[:3]), SETTINGS)
    stages = FakeStages()
    first = invert_video(frames, SETTINGS, store=S3Store(settings), model_identity=MODEL, **stages.kwargs())
    assert not first.cached and stages.calls == {"depth": 1, "caption": 1, "invert": 1}

    # Another client (another replica, in the services) finds it in the bucket.
    other = S3Store(settings)
    second = invert_video(frames, SETTINGS, store=other, model_identity=MODEL, **stages.kwargs())
    assert second.cached and second.video_id == first.video_id and second.manifest == first.manifest
    assert stages.calls == {"depth": 1, "caption": 1, "invert": 1}
    video = StoredVideo(other, first.video_id)
    assert torch.equal(video.latent(2), stages.invert_fn(frames, torch.zeros(3), "p", 4)[2])


# ---------------------------------------------------------------- settings from the environment

ENV = {
    "PIX2VIDEO_S3_ENDPOINT": "seaweedfs:8333",
    "PIX2VIDEO_S3_BUCKET": "latents",
    "PIX2VIDEO_S3_ACCESS_KEY": "ak",
    "PIX2VIDEO_S3_SECRET_KEY": "sk",
}


def test_settings_from_env():
    s = S3Settings.from_env(ENV)
    assert (s.endpoint, s.bucket, s.access_key, s.secret_key) == ("seaweedfs:8333", "latents", "ak", "sk")
    assert s.secure and s.region is None and s.prefix == "" and s.create_bucket
    s = S3Settings.from_env(
        {**ENV, "PIX2VIDEO_S3_SECURE": "false", "PIX2VIDEO_S3_REGION": "eu-west-1", "PIX2VIDEO_S3_PREFIX": "staging"}
    )
    assert not s.secure and s.region == "eu-west-1" and s.prefix == "staging"
    assert "sk" not in repr(s)

    aws = {k: v for k, v in ENV.items() if "KEY" not in k}
    s = S3Settings.from_env({**aws, "AWS_ACCESS_KEY_ID": "aws-ak", "AWS_SECRET_ACCESS_KEY": "aws-sk"})
    assert (s.access_key, s.secret_key) == ("aws-ak", "aws-sk")
    s = S3Settings.from_env({**ENV, "AWS_ACCESS_KEY_ID": "aws-ak"})
    assert s.access_key == "ak"  # the specific variable wins


@pytest.mark.parametrize("var", list(ENV))
def test_settings_from_env_names_missing_variable(var):
    env = {k: v for k, v in ENV.items() if k != var}
    with pytest.raises(InvalidInput, match=var):
        S3Settings.from_env(env)
    with pytest.raises(InvalidInput, match=var):
        S3Settings.from_env({**env, var: "  "})


@pytest.mark.parametrize(
    "change, name",
    [
        ({"PIX2VIDEO_S3_SECURE": "maybe"}, "PIX2VIDEO_S3_SECURE"),
        ({"PIX2VIDEO_S3_ENDPOINT": "http://seaweedfs:8333"}, "PIX2VIDEO_S3_ENDPOINT"),
    ],
)
def test_settings_from_env_rejects_bad_values(change, name):
    with pytest.raises(InvalidInput, match=name):
        S3Settings.from_env({**ENV, **change})


def test_bad_bucket_or_endpoint_is_invalid_input():
    base = S3Settings(endpoint="h:1", bucket="ok-bucket", access_key="a", secret_key="b")
    with pytest.raises(InvalidInput, match="bucket"):
        S3Store(dataclasses.replace(base, bucket="x"))  # too short
    with pytest.raises(InvalidInput, match="endpoint"):
        S3Store(dataclasses.replace(base, endpoint="https://h:1/path"))
