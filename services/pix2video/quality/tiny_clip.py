"""A tiny random CLIP (model + processor) with the real architecture, for tests
and offline development; loaded back through ``from_pretrained`` like real
weights. Its scores mean nothing; the arithmetic around them is real."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_CLIP_SEED = 0


def build_tiny_clip(folder: str | Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from ..models.architecture import Tower, clip_config
    from ..models.tiny import _write_clip_tokenizer

    folder = Path(folder)
    vocab_size = _write_clip_tokenizer(folder / "_tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "_tokenizer")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    tower = Tower(32, 37, 2)
    config = CLIPConfig(
        **clip_config(vocab_size, tower, tower, max_tokens=77, image_size=32, patch_size=8, projection_dim=16)
    )
    torch.manual_seed(TINY_CLIP_SEED)
    CLIPModel(config).eval().save_pretrained(folder)
    return folder
