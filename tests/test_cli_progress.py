"""Progress that reads well: without a terminal each stage ends with one plain
line (its count and time), stderr holds no escape sequences and ends with the
summary line; on a terminal each stage has its own bar, closed when it ends."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

from pix2video.commands.progress import Progress

SUMMARY = re.compile(r"^(\d+) frames in \d+\.\d\d s \(\d+\.\d\d frames/s\)$")
STAGE = re.compile(r"^ *([a-z]+): (\d+) frames? in \d+\.\d\d s$")


def run_cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "pix2video.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_without_a_terminal_stderr_is_plain_lines_ending_with_the_summary(tmp_path, tiny_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PIX2VIDEO_HOME": str(tmp_path / "home")}
    clip, out = tmp_path / "clip.mp4", tmp_path / "out.mp4"
    assert run_cli("sample", str(clip), "--frames", "3", "--width", "64", "--height", "64", env=env).returncode == 0
    common = ["--model", str(tiny_dir), "--store", str(tmp_path / "store"), "--width", "64", "--height", "64"]
    r = run_cli("edit", str(clip), "--prompt", "a crochet swan", "-o", str(out), *common, "--steps", "2", env=env)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert "\x1b" not in err and "\r" not in err, repr(err)
    lines = err.splitlines()
    stages = [STAGE.match(line) for line in lines]
    # One line per stage, in order, each with its own count.
    assert [(m.group(1), int(m.group(2))) for m in stages if m] == [
        ("depth", 3),
        ("caption", 1),
        ("inversion", 3),
        ("store", 3),
        ("edit", 3),
    ], err
    assert lines[-2] == f"wrote 3 frames to {out}", err
    m = SUMMARY.match(lines[-1])
    assert m and int(m.group(1)) == 3, err
    assert len(lines) == 8, err  # the five stages, "inverted ...", "wrote ...", the summary

    # -q silences all of it: only the two result lines remain.
    r = run_cli("edit", str(clip), "--prompt", "a crochet swan", "-o", str(out), *common, "--steps", "2", "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stderr.splitlines()] == ["reused", "wrote"], r.stderr


def test_on_a_terminal_each_stage_has_its_own_bar_closed_when_it_ends():
    out = io.StringIO()
    p = Progress(True, out, terminal=True)
    p("depth", 0, 4)
    p("depth", 4, 4)
    assert p._bar is not None and not p._bar.disable
    depth_bar = p._bar
    p("inversion", 2, 4)
    assert depth_bar.disable  # tqdm marks a closed bar disabled
    assert p._bar is not depth_bar
    p.summary(4)
    assert p._bar is None
    text = out.getvalue()
    assert "depth" in text and "inversion" in text
    assert SUMMARY.match(text.splitlines()[-1]), text


def test_quiet_prints_nothing():
    out = io.StringIO()
    p = Progress(False, out, terminal=False)
    p("depth", 1, 2)
    p("edit", 2, 2)
    p.summary(2)
    assert out.getvalue() == ""
