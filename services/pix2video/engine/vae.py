"""VAE encode/decode between uint8 frames and scaled latents, batched.

On CUDA, decodes of one or two latents (a session's first frame, and the
steady state, where frames finish one or two a tick) replay a CUDA graph per
(batch, latent size), captured at first use: the SD VAE decoder at batch 1 is
a few hundred kernels, and the first frame waits for all of them.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from .images import to_model_range, to_uint8
from .model_set import ModelSet

GRAPHED_DECODE_BATCHES = (1, 2)


@torch.no_grad()
def encode_frames(models: ModelSet, frames: np.ndarray, batch_size: int = 8) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 4, H/8, W/8) latents, scaled by the VAE's factor.

    The posterior's mode, not a sample: inversion must be deterministic so that
    a video id always names the same latents.
    """
    vae = models.vae
    out = []
    for i in range(0, len(frames), batch_size):
        x = to_model_range(frames[i : i + batch_size], models.device, models.dtype)
        out.append(vae.encode(x).latent_dist.mode() * vae.config.scaling_factor)
    return torch.cat(out)


class DecodeGraphs:
    """CUDA graphs of one VAE's decode, per (batch, latent shape, dtype)."""

    def __init__(self):
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()  # one replay of the static buffers at a time
        self._pool = None

    def __call__(self, vae, z: torch.Tensor) -> torch.Tensor:
        key = (tuple(z.shape), z.dtype)
        with self._lock, torch.cuda.device(z.device):
            g = self._graphs.get(key)
            if g is None:
                g = self._graphs[key] = self._capture(vae, z)
            graph, static_in, static_out = g
            static_in.copy_(z)
            graph.replay()
            return static_out.clone()

    def _capture(self, vae, z: torch.Tensor):
        static_in = z.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                vae.decode(static_in)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = vae.decode(static_in).sample
        return graph, static_in, static_out


_DECODE_GRAPHS: "weakref.WeakKeyDictionary[torch.nn.Module, DecodeGraphs]" = weakref.WeakKeyDictionary()
_DECODE_LOCK = threading.Lock()


def decode_graphs(vae) -> DecodeGraphs:
    with _DECODE_LOCK:
        g = _DECODE_GRAPHS.get(vae)
        if g is None:
            g = _DECODE_GRAPHS[vae] = DecodeGraphs()
        return g


@torch.no_grad()
def decode_latents(models: ModelSet, latents: torch.Tensor, cuda_graph: bool = True) -> np.ndarray:
    """(N, 4, h, w) scaled latents -> (N, 8h, 8w, 3) uint8 frames (through a
    CUDA graph for N in GRAPHED_DECODE_BATCHES on CUDA, unless ``cuda_graph`` is off)."""
    vae = models.vae
    z = latents.to(models.dtype) / vae.config.scaling_factor
    if cuda_graph and z.is_cuda and z.shape[0] in GRAPHED_DECODE_BATCHES:
        images = decode_graphs(vae)(vae, z)
    else:
        images = vae.decode(z).sample
    return to_uint8(images)
