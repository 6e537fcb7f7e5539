"""The editor service on the step-parallel editor (--devices): a real server on
port 0 with two CPU devices standing for two GPUs, real channels, its metrics
scraped over HTTP."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from pix2video.engine.editor import Pix2VideoEditor
from pix2video.engine.settings import EditSettings
from pix2video.engine.step_parallel import StepParallelEditor
from pix2video.errors import InvalidInput
from pix2video.servers.common.server import ServerThread
from pix2video.servers.common.settings import load_settings
from pix2video.servers.editor.server import build
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.store import LocalDiskStore, StoredVideo
from pix2video.store.tenant import TenantStore
from pix2video.store.videos import Manifest, write_video_record
from pix2video_api.common.v1 import common_pb2
from pix2video_api.editor.v1 import editor_pb2 as pb
from pix2video_api.editor.v1 import editor_pb2_grpc as pb_grpc

STEPS, FRAMES = 4, 4
RAW = common_pb2.OutputFormat(encoding=common_pb2.IMAGE_ENCODING_RAW_RGB8)


async def _one(coro):
    return [await coro]


@pytest.fixture(scope="module")
def served(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steppar")
    settings = EditorServerSettings(
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
        devices="cpu,cpu",
    )
    store = LocalDiskStore(settings.store_dir)
    g = torch.Generator().manual_seed(7)
    video_id = "7" * 40
    manifest = Manifest(video_id, FRAMES, 64, 64, STEPS, "a ball", "tiny", 10.0)
    write_video_record(
        TenantStore(store, "default"),
        manifest,
        torch.randn(FRAMES, 4, 8, 8, generator=g),
        torch.rand(FRAMES, 1, 8, 8, generator=g) * 2 - 1,
    )
    thread = ServerThread()
    (running,) = thread.start(lambda: _one(build(settings)))
    yield running, store, video_id
    thread.stop()


def _metrics(running) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_served_step_parallel_frames_equal_the_one_device_editors_and_are_measured(served):
    running, store, video_id = served
    worker = running.servicer.worker
    assert isinstance(worker.editor, StepParallelEditor) and worker.editor.num_stages == 2
    request = pb.EditRequest(
        open=pb.OpenSession(
            video_id=video_id, settings=pb.EditSettings(prompt="a crochet swan", frames_in_flight=1), output=RAW
        )
    )
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        responses = list(pb_grpc.EditorServiceStub(ch).Edit(iter([request]), timeout=120))
    frames = [r.frame for r in responses if r.HasField("frame")]
    assert [f.index for f in frames] == list(range(FRAMES))
    got = [np.frombuffer(f.image.data, np.uint8).reshape(64, 64, 3) for f in frames]

    # The one-device editor on the same models and video: one frame in flight, so every
    # UNet call holds the same samples and even float32 frames are bitwise equal.
    video = StoredVideo(TenantStore(store, "default"), video_id)
    one = Pix2VideoEditor(worker.models)
    ref = [f.image for f in one.edit(video, EditSettings("a crochet swan", num_steps=STEPS, frames_in_flight=1))]
    assert all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))

    m = _metrics(running)
    calls = m[("pix2video_editor_device_unet_call_seconds_count", (("device", "cpu"),))]
    assert calls >= 2 * FRAMES  # both stages' calls (each frame does its steps on both)
    # Warm-up's 2 frames and this edit's 4 each crossed the boundary once.
    assert m[("pix2video_editor_handoff_seconds_count", (("boundary", "cpu->cpu"),))] == 2 + FRAMES


@pytest.mark.parametrize("value", ["0", "cuda:0,gpu1", "cuda:x", "65", "cuda:0,,cuda:1"])
def test_bad_devices_name_the_field(value):
    with pytest.raises(InvalidInput, match="devices"):
        load_settings(EditorServerSettings, ["--store-dir", "unused", "--devices", value], env={})


def test_devices_take_a_count_or_names():
    assert load_settings(EditorServerSettings, ["--store-dir", "unused", "--devices", "3"], env={}).device_list() == [
        "cuda:0",
        "cuda:1",
        "cuda:2",
    ]
    assert EditorServerSettings(store_dir="unused", devices="cuda:1, cuda:0").device_list() == ["cuda:1", "cuda:0"]
    assert EditorServerSettings(store_dir="unused").device_list() is None
