"""`pix2video edit --server` when its edit stream dies (issue 13, "a stream cut
after frame 14 of 200"): the CLI runs as a real subprocess against the real
suite on port 0 (tiny models, a real SeaweedFS store); the editor is reached
through a TCP proxy that cuts every connection after frame 14 and stops
listening, so the SDK's resume has nowhere to go. The CLI must fail with one
readable line and a non-zero exit, and leave no file at the output path (a
previous file there stays as it was)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import pytest
from cutting_proxy import CuttingProxy
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reliability import reliability_row
from s3server import s3_server_fields

from pix2video.servers.caption.settings import CaptionSettings
from pix2video.servers.common.server import ServerThread
from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.servers.inversion.settings import InversionServerSettings
from pix2video.servers.suite import start_suite
from pix2video.video import make_sample_frames, write_video
from pix2video_client import Pix2VideoClient

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([os.path.join(HERE, "..", "services"), os.path.join(HERE, "..", "clients")]),
}
FRAMES, CUT_AFTER, SIZE = 200, 14, 64
FRAME_BYTES = SIZE * SIZE * 3  # one raw RGB8 frame, as `edit --server` asks for them


@pytest.fixture(scope="module")
def suite(tiny_dir, s3_settings, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    shared = dict(host="127.0.0.1", port=0, model=str(tiny_dir), device="cpu", dtype="float32", home=str(home))
    s3 = s3_server_fields(s3_settings, "cli-cut")
    settings = {
        "depth": DepthSettings(**shared),
        "caption": CaptionSettings(**shared),
        "inversion": InversionServerSettings(**shared, **s3, batch_size=8),
        "editor": EditorServerSettings(**shared, **s3, metrics_port=-1, detach_grace_seconds=1.0),
    }
    thread = ServerThread()
    running = thread.run(start_suite(settings))
    thread.servers = list(running.values())
    yield running
    thread.stop()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, make_sample_frames(FRAMES, SIZE, SIZE), fps=10)
    return path


def _cli(*args, timeout=300):
    cmd = [sys.executable, "-m", "pix2video.cli", "edit", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def _serving(port) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_cut_stream_fails_the_cli_and_leaves_no_file(suite, long_clip, tmp_path):
    inversion, editor = suite["inversion"], suite["editor"]
    common = ["--prompt", "a crochet swan", "--width", SIZE, "--height", SIZE, "--steps", 2]
    common += ["--source-prompt", "a ball", "--frames-in-flight", 2, "-q", "--server", f"127.0.0.1:{inversion.port}"]
    # The server's bytes before frame k: the response headers, `opened`, k frames
    # with their gRPC and HTTP/2 framing (a few dozen bytes each). Cutting half a
    # frame past 14 whole ones gives the client frames 0..13 and part of frame 14.
    cut_at = CUT_AFTER * FRAME_BYTES + FRAME_BYTES // 2

    with reliability_row(
        "editor.cli-stream-cut",
        "Editor sessions",
        f"`pix2video edit --server` (a subprocess) whose edit stream is cut after frame {CUT_AFTER} of {FRAMES}, "
        "the route gone so no resume can work; once with no file at the output, once over a previous file",
    ) as row:
        outcomes = []
        for previous in (None, b"the previous file"):
            out = tmp_path / f"out-{len(outcomes)}.mp4"
            if previous is not None:
                out.write_bytes(previous)
            proxy = CuttingProxy(editor.port, cut_after_bytes=cut_at)
            start = time.monotonic()
            done = _cli(long_clip, "-o", out, "--editor-server", f"127.0.0.1:{proxy.port}", *common)
            outcomes.append((done, out, previous, proxy, time.monotonic() - start))

        for done, out, previous, proxy, seconds in outcomes:
            assert proxy.is_cut.is_set() and proxy.downstream_bytes == cut_at, (proxy.downstream_bytes, done.stderr)
            errors = [line for line in done.stderr.splitlines() if line.startswith("pix2video: error:")]
            assert done.returncode == 1, done.stderr
            assert len(errors) == 1 and errors[0] == done.stderr.strip().splitlines()[-1], done.stderr
            assert f"edit stopped after {CUT_AFTER} of {FRAMES} frames" in errors[0], errors[0]
            assert "Traceback" not in done.stderr
            if previous is None:
                assert not out.exists()
            else:
                assert out.read_bytes() == previous
            assert seconds < 120, seconds
        # no temporary file left beside the outputs either
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out-1.mp4"]

        # the suite is unharmed: the same edit straight to the editor completes
        with Pix2VideoClient(f"127.0.0.1:{inversion.port}", f"127.0.0.1:{editor.port}") as client:
            vid = client.invert(long_clip, _inv()).video_id  # stored by the CLI's runs: answered from its manifest
            n = sum(1 for _ in client.edit(vid, "a crochet swan", encoding="raw"))
        row.status = (
            f"exit 1 and one line ending 'edit stopped after {CUT_AFTER} of {FRAMES} frames'; "
            "no file at the output, a previous one intact"
        )
        row.kept_serving = _serving(editor.port) and _serving(inversion.port) and n == FRAMES
        row.lost = "nothing"
    assert row.kept_serving


def _inv():
    from pix2video_client import InversionOptions

    return InversionOptions(width=SIZE, height=SIZE, num_steps=2, source_prompt="a ball")


def test_the_cli_refuses_an_output_that_is_its_input_under_another_name(tmp_path):
    """The same file by a hard link, with --server: refused before any remote
    work (the server address here answers nothing), the clip untouched."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read")
    os.link(clip, tmp_path / "same.mp4")
    done = _cli(clip, "--prompt", "a swan", "-o", tmp_path / "same.mp4", "--server", "127.0.0.1:1", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pix2video: error: output:") and "input video" in lines[0]
    assert clip.read_bytes() == b"not read"
