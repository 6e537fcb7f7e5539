"""Prompt encoding with the CLIP text encoder (as diffusers' ``encode_prompt``)."""

from __future__ import annotations

import torch

from ..errors import InvalidInput

MAX_PROMPT_CHARS = 2000


def check_prompt(prompt: object, name: str = "prompt", allow_empty: bool = False) -> str:
    """A prompt of at most MAX_PROMPT_CHARS characters (non-empty unless
    ``allow_empty``, as for a negative prompt): checked before tokenising, so
    encoding time stays bounded whatever a client sends."""
    if not isinstance(prompt, str):
        raise InvalidInput(f"{name}: must be a string, got {type(prompt).__name__}")
    if not allow_empty and not prompt.strip():
        raise InvalidInput(f"{name}: must be a non-empty string, got {prompt[:64]!r}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"{name}: at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}")
    return prompt


@torch.no_grad()
def encode_prompts(models, prompts: list[str]) -> torch.Tensor:
    """(len(prompts), tokens, dim) text embeddings; prompts longer than the
    tokenizer's limit are truncated, as in diffusers."""
    tok = models.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    out = models.text_encoder(ids.input_ids.to(models.device))[0]
    return out.to(models.dtype)
