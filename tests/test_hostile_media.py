"""Hostile media and hostile keys at the library level (no servers): the
container allow-list chosen by content, playlists and concat scripts refused
without any file or URL being opened, declared sizes refused before decoding,
strict store keys, and the scrubbing of client messages."""

from __future__ import annotations

import os
import resource
import socket
import threading
import time

import numpy as np
import pytest
from hostile import (
    avi_of_pngs,
    clip_bytes,
    container_bytes,
    ffconcat,
    gif_bytes,
    hls_playlist,
    jpeg_declaring,
    png_bomb,
    png_bytes,
    png_of,
)
from ports import free_port

from pix2video.errors import InvalidInput, NotFound
from pix2video.limits import FrameLimits
from pix2video.servers.common.convert import image_to_array
from pix2video.servers.common.scrub import MAX_MESSAGE, Scrubber, sensitive_values
from pix2video.servers.depth.settings import DepthSettings
from pix2video.store import LocalDiskStore
from pix2video.store.s3 import S3Settings, S3Store
from pix2video.video import probe_container, read_video
from pix2video_api.common.v1 import common_pb2

ENC = common_pb2.ImageEncoding


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- containers chosen by content -------------------------------------------------------


@pytest.mark.parametrize(
    "name,data",
    [
        ("mp4", lambda tmp: clip_bytes(tmp / "c.mp4")),
        ("mov", lambda tmp: container_bytes("mov", "libx264")),
        ("mkv", lambda tmp: container_bytes("matroska", "libx264")),
        ("webm", lambda tmp: container_bytes("webm", "libvpx-vp9")),
        ("avi", lambda tmp: container_bytes("avi", "mpeg4")),
    ],
)
def test_every_allowed_container_is_read_whatever_its_file_name(tmp_path, name, data):
    payload = data(tmp_path)
    for filename in (f"clip.{name}", "clip.m3u8", "clip.txt", "noext"):
        path = tmp_path / filename
        path.write_bytes(payload)
        frames, info = read_video(path)
        assert len(frames) == 2 and frames[0].shape == (64, 64, 3) and (info.width, info.height) == (64, 64)


class _Listener:
    """A TCP port that records whether anything connected to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class _FifoWatch:
    """A FIFO that records whether anyone opened it for reading: a writer's
    non-blocking open succeeds only while a reader has it open."""

    def __init__(self, path):
        self.path = path
        os.mkfifo(path)
        self.opened = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.001)
                continue
            self.opened = True
            os.close(fd)

    def close(self):
        self.stop.set()
        self.thread.join(2)


@pytest.fixture
def bait(tmp_path):
    """What a hostile playlist points at: a real video, a FIFO and a TCP port."""
    video = tmp_path / "secret.mp4"
    clip_bytes(video)
    fifo, listener = _FifoWatch(tmp_path / "fifo.mp4"), _Listener()
    yield video, fifo, listener
    fifo.close()
    listener.close()


@pytest.mark.parametrize("kind", ["hls", "ffconcat"])
@pytest.mark.parametrize("filename", ["x.m3u8", "x.mp4", "x.ffconcat", "x"])
def test_playlists_and_concat_are_refused_and_open_nothing(tmp_path, bait, kind, filename):
    video, fifo, listener = bait
    http = f"http://127.0.0.1:{listener.port}/x.ts"
    if kind == "hls":
        payload = hls_playlist(f"file://{video}", str(video), f"file://{fifo.path}", http)
    else:
        payload = ffconcat(str(video), str(fifo.path), http)
    path = tmp_path / filename
    path.write_bytes(payload)
    with pytest.raises(InvalidInput, match="HLS playlist|ffconcat") as info:
        read_video(path, label="the upload")
    assert str(tmp_path) not in str(info.value)
    time.sleep(0.05)
    assert not fifo.opened and listener.connections == 0


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\x00" * 64,
        b"GIF89a" + b"\0" * 20,
        b"<?xml version='1.0'?><MPD>",
        b"\xef\xbb\xbf#EXTM3U\n",
        b"v=0\r\no=- 0",
    ],
)
def test_unknown_or_referencing_formats_are_refused_by_the_probe(head):
    with pytest.raises(InvalidInput, match="input"):
        probe_container(head)


def test_a_nested_open_is_refused_even_inside_an_allowed_container(tmp_path):
    # The demuxer is forced and any second file or URL it asks for is refused;
    # here an AVI whose frames are garbage still opens nothing else.
    path = tmp_path / "x.avi"
    path.write_bytes(avi_of_pngs([b"not a png"] * 2))
    with pytest.raises(InvalidInput, match="input"):
        read_video(path)


# -- declared sizes are checked before decoding -------------------------------------------


def test_a_video_declaring_huge_frames_is_refused_before_decoding(tmp_path):
    bomb = png_bomb()  # 200 kB that decodes to 192 MB
    cases = {
        "declared.avi": avi_of_pngs([bomb] * 4, declare=(8000, 8000)),
        "lying.avi": avi_of_pngs([bomb] * 4),  # header says 64x64, the frames 8000x8000
        "giant.avi": avi_of_pngs([png_bytes(40000, 40000, rows=2)] * 4, declare=(40000, 40000)),
    }
    before = _peak_rss_mb()
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert path.stat().st_size < 1_000_000
        start = time.monotonic()
        with pytest.raises(InvalidInput, match="limit|pixels") as info:
            read_video(path, label="the upload")
        assert time.monotonic() - start < 5, name
        assert str(tmp_path) not in str(info.value)
    # Decoding any of them would take 192 MB a frame (4.8 GB for the giant).
    assert _peak_rss_mb() - before < 100


def test_the_configured_limits_apply_to_video(tmp_path):
    path = tmp_path / "c.mp4"
    clip_bytes(path, 128, 64)
    assert read_video(path, limits=FrameLimits(max_pixels=128 * 64))[1].width == 128
    with pytest.raises(InvalidInput, match="exceeds the limit of 8191 pixels"):
        read_video(path, limits=FrameLimits(max_pixels=128 * 64 - 1))
    tiny = tmp_path / "tiny.mp4"
    clip_bytes(tiny, 16, 16)
    with pytest.raises(InvalidInput, match="smaller than the minimum of 32"):
        read_video(tiny, limits=FrameLimits(min_side=32))


def test_one_pixel_video_frames_are_invalid(tmp_path):
    path = tmp_path / "one.avi"
    path.write_bytes(avi_of_pngs([png_bytes(1, 1)] * 2, declare=(1, 1)))
    with pytest.raises(InvalidInput, match="smaller than the minimum"):
        read_video(path)


def _image(data: bytes, encoding=ENC.IMAGE_ENCODING_PNG, **kw) -> common_pb2.Image:
    return common_pb2.Image(data=data, encoding=encoding, **kw)


@pytest.mark.parametrize(
    "msg,match",
    [
        (lambda: _image(png_bomb()), "exceeds the limit"),
        (lambda: _image(png_bytes(50000, 50000, rows=1)), "exceeds|declares more"),  # PIL's own bomb error
        (lambda: _image(jpeg_declaring(60000, 60000), ENC.IMAGE_ENCODING_JPEG), "exceeds|declares more"),
        (lambda: _image(jpeg_declaring(5000, 5000), ENC.IMAGE_ENCODING_JPEG), "exceeds the limit"),
        (lambda: _image(png_bytes(1, 1)), "smaller than the minimum"),
        (lambda: _image(jpeg_declaring(1, 1), ENC.IMAGE_ENCODING_JPEG), "smaller than the minimum"),
        (lambda: _image(b"\x80" * 3, ENC.IMAGE_ENCODING_RAW_RGB8, width=1, height=1), "smaller than the minimum"),
        (lambda: _image(b"", ENC.IMAGE_ENCODING_RAW_RGB8, width=50000, height=50000), "exceeds the limit"),
        (lambda: _image(gif_bytes()), "not a decodable PNG"),  # only the PNG plugin reads a PNG
        (lambda: _image(png_of(np.zeros((16, 16, 3), np.uint8)), ENC.IMAGE_ENCODING_JPEG), "not a decodable JPEG"),
        (
            lambda: _image(png_of(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8))[:300]),
            "not a decodable",
        ),
    ],
)
def test_images_are_checked_from_their_header(msg, match):
    before = _peak_rss_mb()
    with pytest.raises(InvalidInput, match=match):
        image_to_array(msg(), "frame")
    assert _peak_rss_mb() - before < 50


def test_images_within_the_limits_decode():
    frame = np.random.default_rng(0).integers(0, 255, (16, 24, 3), np.uint8)
    np.testing.assert_array_equal(image_to_array(_image(png_of(frame))), frame)
    limits = FrameLimits(max_pixels=16 * 24, min_side=16)
    np.testing.assert_array_equal(image_to_array(_image(png_of(frame)), limits=limits), frame)
    with pytest.raises(InvalidInput, match="frame: a 24x16 frame"):
        image_to_array(_image(png_of(frame)), "frame", FrameLimits(max_pixels=16 * 24 - 1))


def test_media_limit_settings_are_validated():
    assert DepthSettings(max_frame_pixels=4096, min_frame_side=4).frame_limits == FrameLimits(4096, 4)
    with pytest.raises(InvalidInput, match="min_frame_side"):
        DepthSettings(min_frame_side=0)
    with pytest.raises(InvalidInput, match="max_frame_pixels"):
        DepthSettings(max_frame_pixels=10, min_frame_side=8)
    with pytest.raises(InvalidInput, match="max_frame_pixels"):
        DepthSettings(max_frame_pixels=2**40)


# -- keys --------------------------------------------------------------------------------------


HOSTILE_KEYS = ["k" * 5000, "a\x00b", "a/\x00/b", "a\nb", "x/" + "p" * 256, "\udcff", "/etc/passwd", "../../etc/passwd"]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_are_invalid_before_any_file_system_or_s3_call(tmp_path, key):
    local = LocalDiskStore(tmp_path / "root")
    # A closed port: any request would fail as StoreUnavailable after retries, not InvalidInput.
    s3 = S3Store(S3Settings(endpoint=f"127.0.0.1:{free_port()}", bucket="b-bucket", access_key="a", secret_key="s"))
    for store in (local, s3):
        for op in ("get", "exists", "put", "delete_prefix"):
            args = (key, b"x") if op == "put" else (key,)
            start = time.monotonic()
            with pytest.raises(InvalidInput, match="key") as info:
                getattr(store, op)(*args)
            assert time.monotonic() - start < 0.5
            message = str(info.value)
            assert len(message) < 200 and str(tmp_path) not in message and "b-bucket" not in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["root"]


def test_store_messages_name_no_folder(tmp_path):
    store = LocalDiskStore(tmp_path / "root")
    with pytest.raises(NotFound) as info:
        store.get("videos/nope/manifest.json")
    assert str(tmp_path) not in str(info.value) and str(tmp_path) in info.value.detail


# -- scrubbing -------------------------------------------------------------------------------------


def test_the_scrubber_removes_paths_addresses_layout_and_settings_values():
    settings = DepthSettings(home="/srv/models-home", model="/srv/weights/sd2")
    assert {"/srv/models-home", "/srv/weights/sd2"} <= set(sensitive_values(settings))
    scrub = Scrubber([*sensitive_values(settings), "my-bucket", "hunter2-secret"])
    cases = {
        "input: '/tmp/pix2video-upload-1/input' is not a readable video": "input: '<path>' is not a readable video",
        "model at /srv/weights/sd2 failed": "model at <redacted> failed",
        "S3 get failed at http://10.0.0.5:8333/my-bucket: AccessDenied": "S3 get failed at <address> AccessDenied",
        "bucket my-bucket with hunter2-secret": "bucket <redacted> with <redacted>",
        "depth at seaweedfs:8333 and 10.1.2.3:50061 and [::1]:80": "depth at <address> and <address> and <address>",
        "object 'tenants/acme/videos/x/manifest.json'": "object '<object>'",
        "key: '../../etc/passwd'": "key: '<path>'",
        "authorization: Bearer abc.def": "authorization: Bearer <redacted>",
    }
    for message, want in cases.items():
        assert scrub(message) == want
    # Ordinary messages are left alone.
    for message in (
        "output_width/height: must be in [0, 1024] (0: frame / 8), got 3/4",
        "settings.num_steps: must be in [1, 1000], got 5000",
        "frame: a 1x1 frame is smaller than the minimum of 8 pixels a side (request 0)",
    ):
        assert scrub(message) == message
    long = scrub("x: " + "A" * 5000)
    assert len(long) == MAX_MESSAGE and "A" * (MAX_MESSAGE - 6) in long and long.endswith("...")
