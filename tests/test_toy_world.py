"""The toy world and the shipped ``toy`` model set: the must-show figures of
docs/toy-world.md, measured on held-out clips (scene seeds no training run
draws) with the shipped weights, through the real loading code and engine.

CPU only, kept small: 128x128 frames, a few frames per clip, 50 DDIM steps.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pix2video.toytrain import evaluate as ev
from pix2video.toyworld import parse_main_object, render_clip, sample_scene

STEPS = 50


@pytest.fixture(scope="module")
def toy():
    from pix2video.models import load_model_set

    return load_model_set("toy", dtype=torch.float32)


@pytest.fixture(scope="module")
def engine(toy):
    return ev.engine_for(toy)


@pytest.fixture(scope="module")
def held():
    return ev.held_out_clips(3, 3)


# -- the world ---------------------------------------------------------------


def test_world_is_deterministic_and_its_flow_explains_the_motion():
    a, b = (render_clip(sample_scene(11, num_objects=3), 4) for _ in range(2))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.depth, b.depth)
    assert a.frames.shape == (4, 128, 128, 3) and a.masks.shape == (4, 3, 128, 128)
    other = render_clip(sample_scene(12, num_objects=3), 4)
    assert not np.array_equal(a.frames, other.frames)
    # The caption names what is there, main object first.
    assert parse_main_object(a.caption) == (a.scene.main.colour, a.scene.main.shape)
    # Sky has zero inverse depth; each object is nearer than the ground behind it.
    sky = a.frames[0][:5].reshape(-1, 3)
    assert np.all(a.depth[0][:5] == 0) and sky.std(0).max() < 40
    for k in range(3):
        m = a.masks[0, k]
        assert m.any() and a.depth[0][m].min() > 0
    # The ground's patches and the clouds come from the scene's seed alone: the same
    # scene under another seed has the same geometry, depth and caption but other textures.
    twin = render_clip(dataclasses.replace(a.scene, seed=a.scene.seed + 1), 4)
    assert np.array_equal(twin.depth, a.depth) and twin.caption == a.caption
    ground = (a.depth[0] > 0) & ~a.masks[0].any(0)
    sky = a.depth[0] == 0
    for region in (ground, sky):
        assert np.abs(twin.frames[0].astype(int) - a.frames[0])[region].mean() > 3
    # The true backward flow warps frame i-1 onto frame i almost exactly; with
    # no motion compensation the error is several times larger.
    moving = render_clip(sample_scene(21), 4)  # a scene whose camera pans
    assert moving.prev_valid[1:].mean() > 0.9
    err = ev.warp_error(moving.frames, moving)
    frozen = moving.prev_xy.copy()
    ys, xs = np.mgrid[0:128, 0:128]
    frozen[1:, ..., 0], frozen[1:, ..., 1] = xs, ys
    still = ev.Clip(moving.scene, moving.frames, moving.depth, moving.masks, frozen, moving.prev_valid)
    assert err < 1.5 and ev.warp_error(moving.frames, still) > 2 * err


def test_a_camera_speed_floor_changes_only_the_cameras_sideways_motion():
    """A floor moves every scene's camera at least that fast sideways, either
    way, and changes nothing else: the rest of the scene is the same draw, and
    no floor is the world as trained (the shipped set's), bitwise."""
    speeds = []
    for seed in range(2000, 2016):
        plain, floored = sample_scene(seed), sample_scene(seed, min_camera_speed=0.1)
        assert sample_scene(seed, min_camera_speed=0.0) == plain
        assert abs(floored.camera.vx) >= 0.1 and np.sign(floored.camera.vx) == np.sign(plain.camera.vx)
        camera = dataclasses.replace(floored.camera, vx=plain.camera.vx, yaw_rate=plain.camera.yaw_rate)
        assert dataclasses.replace(floored, camera=camera) == plain
        speeds.append(abs(plain.camera.vx))
    assert min(speeds) < 0.1  # the floor is not vacuous on these scenes
    with pytest.raises(ValueError, match="min_camera_speed"):
        sample_scene(1, min_camera_speed=0.2)


def test_toy_resolves_to_the_shipped_float16_weights_within_40_mb():
    from safetensors import safe_open

    from pix2video.models.loading import resolve_model_path
    from pix2video.models.toy import TOY_WEIGHTS

    folder = Path(resolve_model_path("toy"))
    assert folder == TOY_WEIGHTS
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40 * 1024 * 1024
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} >= {"unet", "vae", "text_encoder", "depth_estimator", "captioner", "clip"}
    for p in weights:
        with safe_open(str(p), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}, p
    assert json.loads((folder / "losses.json").read_text())["components"]["unet"]["steps"] > 1000


# -- the must-show figures -----------------------------------------------------


def test_vae_reconstructs_held_out_frames_at_28_db(toy, held):
    assert ev.vae_psnr(toy, np.concatenate([c.frames for c in held])) >= 28.0


def test_depth_estimator_correlates_with_true_depth(toy, held):
    assert ev.depth_pearson(toy, held) >= 0.9


def test_captioner_names_colour_and_shape_of_the_main_object(engine):
    accuracy, pairs = ev.caption_accuracy(engine, ev.held_out_clips(20, 1, start=1000))
    assert accuracy >= 0.8, pairs


def test_ddim_inversion_then_reconstruction_returns_the_input(engine, held):
    r = ev.reconstruction(engine, held[0], STEPS)
    assert r["inverted"] >= 22.0
    # What a random UNet could never show: the inverted x_T, not the prompt, carries the frame.
    assert r["inverted"] >= r["random_xt"] + 8.0, r


@pytest.fixture(scope="module")
def colour(engine):
    clip = ev.red_ball_clips(1, 4)[0]
    return ev.colour_edit(engine, clip, STEPS)


def test_colour_edit_turns_the_red_ball_blue(colour):
    assert colour.blue_fraction >= 0.9, (colour.hues, colour.saturations)


def test_colour_edit_keeps_the_rest_of_the_frame(colour):
    assert colour.outside_psnr >= 20.0


def test_pix2video_is_twice_as_consistent_as_per_frame_depth2img_on_a_sweeping_shot(colour):
    # The paper's Table 2 ordering, against its per-frame baseline: depth2img
    # (SDEdit-like, strength 0.8, fresh noise) on every frame with the same seed, on this clip (the
    # camera sweeps 3.5 pixels a frame). Measured here 1.711 against 3.948 (0.43); on the first world,
    # whose textures followed from the caption and depth alone, this very assertion failed (0.387
    # against 0.328). Not the bar: over 16 held-out clips, slow shots included, the H200
    # measured 0.55, missed (docs/toy-world.md).
    assert colour.warp_pix2video <= 0.5 * colour.warp_depth2img, (colour.warp_pix2video, colour.warp_depth2img)


@pytest.mark.xfail(
    strict=True,
    reason="not met (docs/toy-world.md; a baseline of our own, steadier than the paper's, not a bar of issue 15): "
    "against per-frame editing from each frame's own DDIM-inverted x_T, Pix2Video's flow-warped error is 1.565 "
    "against 1.544 on the H200 evaluation's 2 clips (ratio 1.01, aim <= 0.5), 1.491 against 1.571 on 16 (0.95); "
    "on the CPU 1.711 against 1.681",
)
def test_pix2video_is_twice_as_consistent_as_per_frame_editing_from_inversion(colour):
    assert colour.warp_pix2video <= 0.5 * colour.warp_per_frame, (colour.warp_pix2video, colour.warp_per_frame)


def test_report_gives_table2_over_its_clips_and_per_clip(toy):
    # The docs' protocol (toytrain.evaluate.report), shrunk: every figure of 2 red-ball clips, kept per clip.
    r = ev.report(toy, clips=1, frames=2, captions=2, edits=1, table2_clips=2, steps=2, log=lambda _: None)
    per = r["table2_per_clip"]
    assert [p["caption"] for p in per] == [c.caption for c in ev.red_ball_clips(2, 1)]
    assert r["warp_pix2video"] == pytest.approx(np.mean([p["warp_pix2video"] for p in per]))
    assert r["warp_depth2img"] == pytest.approx(np.mean([p["warp_depth2img"] for p in per]))
    assert r["warp_ratio_depth2img"] == pytest.approx(r["warp_pix2video"] / r["warp_depth2img"])
    for p in per:
        assert p["ratio_depth2img"] == pytest.approx(p["warp_pix2video"] / p["warp_depth2img"])
    assert r["table2_clips_at_most_half"] == sum(p["ratio_depth2img"] <= 0.5 for p in per)
    assert len(r["hues"]) == 2 and r["_strips"]["colour"].shape == (4 * 128, 2 * 128, 3)


def test_toy_clip_matches_frames_to_their_captions():
    from pix2video.models.toy import load_toy_clip

    clip = load_toy_clip()
    clips = ev.held_out_clips(12, 1, start=3000)
    captions = sorted({c.caption for c in clips})
    sims = clip.images(np.stack([c.frames[0] for c in clips])) @ clip.texts(captions).T
    picked = [captions[i] for i in sims.argmax(1).tolist()]
    accuracy = np.mean([p == c.caption for p, c in zip(picked, clips, strict=True)])
    assert accuracy >= 0.75, list(zip(picked, [c.caption for c in clips], strict=True))


# -- the commands --------------------------------------------------------------


def test_train_toy_smoke_writes_a_loadable_model_set(tmp_path, capsys):
    from pix2video.cli import main
    from pix2video.models import load_model_set
    from pix2video.models.toy import load_toy_clip

    out = tmp_path / "toy"
    assert main(["train-toy", str(out), "--smoke", "--device", "cpu", "--workers", "1", "-q"]) == 0
    losses = json.loads((out / "losses.json").read_text())
    assert set(losses["components"]) == {"vae", "unet", "depth_estimator", "captioner", "clip"}
    assert all(c["steps"] == 2 and c["final_loss"] > 0 for c in losses["components"].values())
    m = load_model_set(str(out))
    assert m.unet.config.in_channels == 5 and m.vae_scale_factor == 4
    assert load_toy_clip(out).texts(["a red ball"]).shape == (1, 128)
    # The same seed gives the same losses, up to float rounding: torch's multithreaded CPU
    # reductions may sum in another order (seen: 1.029623 against 1.029622).
    again = tmp_path / "again"
    assert main(["train-toy", str(again), "--smoke", "--device", "cpu", "--workers", "1", "-q"]) == 0
    first = losses["components"]["unet"]["losses"]
    second = json.loads((again / "losses.json").read_text())["components"]["unet"]["losses"]
    assert [step for step, _ in second] == [step for step, _ in first]
    assert [loss for _, loss in second] == pytest.approx([loss for _, loss in first], rel=1e-5)
    # Bad input: one line naming the field.
    assert main(["train-toy", str(out), "--smoke"]) == 2
    assert "output" in capsys.readouterr().err
    assert main(["train-toy", str(tmp_path / "x"), "--seed", "1000"]) == 2
