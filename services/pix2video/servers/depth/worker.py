"""The depth service's model code (torch; never grpc).

Frames of one batch may come from different streams, at different sizes and
with different requested output sizes. Frames are grouped by (frame size,
output size); a group at the default output size (the latent size: frame / the
VAE's scale factor, 8 for SD2-depth, 4 for the toy set)
runs through the engine's own :class:`~pix2video.engine.depth.DepthEstimator`,
so the suite's depth equals the embedded engine's. A group with an explicit
output size runs the same DPT steps and resizes to that size with
:func:`~pix2video.engine.depth.normalise_depth`.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from ...depth_batching import depth_batch_size
from ...devices import resolve_device, resolve_dtype
from ...engine.depth import DepthEstimator, normalise_depth, predict_depth
from ...errors import InvalidInput
from ...models.components import DepthComponents, load_depth
from .settings import DepthSettings

log = logging.getLogger(__name__)


class DepthWorker:
    """DPT depth for lists of frames; loads only the depth estimator."""

    def __init__(self, settings: DepthSettings):
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        depth, feature_extractor, scale = load_depth(settings.model, device, settings.home or None)
        self.models = DepthComponents(depth, feature_extractor, device, dtype, scale)
        self.batch_size = depth_batch_size(device, settings.batch_size)  # 1 on the CPU: see depth_batching
        self.estimator = DepthEstimator(self.models, batch_size=self.batch_size, preprocess=settings.preprocess)
        log.info(
            "depth model %s loaded on %s (%s, DPT input made on the %s)",
            settings.model,
            device,
            str(dtype).removeprefix("torch."),
            self.estimator.preprocess,
        )

    @property
    def vae_scale_factor(self) -> int:
        return self.models.vae_scale_factor

    def output_size(self, height: int, width: int, output_height: int = 0, output_width: int = 0) -> tuple[int, int]:
        """The (height, width) of the depth map for a frame; 0 means frame / scale factor.

        Raises InvalidInput naming ``frame.height``/``frame.width`` when a side
        whose output size is 0 is not a multiple of the VAE scale factor.
        """
        sf = self.vae_scale_factor
        if output_height < 0 or output_width < 0:
            raise InvalidInput(f"output_height/output_width: must be >= 0, got {output_height}x{output_width}")
        if output_height == 0 and (height < sf or height % sf):
            raise InvalidInput(
                f"frame.height: must be a positive multiple of {sf} when output_height is 0, got {height}"
            )
        if output_width == 0 and (width < sf or width % sf):
            raise InvalidInput(f"frame.width: must be a positive multiple of {sf} when output_width is 0, got {width}")
        return (output_height or height // sf, output_width or width // sf)

    @torch.no_grad()
    def estimate(
        self, frames: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[np.ndarray]:
        """Depth maps of ``frames``.

        Args:
            frames: (H, W, 3) uint8 RGB frames; sizes may differ.
            sizes: per frame, the (height, width) of its map; 0 in either means
                that side of the frame / the VAE scale factor. Default all (0, 0).

        Returns:
            Per frame, (1, h, w) float32 depth, min-max normalised to [-1, 1].
        """
        sizes = list(sizes) if sizes is not None else [(0, 0)] * len(frames)
        if len(sizes) != len(frames):
            raise InvalidInput(f"sizes: need one per frame ({len(frames)}), got {len(sizes)}")
        groups: dict[tuple[int, int, int, int], list[int]] = {}
        for i, (frame, (oh, ow)) in enumerate(zip(frames, sizes, strict=True)):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise InvalidInput(f"frame: must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
            h, w = frame.shape[:2]
            groups.setdefault((h, w, *self.output_size(h, w, oh, ow)), []).append(i)
        out: list[np.ndarray | None] = [None] * len(frames)
        sf = self.vae_scale_factor
        for (h, w, oh, ow), idx in groups.items():
            stack = np.stack([frames[i] for i in idx])
            if (oh, ow) == (h // sf, w // sf) and h % sf == 0 and w % sf == 0:
                depth = self.estimator(stack)
            else:
                depth = normalise_depth(self._predict(stack), (oh, ow))
            depth = depth.float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = depth[j]
        return out

    def _predict(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, h, w) raw DPT depth (float32): the steps of
        ``DepthEstimator`` before its resize to the latent size."""
        step = self.batch_size
        pre = self.estimator.preprocess
        return torch.cat([predict_depth(self.models, frames[i : i + step], pre) for i in range(0, len(frames), step)])

    def warmup(self) -> None:
        """One small frame through the whole path (kernels, allocator, lazy init)."""
        side = 8 * self.vae_scale_factor
        self.estimate([np.zeros((side, side, 3), np.uint8)])
