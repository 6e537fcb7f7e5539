"""Limits on the media a client sends (images, video frames), shared by the
services that decode them: depth, caption and inversion."""

from __future__ import annotations

from dataclasses import dataclass

from ...limits import DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MIN_FRAME_SIDE, FrameLimits


@dataclass(frozen=True)
class MediaLimitsSettingsMixin:
    """The sizes of image and video frame a service accepts from clients."""

    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    """Largest image or video frame accepted, in pixels (width x height), checked from its header before decoding."""
    min_frame_side: int = DEFAULT_MIN_FRAME_SIDE
    """Smallest width or height of an image or video frame accepted (8: one latent pixel)."""

    def check_media_limits(self) -> None:
        self.frame_limits  # noqa: B018 - FrameLimits validates both fields, naming them

    @property
    def frame_limits(self) -> FrameLimits:
        return FrameLimits(max_pixels=self.max_frame_pixels, min_side=self.min_frame_side)
