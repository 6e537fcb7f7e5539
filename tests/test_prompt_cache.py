"""Prompt encoding's cache (keyed by prompt): the same embeddings as the text
encoder computes, bounded, and a new prompt is encoded anew."""

from __future__ import annotations

import torch

from pix2video.engine.text import PromptEncoder, encode_prompts, prompt_encoder


def direct(models, prompts):
    tok = models.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return models.text_encoder(ids.input_ids)[0].to(models.dtype)


def test_cached_embeddings_are_the_text_encoders(models):
    prompts = ["a crochet swan", ""]
    enc = PromptEncoder(models, cache_size=8)
    first, again = enc(prompts), enc(prompts)
    assert enc.misses == 2 and enc.hits == 2
    ref = direct(models, prompts)
    assert torch.allclose(first, ref, atol=1e-5) and torch.equal(first, again)
    other = enc(["a paper swan"])
    assert enc.misses == 3 and not torch.allclose(other, ref[:1], atol=1e-3)


def test_cache_is_bounded_and_least_recently_used_goes(models):
    enc = PromptEncoder(models, cache_size=2)
    enc(["a"]), enc(["b"]), enc(["a"]), enc(["c"])  # "b" is the least recently used
    assert list(enc._cache) == ["a", "c"]
    enc(["b"])
    assert enc.misses == 4


def test_encode_prompts_goes_through_the_model_sets_encoder(models):
    enc = prompt_encoder(models)
    assert prompt_encoder(models) is enc
    before = enc.misses
    out = encode_prompts(models, ["a swan on the lake", "a swan on the lake"])
    assert enc.misses == before + 1 and torch.equal(out[0], out[1])
