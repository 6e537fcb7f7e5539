"""DDIM inversion of every frame of a video, batched across frames.

Each frame is VAE-encoded, then taken through ``num_steps`` inverse DDIM steps
with the source prompt at guidance 1 and its depth map concatenated to the
latent, giving the ``x_T`` that the editor starts from. Frames are
independent here, so they share UNet calls.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .checks import check_num_steps
from .ddim import DDIMSchedule, ddim_invert
from .model_set import ModelSet
from .text import encode_prompts
from .unet_runner import UNetRunner
from .vae import encode_frames


class Inverter:
    """Batched DDIM inversion with the depth-conditioned UNet.

    ``runner`` says how the UNet is called (CUDA graphs, compilation, batch
    buckets); by default plainly. The UNet runs with its own attention
    processors: variant ``"plain"`` of the runner's graphs.
    """

    def __init__(self, models: ModelSet, batch_size: int = 8, runner: UNetRunner | None = None):
        self.models = models
        self.batch_size = batch_size
        self.runner = runner or UNetRunner(models.unet)

    @torch.no_grad()
    def warm_up(self, height: int, width: int, compile: bool = True) -> None:
        """Captures (and compiles, if the runner does and ``compile``) the UNet
        call of a full batch at ``height`` x ``width`` pixels, before a replica
        serves."""
        m = self.models
        h, w = height // m.vae_scale_factor, width // m.vae_scale_factor
        emb = encode_prompts(m, [""])
        size = self.runner.bucket(self.batch_size)

        def call(n: int) -> None:
            x = torch.zeros((n, m.unet.config.in_channels, h, w), device=m.device, dtype=m.dtype)
            self.runner(x, torch.ones(n, device=m.device, dtype=torch.long), emb.expand(n, -1, -1), variant="plain")

        self.runner.warm_up(call, [size], None if compile else [])

    def unet_noise_predictor(self, depth: torch.Tensor, prompt_embeds: torch.Tensor) -> Callable:
        """``predict_noise(x, t)`` for a batch of frames with their depth maps."""
        m = self.models

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            inp = torch.cat([x, depth.to(x.dtype)], dim=1).to(m.dtype)
            emb = prompt_embeds.expand(x.shape[0], -1, -1)
            return self.runner(inp, t.to(m.device), emb, variant="plain").to(x.dtype)

        return predict

    @torch.no_grad()
    def __call__(
        self,
        frames: np.ndarray,
        depth: torch.Tensor,
        prompt: str,
        num_steps: int = 50,
        progress: Callable[[int], None] | None = None,
        steps_offset: int | None = None,
    ) -> torch.Tensor:
        """Inverts frames to ``x_T``.

        Args:
            frames: (N, H, W, 3) uint8 at the working resolution.
            depth: (N, 1, H/8, W/8) depth in [-1, 1] (see :mod:`.depth`).
            prompt: source prompt (caption), used at guidance 1.
            num_steps: inverse DDIM steps (the editor must use the same number).
            progress: called with the number of frames finished after each batch.
            steps_offset: timestep offset replacing the model's scheduler config's
                (None: keep it); the editor must use the same (see :class:`DDIMSchedule`).
        Returns:
            (N, 4, H/8, W/8) float32 latents ``x_T``, on the CPU.
        """
        check_num_steps(num_steps)
        m = self.models
        schedule = DDIMSchedule.from_config(m.scheduler_config, num_steps, steps_offset)
        emb = encode_prompts(m, [prompt])
        latent_dtype = torch.promote_types(m.dtype, torch.float32)
        out = []
        for i in range(0, len(frames), self.batch_size):
            x0 = encode_frames(m, frames[i : i + self.batch_size], self.batch_size).to(latent_dtype)
            d = depth[i : i + self.batch_size].to(m.device, latent_dtype)
            out.append(ddim_invert(x0, self.unet_noise_predictor(d, emb), schedule).float().cpu())
            if progress:
                progress(len(x0))
        return torch.cat(out)
