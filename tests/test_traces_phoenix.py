"""Traces received by a real back-end: Arize Phoenix (its own virtualenv, which
.ci/run installs with uv from tests/phoenix/requirements.txt and names in
PIX2VIDEO_PHOENIX_VENV) takes OTLP over gRPC from
the SDK and the four services (tracing=otlp); one invert + edit later, its HTTP
API must hand back one trace that joins them, span by span.

Phoenix keeps span names, ids and parent ids but not the OpenTelemetry
resource, so a span's service is told by what only that service makes (its
server span's method, its stage spans) and by where it hangs in the tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from ports import free_ports
from s3server import s3_server_fields

from pix2video.servers.caption.settings import CaptionSettings
from pix2video.servers.common.server import ServerThread
from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.servers.inversion.settings import InversionServerSettings
from pix2video.servers.suite import start_suite
from pix2video.video import make_sample_frames, write_video
from pix2video_client import EditOptions, InversionOptions, Pix2VideoClient

FRAMES = 5
SIZE = 64
STEPS = 3
VENV_ENV = "PIX2VIDEO_PHOENIX_VENV"
SWITCH_ENV = "PIX2VIDEO_CI_TRACES"  # .ci/run: on (1) by default, 0 skips this test
REQUIRE_ENV = "PIX2VIDEO_REQUIRE_TRACES"  # .ci/run sets it: no Phoenix is then a failure, not a skip


class Phoenix:
    def __init__(self, http_port: int, grpc_port: int):
        self.http = f"http://127.0.0.1:{http_port}"
        self.otlp = f"http://127.0.0.1:{grpc_port}"

    def get(self, path: str):
        with urllib.request.urlopen(self.http + path, timeout=10) as r:
            return json.loads(r.read())

    def spans(self) -> list[dict]:
        """Every span of the default project, over the REST API's pages."""
        out, cursor = [], None
        while True:
            page = self.get("/v1/projects/default/spans?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
            out += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    venv = os.environ.get(VENV_ENV)
    if os.environ.get(SWITCH_ENV) == "0":
        pytest.skip(f"{SWITCH_ENV}=0: the Phoenix trace test is switched off")
    if not venv:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {VENV_ENV} is not set: no Phoenix virtualenv")
        pytest.skip(f"{VENV_ENV} not set: no Phoenix virtualenv (.ci/run makes one)")
    binary = Path(venv) / "bin" / "phoenix"
    assert binary.exists(), f"{VENV_ENV}={venv} has no bin/phoenix"
    work = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = free_ports(2)
    env = {
        "PATH": f"{Path(venv) / 'bin'}:/usr/bin:/bin",
        "HOME": str(work),
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = open(work / "phoenix.log", "wb")
    proc = subprocess.Popen(
        [str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Phoenix(http_port, grpc_port)
    start, deadline = time.monotonic(), time.monotonic() + 180
    try:
        while True:
            try:
                server.get("/v1/projects")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Phoenix did not start (exit {proc.poll()}):\n{(work / 'phoenix.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        print(f"\nPhoenix up after {time.monotonic() - start:.0f} s", flush=True)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def received(phoenix, tiny_dir, s3_settings, tmp_path_factory):
    """One traced invert + edit through the SDK; the spans Phoenix holds after it."""
    home = tmp_path_factory.mktemp("home")
    shared = dict(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        tracing="otlp",
        otlp_endpoint=phoenix.otlp,
        model=str(tiny_dir),
        device="cpu",
        dtype="float32",
        home=str(home),
        grace_seconds=1.0,
    )
    s3 = s3_server_fields(s3_settings, "phoenix")
    settings = {
        "depth": DepthSettings(**shared),
        "caption": CaptionSettings(**shared),
        "inversion": InversionServerSettings(**shared, **s3, batch_size=4),
        "editor": EditorServerSettings(**shared, **s3),
    }
    clip = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(clip, make_sample_frames(FRAMES, 96, 64), fps=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "pix2video-sdk"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix.otlp, insecure=True)))
    thread = ServerThread()
    running = thread.run(start_suite(settings))
    thread.servers = list(running.values())
    try:
        inv = InversionOptions(width=SIZE, height=SIZE, num_steps=STEPS, source_prompt=None)
        with Pix2VideoClient(
            f"127.0.0.1:{running['inversion'].port}",
            f"127.0.0.1:{running['editor'].port}",
            timeout=120,
            tracer_provider=provider,
        ) as client:
            info = client.edit_video(
                clip, "a crochet swan", tmp_path_factory.mktemp("out") / "e.mp4", inversion=inv,
                options=EditOptions(frames_in_flight=2),
            )  # fmt: skip
        assert info.num_frames == FRAMES
        provider.force_flush()
    finally:
        thread.stop()  # the services' providers flush on shutdown
        provider.shutdown()
    deadline = time.monotonic() + 60
    while True:
        spans = phoenix.spans()
        names = [s["name"] for s in spans]
        if (names.count("edit frame") >= FRAMES and "pix2video.edit_video" in names) or time.monotonic() > deadline:
            return spans
        time.sleep(1)


def _attribute(span: dict, key: str):
    """An attribute as Phoenix returns it: flat ("a.b.c") or nested by the dots."""
    attrs = span["attributes"]
    if key in attrs:
        return attrs[key]
    for part in key.split("."):
        attrs = attrs[part]
    return attrs


def test_phoenix_holds_one_trace_joining_sdk_and_every_service(received):
    spans = received
    if os.environ.get("PHOENIX_DUMP"):
        Path(os.environ["PHOENIX_DUMP"]).write_text(json.dumps(spans, indent=1))
    traces = {s["context"]["trace_id"] for s in spans}
    assert len(traces) == 1, f"{len(traces)} traces: {sorted({s['name'] for s in spans})}"
    by_id = {s["context"]["span_id"]: s for s in spans}
    assert len(by_id) == len(spans)

    def one(name):
        found = [s for s in spans if s["name"] == name]
        assert len(found) == 1, (name, sorted(s["name"] for s in spans))
        return found[0]

    def parent(s):
        assert s["parent_id"] in by_id, (s["name"], "parent not received")
        return by_id[s["parent_id"]]

    def ancestors(s):
        while s["parent_id"]:
            s = parent(s)
            yield s

    # The SDK's root, and nothing orphaned: every other span's parent was received.
    root = one("pix2video.edit_video")
    assert root["parent_id"] is None
    for s in spans:
        if s is not root:
            parent(s)
    # SDK -> inversion (the SDK's client span, then the inversion server's span).
    inv_client = one("pix2video.inversion.v1.InversionService/Invert")
    assert parent(inv_client) is root
    inv_server = one("/pix2video.inversion.v1.InversionService/Invert")
    assert parent(inv_server) is inv_client
    # inversion -> depth and caption: stage span, inversion's client span, the service's server span.
    # inversion -> depth and caption: the stage span, inversion's client span and the
    # service's server span; both of the last two carry the gRPC method's name.
    for stage, method in (
        ("depth", "/pix2video.depth.v1.DepthService/EstimateDepth"),
        ("caption", "/pix2video.caption.v1.CaptionService/Caption"),
    ):
        pair = [s for s in spans if s["name"] == method]
        assert len(pair) == 2, (method, len(pair))
        (server,) = [s for s in pair if parent(s)["name"] == method]
        client = parent(server)
        assert parent(client) is one(stage) and parent(one(stage)) is inv_server
    for stage in ("decode", "inversion", "store"):
        assert inv_server in ancestors(one(stage)), stage
    # inversion -> store: each frame object and the manifest, under the store stage;
    # the only other writes are the inversion's lease on the video, under its server span.
    puts = [s for s in spans if s["name"] == "store put"]
    staged = [s for s in puts if parent(s) is one("store")]
    names = sorted(_attribute(s, "pix2video.store.key").rsplit("/", 1)[-1] for s in staged)
    assert names == sorted([f"{i:06d}.safetensors" for i in range(FRAMES)] + ["manifest.json"])
    for s in puts:
        if s not in staged:
            assert "/leases/" in _attribute(s, "pix2video.store.key") and inv_server in ancestors(s)
    # SDK -> editor, one span per edited frame under the editor's server span.
    ed_client = one("pix2video.editor.v1.EditorService/Edit")
    assert parent(ed_client) is root
    ed_server = one("/pix2video.editor.v1.EditorService/Edit")
    assert parent(ed_server) is ed_client
    frames = [s for s in spans if s["name"] == "edit frame"]
    assert sorted(_attribute(s, "pix2video.frame.index") for s in frames) == list(range(FRAMES))
    assert all(parent(s) is ed_server for s in frames)
    assert any(ed_server in ancestors(s) for s in spans if s["name"] == "store get")  # the manifest read
