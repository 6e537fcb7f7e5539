from __future__ import annotations

from dataclasses import dataclass

from ...errors import InvalidInput
from ..common.media_settings import MediaLimitsSettingsMixin
from ..common.runner_settings import UNetRunnerSettingsMixin
from ..common.settings import ModelServerSettings
from ..common.store_settings import StoreSettingsMixin


@dataclass(frozen=True)
class InversionServerSettings(
    MediaLimitsSettingsMixin, UNetRunnerSettingsMixin, StoreSettingsMixin, ModelServerSettings
):
    """Inversion service: depth, caption and DDIM inversion of uploaded videos into the latent store."""

    port: int = 50063
    metrics_port: int = 9463
    depth_address: str = "127.0.0.1:50061"
    """The depth service (host:port)."""
    caption_address: str = "127.0.0.1:50062"
    """The caption service (host:port)."""
    batch_size: int = 32
    """Frames per batched inversion call (the UNet's cost per frame falls with the batch, docs/benchmark.md;
    lower it on small GPUs)."""
    max_upload_bytes: int = 2 * 1024**3
    """Largest uploaded video file, in bytes."""
    max_frames: int = 10_000
    """Most frames per video."""
    call_timeout_seconds: float = 600.0
    """Deadline of each depth or caption call, in seconds."""

    def __post_init__(self):
        super().__post_init__()
        self.check_store()
        self.check_media_limits()
        self.check_runner()
        for name in ("batch_size", "max_upload_bytes", "max_frames"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.call_timeout_seconds <= 0:
            raise InvalidInput(f"call_timeout_seconds: must be > 0, got {self.call_timeout_seconds}")
