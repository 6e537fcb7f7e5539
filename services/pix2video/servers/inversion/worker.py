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
from ...jobs import (
    InversionResult,
    InversionSettings,
    JobControl,
    LeasePolicy,
    VideoLocks,
    invert_video,
    model_identity,
    prepare_frames,
)
from ...store.base import ObjectStore
from ...store.lease import new_owner
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
        # Requests for the same video in this process wait for one job; other
        # replicas wait through the lease in the store.
        self.locks = VideoLocks()
        self.lease = LeasePolicy(
            owner=new_owner(), ttl=settings.lease_ttl_seconds, poll=min(1.0, settings.lease_ttl_seconds / 4)
        )

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
        control: JobControl | None = None,
        store: ObjectStore | None = None,
    ) -> InversionResult:
        """Decodes a video file and inverts it into the store (a cache hit when known).

        ``stage`` and ``on_batch`` are optional timing hooks (see their types).
        ``control``: the caller's handle to stop the job (checked per decoded
        frame, between stages and after each batch). ``store``: the store (or
        a tenant's view of it) to use instead of ``store_io``.
        """
        stage = stage or _no_stage
        control = control or JobControl()

        def fit(frame: np.ndarray) -> np.ndarray:
            control.checkpoint()  # a client that went away stops the decoding too
            return settings.fit(frame)

        with stage("decode"):
            media = dict(limits=self.settings.frame_limits, label="the video")
            if max_frames:  # the caller keeps the first frames
                limit = min(max_frames, self.settings.max_frames)
                frames, info = read_video(path, max_frames=limit, transform=fit, **media)
            else:  # rejected as soon as the count passes the limit, not after decoding it all
                frames, info = read_video(path, transform=fit, frame_limit=self.settings.max_frames, **media)
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
                control.checkpoint()  # the batch is done; stop here if the caller went away
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
                control=control,
                locks=self.locks,
                lease=self.lease,
            )
