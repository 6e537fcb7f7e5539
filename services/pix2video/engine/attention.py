"""Pix2Video's self-attention feature injection, as a diffusers attention processor.

For a frame i > 0, each injected self-attention layer (``attn1`` of a
transformer block; by default the decoder's) computes

    Q = Wq f_i,   K = Wk [f_ref1, f_ref2],   V = Wv [f_ref1, f_ref2]

where ``f`` is the layer's input (after ``norm1``) and the references are the
anchor's and the previous frame's features at the same denoising step and
guidance branch. The frame's own features are not among the keys.

One UNet call may hold samples of many frames, steps, sessions and branches
(the wavefront and cross-session batching), so routing is per sample: before
each call the caller gives the shared :class:`InjectionContext` one
:class:`SampleRoute` per sample, saying under which key to record the
sample's features and which recorded keys to attend to. (Routing goes through
this shared object because diffusers drops unknown ``cross_attention_kwargs``
with a warning.)

Static shapes, so the UNet can be captured in a CUDA graph or compiled: every
layer keeps its recorded features in one preallocated pool, (slots, tokens,
channels), and a key owns a slot from recording until release. A call's
routing becomes index tensors of fixed size: each sample writes its features
to one slot (its key's, or a scratch slot) and reads exactly two (a single
reference is read twice; plain self-attention reads its own slot twice).
Attending to a set of keys twice over gives the same softmax average as
attending to it once, so this is exact, and every sample of a call is one
attention call of the same shape. A call in which no sample has references
(an anchor frame alone: the first frame of a session) is *self-only*: its
samples attend to their own live features once, half the keys (a separate
graph variant, :attr:`InjectionContext.self_only`).
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Hashable, Iterator

import torch
import torch.nn.functional as F

from pix2video_client.options import INJECT_LAYERS

from .transfer import to_device

REFS_PER_SAMPLE = 2  # every reference mode uses at most two (anchor + previous)
_tokens = itertools.count(1)


@dataclass(frozen=True)
class SampleRoute:
    """What one batch sample does in every injected layer.

    record: key to store this sample's features under (None: don't keep them).
    refs: keys whose features give the keys/values (at most two); empty means
        plain self-attention.
    scope: which layers the route applies to (``decoder``, ``all`` or
        ``none``); in the other layers the sample gets plain self-attention
        and nothing is kept.
    """

    record: Hashable | None = None
    refs: tuple[Hashable, ...] = ()
    scope: str = "decoder"

    def applies(self, in_decoder: bool) -> bool:
        return self.scope == "all" or (self.scope == "decoder" and in_decoder)


@dataclass
class _Index:
    """One call's routing on the device; rows: 0 = encoder/mid layers, 1 = decoder.

    One buffer, (2, 4B), copied in one go; the fields are views of it."""

    packed: torch.Tensor

    @property
    def write(self) -> torch.Tensor:  # (2, B) slot each sample's features go to
        return self.packed[:, : self.packed.shape[1] // 4]

    @property
    def read(self) -> torch.Tensor:  # (2, B * 2) slots each sample attends to
        b = self.packed.shape[1] // 4
        return self.packed[:, b : 3 * b]

    @property
    def own(self) -> torch.Tensor:  # (2, B) 1: the sample attends to itself (plain self-attention)
        return self.packed[:, 3 * self.packed.shape[1] // 4 :]


class InjectionContext:
    """Feature slots shared by the installed processors, and the current call's routing.

    Args:
        slots: keyed slots to preallocate per layer; the pools double when a
            key finds none free (rare: size them for the expected sessions).
        scratch: slots for samples whose features are not kept, one per
            sample of the largest call (grows likewise).
    """

    def __init__(self, slots: int = 64, scratch: int = 16):
        self.capacity, self.scratch = slots, scratch
        self.slot_of: dict[Hashable, int] = {}
        self._free = list(range(slots - 1, -1, -1))
        # (latent size, layer) -> (capacity + scratch, tokens, channels); one set of
        # pools per latent size in use (a call holds frames of one size).
        self.pools: dict[tuple[tuple[int, ...], str], torch.Tensor] = {}
        self.latent_size: tuple[int, ...] = ()  # of the current call
        self.generation = 0  # bumped when the pools move (graphs captured before must be recaptured)
        self.batch = 0  # samples of the current call
        self.self_only = False  # no sample of the current call has references
        self._index: dict[tuple[int, torch.device], _Index] = {}  # static buffers per batch size
        self._current: _Index | None = None
        self._processors: dict[str, InjectionAttnProcessor] = {}
        self.token = next(_tokens)  # tells graphs captured on these pools from others'

    # -- slots ----------------------------------------------------------------

    @property
    def keys(self) -> list[Hashable]:
        """Keys whose features are held."""
        return list(self.slot_of)

    def release(self, key: Hashable) -> None:
        slot = self.slot_of.pop(key, None)
        if slot is not None:
            self._free.append(slot)

    def slot_bytes(self, latent_size: tuple[int, ...]) -> int:
        """Device memory of one key's features at ``latent_size``, all layers together."""
        return sum(p[0].numel() * p.element_size() for (size, _), p in self.pools.items() if size == tuple(latent_size))

    def features(self, key: Hashable, layer: str) -> torch.Tensor:
        """The (tokens, channels) features recorded under ``key`` in ``layer`` (current latent size)."""
        return self.pools[(self.latent_size, layer)][self.slot_of[key]]

    def _take(self, key: Hashable) -> int:
        if key not in self.slot_of:
            if not self._free:
                self._resize(2 * self.capacity, self.scratch)
            self.slot_of[key] = self._free.pop()
        return self.slot_of[key]

    def _resize(self, capacity: int, scratch: int) -> None:
        """Reallocates the pools, keeping the keyed slots (scratch is transient)."""
        for name, old in self.pools.items():
            new = old.new_empty((capacity + scratch, *old.shape[1:]))
            new[: self.capacity] = old[: self.capacity]
            self.pools[name] = new
        self._free = list(range(capacity - 1, self.capacity - 1, -1)) + self._free
        self.capacity, self.scratch = capacity, scratch
        self.generation += 1

    def pool(self, layer: str, like: torch.Tensor) -> torch.Tensor:
        key = (self.latent_size, layer)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = like.new_empty((self.capacity + self.scratch, *like.shape[1:]))
        return pool

    # -- routing --------------------------------------------------------------

    def set_routes(self, routes: list[SampleRoute], device: torch.device, latent_size: tuple[int, ...] = ()) -> None:
        """Routing for the next UNet call, one route per sample: takes slots
        for the keys to record and fills the call's index tensors.
        ``latent_size`` (of the call's latents) picks the pools."""
        batch = len(routes)
        if batch > self.scratch:
            self._resize(self.capacity, max(batch, 2 * self.scratch))
        for route in routes:
            if len(route.refs) > REFS_PER_SAMPLE:
                raise ValueError(f"injection: at most {REFS_PER_SAMPLE} references per sample, got {len(route.refs)}")
        for route in routes:  # slots first: taking one may grow the pools and move the scratch slots
            if route.record is not None and route.scope != "none":
                self._take(route.record)
        write: list[list[int]] = [[], []]
        read: list[list[int]] = [[], []]
        own: list[list[int]] = [[], []]
        for b, route in enumerate(routes):
            for g in (0, 1):
                applies = route.applies(in_decoder=bool(g))
                w = self.slot_of[route.record] if applies and route.record is not None else self.capacity + b
                refs = [self.slot_of[k] for k in route.refs] if applies else []
                write[g].append(w)
                read[g] += (refs * REFS_PER_SAMPLE)[:REFS_PER_SAMPLE] if refs else [w] * REFS_PER_SAMPLE
                own[g].append(int(not refs))
        packed = to_device([write[g] + read[g] + own[g] for g in (0, 1)], device, torch.long)
        key = (batch, torch.device(device))
        index = self._index.get(key)
        if index is None:  # one buffer per batch size: captured graphs read this very tensor
            index = self._index[key] = _Index(packed)
        else:
            index.packed.copy_(packed)
        self._current, self.batch, self.latent_size = index, batch, tuple(latent_size)
        self.self_only = all(own[0]) and all(own[1])

    def clear_routes(self) -> None:
        self._current, self.batch, self.self_only = None, 0, False

    def current(self, in_decoder: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._current is None:
            raise RuntimeError("injection: no routes set for this UNet call")
        g = int(in_decoder)
        return self._current.write[g], self._current.read[g], self._current.own[g]

    def processor(self, name: str) -> "InjectionAttnProcessor":
        # One processor object per layer for the context's lifetime: a compiled
        # UNet guards on the processor objects, so new ones would recompile it.
        if name not in self._processors:
            self._processors[name] = InjectionAttnProcessor(name, self)
        return self._processors[name]


class InjectionAttnProcessor:
    """Self-attention whose keys and values may come from other frames' features.

    Same signature and arithmetic as diffusers' ``AttnProcessor2_0`` (SDPA),
    with keys and values gathered from the context's feature pool.
    """

    def __init__(self, name: str, context: InjectionContext):
        self.name = name
        self.context = context
        self.in_decoder = name.startswith("up_blocks.")

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise NotImplementedError("injection applies to 3-D self-attention without a mask (attn1)")
        batch, tokens, channels = hidden_states.shape
        if self.context.batch != batch:
            raise RuntimeError(f"injection routes: {self.context.batch} routes for a batch of {batch}")
        write, read, own = self.context.current(self.in_decoder)
        pool = self.context.pool(self.name, hidden_states)
        # Recorded before reading: a sample without references reads its own slot.
        pool.index_copy_(0, write, hidden_states.detach())

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        if self.context.self_only:
            kv = hidden_states  # every sample attends to itself: its own keys, once
        else:
            kv = pool[read].view(batch, REFS_PER_SAMPLE * tokens, channels).to(hidden_states.dtype)
            if hidden_states.requires_grad:
                # The x_t update differentiates through the UNet: plain
                # self-attention must take its keys from the live features,
                # not the detached copy in the pool.
                kv = torch.where(own.view(-1, 1, 1) != 0, hidden_states.repeat(1, REFS_PER_SAMPLE, 1), kv)
        out = self._attend(attn, attn.to_q(hidden_states), attn.to_k(kv), attn.to_v(kv))
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
    """Installs the context's processors on the selected layers for the
    duration of the block and restores the previous processors afterwards.

    Each route's ``scope`` then decides per sample where injection happens, so
    one installation serves sessions with different settings in one batch.
    Processors are swapped on the attention modules directly: the editor does
    this every tick, and ``set_attn_processor`` walks the whole UNet each time.
    """
    names = injected_layer_names(unet, layers)
    modules = [unet.get_submodule(n.removesuffix(".processor")) for n in names]
    original = [m.processor for m in modules]
    for name, module in zip(names, modules, strict=True):
        module.processor = context.processor(name)
    try:
        yield names
    finally:
        for module, proc in zip(modules, original, strict=True):
            module.processor = proc
