"""Object-store settings shared by the services that use the latent store."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import InvalidInput

STORE_KINDS = ("local", "s3")


@dataclass(frozen=True)
class StoreSettingsMixin:
    """Where the latent store lives."""

    store: str = "local"
    """The latent store: local (folder store_dir) or s3 (the s3_* settings; any S3-compatible endpoint, MinIO
    included)."""
    store_dir: str = ""
    """Folder of the local store (required when store is local)."""
    s3_endpoint: str = ""
    """S3 endpoint host:port (required when store is s3)."""
    s3_bucket: str = "pix2video"
    """S3 bucket."""
    s3_access_key: str = ""
    """S3 access key."""
    s3_secret_key: str = ""
    """S3 secret key."""
    s3_secure: bool = False
    """Talk HTTPS to the S3 endpoint."""
    s3_region: str = ""
    """S3 region (none: the endpoint's default)."""
    s3_prefix: str = ""
    """Key prefix of every object in the bucket."""

    def check_store(self) -> None:
        if self.store not in STORE_KINDS:
            raise InvalidInput(f"store: must be one of {', '.join(STORE_KINDS)}; got {self.store!r}")
        if self.store == "local" and not self.store_dir:
            raise InvalidInput("store_dir: required when store is local")
        if self.store == "s3" and not (self.s3_endpoint and self.s3_bucket):
            raise InvalidInput("s3_endpoint: required (with s3_bucket) when store is s3")

    def open_store(self):
        from ...store import LocalDiskStore

        self.check_store()
        if self.store == "local":
            return LocalDiskStore(self.store_dir)
        from ...store.s3 import S3Settings, S3Store

        return S3Store(
            S3Settings(
                endpoint=self.s3_endpoint,
                bucket=self.s3_bucket,
                access_key=self.s3_access_key,
                secret_key=self.s3_secret_key,
                secure=self.s3_secure,
                region=self.s3_region or None,
                prefix=self.s3_prefix,
            )
        )
