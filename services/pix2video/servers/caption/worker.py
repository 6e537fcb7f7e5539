"""The caption service's model code (torch; never grpc).

Images of one batch may come from different calls with different
``max_new_tokens``; they are grouped by it and captioned by the engine's own
:class:`~pix2video.engine.caption.Captioner` (greedy decoding), so the suite's
captions equal the embedded engine's.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from ...devices import resolve_device, resolve_dtype
from ...engine.caption import Captioner
from ...errors import InvalidInput
from ...models.components import CaptionComponents, load_caption
from .settings import MAX_NEW_TOKENS_LIMIT, CaptionSettings

log = logging.getLogger(__name__)


class CaptionWorker:
    """BLIP captions for lists of images; loads only the captioner."""

    def __init__(self, settings: CaptionSettings):
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        blip, processor, name = load_caption(
            settings.caption_model or None, settings.model, device, dtype, settings.home or None
        )
        self.models = CaptionComponents(blip, processor, device, dtype, name)
        self.max_new_tokens = settings.max_new_tokens
        log.info("caption model %s loaded on %s", name, device)

    def check_max_new_tokens(self, n: int) -> int:
        """0 -> the default; otherwise must be in [1, 128]."""
        if n == 0:
            return self.max_new_tokens
        if not 1 <= n <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidInput(f"max_new_tokens: must be in [0, {MAX_NEW_TOKENS_LIMIT}] (0: default), got {n}")
        return n

    @torch.no_grad()
    def caption(self, frames: Sequence[np.ndarray], max_new_tokens: Sequence[int] | int | None = None) -> list[str]:
        """One caption per (H, W, 3) uint8 image (sizes may differ).

        Args:
            max_new_tokens: per image, or one for all; 0 or None: the default.
        """
        if max_new_tokens is None or isinstance(max_new_tokens, int):
            max_new_tokens = [max_new_tokens or 0] * len(frames)
        if len(max_new_tokens) != len(frames):
            raise InvalidInput(f"max_new_tokens: need one per image ({len(frames)}), got {len(max_new_tokens)}")
        groups: dict[int, list[int]] = {}
        for i, (frame, n) in enumerate(zip(frames, max_new_tokens, strict=True)):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise InvalidInput(f"image: must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
            groups.setdefault(self.check_max_new_tokens(n), []).append(i)
        out: list[str] = [""] * len(frames)
        for n, idx in groups.items():
            captions = Captioner(self.models, max_new_tokens=n)([frames[i] for i in idx])
            for i, text in zip(idx, captions, strict=True):
                out[i] = text
        return out

    def warmup(self) -> None:
        """One small image through the whole path."""
        self.caption([np.zeros((32, 32, 3), np.uint8)])
