"""Calls the UNet without paying Python's launch overhead on every step.

A denoising step at small batch is launch-bound: an eager batch-2 call of the
SD2-depth UNet spends most of its time launching kernels (docs/ARCHITECTURE.md,
section 5.1). :class:`UNetRunner` pads each batch to a fixed bucket size and,
on CUDA, replays a CUDA graph captured once per (bucket, variant); optionally
the graphed forward is first compiled with ``torch.compile`` (static shapes).
A variant names whatever else the capture baked in (which attention
processors were installed, where the injection pools were).

Graphs are replayed only without autograd (the x_t latent update
differentiates through the UNet and runs eagerly). On the CPU, or with
graphs off, the runner is a plain call, padded only when buckets are set.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import torch

from .fp8 import Fp8Linears, check_granularity, check_precision
from .model_set import ModelSet
from .runner_options import COMPILE_MODES, DEFAULT_BUCKETS

log = logging.getLogger(__name__)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # static x, t, emb
    output: torch.Tensor


@dataclass
class WarmUp:
    """What warming a replica cost (stated in benchmark tables and logs)."""

    graphs: int = 0
    compiled: int = 0
    seconds: float = 0.0
    per_bucket_s: dict = field(default_factory=dict)  # batch bucket -> seconds
    precision: str = "fp16"  # of the UNet's transformer linears (engine/fp8.py)


class UNetRunner:
    """Runs ``unet(x, t, encoder_hidden_states=emb).sample`` for padded batches.

    Args:
        unet: the diffusers UNet.
        cuda_graphs: replay captured CUDA graphs (CUDA only).
        compile: ``torch.compile`` the forward before capture; done only for
            the (bucket, variant) pairs of :meth:`warm_up`, so no request ever
            waits for a compilation (others are captured eagerly, ~1 s).
        buckets: batch sizes to pad to; None pads nothing (exact sizes).
        channels_last: convert the UNet's weights to channels-last (NHWC)
            memory format (slower for this UNet on an H100: docs/benchmark.md).
        compile_mode: the inductor mode, one of :data:`COMPILE_MODES`;
            ``max-autotune-no-cudagraphs`` benchmarks kernel choices per
            shape (a longer warm-up).
        precision: ``fp16`` (the model's dtype throughout) or ``fp8``: the
            transformer blocks' linear layers in e4m3 with dynamic scales
            (:mod:`.fp8`), installed only while this runner calls the UNet.
        fp8_granularity: the fp8 scales' granularity, ``row`` (per token and
            output channel, the default) or ``tensor`` (:mod:`.fp8`).
    """

    def __init__(
        self,
        unet,
        cuda_graphs: bool = False,
        compile: bool = False,
        buckets: Sequence[int] | None = None,
        channels_last: bool = False,
        compile_mode: str = "default",
        precision: str = "fp16",
        fp8_granularity: str = "row",
    ):
        check_precision(precision)
        check_granularity(fp8_granularity)
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode: must be one of {COMPILE_MODES}, got {compile_mode!r}")
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        self.unet = unet
        self.cuda_graphs = cuda_graphs
        self.compile = compile
        self.buckets = sorted(set(buckets)) if buckets else None
        # Keyed by (batch, latent size, prompt tokens, variant).
        self._graphs: dict[tuple, _Graph] = {}
        self._compiled = None
        if compile:
            self._compiled = torch.compile(unet, dynamic=False, mode=compile_mode)
            # Each warmed (bucket, variant) is a recompilation of the same
            # forward; past dynamo's limit (8) the rest would silently run
            # eager inside their graphs.
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, 4 * len(self.buckets or ()) + 8)
        self._compiled_keys: set[tuple] = set()
        self._pool: Any = (
            None  # one CUDA graph memory pool (torch types its handle privately): graphs run one at a time
        )
        self._compile_next = False  # set by warm_up: graphs captured now are compiled
        self.precision = precision
        self.fp8 = Fp8Linears(unet, fp8_granularity) if precision == "fp8" else None
        self.warm = WarmUp(precision=precision)

    def _layers(self):
        """The precision's layers installed in the UNet (for eager calls and captures)."""
        return self.fp8.installed() if self.fp8 is not None else contextlib.nullcontext()

    @classmethod
    def for_models(
        cls,
        models: ModelSet,
        cuda_graphs: bool = True,
        compile: bool = False,
        compile_mode: str = "default",
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        precision: str = "fp16",
    ) -> "UNetRunner":
        """A runner for ``models``' UNet: as asked on a CUDA device; elsewhere
        plain calls, unpadded (graphs and compilation are CUDA-only here, and
        padding would only cost work), in ``precision`` (fp8 is emulated off
        CUDA: :mod:`.fp8`)."""
        cuda = getattr(models.device, "type", str(models.device)) == "cuda"
        if not cuda:
            return cls(models.unet, precision=precision)
        return cls(
            models.unet,
            cuda_graphs=cuda_graphs,
            compile=compile,
            compile_mode=compile_mode,
            buckets=buckets,
            precision=precision,
        )

    def bucket(self, n: int) -> int:
        """The batch size a call of ``n`` samples runs at."""
        if self.buckets is None or n > self.buckets[-1]:
            return n
        return next(b for b in self.buckets if b >= n)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, variant: Hashable = None) -> torch.Tensor:
        """UNet output for the ``x.shape[0]`` samples; the caller routes the padded batch (:meth:`bucket`)."""
        n = x.shape[0]
        size = self.bucket(n)
        if size != n:  # padding samples: zeros, discarded
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
            t = torch.cat([t, t[:1].expand(size - n)])
            emb = torch.cat([emb, emb[:1].expand(size - n, *emb.shape[1:])])
        if not self._graphed(x):
            with self._layers():
                return self.unet(x, t, encoder_hidden_states=emb).sample[:n]
        key = (size, tuple(x.shape[2:]), emb.shape[1], variant)
        g = self._graphs.get(key)
        if g is None:
            if self._compile_next:
                self._compiled_keys.add(key)
                self.warm.compiled += 1
            g = self._graphs[key] = self._capture(x, t, emb, key)
        for static, value in zip(g.inputs, (x, t, emb), strict=True):
            static.copy_(value)
        with torch.cuda.device(x.device):  # a service thread's current device may be another GPU
            g.graph.replay()
        return g.output[:n].clone()

    def _graphed(self, x: torch.Tensor) -> bool:
        return self.cuda_graphs and x.is_cuda and not torch.is_grad_enabled()

    def _forward(self, key):
        return self._compiled if key in self._compiled_keys else self.unet

    def _capture(self, x, t, emb, key) -> _Graph:
        # Streams and the capture must be on the inputs' GPU: in a worker thread
        # the current device is cuda:0 whatever GPU the models are on.
        with torch.cuda.device(x.device), self._layers():
            return self._capture_on_device(x, t, emb, key)

    def _capture_on_device(self, x, t, emb, key) -> _Graph:
        start = time.perf_counter()
        inputs = (x.clone(), t.clone(), emb.clone())
        forward = self._forward(key)
        # Warm-up on a side stream, as capture requires (and compilation happens here).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                forward(inputs[0], inputs[1], encoder_hidden_states=inputs[2])
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = forward(inputs[0], inputs[1], encoder_hidden_states=inputs[2]).sample
        torch.cuda.synchronize(x.device)
        seconds = time.perf_counter() - start
        self.warm.graphs += 1
        log.info("captured a UNet graph for %s in %.1f s", key, seconds)
        return _Graph(graph, inputs, output)

    def forget(self) -> None:
        """Drops every captured graph and compiled pairing: what they baked in
        moved (the injection pools grew). Later calls capture eagerly again."""
        if self._graphs:
            log.warning(
                "UNet graphs dropped (the injection pools grew): recaptured on demand, uncompiled; "
                "raise feature_slots so that this does not happen while serving"
            )
        self._graphs.clear()
        self._compiled_keys.clear()

    def warm_up(self, call, sizes: Sequence[int], compiled: Sequence[int] | None = None) -> None:
        """Captures the graph of each batch size in ``sizes`` (compiling, if
        set, those in ``compiled``, default all) by running ``call(size)``:
        the caller's own code path with dummy inputs, so everything the
        capture bakes in (shapes, processors, variant) is real."""
        for size in sizes:
            start = time.perf_counter()
            self._compile_next = self.compile and (compiled is None or size in compiled)
            try:
                call(size)
            finally:
                self._compile_next = False
            seconds = time.perf_counter() - start
            bucket = self.bucket(size)
            self.warm.per_bucket_s[bucket] = self.warm.per_bucket_s.get(bucket, 0.0) + seconds
            self.warm.seconds += seconds
