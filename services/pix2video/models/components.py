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

from ..errors import InvalidInput, ModelLoadError
from .loading import DEFAULT_CAPTION_MODEL, check_local_folder, is_path, resolve_model_path

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

# component -> file that must exist in its folder, for a local model folder
DEPTH_COMPONENTS = {
    "depth_estimator": "config.json",
    "feature_extractor": "preprocessor_config.json",
    "vae": "config.json",
}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise InvalidInput(f"device: invalid value {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device: {device!r} requested but CUDA is not available here")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> float16 on CUDA, float32 elsewhere; else a name in ``DTYPES``."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InvalidInput(f"dtype: must be auto or one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
        device: torch device for the depth estimator (kept in float32: its batch
            norms; the engine runs it under autocast on CUDA).
        cache_dir: where ``tiny`` is built (default ``~/.cache/pix2video``).

    Returns:
        (DPTForDepthEstimation, DPTImageProcessor, vae_scale_factor).
    """
    from diffusers import AutoencoderKL
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    path = resolve_model_path(model, cache_dir)
    if is_path(path):
        folder = Path(path).expanduser()
        path = str(folder)
        check_local_folder(folder, DEPTH_COMPONENTS)
    device = torch.device(device)
    component = "depth_estimator"
    try:
        depth = DPTForDepthEstimation.from_pretrained(path, subfolder="depth_estimator", torch_dtype=torch.float32)
        component = "feature_extractor"
        feature_extractor = DPTImageProcessor.from_pretrained(path, subfolder="feature_extractor")
        component = "vae"
        vae_config = AutoencoderKL.load_config(path, subfolder="vae")
        scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
        raise ModelLoadError(f"model: cannot load component {component!r} of {path!r}: {_first_line(exc)}") from exc
    depth.to(device).eval().requires_grad_(False)
    return depth, feature_extractor, scale


def caption_model_for(caption_model: str | None, model: str, cache_dir: str | Path | None = None) -> str:
    """The BLIP model to use, as ``load_model_set`` chooses it: the given one,
    else ``<model>/captioner`` when that folder exists, else BLIP base."""
    if caption_model:
        return caption_model
    path = resolve_model_path(model, cache_dir)
    if is_path(path) and (Path(path).expanduser() / "captioner").is_dir():
        return str(Path(path).expanduser() / "captioner")
    return DEFAULT_CAPTION_MODEL


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
            :func:`caption_model_for`.
        model: the SD2-depth model (hub id, folder or ``tiny``) whose
            ``captioner/`` folder is the default.

    Returns:
        (BlipForConditionalGeneration, BlipProcessor, the caption model used).
    """
    from transformers import BlipForConditionalGeneration, BlipProcessor

    name = caption_model_for(caption_model, model, cache_dir)
    if is_path(name) and not Path(name).expanduser().is_dir():
        raise ModelLoadError(f"caption_model: folder {name!r} does not exist")
    device = torch.device(device)
    try:
        processor = BlipProcessor.from_pretrained(name)
        blip = BlipForConditionalGeneration.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
        raise ModelLoadError(f"caption_model: cannot load {name!r}: {_first_line(exc)}") from exc
    dtype = dtype if device.type == "cuda" else torch.float32
    blip.to(device, dtype).eval().requires_grad_(False)
    return blip, processor, name
