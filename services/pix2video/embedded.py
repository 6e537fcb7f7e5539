"""Every stage in one process: the engine behind ``pix2video edit`` and notebooks."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from .depth_batching import depth_batch_size
from .engine.caption import Captioner
from .engine.depth import DepthEstimator
from .engine.editor import EditedFrame, Pix2VideoEditor
from .engine.inversion import Inverter
from .engine.settings import EditSettings
from .engine.unet_runner import UNetRunner
from .jobs import InversionResult, InversionSettings, invert_video, model_identity, prepare_frames
from .models import ModelSet, load_model_set
from .settings import RuntimeSettings
from .store import LocalDiskStore, ObjectStore, StoredVideo

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class EmbeddedPix2Video:
    """Depth, caption, inversion and editing on one device, with a latent store.

    Args:
        models: a loaded model set (see :meth:`from_settings`).
        store: where inverted videos are kept (local disk by default).
    """

    def __init__(self, models: ModelSet, store: ObjectStore, inversion_batch: int = 8, depth_batch: int = 16):
        self.models = models
        self.store = store
        # One frame at a time on the CPU, as the depth service (see depth_batching).
        self.depth = DepthEstimator(models, batch_size=depth_batch_size(models.device, depth_batch))
        self.captioner = Captioner(models)
        # On CUDA, UNet calls replay CUDA graphs, captured at first use of each
        # batch bucket (about a second each; no compilation in a one-shot run).
        runner = UNetRunner.for_models(models)
        self.inverter = Inverter(models, batch_size=inversion_batch, runner=runner)
        self.editor = Pix2VideoEditor(models, runner=runner)

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> "EmbeddedPix2Video":
        models = load_model_set(
            settings.model,
            device=settings.resolved_device,
            dtype=settings.torch_dtype,
            caption_model=settings.caption_model,
            cache_dir=settings.home,
        )
        return cls(models, LocalDiskStore(settings.store_dir))

    def invert(
        self, frames: list[np.ndarray], settings: InversionSettings, fps: float = 25.0, progress: Progress | None = None
    ) -> InversionResult:
        """Prepares and inverts decoded frames (a cache hit when already stored)."""
        prepared = prepare_frames(frames, settings)
        n = len(prepared)
        report = progress or (lambda stage, done, total: None)

        def counter(stage: str, total: int):
            done = [0]

            def step(k: int):
                done[0] += k
                report(stage, done[0], total)

            return step

        return invert_video(
            prepared,
            settings,
            store=self.store,
            model_identity=model_identity(self.models),
            depth_fn=lambda f: self.depth(f, progress=counter("depth", n), resize=settings.depth_resize),
            caption_fn=self.captioner,
            invert_fn=lambda f, d, p, s: self.inverter(
                f, d, p, s, progress=counter("inversion", n), steps_offset=settings.steps_offset
            ),
            fps=fps,
            # Each stage reported as it starts, so that its time is its own (caption: the first frame).
            on_stage=lambda stage: report(stage, 0, 1 if stage == "caption" else n),
        )

    def edit(self, video_id: str, settings: EditSettings) -> Iterator[EditedFrame]:
        """Edits a stored video, yielding frames in order as each finishes."""
        return self.editor.edit(StoredVideo(self.store, video_id), settings)
