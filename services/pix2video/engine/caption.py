"""Captions with BLIP: the source prompt for inversion, unless the user gives one."""

from __future__ import annotations

import numpy as np
import torch

from .model_set import CaptionModels


class Captioner:
    def __init__(self, models: CaptionModels, max_new_tokens: int = 30):
        self.models = models
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> list[str]:
        """(N, H, W, 3) uint8 -> one caption per frame (greedy decoding, deterministic)."""
        model, processor = self.models.captioner()
        inputs = processor(images=list(frames), return_tensors="pt")
        pixels = inputs.pixel_values.to(model.device, model.dtype)
        ids = model.generate(pixel_values=pixels, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        # A caption can come out empty (a confused model); inversion then runs
        # with the empty prompt, which is SD's unconditional one.
        return [c.strip() for c in processor.batch_decode(ids, skip_special_tokens=True)]
