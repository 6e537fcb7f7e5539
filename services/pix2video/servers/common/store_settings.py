"""Object-store settings shared by the services that use the latent store."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import InvalidInput

STORE_KINDS = ("local", "s3")


@dataclass(frozen=True)
class StoreSettingsMixin:
    """Where the latent store lives. S3 credentials come from the environment
    (PIX2VIDEO_S3_ACCESS_KEY or AWS_ACCESS_KEY_ID; PIX2VIDEO_S3_SECRET_KEY or
    AWS_SECRET_ACCESS_KEY) or the secret from s3_secret_key_file; never give
    the secret as a flag (ps shows flags)."""

    # The environment names load_settings also reads for a field (the standard AWS ones).
    ENV_ALIASES = {"s3_access_key": "AWS_ACCESS_KEY_ID", "s3_secret_key": "AWS_SECRET_ACCESS_KEY"}

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
    """S3 access key (environment: PIX2VIDEO_S3_ACCESS_KEY or AWS_ACCESS_KEY_ID)."""
    s3_secret_key: str = field(default="", repr=False)
    """S3 secret key: from the environment (PIX2VIDEO_S3_SECRET_KEY or AWS_SECRET_ACCESS_KEY), never a flag."""
    s3_secret_key_file: str = ""
    """File holding the S3 secret key (a mounted Secret), instead of PIX2VIDEO_S3_SECRET_KEY/AWS_SECRET_ACCESS_KEY."""
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
        if self.s3_secret_key and self.s3_secret_key_file:
            raise InvalidInput("s3_secret_key_file: give the secret key in a file or in the environment, not both")
        has_secret = bool(self.s3_secret_key or self.s3_secret_key_file)
        if self.store == "s3" and bool(self.s3_access_key) != has_secret:
            # One without the other would silently call S3 anonymously.
            if self.s3_access_key:
                raise InvalidInput(
                    "s3_secret_key: an access key is set but no secret key (set s3_secret_key_file, "
                    "PIX2VIDEO_S3_SECRET_KEY or AWS_SECRET_ACCESS_KEY)"
                )
            raise InvalidInput(
                "s3_access_key: a secret key is set but no access key "
                "(set PIX2VIDEO_S3_ACCESS_KEY or AWS_ACCESS_KEY_ID)"
            )

    def s3_secret(self) -> str:
        """The S3 secret key: from s3_secret_key_file if set, else s3_secret_key."""
        if not self.s3_secret_key_file:
            return self.s3_secret_key
        try:
            with open(self.s3_secret_key_file, encoding="utf-8") as f:
                secret = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"s3_secret_key_file: cannot read {self.s3_secret_key_file!r}: {exc}") from None
        if not secret:
            raise InvalidInput(f"s3_secret_key_file: {self.s3_secret_key_file!r} is empty")
        return secret

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
                secret_key=self.s3_secret(),
                secure=self.s3_secure,
                region=self.s3_region or None,
                prefix=self.s3_prefix,
            )
        )
