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
    upstream_tls_ca_file: str = ""
    """PEM CA bundle that verifies the depth and caption services; when set they are called over TLS."""
    upstream_tls_cert_file: str = ""
    """PEM client certificate presented to depth and caption (when they require mutual TLS)."""
    upstream_tls_key_file: str = ""
    """PEM private key of upstream_tls_cert_file."""
    upstream_tls_server_name: str = ""
    """Name to verify in the depth and caption certificates when it is not the host of their addresses."""
    upstream_token_file: str = ""
    """File holding the API token this service sends to depth and caption (when they check tokens)."""
    max_inversions_per_tenant: int = 0
    """Most inversions one tenant may run at once (0: no limit); more get RESOURCE_EXHAUSTED."""
    max_stored_bytes_per_tenant: int = 0
    """A tenant storing this many bytes or more cannot start new inversions (0: no limit)."""

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
        for name in ("max_inversions_per_tenant", "max_stored_bytes_per_tenant"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name}: must be >= 0 (0: no limit), got {getattr(self, name)}")
        if bool(self.upstream_tls_cert_file) != bool(self.upstream_tls_key_file):
            which = "upstream_tls_key_file" if self.upstream_tls_cert_file else "upstream_tls_cert_file"
            raise InvalidInput(f"{which}: upstream_tls_cert_file and upstream_tls_key_file go together")
        if (self.upstream_tls_cert_file or self.upstream_tls_server_name) and not self.upstream_tls_ca_file:
            raise InvalidInput("upstream_tls_ca_file: required with upstream_tls_cert_file or upstream_tls_server_name")
