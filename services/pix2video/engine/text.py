"""Prompt encoding with the CLIP text encoder (as diffusers' ``encode_prompt``)."""

from __future__ import annotations

import torch

from ..errors import InvalidInput
from ..limits import check_text, echo

MAX_PROMPT_CHARS = 2000


def check_prompt(prompt: object, name: str = "prompt") -> str:
    # Length and NUL first, so a huge blank prompt is not quoted back whole.
    check_text(prompt, name, MAX_PROMPT_CHARS)
    if not prompt.strip():
        raise InvalidInput(f"{name}: must be a non-empty string, got {echo(prompt)}")
    return prompt


@torch.no_grad()
def encode_prompts(models, prompts: list[str]) -> torch.Tensor:
    """(len(prompts), tokens, dim) text embeddings; prompts longer than the
    tokenizer's limit are truncated, as in diffusers."""
    tok = models.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    out = models.text_encoder(ids.input_ids.to(models.device))[0]
    return out.to(models.dtype)
