"""Per-job quality in the editor: an open request with ``evaluate`` gets the
finished edit's CLIP-Text and CLIP-Image in ``done`` and as gauges labelled by
session id. Real servers on port 0 (depth, caption, inversion, editor sharing
a local store), real channels, the tiny models and a tiny CLIP saved and
loaded through ``from_pretrained``; the metrics endpoint scraped over HTTP."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pix2video.quality.clip_scores import ClipScorer
from pix2video.quality.metrics import evaluate
from pix2video.servers.caption.settings import CaptionSettings
from pix2video.servers.common.server import ServerThread
from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.servers.inversion.settings import InversionServerSettings
from pix2video.servers.suite import start_suite
from pix2video.video import make_sample_frames, write_video
from pix2video_api.common.v1 import common_pb2
from pix2video_api.editor.v1 import editor_pb2 as pb
from pix2video_api.editor.v1 import editor_pb2_grpc as pb_grpc
from pix2video_client import EditQuality, InversionOptions, Pix2VideoClient

PROMPT = "a blue ball"
RAW = common_pb2.OutputFormat(encoding=common_pb2.IMAGE_ENCODING_RAW_RGB8)
GAUGES = (
    "pix2video_editor_edit_clip_text",
    "pix2video_editor_edit_clip_image",
    "pix2video_editor_edit_quality_seconds",
)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from pix2video.quality.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def _suite(tiny_dir, tmp, clip_model: str, kept: int = 2):
    shared = dict(host="127.0.0.1", port=0, model=str(tiny_dir), device="cpu", dtype="float32", home=str(tmp / "home"))
    store = dict(store="local", store_dir=str(tmp / "store"))
    settings = {
        "depth": DepthSettings(**shared),
        "caption": CaptionSettings(**shared),
        "inversion": InversionServerSettings(**shared, **store),
        "editor": EditorServerSettings(
            **shared, **store, metrics_port=0, quality_clip_model=clip_model, quality_sessions_kept=kept
        ),
    }
    thread = ServerThread()
    running = thread.run(start_suite(settings))
    thread.servers = list(running.values())
    return thread, running


@pytest.fixture(scope="module")
def suite(tiny_dir, clip_dir, tmp_path_factory):
    """The suite (quality kept for 2 sessions) and one 3-frame clip inverted on it."""
    tmp = tmp_path_factory.mktemp("quality-suite")
    thread, running = _suite(tiny_dir, tmp, str(clip_dir))
    clip = tmp / "in.mp4"
    write_video(clip, make_sample_frames(3, 64, 64), fps=8)
    client = Pix2VideoClient(f"127.0.0.1:{running['inversion'].port}", f"127.0.0.1:{running['editor'].port}")
    info = client.invert(clip, InversionOptions(width=64, height=64, num_steps=2, source_prompt="a red ball"))
    yield running, client, info, clip
    thread.stop()


def _stream(running, evaluate: bool):
    """(session id, received frames, done) of one raw stream."""
    stub = pb_grpc.EditorServiceStub(grpc.insecure_channel(f"127.0.0.1:{running['editor'].port}"))
    return stub, pb.EditRequest(
        open=pb.OpenSession(
            video_id="", settings=pb.EditSettings(prompt=PROMPT, frames_in_flight=2), output=RAW, evaluate=evaluate
        )
    )


def _edit(running, video_id: str, evaluate: bool):
    stub, req = _stream(running, evaluate)
    req.open.video_id = video_id
    responses = list(stub.Edit(iter([req])))
    sid = responses[0].opened.session_id
    frames = [
        np.frombuffer(r.frame.image.data, np.uint8).reshape(r.frame.image.height, r.frame.image.width, 3)
        for r in responses
        if r.HasField("frame")
    ]
    assert responses[-1].HasField("done")
    return sid, np.stack(frames), responses[-1].done


def _gauges(running) -> dict[tuple[str, str], float]:
    port = running["editor"].metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, s.labels["session_id"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in GAUGES
    }


def test_an_edit_that_asks_gets_its_figures_in_done_and_in_the_metrics(suite, clip_dir):
    running, _, info, _ = suite
    sid, frames, done = _edit(running, info.video_id, evaluate=True)
    assert done.HasField("quality") and done.quality.frames == 3 == done.num_frames
    # the figures are those of the very frames the client received, under the same CLIP
    mine = evaluate(frames, PROMPT, ClipScorer(str(clip_dir)))
    assert done.quality.clip_text == pytest.approx(mine.clip_text, abs=1e-9)
    assert done.quality.clip_image == pytest.approx(mine.clip_image, abs=1e-9)
    assert done.quality.seconds > 0
    g = _gauges(running)
    assert g[("pix2video_editor_edit_clip_text", sid)] == pytest.approx(mine.clip_text, abs=1e-9)
    assert g[("pix2video_editor_edit_clip_image", sid)] == pytest.approx(mine.clip_image, abs=1e-9)
    assert g[("pix2video_editor_edit_quality_seconds", sid)] == pytest.approx(done.quality.seconds)
    # an edit that does not ask is not measured: no figures, no series
    other, _, done = _edit(running, info.video_id, evaluate=False)
    assert not done.HasField("quality")
    assert not any(s == other for _, s in _gauges(running))


def test_only_the_last_sessions_keep_their_series(suite):
    running, _, info, _ = suite
    sids = [_edit(running, info.video_id, evaluate=True)[0] for _ in range(3)]  # kept: 2
    present = {s for _, s in _gauges(running)}
    assert sids[0] not in present and {sids[1], sids[2]} <= present


def test_the_sdk_hands_the_figures_to_on_quality(suite):
    running, client, info, _ = suite
    got: list[EditQuality | None] = []
    frames = [f.to_array() for f in client.edit(info.video_id, PROMPT, encoding="raw", on_quality=got.append)]
    assert len(frames) == 3 and len(got) == 1 and got[0] is not None and got[0].frames == 3
    assert 0 < got[0].clip_image <= 1 + 1e-9 and -1 <= got[0].clip_text <= 1
    # no callback, no evaluation asked
    assert len(list(client.edit(info.video_id, PROMPT, encoding="raw"))) == 3 and len(got) == 1


def test_cli_eval_prints_the_editors_figures(suite, tmp_path, capsys):
    from pix2video.cli import main

    running, _, _, clip = suite
    server = [
        "--server",
        f"127.0.0.1:{running['inversion'].port}",
        "--editor-server",
        f"127.0.0.1:{running['editor'].port}",
    ]
    argv = ["edit", str(clip), "--prompt", PROMPT, "-o", str(tmp_path / "out.mp4"), "--eval", *server]
    argv += ["--width", "64", "--height", "64", "--steps", "2", "--source-prompt", "a red ball", "-q"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    line = [x for x in out if x.startswith("CLIP-Text")]
    assert len(line) == 1 and "CLIP-Image" in line[0] and "3 frames" in line[0], out
    # the printed figures are the editor's own, as its metrics show them
    text = float(line[0].split()[1])
    assert any(abs(v - text) < 1e-4 for (name, _), v in _gauges(running).items() if name == GAUGES[0])


def test_cli_eval_without_a_server_is_one_line_and_an_exit_code(tmp_path, capsys):
    from pix2video.cli import main

    write_video(tmp_path / "in.mp4", make_sample_frames(2, 64, 64), fps=8)
    code = main(["edit", str(tmp_path / "in.mp4"), "--prompt", PROMPT, "-o", str(tmp_path / "o.mp4"), "--eval"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "eval" in err[0] and "--server" in err[0]


def test_an_editor_whose_clip_does_not_load_refuses_evaluate_and_names_no_path(tiny_dir, tmp_path, suite):
    _, _, info, _ = suite
    missing = tmp_path / "no-such-clip"
    thread, running = _suite(tiny_dir, tmp_path, str(missing))
    try:
        # the video lives in the other suite's store: a fresh one here
        clip = tmp_path / "in.mp4"
        write_video(clip, make_sample_frames(2, 64, 64), fps=8)
        client = Pix2VideoClient(f"127.0.0.1:{running['inversion'].port}", f"127.0.0.1:{running['editor'].port}")
        vid = client.invert(clip, InversionOptions(width=64, height=64, num_steps=2, source_prompt="a red ball"))
        stub, req = _stream(running, evaluate=True)
        req.open.video_id = vid.video_id
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Edit(iter([req])))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "open.evaluate" in err.value.details() and str(tmp_path) not in err.value.details()
        # the same edit without evaluate is served
        _, frames, done = _edit(running, vid.video_id, evaluate=False)
        assert len(frames) == 2 and not done.HasField("quality")
    finally:
        thread.stop()


def test_the_async_sdk_hands_the_figures_to_on_quality(suite):
    import asyncio

    from pix2video_client import AsyncPix2VideoClient

    running, _, info, _ = suite
    got: list[EditQuality | None] = []

    async def run():
        inv, ed = f"127.0.0.1:{running['inversion'].port}", f"127.0.0.1:{running['editor'].port}"
        async with AsyncPix2VideoClient(inv, ed) as client:
            return [f async for f in client.edit(info.video_id, PROMPT, encoding="raw", on_quality=got.append)]

    frames = asyncio.run(run())
    assert len(frames) == 3 and len(got) == 1 and got[0] is not None and got[0].frames == 3


def test_quality_settings_are_checked_and_named():
    from pix2video.errors import InvalidInput
    from pix2video.servers.common.settings import load_settings

    env = {"PIX2VIDEO_STORE_DIR": "/tmp/x"}
    for flags, name in (
        (["--quality-sessions-kept", "0"], "quality_sessions_kept"),
        (["--quality-clip-model", " "], "quality_clip_model"),
    ):
        with pytest.raises(InvalidInput, match=name):
            load_settings(EditorServerSettings, flags, env=env)
    s = load_settings(EditorServerSettings, ["--quality-clip-model", "toy", "--quality-sessions-kept", "5"], env=env)
    assert (s.quality_clip_model, s.quality_sessions_kept) == ("toy", 5)
