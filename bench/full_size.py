"""The full-size SD2-depth architecture with random weights (no weights can be
downloaded here; the arithmetic is the same), in memory or saved as a model
folder that the services load through the real ``from_pretrained`` code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pix2video.models.architecture import SCHEDULER  # SD2's DDIM schedule, one definition
from pix2video.models.loading import ModelSet

SD2_DEPTH_UNET = dict(
    sample_size=64,
    in_channels=5,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
)
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512,
)
OPENCLIP_H = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
)


def full_size_modules(device: str, dtype: torch.dtype) -> dict:
    """UNet, VAE, text encoder (``dtype``) and DPT-hybrid (float32), random, on ``device``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, DPTConfig, DPTForDepthEstimation

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD2_DEPTH_UNET).to(dtype)
        vae = AutoencoderKL(**SD_VAE).to(dtype)
        text = CLIPTextModel(CLIPTextConfig(**OPENCLIP_H)).to(dtype)
        depth = DPTForDepthEstimation(
            DPTConfig(is_hybrid=True, image_size=384, neck_hidden_sizes=[256, 512, 768, 768])
        ).float()
    for m in (unet, vae, text, depth):
        m.eval().requires_grad_(False)
    return {"unet": unet, "vae": vae, "text_encoder": text, "depth_estimator": depth}


def full_size_models(device: str, dtype: torch.dtype, tokenizer_dir: Path) -> ModelSet:
    """The SD2-depth architecture with random weights, built on the device."""
    from transformers import CLIPTokenizer, DPTImageProcessor

    mods = full_size_modules(device, dtype)
    unet, vae, text, depth = mods["unet"], mods["vae"], mods["text_encoder"], mods["depth_estimator"]
    return ModelSet(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        scheduler_config=SCHEDULER,
        depth_estimator=depth,
        feature_extractor=DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False),
        device=torch.device(device),
        dtype=dtype,
        model_id="random-sd2-depth",
        fingerprint="random",
        caption_model="none",
    )


def save_random_model_set(folder: Path, tiny_dir: Path, device: str = "cuda") -> Path:
    """A model folder in SD2-depth's layout with full-size random weights (fp16
    on disk); tokenizer and BLIP captioner come from the tiny set (captions are
    not benchmarked: a source prompt is given)."""
    from diffusers import DDIMScheduler
    from transformers import DPTImageProcessor

    folder = Path(folder)
    if (folder / "model_index.json").exists():
        return folder
    for name, module in full_size_modules(device, torch.float16).items():
        module.save_pretrained(folder / name)
    DDIMScheduler(**SCHEDULER).save_pretrained(folder / "scheduler")
    DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False).save_pretrained(
        folder / "feature_extractor"
    )
    for name in ("tokenizer", "captioner"):
        shutil.copytree(tiny_dir / name, folder / name, dirs_exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionDepth2ImgPipeline"}))
    return folder
