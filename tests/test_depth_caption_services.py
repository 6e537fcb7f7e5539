"""The depth and caption services: real servers on port 0, real channels, the
tiny model set loaded through the real loading code; results compared with the
in-process engine."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from ports import free_port

from pix2video.engine.caption import Captioner
from pix2video.engine.depth import DepthEstimator, normalise_depth
from pix2video.errors import InvalidInput
from pix2video.servers.caption.server import SERVICE_NAME as CAPTION_SERVICE
from pix2video.servers.caption.server import build as build_caption
from pix2video.servers.caption.settings import CaptionSettings
from pix2video.servers.common.server import ServerThread
from pix2video.servers.common.settings import load_settings
from pix2video.servers.depth.server import SERVICE_NAME as DEPTH_SERVICE
from pix2video.servers.depth.server import build as build_depth
from pix2video.servers.depth.settings import DepthSettings
from pix2video_api.caption.v1 import caption_pb2, caption_pb2_grpc
from pix2video_api.common.v1 import common_pb2
from pix2video_api.depth.v1 import depth_pb2, depth_pb2_grpc

ENC = common_pb2.ImageEncoding
MAX_MESSAGE_BYTES = 100_000


# -- helpers ----------------------------------------------------------------------


def encode(frame: np.ndarray, encoding: int) -> common_pb2.Image:
    h, w = frame.shape[:2]
    if encoding == ENC.IMAGE_ENCODING_RAW_RGB8:
        return common_pb2.Image(data=frame.tobytes(), encoding=encoding, width=w, height=h)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG" if encoding == ENC.IMAGE_ENCODING_PNG else "JPEG", quality=85)
    return common_pb2.Image(data=buf.getvalue(), encoding=encoding, width=w, height=h)


def decode(msg: common_pb2.Image) -> np.ndarray:
    """What the server should decode (independently of its own code)."""
    if msg.encoding == ENC.IMAGE_ENCODING_RAW_RGB8:
        return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
    return np.asarray(Image.open(io.BytesIO(msg.data)).convert("RGB"))


def tensor(msg: common_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(msg.data, "<f4").reshape(tuple(msg.shape))


ENCODINGS = [
    ENC.IMAGE_ENCODING_PNG,
    ENC.IMAGE_ENCODING_PNG,
    ENC.IMAGE_ENCODING_JPEG,
    ENC.IMAGE_ENCODING_JPEG,
    ENC.IMAGE_ENCODING_RAW_RGB8,
    ENC.IMAGE_ENCODING_RAW_RGB8,
]


def depth_requests(frames, **kw) -> list[depth_pb2.EstimateDepthRequest]:
    return [depth_pb2.EstimateDepthRequest(frame=encode(f, ENCODINGS[i % 6]), **kw) for i, f in enumerate(frames)]


def good_depth_request(frame=None):
    frame = np.full((64, 64, 3), 100, np.uint8) if frame is None else frame
    frame = frame.copy()
    frame[:32] = 200  # not constant, so the depth map is not all zeros
    return depth_pb2.EstimateDepthRequest(frame=encode(frame, ENC.IMAGE_ENCODING_PNG))


async def _one(coro):
    return [await coro]


def _start(build, settings):
    thread = ServerThread()
    (running,) = thread.start(lambda: _one(build(settings)))
    opts = [("grpc.max_receive_message_length", 64 << 20)]
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}", options=opts)
    return thread, running, channel


def _check_health(channel, service: str, timeout: float = 5):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def depth(tiny_dir):
    settings = DepthSettings(
        host="127.0.0.1",
        port=0,
        model=str(tiny_dir),
        device="cpu",
        batch_size=4,
        max_wait_ms=20.0,
        max_message_bytes=MAX_MESSAGE_BYTES,
        grace_seconds=1.0,
    )
    thread, running, channel = _start(build_depth, settings)
    yield SimpleNamespace(
        running=running,
        channel=channel,
        stub=depth_pb2_grpc.DepthServiceStub(channel),
        batcher=running.servicer.batcher,
    )
    channel.close()
    thread.stop()


@pytest.fixture(scope="module")
def caption(tiny_dir):
    settings = CaptionSettings(
        host="127.0.0.1", port=0, model=str(tiny_dir), device="cpu", max_wait_ms=20.0, grace_seconds=1.0
    )
    thread, running, channel = _start(build_caption, settings)
    yield SimpleNamespace(
        running=running,
        channel=channel,
        stub=caption_pb2_grpc.CaptionServiceStub(channel),
        batcher=running.servicer.batcher,
    )
    channel.close()
    thread.stop()


# -- health and reflection ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["depth", "caption"])
def test_health_serving_and_reflection_lists_the_service(which, request):
    server = request.getfixturevalue(which)
    name = DEPTH_SERVICE if which == "depth" else CAPTION_SERVICE
    assert _check_health(server.channel, name) == health_pb2.HealthCheckResponse.SERVING
    assert _check_health(server.channel, "") == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    (reply,) = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {name, "grpc.health.v1.Health"} <= names


# -- depth --------------------------------------------------------------------------------


def test_depth_equals_the_engine_for_png_jpeg_and_raw_frames(depth, models, clip_frames):
    requests = depth_requests(clip_frames)
    replies = list(depth.stub.EstimateDepth(iter(requests), timeout=30))
    expected = DepthEstimator(models)(np.stack([decode(r.frame) for r in requests])).numpy()
    assert [r.index for r in replies] == list(range(len(requests)))
    for reply, want in zip(replies, expected, strict=True):
        assert list(reply.depth.shape) == [1, 8, 8]
        np.testing.assert_allclose(tensor(reply.depth), want, atol=1e-5, rtol=0)
    # JPEG is lossy: its frames really differ from the originals, and so does their depth.
    assert not np.array_equal(decode(requests[2].frame), clip_frames[2])


def test_explicit_output_size_and_mixed_frame_sizes_in_one_stream(depth, models, clip_frames):
    tall = np.ascontiguousarray(np.concatenate([clip_frames[0], clip_frames[1][:6]], axis=0))  # 70 x 64
    requests = [
        depth_pb2.EstimateDepthRequest(
            frame=encode(clip_frames[3], ENC.IMAGE_ENCODING_PNG), output_width=5, output_height=7
        ),
        depth_pb2.EstimateDepthRequest(frame=encode(tall, ENC.IMAGE_ENCODING_PNG), output_width=16, output_height=12),
        depth_pb2.EstimateDepthRequest(frame=encode(clip_frames[4][:32], ENC.IMAGE_ENCODING_PNG)),  # 32 x 64
    ]
    replies = list(depth.stub.EstimateDepth(iter(requests), timeout=30))
    assert [list(r.depth.shape) for r in replies] == [[1, 7, 5], [1, 12, 16], [1, 4, 8]]
    with torch.no_grad():
        for request, reply in zip(requests, replies, strict=True):
            frame = decode(request.frame)
            pixels = models.feature_extractor(images=[frame], return_tensors="pt").pixel_values
            raw = models.depth_estimator(pixels).predicted_depth
            want = normalise_depth(raw, tuple(reply.depth.shape[1:]))[0].numpy()
            np.testing.assert_allclose(tensor(reply.depth), want, atol=1e-5, rtol=0)


def test_concurrent_streams_get_their_own_results_and_are_batched(depth, models, clip_frames):
    inputs = {"a": clip_frames, "b": np.ascontiguousarray(clip_frames[::-1, :, ::-1])}
    expected = {k: DepthEstimator(models)(v).numpy() for k, v in inputs.items()}
    assert not np.allclose(expected["a"], expected["b"])
    results, errors = {}, []
    start = threading.Barrier(len(inputs))

    def stream(key):
        try:
            requests = [
                depth_pb2.EstimateDepthRequest(frame=encode(f, ENC.IMAGE_ENCODING_RAW_RGB8)) for f in inputs[key]
            ]
            start.wait()
            results[key] = list(depth.stub.EstimateDepth(iter(requests), timeout=30))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    batches, items = depth.batcher.batches, depth.batcher.items
    threads = [threading.Thread(target=stream, args=(k,)) for k in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for key, replies in results.items():
        assert [r.index for r in replies] == list(range(len(inputs[key])))
        for reply, want in zip(replies, expected[key], strict=True):
            np.testing.assert_allclose(tensor(reply.depth), want, atol=1e-5, rtol=0)
    ran_items, ran_batches = depth.batcher.items - items, depth.batcher.batches - batches
    assert ran_items == 12
    assert ran_batches < ran_items


def _bad_png():
    return depth_pb2.EstimateDepthRequest(
        frame=common_pb2.Image(data=b"\x89PNG\r\n\x1a\nnot really", encoding=ENC.IMAGE_ENCODING_PNG)
    )


def _bad_raw():
    return depth_pb2.EstimateDepthRequest(
        frame=common_pb2.Image(data=bytes(64 * 64 * 3 - 1), encoding=ENC.IMAGE_ENCODING_RAW_RGB8, width=64, height=64)
    )


def _no_encoding():
    frame = encode(np.zeros((64, 64, 3), np.uint8), ENC.IMAGE_ENCODING_PNG)
    frame.encoding = ENC.IMAGE_ENCODING_UNSPECIFIED
    return depth_pb2.EstimateDepthRequest(frame=frame)


def _tall():
    return depth_pb2.EstimateDepthRequest(frame=encode(np.zeros((70, 64, 3), np.uint8), ENC.IMAGE_ENCODING_RAW_RGB8))


def _too_wide_output():
    return depth_pb2.EstimateDepthRequest(
        frame=encode(np.zeros((64, 64, 3), np.uint8), ENC.IMAGE_ENCODING_PNG), output_width=2000
    )


def _too_big():  # 256 * 256 * 3 = 196608 bytes > max_message_bytes
    return depth_pb2.EstimateDepthRequest(frame=encode(np.zeros((256, 256, 3), np.uint8), ENC.IMAGE_ENCODING_RAW_RGB8))


@pytest.mark.parametrize(
    "make, code, words",
    [
        (_bad_png, grpc.StatusCode.INVALID_ARGUMENT, "frame.data"),
        (_bad_raw, grpc.StatusCode.INVALID_ARGUMENT, "frame.data"),
        (_no_encoding, grpc.StatusCode.INVALID_ARGUMENT, "encoding"),
        (_tall, grpc.StatusCode.INVALID_ARGUMENT, "frame.height"),
        (
            _too_wide_output,
            grpc.StatusCode.INVALID_ARGUMENT,
            "output_width: must be in [0, 1024] (0: the latent size, frame / 8)",
        ),
        (_too_big, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ],
    ids=["malformed-png", "raw-byte-count", "no-encoding", "height-not-multiple-of-8", "output-too-wide", "too-large"],
)
def test_bad_depth_input_is_refused_and_the_service_goes_on(depth, make, code, words):
    # Two good frames first: their answers come back before the error ends the stream.
    requests = [good_depth_request(), good_depth_request(), make()]
    replies = []
    with pytest.raises(grpc.RpcError) as info:
        for reply in depth.stub.EstimateDepth(iter(requests), timeout=30):
            replies.append(reply)
    assert info.value.code() == code, info.value.details()
    assert words in info.value.details()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert "(request 2)" in info.value.details()
        assert [r.index for r in replies] == [0, 1]
    (reply,) = depth.stub.EstimateDepth(iter([good_depth_request()]), timeout=30)
    assert list(reply.depth.shape) == [1, 8, 8]


# -- caption ----------------------------------------------------------------------------------


def test_caption_equals_the_engine(caption, models, clip_frames):
    image = encode(clip_frames[0], ENC.IMAGE_ENCODING_PNG)
    reply = caption.stub.Caption(caption_pb2.CaptionRequest(image=image), timeout=30)
    assert reply.caption == Captioner(models)(clip_frames[:1])[0]
    reply = caption.stub.Caption(caption_pb2.CaptionRequest(image=image, max_new_tokens=3), timeout=30)
    assert reply.caption == Captioner(models, max_new_tokens=3)(clip_frames[:1])[0]


def test_concurrent_captions_are_batched(caption, models, clip_frames):
    want = [Captioner(models)(clip_frames[i : i + 1])[0] for i in range(len(clip_frames))]
    batches, items = caption.batcher.batches, caption.batcher.items
    futures = [
        caption.stub.Caption.future(
            caption_pb2.CaptionRequest(image=encode(f, ENC.IMAGE_ENCODING_RAW_RGB8)), timeout=30
        )
        for f in clip_frames
    ]
    assert [f.result().caption for f in futures] == want
    assert caption.batcher.items - items == len(clip_frames)
    assert caption.batcher.batches - batches < len(clip_frames)


@pytest.mark.parametrize(
    "request_, words",
    [
        (
            caption_pb2.CaptionRequest(image=common_pb2.Image(data=b"junk", encoding=ENC.IMAGE_ENCODING_JPEG)),
            "image.data",
        ),
        (caption_pb2.CaptionRequest(image=common_pb2.Image(data=b"junk")), "image.encoding"),
        (
            caption_pb2.CaptionRequest(
                image=encode(np.zeros((32, 32, 3), np.uint8), ENC.IMAGE_ENCODING_PNG), max_new_tokens=1000
            ),
            "max_new_tokens",
        ),
    ],
    ids=["malformed-jpeg", "no-encoding", "too-many-tokens"],
)
def test_bad_caption_input_is_refused_and_the_service_goes_on(caption, request_, words):
    with pytest.raises(grpc.RpcError) as info:
        caption.stub.Caption(request_, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()
    image = encode(np.zeros((32, 32, 3), np.uint8), ENC.IMAGE_ENCODING_PNG)
    assert isinstance(caption.stub.Caption(caption_pb2.CaptionRequest(image=image), timeout=30).caption, str)


# -- the batcher ---------------------------------------------------------------------------------


def test_batcher_groups_calls_runs_in_one_thread_and_fails_only_the_failing_batch():
    import asyncio

    from pix2video.servers.common.batcher import DynamicBatcher

    seen = []

    def fn(items):
        seen.append((threading.get_ident(), list(items)))
        time.sleep(0.02)  # blocking work: the loop must stay free meanwhile
        if "bad" in items:
            raise ValueError("bad batch")
        return [x * 2 for x in items]

    async def main():
        batcher = DynamicBatcher(fn, max_batch=3, max_wait_ms=50)
        first = await asyncio.gather(*(batcher.submit(x) for x in (1, 2, 3, 4)))
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        ticker = asyncio.create_task(tick())
        mixed = await asyncio.gather(
            batcher.submit(5), batcher.submit("bad"), batcher.submit(6), batcher.submit(7), return_exceptions=True
        )
        ticker.cancel()
        await batcher.close()
        return first, mixed, ticks, batcher

    first, mixed, ticks, batcher = asyncio.run(main())
    assert first == [2, 4, 6, 8]
    assert [type(r) for r in mixed[:3]] == [ValueError] * 3 and mixed[3] == 14
    assert [items for _, items in seen] == [[1, 2, 3], [4], [5, "bad", 6], [7]]
    assert len({ident for ident, _ in seen}) == 1 and seen[0][0] != threading.get_ident()
    assert (batcher.batches, batcher.items) == (4, 8)
    assert ticks > 10  # the event loop ran while fn blocked its worker thread


# -- settings ----------------------------------------------------------------------------------


def test_settings_from_flags_and_environment():
    s = load_settings(DepthSettings, ["--port", "0", "--batch-size", "4"], env={"PIX2VIDEO_MODEL": "x"})
    assert (s.port, s.batch_size, s.model, s.max_wait_ms) == (0, 4, "x", 5.0)
    assert isinstance(s.max_wait_ms, float)
    assert DepthSettings().port == 50061
    c = load_settings(CaptionSettings, ["--max-new-tokens", "12"], env={"PIX2VIDEO_MAX_WAIT_MS": "2.5"})
    assert (c.port, c.max_new_tokens, c.batch_size, c.max_wait_ms) == (50062, 12, 8, 2.5)


@pytest.mark.parametrize("value", ["abc", "0"])
def test_bad_batch_size_is_named(value):
    with pytest.raises(InvalidInput, match="batch_size"):
        load_settings(DepthSettings, ["--batch-size", value], env={})
    with pytest.raises(InvalidInput, match="batch_size"):
        load_settings(CaptionSettings, [], env={"PIX2VIDEO_BATCH_SIZE": value})


def test_bad_max_new_tokens_setting_is_named():
    with pytest.raises(InvalidInput, match="max_new_tokens"):
        CaptionSettings(max_new_tokens=500)


# -- the process ---------------------------------------------------------------------------------


def test_module_serves_until_sigterm_then_exits_cleanly(tiny_dir, clip_frames):
    port = free_port()
    grace = 2
    env = dict(os.environ, HF_HUB_OFFLINE="1", PIX2VIDEO_DEVICE="cpu")
    cmd = [
        sys.executable,
        "-m",
        "pix2video.servers.depth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        str(tiny_dir),
        "--grace-seconds",
        str(grace),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    status = _check_health(channel, DEPTH_SERVICE, timeout=1)
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.2)
            assert status == health_pb2.HealthCheckResponse.SERVING, (
                proc.stdout.read().decode() if proc.poll() is not None else "timed out"
            )
            stub = depth_pb2_grpc.DepthServiceStub(channel)
            (reply,) = stub.EstimateDepth(iter(depth_requests(clip_frames[:1])), timeout=30)
            assert list(reply.depth.shape) == [1, 8, 8]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=grace + 10) == 0, proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
