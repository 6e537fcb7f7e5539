"""VAE encode/decode between uint8 frames and scaled latents, batched."""

from __future__ import annotations

import numpy as np
import torch

from .images import to_model_range, to_uint8
from .model_set import ModelSet


@torch.no_grad()
def encode_frames(models: ModelSet, frames: np.ndarray, batch_size: int = 8) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 4, H/8, W/8) latents, scaled by the VAE's factor.

    The posterior's mode, not a sample: inversion must be deterministic so that
    a video id always names the same latents.
    """
    vae = models.vae
    out = []
    for i in range(0, len(frames), batch_size):
        x = to_model_range(frames[i : i + batch_size], models.device, models.dtype)
        out.append(vae.encode(x).latent_dist.mode() * vae.config.scaling_factor)
    return torch.cat(out)


@torch.no_grad()
def decode_latents(models: ModelSet, latents: torch.Tensor) -> np.ndarray:
    """(N, 4, h, w) scaled latents -> (N, 8h, 8w, 3) uint8 frames."""
    vae = models.vae
    images = vae.decode(latents.to(models.dtype) / vae.config.scaling_factor).sample
    return to_uint8(images)
