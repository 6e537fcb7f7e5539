"""The latent store and the per-video job, without models: byte round trips,
the manifest-last rule, checksums, and the video-id cache (also under threads)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from pix2video.errors import CorruptObject, InvalidInput, NotFound
from pix2video.jobs import InversionSettings, invert_video, prepare_frames
from pix2video.store import LocalDiskStore, Manifest, StoredVideo, read_manifest, write_video_record
from pix2video.store.videos import frame_key, manifest_key

# ---------------------------------------------------------------- LocalDiskStore


def test_local_store_round_trip(tmp_path):
    store = LocalDiskStore(tmp_path / "s")
    payload = bytes(range(256)) * 10
    store.put("a/b/c.bin", payload)
    store.put("a/b/d.bin", b"")
    store.put("a/e.bin", b"x")
    store.put("other.bin", b"keep me")

    assert store.exists("a/b/c.bin") and store.exists("a/b/d.bin")
    assert store.get("a/b/c.bin") == payload
    assert store.get("a/b/d.bin") == b""
    assert not store.exists("a/b/missing.bin")
    assert not store.exists("a/b")  # a folder is not an object

    store.put("a/b/c.bin", b"new")  # overwrite
    assert store.get("a/b/c.bin") == b"new"

    store.delete_prefix("a/")
    for key in ("a/b/c.bin", "a/b/d.bin", "a/e.bin"):
        assert not store.exists(key)
    assert store.get("other.bin") == b"keep me"
    store.delete_prefix("nothing/here/")  # deleting nothing is fine
    # No temporary files are left behind by put.
    assert sorted(p.name for p in (tmp_path / "s").rglob("*")) == ["other.bin"]


def test_local_store_missing_key_is_not_found(tmp_path):
    store = LocalDiskStore(tmp_path)
    with pytest.raises(NotFound, match="nope"):
        store.get("videos/nope/manifest.json")
    store.put("videos/x/manifest.json", b"{}")
    with pytest.raises(NotFound):
        store.get("videos/x")  # a folder, not an object
    with pytest.raises(NotFound):
        store.get("videos/x/manifest.json/deeper")


@pytest.mark.parametrize("key", ["", "../escape", "a/../../b", "a/./b", "a//b", "/abs", "trailing/", "..", "."])
def test_local_store_rejects_bad_keys(tmp_path, key):
    store = LocalDiskStore(tmp_path / "s")
    for op in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.exists(key)):
        with pytest.raises(InvalidInput, match="key"):
            op()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------- video records


def _manifest(video_id="v" * 40, n=3, h=8, w=8):
    return Manifest(
        video_id=video_id,
        num_frames=n,
        width=w * 8,
        height=h * 8,
        num_steps=4,
        source_prompt="a swan",
        model="{}",
        fps=12.0,
    )


def _record(store, n=3, video_id="v" * 40, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(n, 4, 8, 8, generator=g).to(dtype)
    depth = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    manifest = write_video_record(store, _manifest(video_id, n), latents, depth)
    return manifest, latents, depth


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_video_record_round_trip_is_bitwise(tmp_path, dtype):
    store = LocalDiskStore(tmp_path)
    manifest, latents, depth = _record(store, dtype=dtype)
    assert set(manifest.checksums) == {frame_key(manifest.video_id, i, manifest.attempt) for i in range(3)}

    read = read_manifest(store, manifest.video_id)
    assert read == manifest

    video = StoredVideo(store, manifest.video_id)
    assert video.num_frames == 3 and video.num_steps == 4
    for i in (0, 2, 1, 1, 0):  # any order, repeated reads
        lat, dep = video.latent(i), video.depth(i)
        assert lat.dtype == dtype and dep.dtype == torch.float32
        assert lat.shape == (4, 8, 8) and dep.shape == (1, 8, 8)
        assert torch.equal(lat, latents[i]) and torch.equal(dep, depth[i])
    with pytest.raises(IndexError):
        video.latent(3)


def test_frames_without_manifest_are_not_a_video(tmp_path):
    store = LocalDiskStore(tmp_path)
    manifest, _, _ = _record(store)
    vid = manifest.video_id
    store.delete_prefix(manifest_key(vid))  # as if the writer died before the manifest
    assert store.exists(frame_key(vid, 0, manifest.attempt)) and store.exists(frame_key(vid, 2, manifest.attempt))
    assert read_manifest(store, vid) is None
    with pytest.raises(NotFound, match="video_id"):
        StoredVideo(store, vid)


def test_manifest_is_written_after_every_frame(tmp_path):
    """The manifest's put comes last, so a reader that sees it sees every frame."""
    order = []

    class Recording(LocalDiskStore):
        def put(self, key, data):
            order.append(key)
            super().put(key, data)

    manifest, _, _ = _record(Recording(tmp_path))
    assert order == [frame_key(manifest.video_id, i, manifest.attempt) for i in range(3)] + [
        manifest_key(manifest.video_id)
    ]


def test_flipped_byte_is_corrupt(tmp_path):
    store = LocalDiskStore(tmp_path)
    manifest, latents, _ = _record(store)
    key = frame_key(manifest.video_id, 1, manifest.attempt)
    path = tmp_path.joinpath(*key.split("/"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    video = StoredVideo(store, manifest.video_id)
    assert torch.equal(video.latent(0), latents[0])  # untouched frames still read
    with pytest.raises(CorruptObject, match="checksum"):
        video.latent(1)
    with pytest.raises(CorruptObject):
        video.depth(1)


def test_missing_frame_object_is_corrupt(tmp_path):
    store = LocalDiskStore(tmp_path)
    manifest, _, _ = _record(store)
    store.delete_prefix(frame_key(manifest.video_id, 2, manifest.attempt))
    with pytest.raises(CorruptObject, match="missing"):
        StoredVideo(store, manifest.video_id).latent(2)


@pytest.mark.parametrize("text", [b"not json", b"[1, 2]", b'{"format_version": 99}', b'{"format_version": 1}'])
def test_unreadable_manifest_is_corrupt(tmp_path, text):
    store = LocalDiskStore(tmp_path)
    store.put(manifest_key("v" * 40), text)
    with pytest.raises(CorruptObject, match="manifest"):
        read_manifest(store, "v" * 40)


def test_unknown_video_id_is_not_found(tmp_path):
    store = LocalDiskStore(tmp_path)
    _record(store)
    with pytest.raises(NotFound, match="video_id"):
        StoredVideo(store, "0" * 40)


# ---------------------------------------------------------------- invert_video


class FakeStages:
    """Stand-ins for depth, caption and inversion that count their calls."""

    def __init__(self, sleep: float = 0.0):
        self.sleep = sleep
        self.calls = {"depth": 0, "caption": 0, "invert": 0}
        self.lock = threading.Lock()

    def _count(self, name):
        with self.lock:
            self.calls[name] += 1

    def depth_fn(self, frames):
        self._count("depth")
        return torch.from_numpy(frames[..., :1].astype(np.float32)).permute(0, 3, 1, 2)[:, :, ::8, ::8] / 127.5 - 1

    def caption_fn(self, frames):
        self._count("caption")
        assert len(frames) == 1
        return ["a red ball over a lawn"]

    def invert_fn(self, frames, depth, prompt, num_steps):
        self._count("invert")
        assert depth.shape[0] == len(frames) and isinstance(prompt, str) and num_steps >= 1
        if self.sleep:
            time.sleep(self.sleep)
        n, h, w, _ = frames.shape
        g = torch.Generator().manual_seed(int(frames.sum()) % 2**31)
        return torch.randn(n, 4, h // 8, w // 8, generator=g)

    def kwargs(self):
        return {"depth_fn": self.depth_fn, "caption_fn": self.caption_fn, "invert_fn": self.invert_fn}


MODEL = {"model": "fp-aaaa", "caption_model": "blip", "dtype": "float32"}
SETTINGS = InversionSettings(width=64, height=64, num_steps=4)


@pytest.fixture
def frames(clip_frames):
    return prepare_frames(list(clip_frames[:3]), SETTINGS)


def test_invert_video_second_call_is_cache_hit(tmp_path, frames):
    store = LocalDiskStore(tmp_path)
    stages = FakeStages()
    stage_names = []
    first = invert_video(
        frames, SETTINGS, store=store, model_identity=MODEL, fps=10.0, on_stage=stage_names.append, **stages.kwargs()
    )
    assert not first.cached
    assert stages.calls == {"depth": 1, "caption": 1, "invert": 1}
    assert stage_names == ["depth", "caption", "inversion", "store"]
    assert first.manifest.num_frames == 3 and first.manifest.source_prompt == "a red ball over a lawn"
    assert first.manifest.fps == 10.0 and first.manifest.num_steps == 4

    second = invert_video(frames, SETTINGS, store=store, model_identity=MODEL, **stages.kwargs())
    assert second.cached and second.video_id == first.video_id
    assert stages.calls == {"depth": 1, "caption": 1, "invert": 1}  # nothing ran again
    assert second.manifest == first.manifest

    # The cached record is what the stages produced.
    video = StoredVideo(store, first.video_id)
    assert torch.equal(video.latent(2), stages.invert_fn(frames, torch.zeros(3), "p", 4)[2])


def test_invert_video_source_prompt_skips_caption(tmp_path, frames):
    stages = FakeStages()
    settings = InversionSettings(width=64, height=64, num_steps=4, source_prompt="a ball")
    result = invert_video(frames, settings, store=LocalDiskStore(tmp_path), model_identity=MODEL, **stages.kwargs())
    assert stages.calls["caption"] == 0 and result.manifest.source_prompt == "a ball"


def test_invert_video_redoes_a_half_written_video(tmp_path, frames):
    store = LocalDiskStore(tmp_path)
    stages = FakeStages()
    first = invert_video(frames, SETTINGS, store=store, model_identity=MODEL, **stages.kwargs())
    store.delete_prefix(manifest_key(first.video_id))
    store.put(frame_key(first.video_id, 7, first.manifest.attempt), b"leftover of a dead attempt")
    again = invert_video(frames, SETTINGS, store=store, model_identity=MODEL, **stages.kwargs())
    assert not again.cached and again.video_id == first.video_id and stages.calls["invert"] == 2
    # The new write lives under its own attempt; the dead one's objects are never read.
    assert again.manifest.attempt != first.manifest.attempt
    assert all(first.manifest.attempt not in key for key in again.manifest.checksums)
    StoredVideo(store, first.video_id).latent(2)


def test_a_reader_keeps_its_objects_when_another_writer_lands_later(tmp_path, frames):
    store = LocalDiskStore(tmp_path)
    stages = FakeStages()
    first = invert_video(frames, SETTINGS, store=store, model_identity=MODEL, **stages.kwargs())
    reader = StoredVideo(store, first.video_id)
    store.delete_prefix(manifest_key(first.video_id))  # a racing writer saw no manifest...
    invert_video(frames, SETTINGS, store=store, model_identity=MODEL, **stages.kwargs())  # ...and landed second
    for i in range(3):
        reader.latent(i)  # the first reader's objects are intact


def test_video_id_depends_on_frames_settings_and_models(tmp_path, frames):
    store = LocalDiskStore(tmp_path)
    stages = FakeStages()

    def vid(f=frames, settings=SETTINGS, model=MODEL):
        return invert_video(f, settings, store=store, model_identity=model, **stages.kwargs()).video_id

    base = vid()
    assert vid() == base
    changed = frames.copy()
    changed[1, 10, 20, 0] ^= 1  # one pixel, one bit
    ids = {
        base,
        vid(f=changed),
        vid(f=frames[:2]),
        vid(settings=InversionSettings(width=64, height=64, num_steps=5)),
        vid(settings=InversionSettings(width=64, height=64, num_steps=4, source_prompt="a ball")),
        vid(
            f=prepare_frames(list(frames), InversionSettings(width=64, height=128, num_steps=4)),
            settings=InversionSettings(width=64, height=128, num_steps=4),
        ),
        vid(model={**MODEL, "model": "fp-bbbb"}),
        vid(model={**MODEL, "dtype": "float16"}),
        vid(model={**MODEL, "caption_model": "other"}),
    }
    assert len(ids) == 9
    assert stages.calls["invert"] == 9  # every distinct id was inverted once
    assert len(list((tmp_path / "videos").iterdir())) == 9


def test_concurrent_invert_of_same_video_runs_once(tmp_path, frames):
    store = LocalDiskStore(tmp_path)
    stages = FakeStages(sleep=0.3)
    start = threading.Barrier(2)
    results, errors = [], []

    def worker():
        try:
            start.wait()
            results.append(invert_video(frames, SETTINGS, store=store, model_identity=MODEL, **stages.kwargs()))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(results) == 2
    assert stages.calls == {"depth": 1, "caption": 1, "invert": 1}
    assert sorted(r.cached for r in results) == [False, True]
    assert results[0].video_id == results[1].video_id
    assert len(list((tmp_path / "videos").iterdir())) == 1

    from pix2video import jobs

    assert results[0].video_id not in jobs._default_locks._locks  # per-video locks are not kept forever
