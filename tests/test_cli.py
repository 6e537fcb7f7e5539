"""The ``pix2video`` command: end to end on the tiny models, the stored
inversion reused (shown on disk, not assumed), the installed entry point, and
one readable error line for each kind of bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pix2video.cli import main

TINY = ["--width", "64", "--height", "64", "--steps", "4", "-q"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PIX2VIDEO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def runtime(tiny_dir, tmp_path) -> list[str]:
    return ["--model", str(tiny_dir), "--store", str(tmp_path / "store")]


def decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def store_snapshot(store: Path) -> dict[str, tuple[int, int]]:
    """Every file under the store with its (st_mtime_ns, st_ino)."""
    return {
        p.relative_to(store).as_posix(): (p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def frame_rate(path) -> float:
    with av.open(str(path)) as c:
        return float(c.streams.video[0].average_rate)


def retime(src: Path, dst: Path, factor: Fraction) -> Path:
    """The same encoded frames (so the same decoded pixels) with timestamps scaled."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        for p in inp.demux(s):
            if p.dts is None:
                continue
            p.pts, p.dts = round(p.pts * factor), round(p.dts * factor)
            if p.duration:
                p.duration = round(p.duration * factor)
            p.stream = o
            out.mux(p)
    return dst


def blocks(a: np.ndarray) -> np.ndarray:
    h, w, c = a.shape
    return a.astype(float).reshape(h // 8, 8, w // 8, 8, c).mean((1, 3))


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_sample_edit_reuse_and_invert(tmp_path, home, tiny_dir, capfd):
    capfd.readouterr()
    clip, out, frames_dir, store = tmp_path / "clip.mp4", tmp_path / "out.mp4", tmp_path / "frames", tmp_path / "store"

    assert main(["sample", str(clip), "--frames", "5", "--width", "96", "--height", "64"]) == 0
    assert "wrote 5 frames" in capfd.readouterr().err
    sample = decode(clip)
    assert len(sample) == 5 and all(f.shape == (64, 96, 3) for f in sample)

    edit = [
        "edit",
        str(clip),
        "--prompt",
        "a crochet swan",
        "-o",
        str(out),
        "--frames-dir",
        str(frames_dir),
        *runtime(tiny_dir, tmp_path),
        *TINY,
    ]
    assert main(edit) == 0
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("inverted ") and lines[0].endswith("(5 frames)"), err
    assert lines[-1] == f"wrote 5 frames to {out}", err
    assert len(lines) == 2, err  # -q: no progress bars, no library chatter
    video_id = lines[0].split()[1]
    assert len(video_id) == 40

    edited = decode(out)
    assert len(edited) == 5 and all(f.shape == (64, 64, 3) for f in edited)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~umask())  # not mkstemp's private 0600
    pngs = sorted(frames_dir.iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(5)]
    first_pngs = [np.asarray(Image.open(p)) for p in pngs]
    assert all(a.shape == (64, 64, 3) and a.dtype == np.uint8 for a in first_pngs)
    # The PNGs are the frames that were encoded, in order (H.264 is lossy and the
    # tiny model's output is noise-like, so compare 8x8 block means).
    for png, frame in zip(first_pngs, edited, strict=True):
        assert np.abs(blocks(png) - blocks(frame)).mean() < 2.5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.mp4.")]

    videos = store / "videos"
    assert [p.name for p in videos.iterdir()] == [video_id]
    before = store_snapshot(store)
    assert f"videos/{video_id}/manifest.json" in before
    assert sum(k.startswith(f"videos/{video_id}/") and "/frames/" in k for k in before) == 5
    assert len(before) == 6  # five frame objects and the manifest, no temporaries

    # The same command again: the inversion is found, not redone or rewritten.
    assert main(edit) == 0
    err = capfd.readouterr().err
    assert err.splitlines()[0] == f"reused stored inversion {video_id} (5 frames)", err
    assert store_snapshot(store) == before
    assert len(list(videos.iterdir())) == 1
    assert len(decode(out)) == 5
    assert frame_rate(out) == pytest.approx(8.0)  # `sample`'s default rate
    # Editing the same stored inversion with the same settings is deterministic.
    for p, a in zip(sorted(frames_dir.iterdir()), first_pngs, strict=True):
        assert np.array_equal(np.asarray(Image.open(p)), a)

    # `invert` names the same video on stdout, and finds it stored too.
    assert main(["invert", str(clip), *runtime(tiny_dir, tmp_path), *TINY]) == 0
    captured = capfd.readouterr()
    assert captured.out.strip() == video_id
    assert captured.err.startswith("cached: 5 frames")
    assert store_snapshot(store) == before

    # Other inversion settings are another video.
    assert main(["invert", str(clip), *runtime(tiny_dir, tmp_path), *TINY, "--source-prompt", "a ball"]) == 0
    other = capfd.readouterr().out.strip()
    assert len(other) == 40 and other != video_id
    assert sorted(p.name for p in videos.iterdir()) == sorted([video_id, other])
    before = store_snapshot(store)

    # The same frames at 12 fps: the stored inversion (made from the 8 fps clip)
    # is found by content, and the output keeps the new clip's rate.
    clip12, out12 = retime(clip, tmp_path / "clip12.mp4", Fraction(8, 12)), tmp_path / "out12.mp4"
    assert (
        main(["edit", str(clip12), "--prompt", "a crochet swan", "-o", str(out12), *runtime(tiny_dir, tmp_path), *TINY])
        == 0
    )
    assert capfd.readouterr().err.startswith(f"reused stored inversion {video_id} ")
    assert store_snapshot(store) == before
    assert frame_rate(out12) == pytest.approx(12.0, abs=0.01)


def test_installed_console_script(tmp_path, tiny_dir):
    exe = Path(sys.executable).parent / "pix2video"
    assert exe.is_file(), f"console script not installed at {exe}"
    env = {**os.environ, "PIX2VIDEO_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    clip, out = tmp_path / "clip.mp4", tmp_path / "out.mp4"

    def run(*args):
        return subprocess.run([str(exe), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    r = run("sample", str(clip), "--frames", "3", "--width", "64", "--height", "64")
    assert r.returncode == 0, r.stderr
    r = run(
        "edit",
        str(clip),
        "--prompt",
        "a crochet swan",
        "-o",
        str(out),
        "--max-frames",
        "2",
        *runtime(tiny_dir, tmp_path),
        *TINY,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[-1] == f"wrote 2 frames to {out}", r.stderr
    frames = decode(out)
    assert len(frames) == 2 and frames[0].shape == (64, 64, 3)

    # Exit codes travel through the entry point too.
    r = run("edit", str(tmp_path / "nope.mp4"), "--prompt", "x", "-o", str(out), *TINY)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"pix2video: error: input: file {str(tmp_path / 'nope.mp4')!r} does not exist"]


# ---------------------------------------------------------------- bad input


def _sample_clip(path: Path, n: int = 3) -> Path:
    from pix2video.video import make_sample_frames, write_video

    write_video(path, make_sample_frames(n, 64, 64), fps=8)
    return path


def _zero_frame_mp4(path: Path) -> Path:
    """An mp4 with a video stream and no frames. Without ``empty_moov`` the mp4
    muxer drops a track that has no samples, leaving no stream at all."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "empty_moov"}) as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        c.start_encoding()
    with av.open(str(path)) as c:
        assert len(c.streams.video) == 1
        assert list(c.decode(video=0)) == []
    return path


def _case(name, tmp_path, tiny_dir):
    """(input file, extra args, model folder, words the error line must hold)."""
    clip = tmp_path / "clip.mp4"
    if name == "missing input":
        return tmp_path / "missing.mp4", [], tiny_dir, ["missing.mp4", "does not exist"]
    if name == "not a video":
        noise = tmp_path / "noise.mp4"
        noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return noise, [], tiny_dir, ["noise.mp4", "not a readable video"]
    if name == "zero frames":
        return _zero_frame_mp4(tmp_path / "empty.mp4"), [], tiny_dir, ["empty.mp4", "no video frames"]
    _sample_clip(clip)
    if name == "empty prompt":
        return clip, ["--prompt", ""], tiny_dir, ["prompt"]
    if name == "blank prompt":
        return clip, ["--prompt", "   "], tiny_dir, ["prompt"]
    if name == "width 100":
        return clip, ["--width", "100"], tiny_dir, ["width", "100"]
    if name == "zero steps":
        return clip, ["--steps", "0"], tiny_dir, ["num_steps"]
    if name == "max frames 0":
        return clip, ["--max-frames", "0"], tiny_dir, ["max_frames"]
    if name == "model without vae":
        broken = tmp_path / "broken-model"
        shutil.copytree(tiny_dir, broken)
        shutil.rmtree(broken / "vae")
        return clip, [], broken, ["vae", "broken-model"]
    if name == "missing model folder":
        return clip, [], tmp_path / "no-such-model", ["no-such-model"]
    raise AssertionError(name)


CASES = [
    "missing input",
    "not a video",
    "zero frames",
    "empty prompt",
    "blank prompt",
    "width 100",
    "zero steps",
    "max frames 0",
    "model without vae",
    "missing model folder",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gives_one_error_line_and_no_output(name, tmp_path, home, tiny_dir, capfd):
    src, extra, model, words = _case(name, tmp_path, tiny_dir)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.mp4"
    args = [
        "edit",
        str(src),
        "--prompt",
        "a crochet swan",
        "-o",
        str(out),
        "--frames-dir",
        str(out_dir / "frames"),
        "--model",
        str(model),
        "--store",
        str(tmp_path / "store"),
        *TINY,
    ]
    args += extra  # a later --prompt/--width wins in argparse
    capfd.readouterr()

    code = main(args)

    captured = capfd.readouterr()
    assert code != 0
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pix2video: error: ") and lines[0].strip() != "pix2video: error:", lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert captured.out == ""
    assert list(out_dir.iterdir()) == []  # no output, no `.out.mp4.*` temporaries, no frames folder
    assert not (tmp_path / "store" / "videos").exists()  # nothing stored either


def test_invert_bad_input(tmp_path, home, tiny_dir, capfd):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(b"\x00" * 100)
    capfd.readouterr()
    assert main(["invert", str(noise), *runtime(tiny_dir, tmp_path), *TINY]) == 2
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [captured.err.strip()] and "noise.mp4" in captured.err


@pytest.mark.parametrize(
    "args, word",
    [
        (["--width", "95"], "width"),
        (["--height", "0"], "height"),
        (["--fps", "0"], "fps"),
        (["--frames", "0"], "frames"),
    ],
)
def test_sample_bad_input(tmp_path, capfd, args, word):
    out = tmp_path / "s.mp4"
    capfd.readouterr()
    assert main(["sample", str(out), "--frames", "2", *args]) == 2
    err = capfd.readouterr().err
    assert err.startswith("pix2video: error: ") and len(err.splitlines()) == 1 and word in err, err
    assert list(tmp_path.iterdir()) == []


def test_output_folder_missing_fails_before_work(tmp_path, home, tiny_dir, capfd):
    clip = _sample_clip(tmp_path / "clip.mp4")
    capfd.readouterr()
    code = main(
        [
            "edit",
            str(clip),
            "--prompt",
            "x",
            "-o",
            str(tmp_path / "nope" / "out.mp4"),
            *runtime(tiny_dir, tmp_path),
            *TINY,
        ]
    )
    err = capfd.readouterr().err
    assert code == 2 and err.splitlines() == [err.strip()] and "output" in err and "nope" in err
    assert not (tmp_path / "store").exists()
