"""The inversion service's worker: DDIM inversion on its device, and the job
that turns a video file into a stored inverted video. No gRPC here: depth and
captions come in as callables (the server passes gRPC clients)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, ContextManager

import numpy as np
import torch

from ...engine.inversion import Inverter
from ...errors import InvalidInput
from ...jobs import InversionResult, InversionSettings, invert_video, model_identity, prepare_frames
from ...store.base import ObjectStore
from ...video import read_video
from ..common.models import load_models
from .settings import InversionServerSettings

Progress = Callable[[str, int, int], None]
# stage(name) -> a context manager around each stage of a job (the server's
# spans and stage timings); names: decode, depth, caption, inversion, store.
StageHook = Callable[[str], ContextManager]
# on_batch(frames, seconds) after each batched inversion call (per-frame timing).
BatchHook = Callable[[int, float], None]


def _no_stage(_name: str) -> ContextManager:
    return contextlib.nullcontext()


class InversionWorker:
    def __init__(self, settings: InversionServerSettings, store=None, models=None):
        self.settings = settings
        self.models = models or load_models(settings)
        self.store = store if store is not None else settings.open_store()
        # Every read and write of a job goes through store_io: the store itself,
        # or what the server wraps it in (counted, timed and traced operations).
        self.store_io = self.store
        self.inverter = Inverter(self.models, batch_size=settings.batch_size, runner=settings.make_runner(self.models))
        # One job on the accelerator at a time; decoding and I/O of other jobs overlap it.
        self._device_lock = threading.Lock()

    def warmup(self) -> None:
        """Captures (and compiles) the UNet graph of a full batch at the
        warm-up frame size, then runs a one-step inversion of one frame."""
        if self.inverter.runner.cuda_graphs:
            with self._device_lock:
                self.inverter.warm_up(self.settings.warm_up_height, self.settings.warm_up_width)
        frames = np.zeros((1, 64, 64, 3), np.uint8)
        depth = torch.zeros(1, 1, 64 // self.models.vae_scale_factor, 64 // self.models.vae_scale_factor)
        with self._device_lock:
            self.inverter(frames, depth, "warm up", num_steps=1)

    def invert_file(
        self,
        path: str,
        settings: InversionSettings,
        max_frames: int,
        depth_fn: Callable[[np.ndarray], torch.Tensor],
        caption_fn: Callable[[np.ndarray], list[str]],
        progress: Progress,
        stage: StageHook | None = None,
        on_batch: BatchHook | None = None,
        store: ObjectStore | None = None,
    ) -> InversionResult:
        """Decodes a video file and inverts it into the store (a cache hit when known).

        ``stage`` and ``on_batch`` are optional timing hooks (see their types).
        ``store``: where the cache is looked up and the video written (the
        server passes the calling tenant's view; default ``store_io``).
        """
        stage = stage or _no_stage
        with stage("decode"):
            limit = min(max_frames or self.settings.max_frames, self.settings.max_frames)
            frames, info = read_video(
                path, max_frames=limit + 1, transform=settings.fit, limits=self.settings.frame_limits, label="the video"
            )
            if len(frames) > limit:
                if max_frames:
                    frames = frames[:limit]
                else:
                    raise InvalidInput(f"video: more than max_frames={self.settings.max_frames} frames")
            prepared = prepare_frames(frames, settings)
        n = len(prepared)
        progress("decode", n, n)

        def in_stage(name, fn):
            def run(*args):
                with stage(name):
                    return fn(*args)

            return run

        def invert_fn(f, d, prompt, steps):
            done = [0]
            last = [0.0]

            def step(k):
                now = time.perf_counter()
                if on_batch is not None:
                    on_batch(k, now - last[0])
                last[0] = now
                done[0] += k
                progress("inversion", done[0], n)

            with self._device_lock:
                last[0] = time.perf_counter()
                return self.inverter(f, d, prompt, steps, progress=step)

        with contextlib.ExitStack() as store_stage:

            def on_stage(name: str) -> None:
                progress(name, 0, 1 if name == "caption" else n)
                if name == "store":  # ends with the job: the frames, then the manifest
                    store_stage.enter_context(stage("store"))

            return invert_video(
                prepared,
                settings,
                store=self.store_io if store is None else store,
                model_identity=model_identity(self.models),
                depth_fn=in_stage("depth", depth_fn),
                caption_fn=in_stage("caption", caption_fn),
                invert_fn=in_stage("inversion", invert_fn),
                fps=info.fps,
                on_stage=on_stage,
            )
