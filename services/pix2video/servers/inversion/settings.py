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
    max_running_jobs: int = 2
    """Jobs past the upload that run at once on this replica (decode, depth, inversion, store)."""
    max_waiting_jobs: int = 8
    """Admitted calls that may wait (uploading, or for a running slot); past it a call gets RESOURCE_EXHAUSTED."""
    retry_after_seconds: float = 2.0
    """Retry hint sent with RESOURCE_EXHAUSTED (trailing metadata pix2video-retry-after-ms)."""
    upload_timeout_seconds: float = 300.0
    """An upload not finished this long after the call started is cut off (DEADLINE_EXCEEDED)."""
    max_temp_bytes: int = 8 * 1024**3
    """Temporary disk that all uploads of this replica may hold together; past it, RESOURCE_EXHAUSTED."""
    upload_dir: str = ""
    """Folder for uploads in progress ("" = the system's temporary folder)."""
    lease_ttl_seconds: float = 30.0
    """Life of a job's lease in the store unless renewed (renewed every third of it); a dead replica's
    job is taken over after this."""
    retry_budget_seconds: float = 30.0
    """How long depth, caption and store calls are retried (backoff with jitter) within a call's deadline."""
    retry_initial_backoff_seconds: float = 0.2
    """First wait between retries; doubles up to retry_max_backoff_seconds."""
    retry_max_backoff_seconds: float = 5.0
    """Longest wait between two retries."""

    def __post_init__(self):
        super().__post_init__()
        self.check_store()
        self.check_media_limits()
        self.check_runner()
        for name in ("batch_size", "max_upload_bytes", "max_frames", "max_running_jobs", "max_temp_bytes"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("max_inversions_per_tenant", "max_stored_bytes_per_tenant"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name}: must be >= 0 (0: no limit), got {getattr(self, name)}")
        if bool(self.upstream_tls_cert_file) != bool(self.upstream_tls_key_file):
            which = "upstream_tls_key_file" if self.upstream_tls_cert_file else "upstream_tls_cert_file"
            raise InvalidInput(f"{which}: upstream_tls_cert_file and upstream_tls_key_file go together")
        if (self.upstream_tls_cert_file or self.upstream_tls_server_name) and not self.upstream_tls_ca_file:
            raise InvalidInput("upstream_tls_ca_file: required with upstream_tls_cert_file or upstream_tls_server_name")
        if self.max_waiting_jobs < 0:
            raise InvalidInput(f"max_waiting_jobs: must be >= 0, got {self.max_waiting_jobs}")
        if self.max_upload_bytes > self.max_temp_bytes:
            raise InvalidInput(
                f"max_upload_bytes: must not exceed max_temp_bytes={self.max_temp_bytes}, got {self.max_upload_bytes}"
            )
        for name in (
            "call_timeout_seconds",
            "upload_timeout_seconds",
            "lease_ttl_seconds",
            "retry_initial_backoff_seconds",
            "retry_max_backoff_seconds",
        ):
            if not getattr(self, name) > 0:
                raise InvalidInput(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("retry_after_seconds", "retry_budget_seconds"):
            if not getattr(self, name) >= 0:
                raise InvalidInput(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.retry_initial_backoff_seconds > self.retry_max_backoff_seconds:
            raise InvalidInput(
                f"retry_initial_backoff_seconds: must not exceed retry_max_backoff_seconds="
                f"{self.retry_max_backoff_seconds}, got {self.retry_initial_backoff_seconds}"
            )

    def retry_policy(self):
        from ...retry import RetryPolicy

        return RetryPolicy(
            budget=self.retry_budget_seconds,
            initial_backoff=self.retry_initial_backoff_seconds,
            max_backoff=self.retry_max_backoff_seconds,
        )
