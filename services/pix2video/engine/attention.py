"""Pix2Video's self-attention feature injection, as a diffusers attention processor.

For a frame i > 0, each injected self-attention layer (``attn1`` of a
transformer block; by default the decoder's) computes

    Q = Wq f_i,   K = Wk [f_ref1, f_ref2],   V = Wv [f_ref1, f_ref2]

where ``f`` is the layer's input (after ``norm1``) and the references are the
anchor's and the previous frame's features at the same denoising step and
guidance branch. The frame's own features are not among the keys.

One UNet call may hold samples of many frames, steps, sessions and branches
(the wavefront and cross-session batching), so routing is per sample: the
processors share an :class:`InjectionContext` whose ``routes`` say, for each
sample of the current call, under which key to record its features and which
recorded keys to attend to. (Routing goes through this shared object because
diffusers drops unknown ``cross_attention_kwargs`` with a warning.)
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Hashable, Iterator

import torch
import torch.nn.functional as F

INJECT_LAYERS = ("decoder", "all", "none")


@dataclass(frozen=True)
class SampleRoute:
    """What one batch sample does in every injected layer.

    record: key to store this sample's features under (None: don't keep them).
    refs: keys whose features give the keys/values; empty means plain self-attention.
    scope: which layers the route applies to (``decoder`` or ``all``); in the
        other layers the sample gets plain self-attention and nothing is kept.
    """

    record: Hashable | None = None
    refs: tuple[Hashable, ...] = ()
    scope: str = "decoder"


@dataclass
class InjectionContext:
    """State shared by the installed processors.

    ``bank[key][layer]`` holds a recorded (tokens, channels) feature tensor.
    ``routes`` is set by the caller before each UNet call, one per sample.
    """

    bank: dict[Hashable, dict[str, torch.Tensor]] = field(default_factory=dict)
    routes: list[SampleRoute] = field(default_factory=list)

    def bank_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for layers in self.bank.values() for t in layers.values())


class InjectionAttnProcessor:
    """Self-attention whose keys and values may come from other frames' features.

    Same signature and arithmetic as diffusers' ``AttnProcessor2_0`` (SDPA);
    samples are grouped by the number of reference frames so each group is one
    attention call.
    """

    def __init__(self, name: str, context: InjectionContext):
        self.name = name
        self.context = context
        self.in_decoder = name.startswith("up_blocks.")

    def _applies(self, route: SampleRoute) -> bool:
        return route.scope == "all" or (route.scope == "decoder" and self.in_decoder)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        routes = self.context.routes
        batch = hidden_states.shape[0]
        if len(routes) != batch:
            raise RuntimeError(f"injection routes: {len(routes)} routes for a batch of {batch}")
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise NotImplementedError("injection applies to 3-D self-attention without a mask (attn1)")
        bank = self.context.bank
        routes = [r if self._applies(r) else SampleRoute() for r in routes]
        for b, route in enumerate(routes):
            if route.record is not None:
                # A copy, not a view: a view would keep the whole batch's
                # activations alive for as long as any later frame needs them.
                bank.setdefault(route.record, {})[self.name] = hidden_states[b].detach().clone()

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        groups: dict[int, list[int]] = defaultdict(list)
        for b, route in enumerate(routes):
            groups[len(route.refs)].append(b)

        out = None
        for n_refs, idx in groups.items():
            if n_refs == 0:
                kv = hidden_states[idx]
            else:
                kv = torch.stack(
                    [torch.cat([bank[k][self.name] for k in routes[b].refs], dim=0) for b in idx]
                ).to(hidden_states.dtype)
            o = self._attend(attn, query[idx], attn.to_k(kv), attn.to_v(kv))
            if len(groups) == 1:
                out = o
            else:
                if out is None:
                    out = o.new_empty((batch, *o.shape[1:]))
                out[idx] = o

        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    @staticmethod
    def _attend(attn, query, key, value):
        b = query.shape[0]
        head_dim = key.shape[-1] // attn.heads
        q = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        k = key.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        v = value.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        return o.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)


def injected_layer_names(unet, layers: str) -> list[str]:
    """Processor names of the self-attention layers that ``layers`` selects."""
    if layers not in INJECT_LAYERS:
        raise ValueError(f"inject_layers: must be one of {INJECT_LAYERS}, got {layers!r}")
    names = [n for n in unet.attn_processors if n.endswith("attn1.processor")]
    if layers == "decoder":
        return [n for n in names if n.startswith("up_blocks.")]
    return names if layers == "all" else []


@contextlib.contextmanager
def injection_installed(unet, context: InjectionContext, layers: str = "all") -> Iterator[list[str]]:
    """Installs :class:`InjectionAttnProcessor` on the selected layers for the
    duration of the block and restores the previous processors afterwards.

    Each route's ``scope`` then decides per sample where injection happens, so
    one installation serves sessions with different settings in one batch.
    Processors are swapped on the attention modules directly: the editor does
    this every tick, and ``set_attn_processor`` walks the whole UNet each time.
    """
    names = injected_layer_names(unet, layers)
    modules = [unet.get_submodule(n.removesuffix(".processor")) for n in names]
    original = [m.processor for m in modules]
    for name, module in zip(names, modules):
        module.processor = InjectionAttnProcessor(name, context)
    try:
        yield names
    finally:
        for module, proc in zip(modules, original):
            module.processor = proc
