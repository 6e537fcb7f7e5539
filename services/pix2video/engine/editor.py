"""The Pix2Video editor: a scheduler over (session, frame, step) work items
driving a denoiser, one batched UNet call per tick.

The :class:`~pix2video.engine.scheduler.Scheduler` decides which work items
advance (admission, readiness, the wavefront, feature lifetimes); the
:class:`~pix2video.engine.denoiser.Denoiser` computes their step (prompt
embeddings, the UNet call, guidance, the DDIM step, the latent update,
decoding). This module joins them into ticks, as vLLM's engine joins its
scheduler and model executor.

Timing: an optional :class:`~pix2video.engine.timers.StageTimer`
(``Pix2VideoEditor.timer``) is told how long each stage of a tick took and
which work items took part: a service turns that into per-frame latencies by
stage. Without one, nothing is timed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import InvalidInput
from .attention import InjectionContext, SampleRoute
from .denoiser import Denoiser
from .scheduler import COND, UNCOND, EditSession, FeatureKey, FrameSource, Scheduler, reference_frames
from .settings import EditSettings
from .timers import StageTimer
from .unet_runner import UNetRunner

__all__ = [
    "COND",
    "UNCOND",
    "EditSession",
    "EditedFrame",
    "FeatureKey",
    "FrameSource",
    "Pix2VideoEditor",
    "StageTimer",
    "reference_frames",
]


@dataclass
class EditedFrame:
    index: int
    image: np.ndarray  # (H, W, 3) uint8
    latent: torch.Tensor  # (4, h, w) clean latent the image was decoded from


class Pix2VideoEditor:
    """Edits inverted videos; many sessions can share its UNet calls.

    Args:
        models: the loaded :class:`~pix2video.models.ModelSet`.
        max_batch_items: most work items (frames) in one UNet call; each item
            is two samples with classifier-free guidance.
        split_guidance: run the unconditional and conditional branches as two
            UNet calls, as the authors' code does (a baseline for benchmarks;
            same arithmetic, more launches).
        runner: how the UNet is called (CUDA graphs, compilation, batch
            buckets); default plain eager calls.
        feature_slots: injected-feature slots to preallocate; one per kept
            (frame, step, branch), about 100 per session plus 4 per frame in
            flight for anchor+previous at 50 steps (they grow if short).
    """

    def __init__(
        self,
        models,
        max_batch_items: int = 64,
        split_guidance: bool = False,
        runner: UNetRunner | None = None,
        feature_slots: int = 128,
    ):
        self.models = models
        self.max_batch_items = max_batch_items
        self.split_guidance = split_guidance
        self.runner = runner or UNetRunner(models.unet)
        self.context = InjectionContext(slots=feature_slots, scratch=self.runner.bucket(2 * max_batch_items))
        self.denoiser = Denoiser(models, self.runner, self.context, split_guidance=split_guidance)
        self.latent_dtype = self.denoiser.latent_dtype
        self.scheduler = Scheduler(self.context, models.device, self.latent_dtype, max_batch_items)
        self.items_done = 0  # work items (frame-steps) advanced, all sessions
        self.timer: StageTimer | None = None  # optional stage timing (see StageTimer)

    @property
    def sessions(self) -> dict[int, EditSession]:
        return self.scheduler.sessions

    @property
    def ticks(self) -> int:
        """Batched UNet calls so far."""
        return self.scheduler.ticks

    # -- sessions -----------------------------------------------------------

    def open_session(
        self,
        video: FrameSource,
        settings: EditSettings,
        *,
        start_frame: int = 0,
        session_id: int | str | None = None,
        session_type: type[EditSession] = EditSession,
        **fields,
    ) -> EditSession:
        """Checks the inputs and registers a session; no GPU work until :meth:`tick`.

        ``start_frame``: the first frame to hand out. Frames before it are
        recomputed (later frames depend on them) at full wavefront width but
        neither decoded nor returned: editing is deterministic, so a session
        rebuilt this way continues exactly where another left off.
        ``session_id``, ``session_type`` and ``fields``: see :meth:`Scheduler.add`.
        """
        if video.num_frames < 1:
            raise InvalidInput(f"video: has no frames (num_frames={video.num_frames})")
        if settings.num_steps != video.num_steps:
            raise InvalidInput(
                f"num_steps: must equal the inversion's step count {video.num_steps}, got {settings.num_steps}"
            )
        if not isinstance(start_frame, int) or not 0 <= start_frame < video.num_frames:
            raise InvalidInput(f"start_frame: must be in [0, {video.num_frames - 1}], got {start_frame!r}")
        embeds = self.denoiser.embeddings(settings)
        session = self.scheduler.add(video, settings, embeds, session_id, session_type, emit_from=start_frame, **fields)
        return session

    def close_session(self, session_id: int | str) -> None:
        """Stops a session's work and frees everything it holds, at once."""
        self.scheduler.remove(session_id)

    def session_bytes(self, session_id: int | str) -> int:
        """Device memory held by a session's kept features, x0 and frames in flight."""
        return self.scheduler.session_bytes(session_id)

    def edit(self, video: FrameSource, settings: EditSettings, start_frame: int = 0) -> Iterator[EditedFrame]:
        """Edits a whole video (from ``start_frame``), yielding each frame as soon as it is done, in order."""
        session = self.open_session(video, settings, start_frame=start_frame)
        try:
            while not session.done:
                for sid, frame in self.tick():
                    if sid == session.id:
                        yield frame
        finally:
            self.close_session(session.id)

    # -- ticks --------------------------------------------------------------

    def ready_items(self) -> list[tuple[EditSession, int]]:
        """Work items (session, frame) that can advance one step now (see :class:`Scheduler`)."""
        return self.scheduler.ready_items()

    @torch.no_grad()
    def tick(self) -> list[tuple[int | str, EditedFrame]]:
        """Advances every ready work item by one denoising step (one UNet call)
        and returns the frames that became available, as (session id, frame)."""
        items = self.scheduler.ready_items()
        if not items:
            return []
        latents, x0 = self.denoiser.step(items, self.timer)
        self.scheduler.advance(items, latents, x0)
        self.items_done += len(items)
        return self._collect()

    def _collect(self) -> list[tuple[int | str, EditedFrame]]:
        """Decodes finished frames (batched per session) and hands them out in frame order."""
        out = []
        timer = self.timer
        for s, ready, finished in self.scheduler.take_finished():
            keep = [n for n, i in enumerate(ready) if i >= s.emit_from]  # recomputed frames are not decoded
            ready, finished = [ready[n] for n in keep], [finished[n] for n in keep]
            if not ready:
                continue
            start = timer.mark() if timer is not None else None
            latents = torch.stack(finished)
            images = self.denoiser.decode(latents)
            if timer is not None:
                timer.record("decode", start, timer.mark(), [(s.id, i) for i in ready])
            out += [
                (s.id, EditedFrame(index=i, image=img, latent=lat))
                for i, img, lat in zip(ready, images, latents, strict=True)
            ]
        return out

    def _unet(self, x, t, emb, routes: list[SampleRoute], layers: str) -> torch.Tensor:
        """One routed UNet call (the benchmark's probe calls it directly)."""
        return self.denoiser.unet(x, t, emb, routes, layers)

    @torch.no_grad()
    def warm_up(
        self, height: int, width: int, sizes: list[int] | None = None, compiled: list[int] | None = None
    ) -> None:
        """Captures the UNet call of every batch bucket up to ``2 *
        max_batch_items`` samples (or ``sizes``), for decoder injection at
        ``height`` x ``width`` pixels, compiling those in ``compiled`` (default
        all, if the runner compiles): what a replica does before it reports
        SERVING."""
        sizes = sizes or sorted({self.runner.bucket(n) for n in range(2, 2 * self.max_batch_items + 1, 2)})
        self.denoiser.warm_up(height, width, sizes, compiled)
