"""Model loading: the tiny set saved and loaded through from_pretrained."""

import json
import shutil

import pytest
import torch

from pix2video.errors import ModelLoadError
from pix2video.models import load_model_set, resolve_model_path
from pix2video.models.tiny import tiny_modules


def test_loaded_tiny_models_equal_the_in_memory_ones_bitwise(models, tiny_dir):
    vocab = len(json.loads((tiny_dir / "tokenizer" / "vocab.json").read_text()))
    fresh = tiny_modules(vocab)
    torch.manual_seed(5)
    x = torch.randn(2, 5, 8, 8)
    t = torch.tensor([999, 1])
    emb = torch.randn(2, 77, 32)
    ids = torch.randint(0, vocab, (2, 77))
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pairs = [
            (
                fresh["unet"].eval()(x, t, encoder_hidden_states=emb).sample,
                models.unet(x, t, encoder_hidden_states=emb).sample,
            ),
            (fresh["vae"].eval()(img).sample, models.vae(img).sample),
            (fresh["text_encoder"].eval()(ids)[0], models.text_encoder(ids)[0]),
            (fresh["depth_estimator"].eval()(pixels).predicted_depth, models.depth_estimator(pixels).predicted_depth),
        ]
    for a, b in pairs:
        assert torch.equal(a, b)


def test_missing_component_is_named(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelLoadError, match="missing component 'vae'"):
        load_model_set(str(broken))


def test_nonexistent_folder_is_named_not_looked_up_on_the_hub(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_set(str(tmp_path / "nowhere"))


def test_corrupt_weights_fail_with_one_line(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (weights,) = (broken / "unet").glob("*.safetensors")
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot load") as info:
        load_model_set(str(broken))
    assert "\n" not in str(info.value)


def test_non_depth_unet_is_refused(tiny_dir, tmp_path):
    broken = tmp_path / "sd2"
    shutil.copytree(tiny_dir, broken)
    from diffusers import UNet2DConditionModel

    cfg = dict(UNet2DConditionModel.load_config(broken / "unet"), in_channels=4)
    shutil.rmtree(broken / "unet")
    UNet2DConditionModel.from_config(cfg).save_pretrained(broken / "unet")
    with pytest.raises(ModelLoadError, match="in_channels=4"):
        load_model_set(str(broken))


def test_tiny_alias_is_built_once_and_cached(tmp_path):
    first = resolve_model_path("tiny", tmp_path)
    stamp = (tmp_path / first / "unet" / "config.json").stat().st_mtime_ns
    assert resolve_model_path("tiny", tmp_path) == first
    assert (tmp_path / first / "unet" / "config.json").stat().st_mtime_ns == stamp
    assert load_model_set("tiny", cache_dir=tmp_path).fingerprint == load_model_set(first).fingerprint


def test_fingerprint_changes_with_the_weights(tiny_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_dir, other)
    a = load_model_set(str(other)).fingerprint
    unet = load_model_set(str(other)).unet
    with torch.no_grad():
        next(unet.parameters()).add_(1.0)
    unet.save_pretrained(other / "unet")
    assert load_model_set(str(other)).fingerprint != a
