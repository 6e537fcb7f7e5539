"""Prompt encoding with the CLIP text encoder (as diffusers' ``encode_prompt``)."""

from __future__ import annotations

import torch

from .model_set import ModelSet


@torch.no_grad()
def encode_prompts(models: ModelSet, prompts: list[str]) -> torch.Tensor:
    """(len(prompts), tokens, dim) text embeddings; prompts longer than the
    tokenizer's limit are truncated, as in diffusers."""
    tok = models.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    out = models.text_encoder(ids.input_ids.to(models.device))[0]
    return out.to(models.dtype)
