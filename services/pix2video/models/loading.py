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

import torch

from ..errors import ModelLoadError
from .tiny import TINY_VERSION, build_tiny_model_set
from .toy import TOY, toy_folder

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
    """Maps ``tiny`` to a locally built tiny model set (built once, then cached)
    and ``toy`` to the shipped toy-world weights; returns any other value
    unchanged (a folder or a hub id)."""
    if model == TOY:
        return str(toy_folder())
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
    """Every model the engine needs, on one device and dtype."""

    unet: torch.nn.Module
    vae: torch.nn.Module
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
            from transformers import BlipForConditionalGeneration, BlipProcessor

            try:
                processor = BlipProcessor.from_pretrained(self.caption_model)
                model = BlipForConditionalGeneration.from_pretrained(self.caption_model)
            except Exception as exc:  # noqa: BLE001 - report any loading failure in one line
                raise ModelLoadError(f"caption_model: cannot load {self.caption_model!r}: {exc}") from exc
            dtype = self.dtype if self.device.type == "cuda" else torch.float32
            self._captioner = (model.to(self.device, dtype).eval(), processor)
        return self._captioner


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
    from transformers import CLIPTextModel, CLIPTokenizer, DPTForDepthEstimation, DPTImageProcessor

    path = resolve_model_path(model, cache_dir)
    local = is_path(path)
    if local:
        path = str(Path(path).expanduser())
        check_local_folder(Path(path))
    device = torch.device(device)
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        scheduler_config = _read_scheduler_config(path)
        depth = feature_extractor = None
        if with_depth:
            depth = DPTForDepthEstimation.from_pretrained(path, subfolder="depth_estimator", torch_dtype=torch.float32)
            feature_extractor = DPTImageProcessor.from_pretrained(path, subfolder="feature_extractor")
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model: cannot load {path!r}: {first}") from exc
    if unet.config.in_channels != 5:
        raise ModelLoadError(
            f"model: {path!r} is not a depth-conditioned UNet (in_channels={unet.config.in_channels}, expected 5)"
        )
    if caption_model is None:
        caption_model = (
            str(Path(path) / "captioner") if local and (Path(path) / "captioner").is_dir() else DEFAULT_CAPTION_MODEL
        )
    for m in (unet, vae, text_encoder, depth):
        if m is not None:
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
        caption_model=caption_model,
    )


def _read_scheduler_config(path: str) -> dict:
    from diffusers import DDIMScheduler

    # Loaded through the real class so a hub id or folder behaves alike; only the
    # config is kept, the engine does its own per-sample DDIM arithmetic.
    return dict(DDIMScheduler.from_pretrained(path, subfolder="scheduler").config)
