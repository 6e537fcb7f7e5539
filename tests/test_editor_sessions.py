"""Editor sessions as a careless or hostile client treats them: real editor
servers on port 0, real channels, tiny models, real subprocesses for SIGKILL.

Videos are written straight into the store as tenant "default" sees it
(TenantStore), as the inversion service writes them."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
import torch
from cutting_proxy import CuttingProxy
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from reliability import reliability_row

from pix2video.servers.common.server import ServerThread
from pix2video.servers.editor.server import build
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.store import LocalDiskStore
from pix2video.store.tenant import TenantStore
from pix2video.store.videos import Manifest, write_video_record
from pix2video_api.common.v1 import common_pb2
from pix2video_api.editor.v1 import editor_pb2 as pb
from pix2video_api.editor.v1 import editor_pb2_grpc as pb_grpc
from pix2video_client import EditOptions, IncompleteEdit, Pix2VideoClient

STEPS = 2
RAW = common_pb2.OutputFormat(encoding=common_pb2.IMAGE_ENCODING_RAW_RGB8)
HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([os.path.join(HERE, "..", "services"), os.path.join(HERE, "..", "clients")]),
}


def put_video(store, num_frames: int, seed: int = 0, size: int = 8) -> str:
    """A synthetic inverted video (random x_T and depth), as tenant "default" stores it."""
    g = torch.Generator().manual_seed(seed)
    video_id = f"{seed:040x}"
    manifest = Manifest(video_id, num_frames, size * 8, size * 8, STEPS, "a ball", "tiny", 10.0)
    latents = torch.randn(num_frames, 4, size, size, generator=g)
    depth = torch.rand(num_frames, 1, size, size, generator=g) * 2 - 1
    write_video_record(TenantStore(store, "default"), manifest, latents, depth)
    return video_id


def _settings(tiny_dir, tmp, **kw) -> EditorServerSettings:
    base = dict(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        model=str(tiny_dir),
        device="cpu",
        dtype="float32",
        home=str(tmp / "home"),
        store="local",
        store_dir=str(tmp / "store"),
        log_format="text",
    )
    return EditorServerSettings(**{**base, **kw})


async def _one(coro):
    return [await coro]


@pytest.fixture(scope="module")
def editor(tiny_dir, tmp_path_factory):
    """One editor with short timeouts, and a 12-frame and a 4-frame video."""
    tmp = tmp_path_factory.mktemp("editor")
    settings = _settings(
        tiny_dir, tmp, stall_timeout_seconds=1.5, detach_grace_seconds=1.0, buffered_frames=2, max_sessions=40
    )
    store = LocalDiskStore(settings.store_dir)
    videos = {"long": put_video(store, 12, seed=1), "short": put_video(store, 4, seed=2)}
    thread = ServerThread()
    (running,) = thread.start(lambda: _one(build(settings)))
    yield running, videos, thread
    thread.stop()


def _stub(running, **options):
    ch = grpc.insecure_channel(f"127.0.0.1:{running.port}", options=list(options.items()))
    return pb_grpc.EditorServiceStub(ch), ch


def _open(video_id, prompt="a crochet swan", start_frame=0, **settings):
    return pb.EditRequest(
        open=pb.OpenSession(
            video_id=video_id,
            settings=pb.EditSettings(prompt=prompt, frames_in_flight=2, **settings),
            output=RAW,
            start_frame=start_frame,
        )
    )


def _requests(first, then=(), hold: threading.Event | None = None):
    yield first
    for r in then:
        yield r
    if hold is not None:
        hold.wait(60)


def _metrics(running) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _ended(running) -> dict[str, float]:
    m = _metrics(running)
    return {dict(k[1])["reason"]: v for k, v in m.items() if k[0] == "pix2video_editor_sessions_ended_total"}


def _wait(predicate, timeout=60.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def _all_freed(worker) -> bool:
    s = worker.snapshot
    return s.active == 0 and s.detached == 0 and s.feature_slots_used == 0 and s.host_buffer_bytes == 0


def _frames(call):
    return [r.frame for r in call if r.HasField("frame")]


SECTION = "Editor sessions"


def _serving_and_edits(port: int, video_id: str, num_frames: int) -> bool:
    """The reliability table's "kept serving": health SERVING, and a normal edit
    of ``video_id`` gets all its frames and ``done``."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        kinds = [
            r.WhichOneof("kind") for r in pb_grpc.EditorServiceStub(ch).Edit(_requests(_open(video_id)), timeout=60)
        ]
    return health.status == health_pb2.HealthCheckResponse.SERVING and kinds == ["opened"] + ["frame"] * num_frames + [
        "done"
    ]


# -- lifecycle -----------------------------------------------------------------


def test_every_ending_frees_the_session_and_is_counted(editor):
    running, videos, _ = editor
    worker = running.servicer.worker
    before = _ended(running)

    # 16 clients that open and never read: paused by back-pressure, freed after the stall timeout.
    hold = threading.Event()
    lazy = []
    with reliability_row(
        "editor.16-clients-never-read", SECTION, "16 clients open a 12-frame edit and never read (stall timeout 1.5 s)"
    ) as row:
        for _ in range(16):
            # No BDP probing: the client's receive window stays at 64 KB, so a
            # client that does not read really stops the server's writes.
            stub, ch = _stub(running, **{"grpc.http2.bdp_probe": 0})
            lazy.append((stub.Edit(_requests(_open(videos["long"]), hold=hold)), ch))
        assert _wait(lambda: worker.snapshot.active == 16, 30)
        assert _wait(lambda: _ended(running).get("stalled", 0) - before.get("stalled", 0) == 16, 90)
        assert _wait(lambda: _all_freed(worker), 10), worker.snapshot
        hold.set()
        codes = set()
        for call, _ in lazy:  # what each lazy client finds once it reads: its buffered frames, then the status
            try:
                for _ in call:
                    pass
                codes.add("OK")
            except grpc.RpcError as exc:
                codes.add(exc.code().name)
        codes = sorted(codes)
        for call, ch in lazy:
            call.cancel()
            ch.close()
        row.status = f"{'/'.join(codes)} for all 16 at the stall timeout; every session freed, counted as stalled"
        row.kept_serving = _serving_and_edits(running.port, videos["short"], 4)
        row.lost = "nothing"
    assert codes == ["DEADLINE_EXCEEDED"]

    # 16 clients SIGKILLed mid-stream: detached, freed after the detach grace.
    script = (
        "import sys, time, grpc\n"
        "from pix2video_api.editor.v1 import editor_pb2 as pb, editor_pb2_grpc as g\n"
        "from pix2video_api.common.v1 import common_pb2\n"
        "stub = g.EditorServiceStub(grpc.insecure_channel(sys.argv[1]))\n"
        "def reqs():\n"
        "    yield pb.EditRequest(open=pb.OpenSession(video_id=sys.argv[2], settings=pb.EditSettings(prompt='a swan'),"
        " output=common_pb2.OutputFormat(encoding=common_pb2.IMAGE_ENCODING_RAW_RGB8)))\n"
        "    time.sleep(3600)\n"
        "for r in stub.Edit(reqs()):\n"
        "    if r.HasField('frame'):\n"
        "        print('frame', flush=True)\n"
        "        time.sleep(3600)\n"
    )
    with reliability_row(
        "editor.16-clients-sigkilled",
        SECTION,
        "16 client processes SIGKILLed after their first frame (detach grace 1 s)",
    ) as row:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, f"127.0.0.1:{running.port}", videos["long"]],
                stdout=subprocess.PIPE,
                env=ENV,
            )
            for _ in range(16)
        ]
        try:
            for p in procs:
                assert p.stdout.readline().strip() == b"frame"
            for p in procs:
                p.send_signal(signal.SIGKILL)
            for p in procs:
                p.wait(10)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        assert _wait(lambda: _ended(running).get("detach_expired", 0) - before.get("detach_expired", 0) == 16, 60)
        assert _wait(lambda: _all_freed(worker), 10), worker.snapshot
        row.status = (
            "none (the clients are dead); every session freed after the detach grace, counted as detach_expired"
        )
        row.kept_serving = _serving_and_edits(running.port, videos["short"], 4)
        row.lost = "nothing"

    # A second open in a stream breaks the protocol: INVALID_ARGUMENT, freed at once.
    stub, ch = _stub(running)
    hold2 = threading.Event()
    with reliability_row("editor.second-open", SECTION, "a second open in the same edit stream") as row:
        call = stub.Edit(_requests(_open(videos["long"]), [_open(videos["long"])], hold=hold2))
        with pytest.raises(grpc.RpcError) as info:
            _frames(call)
        hold2.set()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "only cancel" in info.value.details()
        assert _wait(lambda: _ended(running).get("protocol", 0) - before.get("protocol", 0) == 1, 5)
        row.status = "INVALID_ARGUMENT 'only cancel may follow open or resume'; the session freed at once"
        row.kept_serving = _serving_and_edits(running.port, videos["short"], 4)
        row.lost = "nothing"

    # Done; a stream cancelled by the client (detached, then freed after the
    # grace); a cancel message from the SDK when its caller stops early.
    assert len(_frames(stub.Edit(_requests(_open(videos["short"]))))) == 4
    hold3 = threading.Event()
    call = stub.Edit(_requests(_open(videos["long"]), hold=hold3))
    next(iter(call))  # opened
    call.cancel()
    hold3.set()
    with Pix2VideoClient("127.0.0.1:1", f"127.0.0.1:{running.port}") as client:
        frames = client.edit(videos["long"], "a swan", encoding="raw")
        next(frames)
        frames.close()
    ch.close()
    want = {"done": 1 + 3, "detach_expired": 17, "cancelled": 1, "stalled": 16, "protocol": 1}  # 3: the rows' checks
    counted = lambda: {k: _ended(running).get(k, 0) - before.get(k, 0) for k in want}  # noqa: E731
    assert _wait(lambda: counted() == want, 20), counted()
    assert _wait(lambda: _all_freed(worker), 10), worker.snapshot
    left = worker.call(lambda: [s.id for s in worker.sessions.values()]).result(10)
    assert not left and not worker.call(lambda: worker.editor.context.keys).result(10)
    m = _metrics(running)
    assert m[("pix2video_editor_active_sessions", ())] == 0 and m[("pix2video_editor_detached_sessions", ())] == 0
    assert m[("pix2video_editor_feature_slots_used", ())] == 0


def test_a_huge_negative_prompt_is_refused_at_once_and_other_sessions_keep_their_pace(editor):
    running, videos, _ = editor
    stub, ch = _stub(running)
    gaps, stop = [], threading.Event()

    def other():
        last = None
        for r in stub.Edit(_requests(_open(videos["long"]))):
            if r.HasField("frame"):
                now = time.monotonic()
                if last is not None:
                    gaps.append(now - last)
                last = now

    with reliability_row(
        "editor.5mb-negative-prompt", SECTION, "a 5 MB negative prompt while another session streams 12 frames"
    ) as row:
        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Edit(_requests(_open(videos["short"], negative_prompt="x" * 5_000_000))))
        refused = time.monotonic() - started
        t.join(120)
        stop.set()
        ch.close()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "negative_prompt" in info.value.details()
        assert len(info.value.details()) < 200  # no echo of the prompt
        assert refused < 2.0, refused
        assert len(gaps) == 11  # the other session got every frame
        # No gap of the other session stands out: the refusal cost it nothing.
        assert max(gaps) < 5 * statistics.median(gaps) + 0.5, gaps
        row.status = "INVALID_ARGUMENT naming negative_prompt within 2 s; the other session got every frame at its pace"
        row.kept_serving = _serving_and_edits(running.port, videos["short"], 4)
        row.lost = "nothing"


# -- ownership -------------------------------------------------------------------


@pytest.fixture
def replaying_editor(tiny_dir, tmp_path):
    """An editor that keeps every sent frame for a replay (buffered_frames > frames)."""
    settings = _settings(tiny_dir, tmp_path, buffered_frames=16, metrics_port=-1)
    vid = put_video(LocalDiskStore(settings.store_dir), 12, seed=7)
    thread = ServerThread()
    (running,) = thread.start(lambda: _one(build(settings)))
    yield running, {"long": vid}, thread
    thread.stop()


def test_resume_needs_the_tenant_and_the_secret_and_a_takeover_ends_the_old_stream_aborted(replaying_editor):
    running, videos, thread = replaying_editor
    with reliability_row(
        "editor.resume-hijack",
        SECTION,
        "resumes of a live session with no secret, a wrong one, as another tenant, of an absent session",
    ) as row:
        _resume_hijack(running, videos, thread)
        row.status = (
            "PERMISSION_DENIED (no or wrong secret), NOT_FOUND (another tenant, an absent session); "
            "the owner's stream undisturbed; a resume with the secret takes over, the old stream ABORTED"
        )
        row.kept_serving = _serving_and_edits(running.port, videos["long"], 12)
        row.lost = "nothing"


def _resume_hijack(running, videos, thread):
    worker = running.servicer.worker
    stub, ch = _stub(running)
    hold = threading.Event()
    owner = stub.Edit(_requests(_open(videos["long"]), hold=hold))
    it = iter(owner)
    opened = next(it).opened
    assert opened.resume_secret and len(opened.resume_secret) >= 32
    got = [next(it).frame]

    def resume(secret, sid=opened.session_id, next_frame=1):
        return stub.Edit(
            _requests(
                pb.EditRequest(
                    resume=pb.ResumeSession(session_id=sid, next_frame=next_frame, output=RAW, resume_secret=secret)
                )
            )
        )

    for secret in ("", "not-the-secret"):
        with pytest.raises(grpc.RpcError) as info:
            list(resume(secret))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert opened.resume_secret not in info.value.details()
    # Another tenant: the session does not exist for it, exactly as one that never did.
    from pix2video.errors import NotFound
    from pix2video.servers.editor.worker import Stream

    with pytest.raises(NotFound) as other:
        worker.call(worker.resume, "tenant-b", opened.session_id, opened.resume_secret, 1, Stream(thread.loop)).result(
            10
        )
    with pytest.raises(grpc.RpcError) as missing:
        list(resume(opened.resume_secret, sid="0" * 32))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND and missing.value.details() == str(other.value)

    # The owner's stream was not disturbed.
    got.append(next(it).frame)
    assert [f.index for f in got] == [0, 1]

    # A legitimate resume takes over; the old stream ends ABORTED, never OK.
    taken = resume(opened.resume_secret, next_frame=2)
    rest = _frames(taken)
    with pytest.raises(grpc.RpcError) as old:
        list(it)
    hold.set()
    ch.close()
    assert old.value.code() == grpc.StatusCode.ABORTED and "resumed elsewhere" in old.value.details()
    assert [f.index for f in rest] == list(range(2, 12))


def test_per_tenant_session_quota(tiny_dir, tmp_path):
    settings = _settings(tiny_dir, tmp_path, max_sessions_per_tenant=1, metrics_port=-1)
    vid = put_video(LocalDiskStore(settings.store_dir), 4, seed=3)
    thread = ServerThread()
    try:
        (running,) = thread.start(lambda: _one(build(settings)))
        stub, ch = _stub(running)
        hold = threading.Event()
        with reliability_row(
            "editor.tenant-session-quota", SECTION, "a tenant opens a second session past max_sessions_per_tenant=1"
        ) as row:
            first = iter(stub.Edit(_requests(_open(vid), hold=hold)))
            next(first)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Edit(_requests(_open(vid))))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_sessions_per_tenant" in info.value.details()
            hold.set()
            assert [r.WhichOneof("kind") for r in first] == ["frame"] * 4 + ["done"]  # the first one finishes
            ch.close()
            row.status = "RESOURCE_EXHAUSTED naming max_sessions_per_tenant; the first session finished"
            row.kept_serving = _serving_and_edits(running.port, vid, 4)
            row.lost = "nothing"
    finally:
        thread.stop()


# -- the event loop never waits for a tick -----------------------------------------


def test_slow_ticks_never_delay_the_event_loop(tiny_dir, tmp_path):
    settings = _settings(tiny_dir, tmp_path, metrics_port=-1)
    store = LocalDiskStore(settings.store_dir)
    slow, fast = put_video(store, 3, seed=4), put_video(store, 3, seed=5)
    thread = ServerThread()
    try:
        (running,) = thread.start(lambda: _one(build(settings)))
        unet = running.servicer.worker.models.unet
        handle = unet.register_forward_pre_hook(lambda *a: time.sleep(1.0))  # every tick takes > 1 s
        stub, ch = _stub(running)
        health = health_pb2_grpc.HealthStub(ch)
        frames_at = []

        def edit(vid):
            for r in stub.Edit(_requests(_open(vid))):
                if r.HasField("frame"):
                    frames_at.append(time.monotonic())

        workers = [threading.Thread(target=edit, args=(v,)) for v in (slow, fast)]
        for w in workers:
            w.start()

        async def lag_probe(seconds=4.0, every=0.01):
            import asyncio

            lags, end = [], time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.monotonic()
                await asyncio.sleep(every)
                lags.append(time.monotonic() - t0 - every)
            return lags

        with reliability_row(
            "editor.slow-ticks", SECTION, "two sessions whose every tick takes over 1 s (a sleep hook in the UNet)"
        ) as row:
            time.sleep(0.3)  # the sessions are open and ticking
            probe = __import__("asyncio").run_coroutine_threadsafe(lag_probe(), thread.loop)
            checks = []
            while not probe.done():
                t0 = time.monotonic()
                health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
                checks.append(time.monotonic() - t0)
                time.sleep(0.05)
            lags = sorted(probe.result())
            for w in workers:
                w.join(120)
            handle.remove()
            ch.close()
            p99 = lags[int(0.99 * (len(lags) - 1))]
            assert p99 < 0.050, f"event-loop lag p99 {p99 * 1000:.1f} ms"
            assert sorted(checks)[int(0.99 * (len(checks) - 1))] < 0.050 + 0.05, checks
            assert len(frames_at) == 6
            row.status = "OK: every frame; health checks answered, event-loop lag p99 under 50 ms"
            row.kept_serving = _serving_and_edits(running.port, fast, 3)
            row.lost = "nothing"
    finally:
        thread.stop()


# -- health Watch and reflection v1 ------------------------------------------------------


def test_health_watch_streams_serving_then_not_serving_on_stop(tiny_dir, tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2

    settings = _settings(tiny_dir, tmp_path, metrics_port=-1, grace_seconds=1.0)
    thread = ServerThread()
    (running,) = thread.start(lambda: _one(build(settings)))
    ch = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        statuses = iter(watch)
        assert next(statuses).status == health_pb2.HealthCheckResponse.SERVING
        # Reflection answers under v1 as under v1alpha.
        for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
            call = ch.stream_stream(
                f"/{package}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            (resp,) = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            names = {s.name for s in resp.list_services_response.service}
            assert "pix2video.editor.v1.EditorService" in names and "grpc.reflection.v1.ServerReflection" in names
            (resp,) = list(
                call(
                    iter(
                        [
                            reflection_pb2.ServerReflectionRequest(
                                file_containing_symbol="grpc.reflection.v1.ServerReflection"
                            )
                        ]
                    )
                )
            )
            assert resp.HasField("file_descriptor_response"), resp
        stopper = threading.Thread(target=thread.stop)
        stopper.start()
        assert next(statuses).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopper.join(60)
    finally:
        ch.close()


# -- the client: truncation-proof, and exact resume after a replica dies ------------------


def test_a_cut_stream_without_resume_raises_and_leaves_no_file(editor, tmp_path):
    running, videos, _ = editor
    with reliability_row(
        "editor.sdk-stream-cut",
        SECTION,
        "the SDK's edit stream cut after frame 5 of 12, resume off (retries=0); edit_video over a previous file",
    ) as row:
        _cut_stream_without_resume(running, videos, tmp_path)
        row.status = "IncompleteEdit 'after 5 of 12 frames'; no file written, the previous one intact"
        row.kept_serving = _serving_and_edits(running.port, videos["long"], 12)
        row.lost = "nothing"


def _cut_stream_without_resume(running, videos, tmp_path):
    proxy = CuttingProxy(running.port)
    client = Pix2VideoClient("127.0.0.1:1", f"127.0.0.1:{proxy.port}", retries=0)
    got = []
    with pytest.raises(IncompleteEdit) as info:
        for f in client.edit(videos["long"], "a swan", EditOptions(frames_in_flight=2), encoding="raw"):
            got.append(f.index)
            if len(got) == 5:
                proxy.cut()
    client.close()
    assert got == [0, 1, 2, 3, 4]
    assert info.value.received == 5 and info.value.num_frames == 12
    assert "after 5 of 12 frames" in str(info.value)

    # edit_video writes through the same stream: nothing appears at the output.
    from pix2video_client.video import write_mp4

    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous file")
    proxy = CuttingProxy(running.port)
    client = Pix2VideoClient("127.0.0.1:1", f"127.0.0.1:{proxy.port}", retries=0)

    def frames():
        for f in client.edit(videos["long"], "a swan", encoding="raw"):
            if f.index == 4:
                proxy.cut()
            yield f.to_array()

    with pytest.raises(IncompleteEdit):
        write_mp4(out, frames(), 10)
    client.close()
    assert out.read_bytes() == b"the previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def _start_editor_process(tiny_dir, store_dir, home):
    cmd = [
        sys.executable, "-m", "pix2video.servers.editor",
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1",
        "--model", str(tiny_dir), "--device", "cpu", "--dtype", "float32",
        "--store", "local", "--store-dir", str(store_dir), "--home", str(home), "--log-format", "text",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=ENV, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        m = re.search(r"serving .* on port (\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(m.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("editor did not start:\n" + "".join(lines))


def test_a_killed_replica_loses_nothing_the_edit_completes_on_the_other(tiny_dir, tmp_path):
    store_dir, home = tmp_path / "store", tmp_path / "home"
    vid = put_video(LocalDiskStore(str(store_dir)), 10, seed=6)
    a, port_a = _start_editor_process(tiny_dir, store_dir, home)
    b = None
    try:
        b, port_b = _start_editor_process(tiny_dir, store_dir, home)
        options = EditOptions(frames_in_flight=3)
        with Pix2VideoClient("127.0.0.1:1", f"127.0.0.1:{port_b}") as direct:
            whole = [f.to_array() for f in direct.edit(vid, "a crochet swan", options, encoding="raw")]
        indices, frames = [], []
        with reliability_row(
            "editor.replica-sigkilled",
            SECTION,
            "one of two editor processes SIGKILLed after frame 4 of a 10-frame edit (the SDK has both addresses)",
        ) as row:
            with Pix2VideoClient("127.0.0.1:1", [f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"], backoff=0.05) as c:
                for f in c.edit(vid, "a crochet swan", options, encoding="raw"):
                    indices.append(f.index)
                    frames.append(f.to_array())
                    if len(frames) == 4:
                        a.send_signal(signal.SIGKILL)
                        a.wait(10)
            assert indices == list(range(10))  # no gap, no repeat
            assert all(np.array_equal(x, y) for x, y in zip(frames, whole, strict=True))  # bitwise on the CPU
            row.status = "OK: the edit completed on the other replica, every frame once, equal to an undisturbed run's"
            row.kept_serving = _serving_and_edits(port_b, vid, 10)
            row.lost = "nothing"
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)


def test_open_from_a_later_frame_continues_with_the_same_frames(editor):
    running, videos, _ = editor
    stub, ch = _stub(running)
    whole = [f.image.data for f in _frames(stub.Edit(_requests(_open(videos["long"]))))]
    # A catch-up slower than the stall timeout (1.5 s here): the client is not
    # stalled while there is nothing to read yet.
    handle = running.servicer.worker.models.unet.register_forward_pre_hook(lambda *a: time.sleep(0.4))
    try:
        started = time.monotonic()
        call = stub.Edit(_requests(_open(videos["long"], start_frame=7)))
        rest = []
        for r in call:
            if r.HasField("frame"):
                rest.append(r.frame)
                if len(rest) == 1:
                    first_after = time.monotonic() - started
    finally:
        handle.remove()
    assert first_after > 1.5, first_after  # the catch-up did outlast the stall timeout
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Edit(_requests(_open(videos["long"], start_frame=12))))
    ch.close()
    assert [f.index for f in rest] == list(range(7, 12))
    assert [f.image.data for f in rest] == whole[7:]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "start_frame" in info.value.details()


def test_cli_refuses_to_write_over_its_input(tmp_path, capsys):
    from pix2video.cli import main

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read")
    code = main(["edit", str(clip), "--prompt", "a swan", "-o", str(tmp_path / "." / "clip.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "input video" in err[0]
    assert clip.read_bytes() == b"not read"


def test_new_editor_settings_are_checked():
    from pix2video.errors import InvalidInput

    env = {"PIX2VIDEO_STORE_DIR": "/tmp/x"}
    from pix2video.servers.common.settings import load_settings

    for flags, name in (
        (["--stall-timeout-seconds", "0"], "stall_timeout_seconds"),
        (["--detach-grace-seconds", "-1"], "detach_grace_seconds"),
        (["--max-sessions-per-tenant", "-1"], "max_sessions_per_tenant"),
    ):
        with pytest.raises(InvalidInput, match=name):
            load_settings(EditorServerSettings, flags, env=env)
    s = load_settings(EditorServerSettings, [], env=env)
    assert (s.detach_grace_seconds, s.stall_timeout_seconds, s.max_sessions_per_tenant) == (30.0, 120.0, 0)
    assert dataclasses.replace(s, max_sessions_per_tenant=3).max_sessions_per_tenant == 3


def test_the_async_client_gets_every_frame_and_raises_on_a_cut_stream(editor):
    import asyncio

    from pix2video_client.aio import AsyncPix2VideoClient

    running, videos, _ = editor

    async def run():
        async with AsyncPix2VideoClient("127.0.0.1:1", f"127.0.0.1:{running.port}") as client:
            whole = [f.index async for f in client.edit(videos["short"], "a swan", encoding="raw")]
        proxy = CuttingProxy(running.port)
        got = []
        async with AsyncPix2VideoClient("127.0.0.1:1", f"127.0.0.1:{proxy.port}", retries=0) as client:
            with pytest.raises(IncompleteEdit) as info:
                async for f in client.edit(videos["long"], "a swan", encoding="raw"):
                    got.append(f.index)
                    if len(got) == 3:
                        proxy.cut()
        return whole, got, info.value

    whole, got, error = asyncio.run(run())
    assert whole == [0, 1, 2, 3]
    assert got == list(range(len(got))) and 3 <= len(got) < 12  # frames already in transit may still arrive
    assert error.received == len(got) and error.num_frames == 12
