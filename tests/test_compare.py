"""``pix2video compare`` end to end on the tiny models: every output is written and sane.

Random tiny weights make the figures meaningless as quality; the ranking the
paper reports is a property of trained models (docs/quality.md). What this
checks is the command: one inversion, five variants, the metrics of each,
the table in markdown and JSON, the grid and the side-by-side clips.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pix2video.quality.compare import VARIANTS


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from pix2video.quality.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_compare_writes_table_grid_and_side_by_side_clips(tiny_dir, clip_dir, tmp_path, capsys):
    from PIL import Image

    from pix2video.cli import main
    from pix2video.video import make_sample_frames, read_video, write_video

    write_video(tmp_path / "in.mp4", make_sample_frames(3, 64, 64), fps=8)
    out = tmp_path / "cmp"
    argv = ["compare", str(tmp_path / "in.mp4"), "--prompt", "a blue ball", "-o", str(out), "--model", str(tiny_dir)]
    argv += ["--clip-model", str(clip_dir), "--width", "64", "--height", "64", "--steps", "3", "--device", "cpu"]
    argv += ["--source-prompt", "a red ball", "--store", str(tmp_path / "store"), "--grid-frames", "2", "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in VARIANTS:
        assert f"| {name} |" in printed
    table = json.loads((out / "table.json").read_text())
    assert set(table["variants"]) == set(VARIANTS)
    for name, r in table["variants"].items():
        assert r["frames"] == 3 and len(r["pixel_mse_per_pair"]) == 2, name
        assert all(math.isfinite(r[k]) for k in ("clip_text", "clip_image", "pixel_mse", "occluded_fraction")), name
    assert "| per-frame depth2img |" in (out / "table.md").read_text()
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape[0] == 64 * (1 + len(VARIANTS)) and grid.shape[1] == 150 + 2 * 64
    for name in VARIANTS:
        frames, info = read_video(out / f"{name.replace(' ', '_').replace('+', '_')}.mp4")
        assert len(frames) == 3 and frames[0].shape == (64, 128, 3), name  # input | edit
    # the variants are different edits of one inversion
    assert len({round(r["clip_image"], 12) for r in table["variants"].values()}) > 1


def test_compare_names_an_unknown_variant(tmp_path, capsys):
    from pix2video.cli import main
    from pix2video.video import make_sample_frames, write_video

    write_video(tmp_path / "in.mp4", make_sample_frames(2, 64, 64), fps=8)
    code = main(["compare", str(tmp_path / "in.mp4"), "--prompt", "x", "-o", str(tmp_path / "o"), "--variants", "ours"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "variants" in err[0]
