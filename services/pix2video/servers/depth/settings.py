"""Settings of the depth service (flags ``--field-name``, env ``PIX2VIDEO_FIELD_NAME``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.depth_options import DEPTH_PREPROCESS_MODES
from ...errors import InvalidInput
from ..common.media_settings import MediaLimitsSettingsMixin
from ..common.settings import ModelServerSettings


@dataclass(frozen=True)
class DepthSettings(MediaLimitsSettingsMixin, ModelServerSettings):
    """Depth service: DPT depth maps for streams of frames."""

    port: int = 50061
    metrics_port: int = 9461
    batch_size: int = 16
    """Most frames per DPT call (frames from all streams are batched together)."""
    max_wait_ms: float = 5.0
    """Longest a batch waits for more frames after its first, in milliseconds."""
    preprocess: str = "auto"
    """Where DPT's input is made: host (the image processor), device (torch), auto (device on CUDA)."""

    def __post_init__(self):
        super().__post_init__()
        self.check_media_limits()
        if not 1 <= self.batch_size <= 1024:
            raise InvalidInput(f"batch_size: must be in [1, 1024], got {self.batch_size}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise InvalidInput(f"max_wait_ms: must be in [0, 10000], got {self.max_wait_ms}")
        if self.preprocess not in DEPTH_PREPROCESS_MODES:
            raise InvalidInput(
                f"preprocess: must be one of {', '.join(DEPTH_PREPROCESS_MODES)}, got {self.preprocess!r}"
            )
