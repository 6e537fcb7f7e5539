"""Loads the model set through ``from_pretrained``, from a hub id or a local folder.

Layout (that of ``stabilityai/stable-diffusion-2-depth``, which ships its own
DPT depth estimator): ``unet/ vae/ text_encoder/ tokenizer/ scheduler/
depth_estimator/ feature_extractor/``. The BLIP captioner comes from
``captioner/`` inside the model folder when present, else from its own hub id.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from .tiny import TINY_VERSION, build_tiny_model_set

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-depth"
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
TINY = "tiny"

# component -> file that must exist in its folder for a local model
REQUIRED_COMPONENTS = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "tokenizer": "tokenizer_config.json",
    "scheduler": "scheduler_config.json",
    "depth_estimator": "config.json",
    "feature_extractor": "preprocessor_config.json",
}


def default_cache_dir() -> Path:
    return Path(os.path.expanduser("~/.cache/pix2video"))


def resolve_model_path(model: str, cache_dir: str | Path | None = None) -> str:
    """Maps ``tiny`` to a locally built tiny model set (built once, then cached);
    returns any other value unchanged (a folder or a hub id)."""
    if model != TINY:
        return model
    folder = Path(cache_dir or default_cache_dir()) / f"tiny-v{TINY_VERSION}"
    if not (folder / "model_index.json").exists():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        build_tiny_model_set(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race; its copy is identical
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def check_local_folder(path: Path, components: dict[str, str] = REQUIRED_COMPONENTS) -> None:
    """Names the first missing component of a local model folder (one line)."""
    if not path.is_dir():
        raise ModelLoadError(f"model: folder {str(path)!r} does not exist")
    for component, marker in components.items():
        if not (path / component / marker).is_file():
            raise ModelLoadError(
                f"model: folder {str(path)!r} is missing component {component!r} "
                f"(expected {str(path / component / marker)!r})"
            )


def is_path(model: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else names a folder.
    return Path(model).exists() or model.startswith((".", "/", "~")) or model.count("/") > 1


def fingerprint_model(model: str) -> str:
    """A short identity of the weights, part of every video id: configs in full,
    weight files by their header and sampled bytes (hashing gigabytes at every
    start would cost seconds for no practical gain). Hub ids are named as is."""
    path = Path(model)
    if not path.is_dir():
        return hashlib.sha256(f"hub:{model}".encode()).hexdigest()[:16]
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}:{size}\n".encode())
        with f.open("rb") as fh:
            if f.suffix in (".json", ".txt") or size <= 2 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return h.hexdigest()[:16]


@dataclass
class ModelSet:
    """Every model the engine needs, on one device and dtype: the loaded
    implementation of :class:`pix2video.engine.model_set.ModelSet` (and of
    its ``DepthModels`` and ``CaptionModels``)."""

    unet: Any  # UNet2DConditionModel (typed Any: see pix2video.engine.model_set)
    vae: Any  # AutoencoderKL
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    depth_estimator: torch.nn.Module | None  # None when loaded without depth (the services
    feature_extractor: object | None  # that get depth maps from the depth service)
    device: torch.device
    dtype: torch.dtype
    model_id: str
    fingerprint: str
    caption_model: str
    _captioner: tuple | None = field(default=None, repr=False)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def captioner(self):
        """(BlipForConditionalGeneration, BlipProcessor), loaded on first use:
        a caption is only needed when the user gives no source prompt."""
        if self._captioner is None:
            self._captioner = load_blip(self.caption_model, self.device, self.dtype)
        return self._captioner


def first_line(exc: BaseException) -> str:
    """An exception as one line (its message's first line, else its type)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def caption_model_for(caption_model: str | None, model: str, cache_dir: str | Path | None = None) -> str:
    """The BLIP model to use: the given one, else ``<model>/captioner`` when
    that folder exists, else BLIP base."""
    if caption_model:
        return caption_model
    path = resolve_model_path(model, cache_dir)
    if is_path(path) and (Path(path).expanduser() / "captioner").is_dir():
        return str(Path(path).expanduser() / "captioner")
    return DEFAULT_CAPTION_MODEL


def load_blip(name: str, device: torch.device, dtype: torch.dtype) -> tuple:
    """(BlipForConditionalGeneration, BlipProcessor) from a hub id or folder, on
    ``device`` in ``dtype`` on CUDA and float32 elsewhere, ready for inference."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    if is_path(name) and not Path(name).expanduser().is_dir():
        raise ModelLoadError(f"caption_model: folder {name!r} does not exist")
    try:
        processor = BlipProcessor.from_pretrained(name)
        blip: Any = BlipForConditionalGeneration.from_pretrained(name)  # Any: transformers types .to oddly
    except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
        raise ModelLoadError(f"caption_model: cannot load {name!r}: {first_line(exc)}") from exc
    dtype = dtype if device.type == "cuda" else torch.float32
    blip.to(device, dtype).eval().requires_grad_(False)
    return blip, processor


def load_dpt(path: str, device: torch.device) -> tuple:
    """(DPTForDepthEstimation, DPTImageProcessor) of an SD2-depth folder or hub
    id, on ``device``. DPT stays in float32 (its batch norms misbehave in
    half precision); :func:`pix2video.engine.depth.predict_depth` runs it under
    autocast on CUDA."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    component = "depth_estimator"
    try:
        depth: Any = DPTForDepthEstimation.from_pretrained(path, subfolder=component, torch_dtype=torch.float32)
        component = "feature_extractor"
        feature_extractor = DPTImageProcessor.from_pretrained(path, subfolder=component)
    except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
        raise ModelLoadError(f"model: cannot load component {component!r} of {path!r}: {first_line(exc)}") from exc
    depth.to(device).eval().requires_grad_(False)
    return depth, feature_extractor


def load_model_set(
    model: str = DEFAULT_MODEL,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    caption_model: str | None = None,
    cache_dir: str | Path | None = None,
    with_depth: bool = True,
) -> ModelSet:
    """Loads every component of ``model`` (hub id, local folder or ``tiny``).

    Args:
        model: a hub id such as ``stabilityai/stable-diffusion-2-depth``, a local
            folder in the same layout, or ``tiny`` for the built-in random tiny set.
        device: torch device for every component.
        dtype: dtype of the UNet, VAE and text encoder. The depth estimator stays
            in float32 (its batch norms) and runs under autocast on CUDA.
        caption_model: BLIP hub id or folder; default ``<model>/captioner`` when
            that folder exists, else ``Salesforce/blip-image-captioning-base``.
        with_depth: load the DPT depth estimator too; the inversion and editor
            services skip it (depth comes from the depth service or the store),
            which saves its memory on their GPUs.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = resolve_model_path(model, cache_dir)
    local = is_path(path)
    if local:
        path = str(Path(path).expanduser())
        check_local_folder(Path(path))
    device = torch.device(device)
    try:
        unet: Any = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype)
        vae: Any = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype)
        text_encoder: Any = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        scheduler_config = _read_scheduler_config(path)
    except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
        raise ModelLoadError(f"model: cannot load {path!r}: {first_line(exc)}") from exc
    depth, feature_extractor = load_dpt(path, device) if with_depth else (None, None)
    if unet.config.in_channels != 5:
        raise ModelLoadError(
            f"model: {path!r} is not a depth-conditioned UNet (in_channels={unet.config.in_channels}, expected 5)"
        )
    for m in (unet, vae, text_encoder):
        m.to(device).eval().requires_grad_(False)
    return ModelSet(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        depth_estimator=depth,
        feature_extractor=feature_extractor,
        device=device,
        dtype=dtype,
        model_id=model,
        fingerprint=fingerprint_model(path),
        caption_model=caption_model_for(caption_model, path),
    )


def _read_scheduler_config(path: str) -> dict:
    from diffusers import DDIMScheduler

    # Loaded through the real class so a hub id or folder behaves alike; only the
    # config is kept, the engine does its own per-sample DDIM arithmetic.
    return dict(DDIMScheduler.from_pretrained(path, subfolder="scheduler").config)
