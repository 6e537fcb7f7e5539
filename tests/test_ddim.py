"""DDIM arithmetic, inversion and depth preparation."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionDepth2ImgPipeline

from pix2video.engine.ddim import DDIMSchedule, ddim_invert, ddim_move, ddim_sample, predict_eps_x0
from pix2video.engine.depth import DepthEstimator
from pix2video.engine.inversion import Inverter


def test_per_sample_step_matches_diffusers_scheduler(models64):
    cfg = models64.scheduler_config
    sched = DDIMScheduler.from_config(cfg)
    sched.set_timesteps(10)
    ours = DDIMSchedule.from_config(cfg, 10)
    assert torch.equal(ours.timesteps, sched.timesteps.long())
    torch.manual_seed(0)
    x = torch.randn(10, 4, 8, 8, dtype=torch.float64)
    out = torch.randn(10, 4, 8, 8, dtype=torch.float64)
    # All ten steps in one batch, each sample at its own timestep.
    eps, x0 = predict_eps_x0(out, x, ours.alpha(ours.timesteps), "epsilon")
    mine = ddim_move(x0, eps, ours.alpha(ours.prev_timesteps))
    for k, t in enumerate(sched.timesteps):
        ref = sched.step(out[k : k + 1], t, x[k : k + 1])
        # diffusers keeps its alphas in float32: agreement to float32 rounding
        assert torch.allclose(mine[k], ref.prev_sample[0], rtol=1e-6, atol=1e-6)
        assert torch.allclose(x0[k], ref.pred_original_sample[0], rtol=1e-6, atol=1e-6)


def _exact_gaussian_predictor(schedule, s):
    """The optimal noise predictor for x0 ~ N(0, s^2): eps* = sqrt(1-a) x / (a s^2 + 1 - a)."""

    def predict(x, t):
        a = schedule.alpha(t).view(-1, 1, 1, 1)
        return (1 - a).sqrt() * x / (a * s**2 + 1 - a)

    return predict


def test_inversion_then_sampling_reconstructs_with_the_exact_noise_predictor(models64):
    torch.manual_seed(0)
    s = 1.0
    x0 = s * torch.randn(4, 4, 16, 16, dtype=torch.float64)
    errors = {}
    for steps in (10, 20, 50):
        schedule = DDIMSchedule.from_config(models64.scheduler_config, steps)
        predict = _exact_gaussian_predictor(schedule, s)
        x_t = ddim_invert(x0, predict, schedule)
        rec = ddim_sample(x_t, predict, schedule)
        errors[steps] = ((rec - x0).norm() / x0.norm()).item()
    assert errors[10] > errors[20] > errors[50]
    # docs/ARCHITECTURE.md section 5.3: 2e-2, 5e-3, 8e-4 for data std 1
    assert errors[50] < 2e-3 and errors[50] < errors[10] / 10, errors


def test_inversion_round_trip_runs_through_the_real_code_path(models64, clip_frames):
    frames = clip_frames[:2]
    depth = DepthEstimator(models64)(frames)
    inverter = Inverter(models64, batch_size=2)
    x_t = inverter(frames, depth, "a ball", num_steps=5)
    assert x_t.shape == (2, 4, 8, 8) and torch.isfinite(x_t).all()
    # sample back at guidance 1 through the same UNet predictor
    from pix2video.engine.text import encode_prompts
    from pix2video.engine.vae import encode_frames

    schedule = DDIMSchedule.from_config(models64.scheduler_config, 5)
    predict = inverter.unet_noise_predictor(depth.double(), encode_prompts(models64, ["a ball"]))
    rec = ddim_sample(x_t.double(), predict, schedule)
    x0 = encode_frames(models64, frames)
    assert rec.shape == x0.shape and torch.isfinite(rec).all()
    assert not torch.allclose(x_t.double(), x0)


def test_batched_inversion_equals_per_frame_inversion(models64, clip_frames):
    depth = DepthEstimator(models64)(clip_frames)
    batched = Inverter(models64, batch_size=6)(clip_frames, depth, "a ball", num_steps=4)
    single = Inverter(models64, batch_size=1)(clip_frames, depth, "a ball", num_steps=4)
    assert (batched - single).abs().max() < 1e-6  # stored as float32


def test_depth_matches_diffusers_depth2img_preparation(models, clip_frames):
    from PIL import Image

    m = models
    pipe = StableDiffusionDepth2ImgPipeline(
        vae=m.vae,
        text_encoder=m.text_encoder,
        tokenizer=m.tokenizer,
        unet=m.unet,
        scheduler=DDIMScheduler.from_config(m.scheduler_config),
        depth_estimator=m.depth_estimator,
        feature_extractor=m.feature_extractor,
    )
    ours = DepthEstimator(m, batch_size=4)(clip_frames)
    for i, frame in enumerate(clip_frames):
        ref = pipe.prepare_depth_map(Image.fromarray(frame), None, 1, False, torch.float32, torch.device("cpu"))
        assert (ours[i] - ref[0]).abs().max() < 1e-5
    assert ours.min() == pytest.approx(-1) and ours.max() == pytest.approx(1)


def test_constant_frame_gives_zero_depth_not_nan(models):
    flat = np.full((1, 64, 64, 3), 128, np.uint8)
    d = DepthEstimator(models)(flat)
    assert torch.isfinite(d).all()
