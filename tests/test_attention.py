"""Self-attention feature injection (the processor and its installation)."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from pix2video.engine.attention import (
    InjectionAttnProcessor,
    InjectionContext,
    SampleRoute,
    injected_layer_names,
    injection_installed,
)


def _decoder_attn(unet):
    name = injected_layer_names(unet, "decoder")[0]
    module = unet.get_submodule(name.removesuffix(".processor"))
    return name, module


def test_anchor_and_previous_equal_to_own_features_is_plain_attention(models64):
    name, attn = _decoder_attn(models64.unet)
    torch.manual_seed(0)
    h = torch.randn(3, 16, attn.to_q.in_features, dtype=torch.float64)
    plain = AttnProcessor2_0()(attn, h)

    ctx = InjectionContext()
    ctx.bank = {("own", b): {name: h[b]} for b in range(3)}
    ctx.routes = [SampleRoute(refs=(("own", b), ("own", b))) for b in range(3)]
    injected = InjectionAttnProcessor(name, ctx)(attn, h)
    assert (injected - plain).abs().max() < 1e-12


def test_injection_attends_to_the_reference_features(models64):
    name, attn = _decoder_attn(models64.unet)
    torch.manual_seed(1)
    h = torch.randn(2, 16, attn.to_q.in_features, dtype=torch.float64)
    ref = torch.randn(16, attn.to_q.in_features, dtype=torch.float64)
    ctx = InjectionContext(bank={"a": {name: ref}, "b": {name: h[1]}})
    # Sample 0 attends to a foreign frame, sample 1 stays plain: one mixed batch.
    ctx.routes = [SampleRoute(refs=("a", "b")), SampleRoute()]
    out = InjectionAttnProcessor(name, ctx)(attn, h)

    # Reference: Q from the sample itself, K/V from [ref, h1], computed by hand.
    q = attn.to_q(h[:1])
    kv = torch.cat([ref, h[1]])[None]
    k, v = attn.to_k(kv), attn.to_v(kv)
    heads, d = attn.heads, q.shape[-1] // attn.heads
    w = torch.softmax(
        (q.view(1, -1, heads, d).transpose(1, 2) @ k.view(1, -1, heads, d).transpose(1, 2).transpose(-1, -2)) / d**0.5, -1
    )
    o = (w @ v.view(1, -1, heads, d).transpose(1, 2)).transpose(1, 2).reshape(1, -1, heads * d)
    expected = attn.to_out[0](o)
    assert (out[:1] - expected).abs().max() < 1e-12
    assert (out[1:] - AttnProcessor2_0()(attn, h[1:])).abs().max() < 1e-12
    assert (out[:1] - AttnProcessor2_0()(attn, h[:1])).abs().max() > 1e-3  # injection did something


def test_whole_unet_with_self_references_equals_plain_unet(models64):
    unet = models64.unet
    torch.manual_seed(2)
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    t = torch.tensor([500, 20])
    emb = torch.randn(2, 77, unet.config.cross_attention_dim, dtype=torch.float64)
    plain = unet(x, t, encoder_hidden_states=emb).sample
    ctx = InjectionContext()
    with injection_installed(unet, ctx, "all"):
        ctx.routes = [SampleRoute(record=("f", b), scope="all") for b in range(2)]
        recorded = unet(x, t, encoder_hidden_states=emb).sample
        assert len(ctx.bank[("f", 0)]) == len(injected_layer_names(unet, "all"))
        ctx.routes = [SampleRoute(refs=(("f", b), ("f", b)), scope="all") for b in range(2)]
        injected = unet(x, t, encoder_hidden_states=emb).sample
    assert (recorded - plain).abs().max() < 1e-12
    assert (injected - plain).abs().max() < 1e-10


def test_scope_decoder_leaves_encoder_plain_and_processors_are_restored(models64):
    unet = models64.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    ctx = InjectionContext()
    x = torch.randn(1, 5, 8, 8, dtype=torch.float64)
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="boom"):
        with injection_installed(unet, ctx, "all"):
            ctx.routes = [SampleRoute(record="r", scope="decoder")]
            unet(x, torch.tensor([10]), encoder_hidden_states=emb)
            raise RuntimeError("boom")
    assert set(ctx.bank["r"]) == set(injected_layer_names(unet, "decoder"))
    assert all(n.startswith("up_blocks.") for n in ctx.bank["r"])
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
