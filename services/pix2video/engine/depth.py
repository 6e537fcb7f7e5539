"""Depth per frame with DPT, prepared exactly as SD2-depth expects.

As in diffusers' ``StableDiffusionDepth2ImgPipeline.prepare_depth_map``: DPT's
predicted depth, resized bicubically to the latent size, min-max normalised
per frame to [-1, 1]. The authors' script resizes bilinearly instead
(``resize="bilinear"``, part of ``--preset authors``).

The DPT input (resize to DPT's size, rescale, normalise) is made either by
the model's own image processor on the host (``preprocess="host"``: as
diffusers' pipeline does, one frame at a time on the CPU) or by the same
steps in torch on the model's device (``"device"``). On an H200 the host
processor was most of a frame's depth time (docs/benchmark.md, run 5);
the device path resizes with torch's antialiased kernels, rounded to 8 bits
as the processor's resize is, so its input differs from the host's by at
most a grey level here and there, and the depth map by the tolerance that
tests/test_depth_preprocess.py and the benchmark state. ``"auto"`` takes
the device path on CUDA and the host's on the CPU (where the CPU is the
device and the host path is what the reference pipeline computes).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInput, ModelLoadError
from .depth_options import DEPTH_PREPROCESS_MODES
from .model_set import DepthModels

DEPTH_RESIZE_MODES = ("bicubic", "bilinear")
# Most frames in one DPT call, whatever batch the caller asks for: at 128
# frames (384x384 input) DPT-hybrid's neck upsamples into a tensor of more
# than INT_MAX elements, which CUDA's bilinear upsampling refuses (H200, run 5
# of docs/benchmark.md); 64 frames a call was also the fastest batch there.
DPT_MAX_FRAMES = 64
# PIL's resampling filters (the processor's ``resample``) that torch has, antialiased as PIL's.
_TORCH_RESAMPLE = {2: "bilinear", 3: "bicubic", "bilinear": "bilinear", "bicubic": "bicubic"}


class DepthEstimator:
    """Batched DPT depth for frames already at the working resolution."""

    def __init__(self, models: DepthModels, batch_size: int = 16, preprocess: str = "auto"):
        self.models = models
        self.batch_size = batch_size
        self.preprocess = resolve_preprocess(preprocess, models)

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
            out.append(normalise_depth(predict_depth(m, chunk, self.preprocess), size, resize))
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


def check_depth_preprocess(mode: object) -> str:
    if mode not in DEPTH_PREPROCESS_MODES:
        raise InvalidInput(f"preprocess: must be one of {', '.join(DEPTH_PREPROCESS_MODES)}; got {mode!r}")
    return mode


def device_preprocess_unsupported(processor) -> str | None:
    """Why :func:`device_pixels` cannot reproduce ``processor`` (None: it can)."""
    p = processor
    if p is None:
        return "no image processor"
    if getattr(p, "do_pad", False):
        return "do_pad is set"
    if getattr(p, "do_resize", True):
        if getattr(p, "keep_aspect_ratio", False) or (getattr(p, "ensure_multiple_of", 1) or 1) != 1:
            return "keep_aspect_ratio or ensure_multiple_of is set"
        if _resample_mode(p) is None:
            return f"resample {getattr(p, 'resample', None)!r} is not bilinear or bicubic"
        try:
            _processor_size(p)
        except (KeyError, TypeError, AttributeError):
            return f"size {getattr(p, 'size', None)!r} is not a height and a width"
    return None


def resolve_preprocess(mode: str, models: DepthModels) -> str:
    """``host`` or ``device`` for ``mode`` (see the module's docstring)."""
    check_depth_preprocess(mode)
    if mode == "host":
        return mode
    why = device_preprocess_unsupported(models.feature_extractor)
    if mode == "device" and why:
        raise ModelLoadError(f"preprocess: 'device' cannot reproduce this model's image processor ({why})")
    if mode == "auto":
        return "device" if torch.device(models.device).type == "cuda" and not why else "host"
    return mode


def _resample_mode(p) -> str | None:
    """torch's name of the processor's filter: PIL's number (3, bicubic), or
    an enum of a string (torchvision's InterpolationMode); None if torch lacks it."""
    r = getattr(p, "resample", 3)
    r = r if isinstance(r, int) else getattr(r, "value", r)  # PIL's IntEnum is an int
    return _TORCH_RESAMPLE.get(r if isinstance(r, int) else str(r).lower())


def _processor_size(p) -> tuple[int, int]:
    size = p.size
    if isinstance(size, dict):
        return int(size["height"]), int(size["width"])
    return int(size.height), int(size.width)  # transformers' SizeDict


def device_pixels(processor, frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, h, w) float32 DPT input on ``device``: the
    steps of ``processor`` (resize of the 8-bit image, rescale, normalise) in torch."""
    p = processor
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
    if getattr(p, "do_resize", True):
        mode = _resample_mode(p)
        if mode is None:
            raise ModelLoadError(f"preprocess: 'device' cannot reproduce resample {getattr(p, 'resample', None)!r}")
        h, w = _processor_size(p)
        # As PIL: rows first, then columns, each pass rounded and clipped to
        # 8 bits (bicubic overshoots; on noise, one float pass differed from
        # PIL's by up to 24 grey levels, these two passes by 1).
        for size in ((x.shape[2], w), (h, w)):
            x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).round_().clamp_(0, 255)
    if getattr(p, "do_rescale", True):
        x = x * float(p.rescale_factor)
    if getattr(p, "do_normalize", True):
        mean = torch.tensor(p.image_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(p.image_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


@torch.no_grad()
def predict_depth(models: DepthModels, frames: np.ndarray, preprocess: str = "host") -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, h, w) raw DPT depth, float32, in DPT calls of
    at most :data:`DPT_MAX_FRAMES` frames; the DPT input made on the host or
    on the device (``preprocess``, resolved: see :func:`resolve_preprocess`)."""
    m = models
    if m.depth_estimator is None:
        raise ModelLoadError("model: loaded without its depth estimator (with_depth=False); depth needs it")
    step = DPT_MAX_FRAMES
    return torch.cat([_dpt(m, frames[i : i + step], preprocess) for i in range(0, len(frames), step)])


def _dpt(m: DepthModels, frames: np.ndarray, preprocess: str) -> torch.Tensor:
    if preprocess == "device":
        pixels = device_pixels(m.feature_extractor, frames, m.device)
    else:
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


def depth_agreement(got: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """How close normalised depth maps ``got`` are to ``ref`` ((N, 1, h, w) in
    [-1, 1]): the worst frame's Pearson correlation, the largest absolute
    difference as a fraction of the maps' range (2), the mean absolute
    difference (same fraction). A constant reference frame counts as
    correlation 1 when ``got`` is constant there too."""
    g, r = got.double().flatten(1), ref.double().flatten(1)
    gc, rc = g - g.mean(1, keepdim=True), r - r.mean(1, keepdim=True)
    den = gc.norm(dim=1) * rc.norm(dim=1)
    both_flat = (gc.norm(dim=1) == 0) & (rc.norm(dim=1) == 0)
    corr = torch.where(den > 0, (gc * rc).sum(1) / den.clamp(min=1e-300), both_flat.double())
    diff = (g - r).abs() / 2
    return {"pearson_min": float(corr.min()), "max_err": float(diff.max()), "mean_err": float(diff.mean())}
