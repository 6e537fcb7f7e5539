"""DPT's input made in torch on the device (``preprocess="device"``, the
default on CUDA since run 5 of docs/benchmark.md) gives the depth the host's
image processor gives, within a stated tolerance, on the tiny model saved and
reloaded through the real loading code; the setting is validated and reaches
the depth service's worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DPTImageProcessor

from pix2video.engine.depth import DepthEstimator, depth_agreement, device_pixels, resolve_preprocess
from pix2video.errors import InvalidInput, ModelLoadError
from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.depth.worker import DepthWorker
from pix2video.video import make_sample_frames

# The tolerance the device path is held to (the same as the GPU run states):
# worst frame's Pearson correlation against the host path, and the largest
# difference of the normalised map as a fraction of its range.
PEARSON_MIN, MAX_ERR = 0.999, 0.02


def frames(n: int, side: int) -> np.ndarray:
    smooth = np.stack([np.ascontiguousarray(f) for f in make_sample_frames(n, side, side)])
    noise = np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    return np.concatenate([smooth, noise])


@pytest.mark.parametrize("resample", [3, 2])  # bicubic (SD2-depth's), bilinear
@pytest.mark.parametrize("src, dst", [(512, 384), (64, 32), (96, 128)])
def test_device_pixels_are_the_processors_within_a_grey_level(resample, src, dst):
    """Noise makes bicubic overshoot: one float pass differed from PIL's 8-bit
    two-pass resize by up to 24 grey levels; downscaled, the two rounded passes
    by at most 1 (2 upscaled)."""
    fe = DPTImageProcessor(size={"height": dst, "width": dst}, keep_aspect_ratio=False, resample=resample)
    imgs = frames(2, src)
    host = fe(images=list(imgs), return_tensors="pt").pixel_values
    ours = device_pixels(fe, imgs, torch.device("cpu"))
    assert ours.shape == host.shape and ours.dtype == torch.float32
    levels = float((ours - host).abs().max()) * 127.5  # normalised with mean 0.5, std 0.5
    assert levels <= (1.0 if dst < src else 2.0) + 1e-3, levels


def test_device_preprocessing_gives_the_hosts_depth_within_tolerance(tiny_dir):
    settings = dict(model=str(tiny_dir), device="cpu", dtype="float32", batch_size=4)
    host = DepthWorker(DepthSettings(**settings, preprocess="host"))
    device = DepthWorker(DepthSettings(**settings, preprocess="device"))
    assert (host.estimator.preprocess, device.estimator.preprocess) == ("host", "device")
    imgs = frames(4, 64)
    ref = torch.from_numpy(np.stack(host.estimate(list(imgs))))
    got = torch.from_numpy(np.stack(device.estimate(list(imgs))))
    agree = depth_agreement(got, ref)
    assert agree["pearson_min"] >= PEARSON_MIN and agree["max_err"] <= MAX_ERR, agree
    assert agree["max_err"] > 0  # two different computations, not one path twice
    # the worker's other path (an explicit output size) takes the same input
    sized = depth_agreement(
        torch.from_numpy(np.stack(device.estimate(list(imgs), sizes=[(5, 7)] * len(imgs)))),
        torch.from_numpy(np.stack(host.estimate(list(imgs), sizes=[(5, 7)] * len(imgs)))),
    )
    assert sized["pearson_min"] >= PEARSON_MIN and sized["max_err"] <= MAX_ERR, sized


def test_auto_is_the_host_on_the_cpu(models):
    """On the CPU the host path stays (what diffusers' depth2img computes, bitwise: test_ddim)."""
    assert DepthEstimator(models).preprocess == "host"
    assert DepthEstimator(models, preprocess="device").preprocess == "device"


def test_the_setting_is_validated_naming_the_field(models):
    with pytest.raises(InvalidInput, match="preprocess: must be one of auto, host, device"):
        DepthSettings(preprocess="gpu")
    with pytest.raises(InvalidInput, match="preprocess"):
        DepthEstimator(models, preprocess="gpu")


def test_device_refuses_a_processor_it_cannot_reproduce(models):
    class Kept:  # a processor that keeps the aspect ratio: the torch steps would differ
        feature_extractor = DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=True)
        device = torch.device("cuda")

    with pytest.raises(ModelLoadError, match="preprocess: 'device' cannot reproduce .*keep_aspect_ratio"):
        resolve_preprocess("device", Kept)
    assert resolve_preprocess("auto", Kept) == "host"  # auto falls back to the processor


class _CountingDPT(torch.nn.Module):
    """The real tiny DPT, with the batch of every call it gets written down."""

    def __init__(self, dpt):
        super().__init__()
        self.dpt, self.batches = dpt, []

    def forward(self, pixels):
        self.batches.append(pixels.shape[0])
        return self.dpt(pixels)


def test_dpt_calls_stay_below_the_upsampling_limit(models):
    """A batch of 128 frames made DPT-hybrid's upsampling fail on an H200
    (more than INT_MAX elements): the depth service's batch_size allows up to
    1024, so DPT gets the frames in calls of at most 64, with the same depth."""
    from dataclasses import replace

    from pix2video.engine.depth import DPT_MAX_FRAMES, predict_depth

    assert DPT_MAX_FRAMES <= 113  # 114 x 128 x 384 x 384 > INT_MAX
    counting = _CountingDPT(models.depth_estimator)
    m = replace(models, depth_estimator=counting)
    imgs = np.repeat(frames(1, 64), 35, axis=0)[:70]
    got = predict_depth(m, imgs, "device")
    assert counting.batches == [DPT_MAX_FRAMES, 70 - DPT_MAX_FRAMES]
    one = predict_depth(m, imgs[:1], "device")
    assert got.shape[0] == 70 and torch.allclose(got[0], one[0], atol=1e-5)
    counting.batches.clear()
    DepthEstimator(m, batch_size=100, preprocess="device")(imgs)
    assert max(counting.batches) <= DPT_MAX_FRAMES
