"""The paper's metrics: CLIP-Text, CLIP-Image and Pixel-MSE, and ``pix2video eval``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pix2video.errors import InvalidInput
from pix2video.quality.clip_scores import ClipScorer, clip_image, clip_text
from pix2video.quality.pixel_mse import METRIC_SIZE, pixel_mse, warp_mask


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from pix2video.quality.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return ClipScorer(str(clip_dir))


def _texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture with detail at every scale flow can lock onto."""
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), (0, 0), 3).astype(np.float64)
    return ((img - img.mean()) * 4 + 128).clip(0, 255).astype(np.uint8)


def _shifted_clip(offsets, size=METRIC_SIZE) -> np.ndarray:
    big = _texture(size + 100)
    return np.stack([big[50 + dy : 50 + dy + size, 50 + dx : 50 + dx + size] for dx, dy in offsets])


def test_pixel_mse_of_a_clip_shifted_by_whole_pixels_is_near_zero():
    clip = _shifted_clip([(0, 0), (3, 1), (7, -2), (10, 4)])
    r = pixel_mse(clip, clip)
    assert r.value < 0.1, r  # 0..255 scale: the edit moves exactly as the source does
    # only the strip that enters the frame (at most 4 px of 512) is left out
    assert 0 < r.occluded_fraction < 0.03, r.occluded_fraction
    assert "DIS" in r.flow_method and "forward-backward" in r.flow_method
    assert len(r.per_pair) == 3


def test_pixel_mse_of_independent_random_frames_is_large():
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (4, METRIC_SIZE, METRIC_SIZE, 3)).astype(np.uint8)
    shifted = _shifted_clip([(0, 0), (3, 1), (7, -2), (10, 4)])
    # unrelated edits of a clip whose motion is well known
    assert pixel_mse(noise, shifted).value > 5000
    # and unrelated frames as the source too: flow is noise, most pixels fail the check
    r = pixel_mse(noise, noise)
    assert r.value > 5000 and r.occluded_fraction > 0.5


def test_pixel_mse_sees_an_edit_that_does_not_follow_the_motion():
    clip = _shifted_clip([(0, 0), (3, 1), (7, -2), (10, 4)])
    still = np.stack([clip[0]] * 4)  # the edit forgot to move
    assert pixel_mse(still, clip).value > 100 * max(pixel_mse(clip, clip).value, 0.01)


def test_forward_backward_check_excludes_pixels_whose_motion_does_not_come_back():
    h = w = 32
    forward = np.zeros((h, w, 2), np.float32)
    backward = np.zeros((h, w, 2), np.float32)
    backward[10:20, 10:20, 0] = 5.0  # these pixels claim to come from 5 px to the right ...
    # ... where the forward flow says nothing moved: inconsistent, excluded
    keep = warp_mask(forward, backward)
    assert not keep[10:20, 10:18].any() and keep[:10].all()
    # a consistent pair (forward undoes backward) keeps them
    forward[10:20, 15:25, 0] = -5.0
    assert warp_mask(forward, backward)[10:20, 10:20].all()
    # sources outside the frame are excluded too
    backward[:, -2:, 0] = 10.0
    assert not warp_mask(forward, backward)[:, -2:].any()


def test_pixel_mse_resizes_to_512_in_0_255():
    clip = _shifted_clip([(0, 0), (4, 0)], size=128)
    edited = clip.copy()
    edited[1] = np.clip(edited[1].astype(int) + 10, 0, 255).astype(np.uint8)  # +10 levels everywhere
    r = pixel_mse(edited, clip)
    assert 90 < r.value < 110, r.value  # 10^2 in 0..255 units (a little less where clipped at 255)


def test_pixel_mse_names_bad_inputs():
    clip = _shifted_clip([(0, 0), (1, 0), (2, 0)], size=64)
    with pytest.raises(InvalidInput, match="source"):
        pixel_mse(clip, clip[:2])
    with pytest.raises(InvalidInput, match="frames"):
        pixel_mse(clip[:1], clip[:1])
    with pytest.raises(InvalidInput, match="flow"):
        pixel_mse(clip, clip, flow_method="raft")


def test_clip_image_of_identical_frames_is_one(scorer):
    frame = _texture(80)
    emb = scorer.image_embeddings(np.stack([frame] * 3))
    assert clip_image(emb) == pytest.approx(1.0, abs=1e-12)
    other = scorer.image_embeddings(np.stack([frame, _texture(80, seed=5)]))
    assert clip_image(other) < 1 - 1e-6


def test_clip_scores_are_the_models_own_cosines_with_its_preprocessing(scorer):
    """CLIP-Text and CLIP-Image against CLIPModel's own forward: its
    logits_per_image are logit_scale times the cosine of the projected,
    normalised embeddings, computed from the processor's pixels."""
    frames = [_texture(96, seed=s)[:, :80] for s in range(3)]  # not square: the processor resizes and crops
    prompt = "a red ball on the grass"
    inputs = scorer.processor(text=[prompt], images=frames, return_tensors="pt", padding="max_length")
    with torch.no_grad():
        out = scorer.model(**inputs)
    cos = (out.logits_per_image[:, 0] / scorer.model.logit_scale.exp()).double().detach()
    emb = scorer.image_embeddings(np.stack(frames))
    assert clip_text(emb, scorer.text_embedding(prompt)) == pytest.approx(float(cos.mean()), abs=1e-6)
    img = out.image_embeds.double()
    img = img / img.norm(dim=-1, keepdim=True)
    assert clip_image(emb) == pytest.approx(float((img[1:] * img[:-1]).sum(-1).mean()), abs=1e-6)


def test_eval_command_prints_the_table_and_writes_json(clip_dir, tmp_path, capsys):
    from pix2video.cli import main
    from pix2video.video import write_video

    clip = _shifted_clip([(0, 0), (2, 0), (4, 0)], size=128)
    write_video(tmp_path / "src.mp4", clip, fps=8)
    write_video(tmp_path / "edit.mp4", clip, fps=8)
    out_json = tmp_path / "q.json"
    argv = ["eval", str(tmp_path / "edit.mp4"), "--source", str(tmp_path / "src.mp4"), "--prompt", "a texture"]
    code = main(argv + ["--clip-model", str(clip_dir), "--json", str(out_json), "-q"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| method | CLIP-Text | CLIP-Image | Pixel-MSE | occluded |" in printed and "DIS" in printed
    report = json.loads(out_json.read_text())
    assert report["frames"] == 3 and report["clip_image"] > 0.99
    assert report["pixel_mse"] < 20  # mp4 compression noise only, the motion is followed
    assert 0 <= report["occluded_fraction"] < 0.1 and "DIS" in report["flow_method"]


def test_eval_command_names_bad_input_in_one_line(clip_dir, tmp_path, capsys):
    from pix2video.cli import main
    from pix2video.video import write_video

    write_video(tmp_path / "a.mp4", _shifted_clip([(0, 0), (2, 0), (4, 0)], size=64), fps=8)
    write_video(tmp_path / "b.mp4", _shifted_clip([(0, 0), (2, 0)], size=64), fps=8)
    code = main(["eval", str(tmp_path / "a.mp4"), "--source", str(tmp_path / "b.mp4"), "--prompt", "x", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "source" in err[0]
    code = main(["eval", str(tmp_path / "a.mp4"), "--prompt", "x", "--clip-model", str(tmp_path / "nope"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1 and "clip_model" in err[0]
