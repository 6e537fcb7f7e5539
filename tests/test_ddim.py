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


class _GaussianDenoiser(torch.nn.Module):
    """The exact noise predictor for latents ~ N(0, s^2), with the UNet's call
    signature: what a perfect model of such data would output."""

    def __init__(self, schedule, s):
        super().__init__()
        self.schedule, self.s = schedule, s
        self.config = type("Config", (), {"in_channels": 5})()

    def forward(self, x, t, encoder_hidden_states=None):
        a = self.schedule.alpha(t).view(-1, 1, 1, 1).to(x.dtype)
        latent = x[:, :4]  # the depth channel is conditioning only
        return type("Out", (), {"sample": (1 - a).sqrt() * latent / (a * self.s**2 + 1 - a)})()


def test_inversion_round_trip_through_the_inverters_predictor_returns_x0(models64, clip_frames):
    """Unit-variance latents -> ddim_invert through the Inverter's own UNet
    predictor (the exact Gaussian denoiser in the UNet's place) -> x_T, then
    DDIM sampling must give x0 back within the measured bound
    (docs/ARCHITECTURE.md section 5.3); and the Inverter on frames is exactly that inversion of their
    VAE latents."""
    from pix2video.engine.text import encode_prompts
    from pix2video.engine.unet_runner import UNetRunner
    from pix2video.engine.vae import encode_frames

    schedule = DDIMSchedule.from_config(models64.scheduler_config, 50)
    denoiser = _GaussianDenoiser(schedule, 1.0)
    inverter = Inverter(models64, batch_size=2, runner=UNetRunner(denoiser))
    depth = torch.zeros(3, 1, 8, 8, dtype=torch.float64)
    predict = inverter.unet_noise_predictor(depth, encode_prompts(models64, ["a ball"]))
    torch.manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    x_t = ddim_invert(x0, predict, schedule)
    rec = ddim_sample(x_t, predict, schedule)
    rel = float((rec - x0).norm() / x0.norm())
    assert rel < 2e-3, rel
    frames = clip_frames[:3]
    ours = inverter(frames, depth, "a ball", num_steps=50)
    want = ddim_invert(encode_frames(models64, frames), predict, schedule)
    assert (ours.double() - want).abs().max() < 1e-5  # stored as float32


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


def test_constant_depth_map_gives_zero_depth_not_nan(models):
    """A truly constant DPT output (max == min) hits the zero-division guard;
    a blank frame alone does not (DPT's output is not constant on it)."""
    from pix2video.engine.depth import normalise_depth

    for mode in ("bicubic", "bilinear"):
        d = normalise_depth(torch.full((2, 16, 16), 3.7), (8, 8), mode)
        assert d.shape == (2, 1, 8, 8) and torch.equal(d, torch.zeros_like(d)), mode
    # one constant map in a batch leaves the others normalised to [-1, 1]
    mixed = torch.stack([torch.full((16, 16), 2.0), torch.linspace(0, 1, 256).view(16, 16)])
    d = normalise_depth(mixed, (8, 8))
    assert torch.equal(d[0], torch.zeros_like(d[0])) and d[1].min() == -1 and d[1].max() == 1
    flat = np.full((1, 64, 64, 3), 128, np.uint8)
    assert torch.isfinite(DepthEstimator(models)(flat)).all()
