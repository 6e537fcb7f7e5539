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


class _HandWrittenAttention:
    """attn1 over given key/value features (or its own input), written out."""

    def __init__(self, kv=None):
        self.kv = kv

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        kv = hidden_states if self.kv is None else self.kv
        heads = attn.heads
        b, n, c = hidden_states.shape
        d = c // heads
        q = attn.to_q(hidden_states).view(b, n, heads, d).transpose(1, 2)
        k = attn.to_k(kv).view(b, -1, heads, d).transpose(1, 2)
        v = attn.to_v(kv).view(b, -1, heads, d).transpose(1, 2)
        o = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, -1) @ v
        return attn.to_out[1](attn.to_out[0](o.transpose(1, 2).reshape(b, n, c)))


class _Recorder(_HandWrittenAttention):
    def __init__(self, store, name):
        super().__init__()
        self.store, self.name = store, name

    def __call__(self, attn, hidden_states, *args, **kwargs):
        self.store[self.name] = hidden_states.detach().clone()
        return super().__call__(attn, hidden_states, *args, **kwargs)


def test_whole_unet_injection_equals_hand_written_attention_over_anchor_and_previous(models64):
    """Three frames (anchor, previous, current) in one UNet call: the current
    frame's decoder self-attention takes keys and values from the anchor's and
    the previous frame's features, computed here by hand layer by layer."""
    unet = models64.unet
    torch.manual_seed(2)
    x = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    t = torch.tensor([500, 500, 500])
    emb = torch.randn(3, 77, unet.config.cross_attention_dim, dtype=torch.float64)
    decoder = [n.removesuffix(".processor") for n in injected_layer_names(unet, "decoder")]
    modules = {n: unet.get_submodule(n) for n in decoder}
    saved = {n: m.processor for n, m in modules.items()}

    ctx = InjectionContext()
    with injection_installed(unet, ctx, "decoder"):
        ctx.set_routes([SampleRoute(record="anchor"), SampleRoute(record="previous"), SampleRoute()], x.device)
        unet(x, t, encoder_hidden_states=emb)
        ctx.set_routes([SampleRoute(refs=("anchor", "previous"))], x.device)
        injected = unet(x[2:], t[2:], encoder_hidden_states=emb[2:]).sample
        ctx.set_routes([SampleRoute(refs=("anchor",))], x.device)
        anchor_only = unet(x[2:], t[2:], encoder_hidden_states=emb[2:]).sample

    # By hand: record each reference frame's decoder features with a plain pass ...
    feats = {"anchor": {}, "previous": {}}
    try:
        for j, ref in enumerate(feats):
            for n, m in modules.items():
                m.processor = _Recorder(feats[ref], n)
            unet(x[j : j + 1], t[j : j + 1], encoder_hidden_states=emb[j : j + 1])
        # ... then attend to them: [anchor, previous] along the tokens, not the frame's own
        for n, m in modules.items():
            m.processor = _HandWrittenAttention(torch.cat([feats["anchor"][n], feats["previous"][n]], dim=1))
        expected = unet(x[2:], t[2:], encoder_hidden_states=emb[2:]).sample
        for n, m in modules.items():
            m.processor = _HandWrittenAttention(feats["anchor"][n])
        expected_anchor = unet(x[2:], t[2:], encoder_hidden_states=emb[2:]).sample
    finally:
        for n, m in modules.items():
            m.processor = saved[n]
    plain = unet(x[2:], t[2:], encoder_hidden_states=emb[2:]).sample
    assert (injected - expected).abs().max() < 1e-10
    assert (anchor_only - expected_anchor).abs().max() < 1e-10
    assert (injected - plain).abs().max() > 1e-4  # the references, not the frame itself
    assert (injected - anchor_only).abs().max() > 1e-4  # both references count


def test_sd2_decoder_injection_is_its_nine_up_block_layers():
    """SD2's UNet layout (four down blocks, three with two transformers; a
    cross-attention mid block; four up blocks, three with three): decoder
    injection is exactly the nine up-block self-attention layers."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(  # SD2-depth's block types and counts at a tiny width
        in_channels=5,
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        cross_attention_dim=8,
        attention_head_dim=(1, 1, 1, 1),
        norm_num_groups=4,
        use_linear_projection=True,
    )
    assert injected_layer_names(unet, "decoder") == [
        f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1.processor" for b in (1, 2, 3) for a in (0, 1, 2)
    ]
    everything = injected_layer_names(unet, "all")
    assert len(everything) == 16 and "mid_block.attentions.0.transformer_blocks.0.attn1.processor" in everything


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
