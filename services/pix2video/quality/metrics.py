"""Every metric of one edited clip: :func:`evaluate`."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..engine.checks import check_prompt
from ..errors import InvalidInput
from .clip_scores import ClipScorer, clip_image, clip_text
from .pixel_mse import pixel_mse
from .report import QualityReport

Progress = Callable[[str, int, int], None]  # (stage, done, total), as the CLI's bars take it


def _counter(progress: Progress | None, stage: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = [0]

    def step(k: int) -> None:
        done[0] += k
        progress(stage, done[0], total)

    return step


def evaluate(
    edited: np.ndarray,
    prompt: str,
    scorer: ClipScorer,
    source: np.ndarray | None = None,
    flow_method: str = "dis",
    progress: Progress | None = None,
) -> QualityReport:
    """CLIP-Text and CLIP-Image of ``edited``; Pixel-MSE too when ``source`` (the
    unedited frames, same count) is given.

    Args:
        edited: (N, H, W, 3) uint8, N >= 2.
        prompt: the edit's target prompt.
        progress: ``(stage, done, total)`` after each batch or pair.
    """
    check_prompt(prompt, "prompt")
    edited = np.asarray(edited)
    if edited.ndim != 4 or edited.shape[-1] != 3 or edited.dtype != np.uint8:
        raise InvalidInput(f"edited: must be (N, H, W, 3) uint8 frames, got {edited.dtype} {edited.shape}")
    if len(edited) < 2:
        raise InvalidInput(f"edited: at least 2 frames are needed for temporal metrics, got {len(edited)}")
    n = len(edited)
    emb = scorer.image_embeddings(edited, progress=_counter(progress, "clip", n))
    text = scorer.text_embedding(prompt)
    mse = None
    if source is not None:
        mse = pixel_mse(edited, np.asarray(source), flow_method, progress=_counter(progress, "flow", n - 1))
    return QualityReport(
        frames=n,
        clip_model=scorer.name,
        prompt=prompt,
        clip_text=clip_text(emb, text),
        clip_image=clip_image(emb),
        pixel_mse=None if mse is None else mse.value,
        occluded_fraction=None if mse is None else mse.occluded_fraction,
        flow_method=None if mse is None else mse.flow_method,
        pixel_mse_per_pair=[] if mse is None else list(mse.per_pair),
    )
