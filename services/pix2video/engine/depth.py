"""Depth per frame with DPT, prepared exactly as SD2-depth expects.

As in diffusers' ``StableDiffusionDepth2ImgPipeline.prepare_depth_map``: DPT's
predicted depth, resized bicubically to the latent size, min-max normalised
per frame to [-1, 1]. The authors' script resizes bilinearly instead
(``resize="bilinear"``, part of ``--preset authors``).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInput, ModelLoadError
from .model_set import DepthModels

DEPTH_RESIZE_MODES = ("bicubic", "bilinear")


class DepthEstimator:
    """Batched DPT depth for frames already at the working resolution."""

    def __init__(self, models: DepthModels, batch_size: int = 16):
        self.models = models
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(
        self, frames: np.ndarray, progress: Callable[[int], None] | None = None, resize: str = "bicubic"
    ) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 1, H/8, W/8) float32 depth in [-1, 1].

        ``progress`` (optional) is called with the number of frames done per batch;
        ``resize`` is the interpolation to the latent size (see :func:`normalise_depth`).
        """
        check_depth_resize(resize)
        m = self.models
        n, height, width = frames.shape[:3]
        size = (height // m.vae_scale_factor, width // m.vae_scale_factor)
        out = []
        for i in range(0, n, self.batch_size):
            chunk = frames[i : i + self.batch_size]
            out.append(normalise_depth(predict_depth(m, chunk), size, resize))
            if progress:
                progress(len(chunk))
        return torch.cat(out)


def check_depth_resize(mode: object) -> str:
    if mode not in DEPTH_RESIZE_MODES:
        raise InvalidInput(f"depth_resize: must be one of {', '.join(DEPTH_RESIZE_MODES)}; got {mode!r}")
    return mode


def normalise_depth(predicted: torch.Tensor, size: tuple[int, int], resize: str = "bicubic") -> torch.Tensor:
    """(N, h, w) raw DPT depth -> (N, 1, *size) in [-1, 1], resized with
    ``resize`` (``bicubic``: diffusers' depth2img; ``bilinear``: the authors')."""
    check_depth_resize(resize)
    d = F.interpolate(predicted.unsqueeze(1), size=size, mode=resize, align_corners=False)

    lo = torch.amin(d, dim=[1, 2, 3], keepdim=True)
    hi = torch.amax(d, dim=[1, 2, 3], keepdim=True)
    # A constant depth map (a blank frame) would divide by zero; it maps to 0.
    return torch.where(hi > lo, 2.0 * (d - lo) / (hi - lo).clamp(min=1e-12) - 1.0, torch.zeros_like(d))


@torch.no_grad()
def predict_depth(models: DepthModels, frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, h, w) raw DPT depth, float32, in one DPT call."""
    m = models
    if m.depth_estimator is None:
        raise ModelLoadError("model: loaded without its depth estimator (with_depth=False); depth needs it")
    pixels = m.feature_extractor(images=list(frames), return_tensors="pt").pixel_values.to(m.device)
    # DPT-hybrid has batch norms that misbehave in pure fp16; autocast keeps
    # them in float32 while the matmuls run in half precision.
    ctx = (
        torch.autocast(m.device.type, dtype=m.dtype)
        if m.device.type == "cuda" and m.dtype != torch.float32
        else contextlib.nullcontext()
    )
    with ctx:
        return m.depth_estimator(pixels).predicted_depth.float()
