"""Loads single components for the services that need only one model.

The depth service needs DPT and its feature extractor (plus the VAE's scale
factor, read from its config without loading weights); the caption service
needs BLIP. Loading the whole SD2-depth set there would cost gigabytes of GPU
memory for nothing.

The small dataclasses here have exactly the attributes that the engine's
``DepthEstimator`` and ``Captioner`` read from a ``ModelSet``, so those classes
are reused unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .loading import (
    caption_model_for,
    check_local_folder,
    first_line,
    is_path,
    load_blip,
    load_dpt,
    resolve_model_path,
)

# component -> file that must exist in its folder, for a local model folder
DEPTH_COMPONENTS = {
    "depth_estimator": "config.json",
    "feature_extractor": "preprocessor_config.json",
    "vae": "config.json",
}


@dataclass
class DepthComponents:
    """What ``engine.depth.DepthEstimator`` reads from its ``models``."""

    depth_estimator: torch.nn.Module
    feature_extractor: object
    device: torch.device
    dtype: torch.dtype
    vae_scale_factor: int


@dataclass
class CaptionComponents:
    """What ``engine.caption.Captioner`` reads from its ``models``."""

    model: torch.nn.Module
    processor: object
    device: torch.device
    dtype: torch.dtype
    caption_model: str

    def captioner(self):
        """(BlipForConditionalGeneration, BlipProcessor), as ``ModelSet.captioner``."""
        return self.model, self.processor


def load_depth(model: str, device: str | torch.device, cache_dir: str | Path | None = None):
    """Loads only DPT depth from an SD2-depth folder, hub id or ``tiny``.

    Args:
        model: hub id, local folder in the SD2-depth layout, or ``tiny``.
        device: torch device for the depth estimator (see :func:`~.loading.load_dpt`).
        cache_dir: where ``tiny`` is built (default ``~/.cache/pix2video``).

    Returns:
        (DPTForDepthEstimation, DPTImageProcessor, vae_scale_factor).
    """
    from diffusers import AutoencoderKL

    path = resolve_model_path(model, cache_dir)
    if is_path(path):
        folder = Path(path).expanduser()
        path = str(folder)
        check_local_folder(folder, DEPTH_COMPONENTS)
    depth, feature_extractor = load_dpt(path, torch.device(device))
    try:
        vae_config = AutoencoderKL.load_config(path, subfolder="vae")
        scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
        raise ModelLoadError(f"model: cannot load component 'vae' of {path!r}: {first_line(exc)}") from exc
    return depth, feature_extractor, scale


def load_caption(
    caption_model: str | None,
    model: str,
    device: str | torch.device,
    dtype: torch.dtype,
    cache_dir: str | Path | None = None,
):
    """Loads BLIP as ``ModelSet.captioner`` does (float32 off CUDA).

    Args:
        caption_model: BLIP hub id or folder; None or "" chooses as
            :func:`~.loading.caption_model_for`.
        model: the SD2-depth model (hub id, folder or ``tiny``) whose
            ``captioner/`` folder is the default.

    Returns:
        (BlipForConditionalGeneration, BlipProcessor, the caption model used).
    """
    name = caption_model_for(caption_model, model, cache_dir)
    blip, processor = load_blip(name, torch.device(device), dtype)
    return blip, processor, name
