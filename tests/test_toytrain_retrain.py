"""``pix2video.toytrain.retrain``: the UNet and text encoder of a finished toy
set retrained, every other component copied unchanged, the result loadable
through the real loading code (a smoke set from ``train-toy --smoke``)."""

from __future__ import annotations

import hashlib
import json

import pytest

WEIGHTS = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors"}


def _digest(folder, part) -> str:
    return hashlib.sha256((folder / part / WEIGHTS.get(part, "model.safetensors")).read_bytes()).hexdigest()


def test_retrain_replaces_only_the_unet_and_text_encoder(tmp_path):
    from pix2video.cli import main
    from pix2video.models import load_model_set
    from pix2video.toytrain.retrain import main as retrain

    src = tmp_path / "toy"
    assert main(["train-toy", str(src), "--smoke", "--device", "cpu", "--workers", "1", "-q"]) == 0
    flags = ["--steps", "2", "--batch", "2", "--device", "cpu", "--uncond-prob", "0.2", "--noise-discount", "0.1", "-q"]
    out, again = tmp_path / "new", tmp_path / "again"
    assert retrain([str(src), str(out), *flags]) == 0
    for part in ("vae", "depth_estimator", "captioner", "clip"):
        assert _digest(out, part) == _digest(src, part), part
    for part in ("unet", "text_encoder"):
        assert _digest(out, part) != _digest(src, part), part
    unet = json.loads((out / "losses.json").read_text())["components"]["unet"]
    assert unet["steps"] == 2 and unet["uncond_prob"] == 0.2 and unet["noise_discount"] == 0.1
    assert unet["retrained"]["previous"]["steps"] == 2
    assert load_model_set(str(out)).unet.config.in_channels == 5
    # The same seed and settings give the same losses (up to CPU float rounding).
    assert retrain([str(src), str(again), *flags]) == 0
    second = json.loads((again / "losses.json").read_text())["components"]["unet"]["losses"]
    assert [v for _, v in second] == pytest.approx([v for _, v in unet["losses"]], rel=1e-5)
    with pytest.raises(FileExistsError):
        retrain([str(src), str(out), *flags])
