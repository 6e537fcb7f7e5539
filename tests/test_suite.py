"""The gRPC suite end to end: real servers on loopback ports, a real S3 server,
the SDK (and raw generated stubs) as clients, tiny float64 models."""

from __future__ import annotations

import dataclasses
import threading
import time

import grpc
import numpy as np
import pytest
from cutting_proxy import CuttingProxy
from ports import free_ports
from s3server import s3_server_fields

from pix2video.embedded import EmbeddedPix2Video
from pix2video.engine.settings import EditSettings
from pix2video.jobs import InversionSettings
from pix2video.servers.caption.settings import CaptionSettings
from pix2video.servers.common.server import ServerThread
from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.servers.inversion.settings import InversionServerSettings
from pix2video.servers.suite import start_suite
from pix2video.store import LocalDiskStore, read_manifest
from pix2video.store.tenant import TenantStore
from pix2video.tenancy import DEFAULT_TENANT
from pix2video.video import make_sample_frames, read_video, write_video
from pix2video_api.editor.v1 import editor_pb2, editor_pb2_grpc
from pix2video_api.inversion.v1 import inversion_pb2, inversion_pb2_grpc
from pix2video_client import EditOptions, InversionOptions, Pix2VideoClient
from pix2video_client import errors as client_errors

STEPS = 4
SIZE = 64
DELTA = 100.0  # the authors' pull per element, at 8x8 latents too (update_normalisation sd512)
INV = InversionOptions(width=SIZE, height=SIZE, num_steps=STEPS, source_prompt="a red ball")


@pytest.fixture(scope="module")
def suite(tiny_dir, s3_settings, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    shared = dict(host="127.0.0.1", port=0, model=str(tiny_dir), device="cpu", dtype="float64", home=str(home))
    s3 = s3_server_fields(s3_settings, "suite")
    settings = {
        "depth": DepthSettings(**shared),
        "caption": CaptionSettings(**shared),
        "inversion": InversionServerSettings(**shared, **s3, batch_size=4),
        "editor": EditorServerSettings(**shared, **s3, idle_timeout_seconds=30, buffered_frames=3),
    }
    thread = ServerThread()
    running = thread.run(start_suite(settings))
    thread.servers = list(running.values())
    yield running
    thread.stop()


@pytest.fixture(scope="module")
def client(suite):
    with Pix2VideoClient(f"127.0.0.1:{suite['inversion'].port}", f"127.0.0.1:{suite['editor'].port}", timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, make_sample_frames(5, 96, 64), fps=10)
    return path


@pytest.fixture(scope="module")
def embedded(models64, clip, tmp_path_factory):
    engine = EmbeddedPix2Video(models64, LocalDiskStore(tmp_path_factory.mktemp("embedded")))
    frames, info = read_video(clip)
    result = engine.invert(
        frames, InversionSettings(SIZE, SIZE, num_steps=STEPS, source_prompt="a red ball"), fps=info.fps
    )
    return engine, result.video_id


def _embedded_frames(embedded, prompt, **kw):
    engine, vid = embedded
    return np.stack(
        [f.image for f in engine.edit(vid, EditSettings(prompt, num_steps=STEPS, update_strength=DELTA, **kw))]
    )


def _suite_frames(client, vid, prompt, **kw):
    options = EditOptions(update_strength=DELTA, **kw)
    return np.stack([f.to_array() for f in client.edit(vid, prompt, options, encoding="raw")])


def test_suite_frames_equal_the_embedded_engine(client, embedded, clip):
    info = client.invert(clip, INV)
    assert info.num_frames == 5 and (info.width, info.height) == (SIZE, SIZE)
    ours = _suite_frames(client, info.video_id, "a crochet swan", frames_in_flight=2)
    ref = _embedded_frames(embedded, "a crochet swan", frames_in_flight=2)
    assert ours.shape == (5, SIZE, SIZE, 3)
    assert np.array_equal(ours, ref)
    # The same video id as the embedded engine: same frames, models and settings.
    assert info.video_id == embedded[1]


def test_png_and_jpeg_outputs(client, clip):
    vid = client.invert(clip, INV).video_id
    raw = _suite_frames(client, vid, "a swan")
    png = np.stack(
        [f.to_array() for f in client.edit(vid, "a swan", EditOptions(update_strength=DELTA), encoding="png")]
    )
    jpeg = [f for f in client.edit(vid, "a swan", EditOptions(update_strength=DELTA), encoding="jpeg", jpeg_quality=80)]
    assert np.array_equal(png, raw)
    assert jpeg[0].data[:2] == b"\xff\xd8" and jpeg[0].to_array().shape == (SIZE, SIZE, 3)


def test_inversion_goes_to_s3_and_is_cached(client, suite, clip):
    stages = []
    first = client.invert(clip, INV, progress=lambda s, d, t: stages.append(s))
    again = client.invert(clip, INV)
    assert again.cached and again.video_id == first.video_id
    store = suite["inversion"].servicer.worker.store
    manifest = read_manifest(TenantStore(store, DEFAULT_TENANT), first.video_id)  # without tokens: the default tenant
    assert manifest is not None and manifest.num_frames == 5
    assert type(store).__name__ == "S3Store"
    # A new clip walks every stage, and its manifest only appears at the end.
    other = client.invert(
        clip, dataclasses.replace(INV, source_prompt="another prompt"), progress=lambda s, d, t: stages.append(s)
    )
    assert not other.cached
    assert {"decode", "depth", "inversion", "store"} <= set(stages)
    assert client.get_video(other.video_id).num_frames == 5


def test_captioning_through_the_caption_service(client, clip):
    info = client.invert(clip, dataclasses.replace(INV, source_prompt=None))
    assert isinstance(info.source_prompt, str)
    # The embedded engine captions the same way.
    assert client.invert(clip, dataclasses.replace(INV, source_prompt=None)).cached


def test_two_sessions_at_once_each_get_their_own_frames(client, embedded, clip):
    vid = client.invert(clip, INV).video_id
    results = {}

    def run(prompt, kw):
        results[prompt] = _suite_frames(client, vid, prompt, **kw)

    jobs = [
        ("a crochet swan", dict(frames_in_flight=2)),
        ("a glass bird", dict(reference="anchor", frames_in_flight=3)),
    ]
    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for prompt, kw in jobs:
        ref = _embedded_frames(embedded, prompt, **kw)
        # Sharing UNet calls changes batch composition; float64 keeps that below a grey level.
        assert np.abs(results[prompt].astype(int) - ref.astype(int)).max() <= 1, prompt
    assert not np.array_equal(results[jobs[0][0]], results[jobs[1][0]])


def _raw_stream(suite, first_request):
    stub = editor_pb2_grpc.EditorServiceStub(grpc.insecure_channel(f"127.0.0.1:{suite['editor'].port}"))
    outbox = [first_request]
    gate = threading.Event()

    def requests():
        yield outbox[0]
        gate.wait(60)
        if len(outbox) > 1:
            yield outbox[1]

    return stub.Edit(requests()), outbox, gate


def _open(vid, prompt="a crochet swan"):
    return editor_pb2.EditRequest(
        open=editor_pb2.OpenSession(
            video_id=vid,
            settings=editor_pb2.EditSettings(prompt=prompt, update_strength=DELTA, frames_in_flight=1),
        )
    )


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_video(path, make_sample_frames(12, 64, 64), fps=10)
    return path


def test_cancel_stops_the_work_and_frees_the_state(client, suite, long_clip):
    vid = client.invert(long_clip, INV).video_id
    engine = suite["editor"].servicer.worker
    frames = client.edit(vid, "a swan", EditOptions(update_strength=DELTA, frames_in_flight=1))
    next(frames), next(frames)
    assert engine.snapshot.active == 1
    frames.close()  # the SDK sends cancel
    deadline = time.time() + 10
    while engine.snapshot.active and time.time() < deadline:
        time.sleep(0.05)
    assert not engine.snapshot.active and not engine.editor.sessions and not engine.editor.context.keys
    count = engine.editor.items_done
    time.sleep(0.5)
    assert engine.editor.items_done == count  # no more GPU work for it


def test_reconnect_resumes_with_the_same_frames(client, suite, long_clip):
    vid = client.invert(long_clip, INV).video_id
    whole = [f.image.data for f in _collect(_raw_stream(suite, _open(vid))[0])]
    engine = suite["editor"].servicer.worker

    call, _, gate = _raw_stream(suite, _open(vid))
    got, session_id = [], None
    for resp in call:
        if resp.HasField("opened"):
            session_id, secret = resp.opened.session_id, resp.opened.resume_secret
        elif resp.HasField("frame"):
            got.append(resp.frame.image.data)
            if len(got) == 3:
                break
    call.cancel()  # the connection drops: no cancel request
    gate.set()
    deadline = time.time() + 10
    while not engine.snapshot.detached and time.time() < deadline:
        time.sleep(0.05)
    assert engine.snapshot.detached == 1 and session_id in engine.sessions
    count = engine.editor.items_done
    time.sleep(0.5)
    assert engine.editor.items_done == count  # detached: work stopped, state kept

    resume = editor_pb2.EditRequest(
        resume=editor_pb2.ResumeSession(session_id=session_id, next_frame=3, resume_secret=secret)
    )
    rest = [f.image.data for f in _collect(_raw_stream(suite, resume)[0])]
    assert got + rest == whole
    deadline = time.time() + 10
    while session_id in engine.sessions and time.time() < deadline:
        time.sleep(0.05)
    assert session_id not in engine.sessions  # finished and freed


def _collect(call):
    return [r.frame for r in call if r.HasField("frame")]


def _code(call):
    with pytest.raises(grpc.RpcError) as info:
        list(call) if not isinstance(call, grpc.Future) else call.result()
    return info.value.code(), info.value.details()


def test_bad_input_gets_the_right_status_and_the_services_keep_serving(client, suite, clip, tmp_path):
    inv = inversion_pb2_grpc.InversionServiceStub(grpc.insecure_channel(f"127.0.0.1:{suite['inversion'].port}"))
    vid = client.invert(clip, INV).video_id

    with pytest.raises(client_errors.NotFound, match="video_id"):
        list(client.edit("0" * 40, "a swan"))
    with pytest.raises(client_errors.InvalidArgument, match="prompt"):
        list(client.edit(vid, "   "))
    with pytest.raises(client_errors.InvalidArgument, match="guidance_scale"):
        list(client.edit(vid, "a swan", EditOptions(guidance_scale=0.1)))
    with pytest.raises(client_errors.InvalidArgument, match="num_steps"):
        list(client.edit(vid, "a swan", EditOptions(num_steps=STEPS + 1)))
    code, details = _code(
        _raw_stream(suite, editor_pb2.EditRequest(resume=editor_pb2.ResumeSession(session_id="0" * 32)))[0]
    )
    assert code == grpc.StatusCode.NOT_FOUND and "session_id" in details
    code, details = _code(_raw_stream(suite, editor_pb2.EditRequest(cancel=editor_pb2.CancelSession()))[0])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "open" in details

    not_video = tmp_path / "x.mp4"
    not_video.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(client_errors.InvalidArgument, match="input"):
        client.invert(not_video, INV)
    with pytest.raises(client_errors.InvalidArgument, match="settings.width"):
        client.invert(clip, dataclasses.replace(INV, width=100))
    with pytest.raises(client_errors.NotFound, match="key"):
        client.invert("videos/none.mp4", INV, key=True)
    with pytest.raises(client_errors.NotFound, match="video_id"):
        client.get_video("f" * 40)
    code, details = _code(inv.Invert(iter([inversion_pb2.InvertRequest(chunk=b"abc")])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "start" in details
    # A message over the server's limit is refused by the transport.
    big = inversion_pb2.InvertRequest(chunk=b"\0" * (65 * 1024 * 1024))
    start = inversion_pb2.InvertRequest(
        start=inversion_pb2.InvertStart(settings=INV.to_proto(), upload=inversion_pb2.Upload())
    )
    code, _ = _code(inv.Invert(iter([start, big])))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED

    # Still serving: a good call works on each.
    assert client.get_video(vid).video_id == vid
    assert len(list(client.edit(vid, "a swan", EditOptions(update_strength=DELTA)))) == 5


def test_protos_alone_are_enough(suite, clip):
    """A client with only the generated stubs: upload, invert, edit."""
    inv = inversion_pb2_grpc.InversionServiceStub(grpc.insecure_channel(f"127.0.0.1:{suite['inversion'].port}"))
    data = clip.read_bytes()
    requests = [
        inversion_pb2.InvertRequest(
            start=inversion_pb2.InvertStart(
                settings=inversion_pb2.InversionSettings(
                    width=SIZE, height=SIZE, num_steps=STEPS, source_prompt="a red ball"
                ),
                upload=inversion_pb2.Upload(size_bytes=len(data)),
            )
        ),
        inversion_pb2.InvertRequest(chunk=data[: len(data) // 2]),
        inversion_pb2.InvertRequest(chunk=data[len(data) // 2 :]),
    ]
    result = [r.result for r in inv.Invert(iter(requests)) if r.HasField("result")][0]
    frames = _collect(_raw_stream(suite, _open(result.video_id))[0])
    assert [f.index for f in frames] == list(range(5)) and frames[0].image.data[:4] == b"\x89PNG"


def test_reflection_lists_every_service(suite):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for name, running in suite.items():
        stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(f"127.0.0.1:{running.port}"))
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in resp.list_services_response.service}
        assert f"pix2video.{name}.v1.{name.capitalize()}Service" in names and "grpc.health.v1.Health" in names


def test_serve_all_and_the_cli_against_it(tiny_dir, clip, tmp_path, monkeypatch, capfd):
    """`pix2video serve --all` as a real process, `pix2video edit --server` against it."""
    import os
    import signal
    import subprocess
    import sys

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from pix2video.cli import main

    names = ("depth", "caption", "inversion", "editor")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    cmd = [sys.executable, "-m", "pix2video.cli", "serve", "--all"]
    cmd += [f"--{name}-port={port}" for name, port in ports.items()]
    cmd += ["--host", "127.0.0.1", "--model", str(tiny_dir), "--device", "cpu", "--store-dir", str(tmp_path / "store")]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PIX2VIDEO_HOME": str(tmp_path)}
    )
    try:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{ports['editor']}"))
        deadline = time.time() + 120
        while True:
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    break
            except grpc.RpcError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:]
            time.sleep(0.3)
        out = tmp_path / "out.mp4"
        server = ["--server", f"127.0.0.1:{ports['inversion']}", "--editor-server", f"127.0.0.1:{ports['editor']}"]
        common = ["--width", "64", "--height", "64", "--steps", "4", "--source-prompt", "a ball", "-q", *server]
        capfd.readouterr()
        assert (
            main(["edit", str(clip), "--prompt", "a swan", "-o", str(out), "--update-strength", str(DELTA), *common])
            == 0
        )
        frames, info = read_video(out)
        assert len(frames) == 5 and frames[0].shape == (64, 64, 3) and info.fps == pytest.approx(10)
        # bad input at the CLI, answered by the server: one line, non-zero, no file
        capfd.readouterr()
        assert (
            main(["edit", "videos/absent.mp4", "--key", "--prompt", "a swan", "-o", str(tmp_path / "bad.mp4"), *common])
            == 2
        )
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "object_key" in err[0] and not (tmp_path / "bad.mp4").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, proc.stdout.read().decode()[-3000:]


def test_the_sdk_resumes_a_broken_stream_on_the_replica_that_holds_the_session(
    suite, client, tiny_dir, s3_settings, long_clip, tmp_path
):
    """The editor runs as replica "localhost"; the client reaches it through a
    proxy (a load balancer) that dies mid-stream. The SDK resumes on
    "{replica}:port", the replica itself, and gets the same frames."""
    settings = dataclasses.replace(suite["editor"].settings, port=0, replica_name="localhost", metrics_port=-1)
    from pix2video.servers.editor.server import build

    thread = ServerThread()
    try:
        (editor,) = thread.start(lambda: _as_list(build(settings)))
        vid = client.invert(long_clip, INV).video_id
        options = EditOptions(update_strength=DELTA, frames_in_flight=2)
        direct = Pix2VideoClient(f"127.0.0.1:{suite['inversion'].port}", f"127.0.0.1:{editor.port}")
        whole = [f.data for f in direct.edit(vid, "a swan", options, encoding="raw")]
        direct.close()

        engine = editor.servicer.worker
        resumes = []
        real_resume = engine.resume
        engine.resume = lambda *a: resumes.append(a) or real_resume(*a)  # counts, then the real thing

        proxy = CuttingProxy(editor.port)
        routed = Pix2VideoClient(
            f"127.0.0.1:{suite['inversion'].port}",
            f"127.0.0.1:{proxy.port}",
            editor_replica_address=f"{{replica}}:{editor.port}",
            retries=3,
            backoff=0.1,
        )
        got = []
        for frame in routed.edit(vid, "a swan", options, encoding="raw"):
            got.append(frame.data)
            if len(got) == 2:
                proxy.cut()  # the load balancer is gone for good
        routed.close()
        assert got == whole
        assert len(resumes) == 1 and resumes[0][1].startswith("localhost.")  # (tenant, session id, ...)
    finally:
        thread.stop()


async def _as_list(coro):
    return [await coro]
