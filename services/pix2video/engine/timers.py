"""Timing the stages of the editor's ticks (metrics; optional).

The editor tells an optional :class:`StageTimer` how long each stage of a
tick took and which work items took part; a service turns that into
per-frame latencies by stage (:class:`FrameStats`). Two timers: the host
clock (exact on the CPU) and CUDA events (read later, so that timing never
makes the scheduler wait for the GPU).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Callable, Protocol


class StageTimer(Protocol):
    """Times the stages of the editor's ticks.

    ``mark()`` returns an opaque point in time (on the device's stream, for a
    timer that uses CUDA events); ``record(stage, start, end, items)`` reports
    that ``stage`` ran from mark ``start`` to mark ``end`` for ``items``, a
    list of (session id, frame index), each of which took part in all of it.
    Stages: ``latent_update`` (the x_t update through the UNet, or the x0
    update), ``denoise`` (one batched UNet call with guidance and the DDIM
    move; reported once per tick with every item of the call) and ``decode``
    (the VAE decode of finished frames).
    """

    def mark(self) -> object: ...

    def record(self, stage: str, start: object, end: object, items: list[tuple[int, int]]) -> None: ...


@dataclass
class FrameStats:
    """Where one frame's time went in the editor (seconds; stages overlap
    nothing, items of one batched call each count all of it)."""

    started: float  # time.perf_counter() when its first stage began
    denoise: float = 0.0
    latent_update: float = 0.0
    decode: float = 0.0


StageSink = Callable[[str, float, float, list], None]  # (stage, started, seconds, items)


class HostTimer:
    """A StageTimer on the host clock: exact on the CPU."""

    def __init__(self, sink: StageSink):
        self.sink = sink

    def mark(self) -> float:
        return time.perf_counter()

    def record(self, stage: str, start: float, end: float, items: list) -> None:
        self.sink(stage, start, end - start, items)

    def flush(self, wait: bool = False) -> None:
        pass


class CudaEventTimer:
    """A StageTimer on CUDA events: marks are recorded on the stream and read
    later (:meth:`flush`), so timing never makes the loop wait for the GPU.

    Events go on ``device``'s current stream, named explicitly: the scheduler
    thread's current device is cuda:0 whatever GPU the models are on."""

    def __init__(self, sink: StageSink, device):
        import torch

        self.sink = sink
        self._event = lambda: torch.cuda.Event(enable_timing=True)
        self._stream = lambda: torch.cuda.current_stream(device)
        self.pending: collections.deque = collections.deque()

    def mark(self):
        event = self._event()
        event.record(self._stream())
        return time.perf_counter(), event

    def record(self, stage: str, start, end, items: list) -> None:
        self.pending.append((stage, start, end, items))

    def flush(self, wait: bool = False) -> None:
        """Reports the stages whose end the GPU has reached; ``wait``: all of
        them (after a decode, whose copy to the host has synchronised anyway)."""
        while self.pending:
            stage, (t0, e0), (_, e1), items = self.pending[0]
            if not e1.query():
                if not wait:
                    return
                e1.synchronize()
            self.pending.popleft()
            self.sink(stage, t0, e0.elapsed_time(e1) / 1000.0, items)
