"""``pix2video compare`` on the toy world, on the CPU: the must-show ranking of
issue 16 with trained weights (the shipped ``toy`` set and its CLIP).

The clip is ``pix2video sample``'s (a red ball on green grass), edited to "a
blue ball ..." at 128x128, its first 4 frames, 50 DDIM steps (the docs' run
has 8 frames; 4 keep the CPU time to three 50-step edits and one inversion).
Three variants are run: per-frame depth2img (SDEdit-like), Pix2Video without
the latent update, and anchor+previous with it. The must-show:

- the temporal metrics rank per-frame editing below anchor+previous: lower
  CLIP-Image and higher Pixel-MSE;
- the latent update lowers Pixel-MSE (anchor+previous against no latent update).

docs/quality.md ("Toy-world comparison") has the 8-frame H200 table: both
hold there (since the update's squared error is divided by SD2-depth's
512x512 latent size, ``update_normalisation`` sd512; before, at 4x that pull
per element, the update raised Pixel-MSE). This test on the CPU measured, on
the textured world (ground patches, clouds, a sweeping camera), per-frame
depth2img CLIP-Image 0.9590 / Pixel-MSE 258.16, no latent update 0.9776 /
34.03, anchor+previous 0.9729 / 8.10.
"""

from __future__ import annotations

import json

import pytest

PROMPT = "a blue ball on green grass under a blue sky"
STEPS, FRAMES = 50, 4
VARIANTS = ("per-frame depth2img", "no latent update", "anchor+previous")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from pix2video.cli import main

    tmp = tmp_path_factory.mktemp("toy-compare")
    assert main(["sample", str(tmp / "toy.mp4")]) == 0
    argv = ["compare", str(tmp / "toy.mp4"), "--prompt", PROMPT, "-o", str(tmp / "out"), "--model", "toy"]
    argv += ["--clip-model", "toy", "--width", "128", "--height", "128", "--steps", str(STEPS)]
    argv += ["--max-frames", str(FRAMES), "--device", "cpu", "--store", str(tmp / "store"), "-q"]
    argv += ["--variants", ",".join(VARIANTS)]
    assert main(argv) == 0
    t = json.loads((tmp / "out" / "table.json").read_text())
    assert t["frames"] == FRAMES and set(t["variants"]) == set(VARIANTS)
    return t["variants"]


def _figures(table) -> str:
    return "; ".join(f"{k}: CLIP-Image {v['clip_image']:.4f}, Pixel-MSE {v['pixel_mse']:.2f}" for k, v in table.items())


def test_temporal_metrics_rank_per_frame_editing_below_anchor_previous(table):
    ours, per_frame = table["anchor+previous"], table["per-frame depth2img"]
    assert per_frame["clip_image"] < ours["clip_image"], _figures(table)
    assert per_frame["pixel_mse"] > ours["pixel_mse"], _figures(table)


def test_the_latent_update_lowers_pixel_mse(table):
    assert table["anchor+previous"]["pixel_mse"] < table["no latent update"]["pixel_mse"], _figures(table)
