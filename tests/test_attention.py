"""Self-attention feature injection (the processor and its installation)."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from pix2video.engine.attention import (
    InjectionContext,
    SampleRoute,
    injected_layer_names,
    injection_installed,
)


def _decoder_attn(unet):
    name = injected_layer_names(unet, "decoder")[0]
    module = unet.get_submodule(name.removesuffix(".processor"))
    return name, module


def _call(ctx, name, attn, h, routes):
    ctx.set_routes(routes, h.device)
    try:
        return ctx.processor(name)(attn, h)
    finally:
        ctx.clear_routes()


def test_anchor_and_previous_equal_to_own_features_is_plain_attention(models64):
    name, attn = _decoder_attn(models64.unet)
    torch.manual_seed(0)
    h = torch.randn(3, 16, attn.to_q.in_features, dtype=torch.float64)
    plain = AttnProcessor2_0()(attn, h)

    ctx = InjectionContext(slots=2, scratch=1)  # both grow on demand
    # No references anywhere: a self-only call (keys from the live features, once).
    ctx.set_routes([SampleRoute(record=("own", b)) for b in range(3)], h.device)
    assert ctx.self_only
    ctx.clear_routes()
    recorded = _call(ctx, name, attn, h, [SampleRoute(record=("own", b)) for b in range(3)])
    assert ctx.capacity >= 3 and ctx.scratch >= 3
    assert all(torch.equal(ctx.features(("own", b), name), h[b]) for b in range(3))
    ctx.set_routes([SampleRoute(refs=(("own", 0),)), SampleRoute(), SampleRoute()], h.device)
    assert not ctx.self_only  # one sample with a reference: every sample reads two slots
    ctx.clear_routes()
    injected = _call(ctx, name, attn, h, [SampleRoute(refs=(("own", b), ("own", b))) for b in range(3)])
    single = _call(ctx, name, attn, h, [SampleRoute(refs=(("own", b),)) for b in range(3)])
    assert (recorded - plain).abs().max() < 1e-12
    assert (injected - plain).abs().max() < 1e-12
    assert (single - plain).abs().max() < 1e-12


def test_injection_attends_to_the_reference_features(models64):
    name, attn = _decoder_attn(models64.unet)
    torch.manual_seed(1)
    h = torch.randn(2, 16, attn.to_q.in_features, dtype=torch.float64)
    ref = torch.randn(16, attn.to_q.in_features, dtype=torch.float64)
    ctx = InjectionContext()
    _call(ctx, name, attn, torch.stack([ref, h[1]]), [SampleRoute(record="a"), SampleRoute(record="b")])
    # Sample 0 attends to a foreign frame, sample 1 stays plain: one mixed batch.
    out = _call(ctx, name, attn, h, [SampleRoute(refs=("a", "b")), SampleRoute()])

    # Reference: Q from the sample itself, K/V from [ref, h1], computed by hand.
    q = attn.to_q(h[:1])
    kv = torch.cat([ref, h[1]])[None]
    k, v = attn.to_k(kv), attn.to_v(kv)
    heads, d = attn.heads, q.shape[-1] // attn.heads
    w = torch.softmax(
        (q.view(1, -1, heads, d).transpose(1, 2) @ k.view(1, -1, heads, d).transpose(1, 2).transpose(-1, -2)) / d**0.5,
        -1,
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
        ctx.set_routes([SampleRoute(record=("f", b), scope="all") for b in range(2)], x.device)
        recorded = unet(x, t, encoder_hidden_states=emb).sample
        assert {layer for _, layer in ctx.pools} == set(injected_layer_names(unet, "all"))
        ctx.set_routes([SampleRoute(refs=(("f", b), ("f", b)), scope="all") for b in range(2)], x.device)
        injected = unet(x, t, encoder_hidden_states=emb).sample
    assert (recorded - plain).abs().max() < 1e-12
    assert (injected - plain).abs().max() < 1e-10


def test_scope_decoder_leaves_encoder_plain_and_processors_are_restored(models64):
    unet = models64.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    ctx = InjectionContext()
    torch.manual_seed(3)
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    t = torch.tensor([10, 10])
    emb = torch.randn(2, 77, unet.config.cross_attention_dim, dtype=torch.float64)
    plain = unet(x, t, encoder_hidden_states=emb).sample

    def run(layers, routes):
        with injection_installed(unet, ctx, layers):
            ctx.set_routes(routes, x.device)
            return unet(x, t, encoder_hidden_states=emb).sample

    run("all", [SampleRoute(), SampleRoute(record="s", scope="all")])  # sample 1's features, every layer
    # Sample 0 attends to sample 1 in the decoder only; sample 1 to itself (plain).
    mixed = run("all", [SampleRoute(refs=("s",), scope="decoder"), SampleRoute(refs=("s",), scope="all")])
    decoder_only = run("decoder", [SampleRoute(refs=("s",), scope="decoder"), SampleRoute()])
    everywhere = run("all", [SampleRoute(refs=("s",), scope="all"), SampleRoute()])
    assert (mixed[1] - plain[1]).abs().max() < 1e-10
    assert (mixed[0] - plain[0]).abs().max() > 1e-6
    assert (mixed[0] - decoder_only[0]).abs().max() < 1e-12  # the encoder stayed plain
    assert (everywhere[0] - mixed[0]).abs().max() > 1e-6
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    with pytest.raises(RuntimeError, match="boom"):
        with injection_installed(unet, ctx, "all"):
            raise RuntimeError("boom")
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before


def test_routes_name_what_is_wrong():
    ctx = InjectionContext()
    with pytest.raises(ValueError, match="at most 2 references"):
        ctx.set_routes([SampleRoute(refs=("a", "b", "c"))], torch.device("cpu"))
    with pytest.raises(KeyError):
        ctx.set_routes([SampleRoute(refs=("never recorded",))], torch.device("cpu"))
