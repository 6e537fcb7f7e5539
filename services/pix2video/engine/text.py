"""Prompt encoding with the CLIP text encoder (as diffusers' ``encode_prompt``).

A session's first frame waits for its prompts' encoding. The OpenCLIP-H text
encoder at batch 1 or 2 is launch-bound (23 layers of small kernels: 17 ms
eager on an H200), so each text encoder has a :class:`PromptEncoder` that
keeps the embeddings of recent prompts (an LRU keyed by prompt: the negative
prompt, and any prompt seen again, cost nothing) and, on CUDA, computes a new
prompt by replaying a CUDA graph of a batch-1 call.
"""

from __future__ import annotations

import collections
import logging
import threading
import weakref

import torch

from .model_set import ModelSet

log = logging.getLogger(__name__)

PROMPT_CACHE_SIZE = 256  # embeddings kept per text encoder (77 x 1024 fp16: 158 kB each)


class PromptEncoder:
    """Embeddings of prompts for one model set's text encoder.

    Args:
        models: the model set (tokenizer, text encoder, device, dtype).
        cache_size: prompts whose embeddings are kept (0: none).
        cuda_graph: on CUDA, replay a captured batch-1 call for each new
            prompt (captured at the first one, about three calls' time).
    """

    def __init__(self, models: ModelSet, cache_size: int = PROMPT_CACHE_SIZE, cuda_graph: bool = True):
        # Weakly: this object is kept per text encoder (prompt_encoder), and
        # must not keep the model set alive through it.
        self._models = weakref.ref(models)
        self.dtype = models.dtype
        self.cache_size = cache_size
        self.cuda_graph = cuda_graph and torch.device(models.device).type == "cuda"
        self._cache: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self._graph = None  # (graph, static ids, static output) once captured
        self._lock = threading.Lock()  # one replay of the static buffers at a time
        self.hits = self.misses = 0

    @property
    def models(self) -> ModelSet:
        models = self._models()
        if models is None:
            raise RuntimeError("PromptEncoder: its model set is gone")
        return models

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """(len(prompts), tokens, dim) embeddings in the models' dtype."""
        with self._lock:
            return torch.cat([self._one(p) for p in prompts])

    def _one(self, prompt: str) -> torch.Tensor:
        hit = self._cache.get(prompt)
        if hit is not None:
            self._cache.move_to_end(prompt)
            self.hits += 1
            return hit
        self.misses += 1
        out = self._encode(self._ids([prompt]))
        if self.cache_size > 0:
            self._cache[prompt] = out
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def _ids(self, prompts: list[str]) -> torch.Tensor:
        tok = self.models.tokenizer
        return tok(
            prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        )["input_ids"]

    def _encode(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.models
        if not self.cuda_graph:
            return self._eager(ids.to(m.device))
        with torch.cuda.device(m.device):  # a service thread's current device may be another GPU
            if self._graph is None:
                self._graph = self._capture(ids)
                if self._graph is None:
                    return self._eager(ids.to(m.device))
            graph, static_ids, static_out = self._graph
            static_ids.copy_(ids.pin_memory(), non_blocking=True)
            graph.replay()
            return static_out.clone()

    @torch.no_grad()
    def _eager(self, ids: torch.Tensor) -> torch.Tensor:
        return self.models.text_encoder(ids)[0].to(self.models.dtype)

    def _capture(self, ids: torch.Tensor):
        m = self.models
        static_ids = ids.to(m.device)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._eager(static_ids)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._eager(static_ids)
        except Exception:  # noqa: BLE001 - an encoder that cannot be captured runs eagerly
            log.warning("text encoder: CUDA graph capture failed; encoding prompts eagerly", exc_info=True)
            self.cuda_graph = False
            return None
        return graph, static_ids, static_out


_ENCODERS: "weakref.WeakKeyDictionary[torch.nn.Module, PromptEncoder]" = weakref.WeakKeyDictionary()
_ENCODERS_LOCK = threading.Lock()


def prompt_encoder(models: ModelSet) -> PromptEncoder:
    """The :class:`PromptEncoder` of ``models``' text encoder (one per loaded encoder)."""
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(models.text_encoder)
        if enc is None or enc._models() is not models:
            enc = _ENCODERS[models.text_encoder] = PromptEncoder(models)
        return enc


@torch.no_grad()
def encode_prompts(models: ModelSet, prompts: list[str]) -> torch.Tensor:
    """(len(prompts), tokens, dim) text embeddings; prompts longer than the
    tokenizer's limit are truncated, as in diffusers."""
    return prompt_encoder(models)(prompts)
