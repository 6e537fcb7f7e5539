"""A tiny, randomly initialised model set with the real architectures.

No weights can be downloaded where tests and the demo run, so this builds every
component from a small config (seeded random weights), writes it with
``save_pretrained`` in the layout of ``stabilityai/stable-diffusion-2-depth``
(plus a ``captioner/`` folder holding a BLIP model), and the caller loads it
back through the same ``from_pretrained`` code as real weights.

The structure mirrors SD2-depth where it matters to the method: a UNet with a
5-channel input (latent + depth), linear projections in its transformers,
cross-attention down blocks and cross-attention up (decoder) blocks, a VAE
with scale factor 8, a CLIP text encoder, DPT depth and BLIP captioning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .architecture import SCHEDULER, Sd2Size, Tower, blip_config, sd2_modules
from .clip_bpe import write_clip_bpe

TINY_SEED = 0
# Bump when the tiny configs change, so cached copies are rebuilt.
TINY_VERSION = 2


def _write_clip_tokenizer(folder: Path) -> int:
    """Writes a character-level CLIP BPE vocabulary (every byte, with and without
    the end-of-word marker, plus a few merges) and returns its size."""
    merges = ["t h", "th e</w>", "a n", "o n", "i n"]
    tok, vocab_size = write_clip_bpe(folder, merges, [m.replace(" ", "") for m in merges], 77)
    if len(set(tok("a photo of the swan").input_ids)) < 4:
        raise RuntimeError("tiny tokenizer maps text to unknown tokens")
    tok.save_pretrained(folder)
    return vocab_size


_BLIP_WORDS = (
    "a an the of on in with and at swan lake dog cat man woman car street tree sky water "
    "red blue green white black small large photo painting crochet river boat bird road"
).split()


def _write_blip(folder: Path) -> None:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = specials + _BLIP_WORDS
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(vocab_file), bos_token="[DEC]")
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    tower = Tower(32, 37, 2)
    config = BlipConfig(**blip_config(vocab, tower, tower, max_tokens=64, image_size=32, patch_size=8))
    torch.manual_seed(TINY_SEED)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)


# SD2-depth's layout at test size (scale factor 8, as SD2's: 64x64 frames -> 8x8x4 latents).
TINY_LAYOUT = Sd2Size(
    image_size=64,
    vae_channels=(8, 16, 16, 16),
    unet_channels=(32, 64),
    unet_head_width=16,
    norm_num_groups=8,
    text=Tower(32, 37, 2),
    max_tokens=77,
    depth=Tower(32, 37, 4),
    depth_image_size=32,
    depth_patch_size=8,
)


def tiny_modules(vocab_size: int) -> dict[str, Any]:
    """The tiny UNet, VAE, text encoder and DPT, in memory, seeded."""
    return sd2_modules(TINY_LAYOUT, vocab_size, TINY_SEED)


def build_tiny_model_set(folder: str | Path) -> Path:
    """Builds the tiny model set into ``folder`` and returns its path."""
    from diffusers import DDIMScheduler
    from transformers import DPTImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_clip_tokenizer(folder / "tokenizer")
    modules = tiny_modules(vocab_size)
    scheduler: Any = DDIMScheduler(**SCHEDULER)  # diffusers' lazy imports hide save_pretrained from mypy
    for name, module in modules.items():
        module.eval().save_pretrained(folder / name)
    scheduler.save_pretrained(folder / "scheduler")
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(
        folder / "feature_extractor"
    )
    _write_blip(folder / "captioner")
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionDepth2ImgPipeline", "_pix2video_tiny_version": TINY_VERSION})
    )
    return folder
