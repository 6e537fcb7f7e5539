"""Settings of the caption service (flags ``--field-name``, env ``PIX2VIDEO_FIELD_NAME``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import InvalidInput
from ..common.media_settings import MediaLimitsSettingsMixin
from ..common.settings import ModelServerSettings

# The contract's ceiling on CaptionRequest.max_new_tokens.
MAX_NEW_TOKENS_LIMIT = 128


@dataclass(frozen=True)
class CaptionSettings(MediaLimitsSettingsMixin, ModelServerSettings):
    """Caption service: BLIP captions (the source prompt for inversion)."""

    port: int = 50062
    metrics_port: int = 9462
    max_new_tokens: int = 30
    """Default caption length in tokens (a request may ask for up to 128)."""
    batch_size: int = 8
    """Most images per BLIP call (images from all calls are batched together)."""
    max_wait_ms: float = 5.0
    """Longest a batch waits for more images after its first, in milliseconds."""

    def __post_init__(self):
        super().__post_init__()
        self.check_media_limits()
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidInput(f"max_new_tokens: must be in [1, {MAX_NEW_TOKENS_LIMIT}], got {self.max_new_tokens}")
        if not 1 <= self.batch_size <= 1024:
            raise InvalidInput(f"batch_size: must be in [1, 1024], got {self.batch_size}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise InvalidInput(f"max_wait_ms: must be in [0, 10000], got {self.max_wait_ms}")
