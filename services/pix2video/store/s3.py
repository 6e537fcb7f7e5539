"""Latent store in an S3-compatible bucket (service mode).

Any S3 endpoint works (AWS, MinIO, SeaweedFS's S3 gateway, ...); the client is
``minio``. The semantics match :class:`~.local.LocalDiskStore`:

* ``put`` is one PUT (or a multipart upload for large objects, which S3 also
  publishes only on completion), so a reader sees the whole object or none.
* ``get`` of a missing key raises :class:`~pix2video.errors.NotFound`.
* ``delete_prefix("a/b")`` deletes the object ``a/b`` and everything under
  ``a/b/``, not ``a/bc``.
* Keys follow :func:`.base.check_key`.

Anything else that goes wrong (endpoint down, wrong credentials, missing
bucket, a 5xx that outlives the retries) raises :class:`StoreUnavailable`.
Its message says what failed and why in general terms (the S3 error code,
"connection refused"): a client of the services may read it, so it names no
endpoint, bucket or object name. Its ``detail``, which servers log and never
send, is the one-line account naming the endpoint, the bucket and the key.
Timeouts and retries are bounded, so a dead endpoint fails in seconds.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Collection, Iterator, Mapping

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import DictType, check_bucket_name
from urllib3.util import Retry, Timeout

from ..errors import FailedPrecondition, InvalidInput, NotFound, Unavailable
from ..limits import echo
from .base import ObjectInfo, ObjectStore, check_key
from .conditional import WriteConflict

# S3 caps object names at 1024 bytes of UTF-8.
MAX_OBJECT_NAME_BYTES = 1024

_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}
_NOT_FOUND_CODES = {"NoSuchKey"}
# A conditional PUT that lost: the object is not as the condition said (412),
# or another conditional write to it is in flight (AWS answers 409 then).
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
log = logging.getLogger(__name__)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class StoreUnavailable(Unavailable):
    """The object store could not be reached or refused the request
    (connection, credentials, bucket, server errors); not a missing key."""


class StoreDenied(StoreUnavailable, FailedPrecondition):
    """The store refused the credentials or their permissions: retrying does
    not help until someone fixes the configuration (FAILED_PRECONDITION at the
    gRPC edge, which clients do not retry)."""


@dataclass(frozen=True)
class S3Settings:
    """Where the store lives.

    Args:
        endpoint: ``host:port`` of the S3 API, without scheme or path.
        bucket: bucket name.
        access_key, secret_key: credentials (the secret is kept out of repr).
        secure: HTTPS when True, plain HTTP when False.
        region: bucket region; None asks the server once per bucket.
        prefix: folder inside the bucket under which every key lives, so that
            several deployments can share a bucket ("" = bucket root).
        create_bucket: create the bucket on first use when it is absent.
        cert_check: verify the server's TLS certificate (CA bundle from
            ``SSL_CERT_FILE`` or certifi).
        connect_timeout, read_timeout: seconds, per attempt.
        retries: retries after the first attempt, with exponential backoff
            (connection errors, and 500/502/503/504 on idempotent requests).
    """

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = True
    region: str | None = None
    prefix: str = ""
    create_bucket: bool = True
    cert_check: bool = True
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    retries: int = 3

    @property
    def url(self) -> str:
        return ("https://" if self.secure else "http://") + self.endpoint

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "S3Settings":
        """Settings from environment variables (``os.environ`` by default).

        Required: PIX2VIDEO_S3_ENDPOINT, PIX2VIDEO_S3_BUCKET,
        PIX2VIDEO_S3_ACCESS_KEY (or AWS_ACCESS_KEY_ID), PIX2VIDEO_S3_SECRET_KEY
        (or AWS_SECRET_ACCESS_KEY). Optional: PIX2VIDEO_S3_SECURE (true/false,
        default true), PIX2VIDEO_S3_REGION, PIX2VIDEO_S3_PREFIX.
        """
        env = os.environ if env is None else env

        def optional(*names: str) -> str | None:
            for name in names:
                value = (env.get(name) or "").strip()
                if value:
                    return value
            return None

        def get(*names: str) -> str:
            value = optional(*names)
            if value is None:
                alt = f" (or {' or '.join(names[1:])})" if len(names) > 1 else ""
                raise InvalidInput(f"{names[0]}{alt}: required to use the S3 store; it is not set")
            return value

        secure_text = optional("PIX2VIDEO_S3_SECURE")
        secure = True
        if secure_text is not None:
            if secure_text.lower() in _TRUE:
                secure = True
            elif secure_text.lower() in _FALSE:
                secure = False
            else:
                raise InvalidInput(f"PIX2VIDEO_S3_SECURE: expected true or false; got {secure_text!r}")
        endpoint = get("PIX2VIDEO_S3_ENDPOINT")
        _check_endpoint(endpoint, "PIX2VIDEO_S3_ENDPOINT")
        return cls(
            endpoint=endpoint,
            bucket=get("PIX2VIDEO_S3_BUCKET"),
            access_key=get("PIX2VIDEO_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
            secret_key=get("PIX2VIDEO_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
            secure=secure,
            region=optional("PIX2VIDEO_S3_REGION"),
            prefix=optional("PIX2VIDEO_S3_PREFIX") or "",
        )


def _check_endpoint(endpoint: str, name: str = "endpoint") -> None:
    if not endpoint or "://" in endpoint or "/" in endpoint or any(c.isspace() for c in endpoint):
        raise InvalidInput(
            f"{name}: expected host:port without scheme or path (TLS is the 'secure' setting); got {endpoint!r}"
        )


def _one_line(text: str, limit: int = 300) -> str:
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>:?\s*", "", text)  # urllib3 connection reprs
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class S3Store(ObjectStore):
    """Objects in ``bucket`` under ``prefix``; see the module docstring."""

    def __init__(self, settings: S3Settings, *, http_client: urllib3.PoolManager | None = None):
        self.settings = settings
        _check_endpoint(settings.endpoint)
        try:
            check_bucket_name(settings.bucket)
        except ValueError as exc:
            raise InvalidInput(f"bucket: {exc}; got {settings.bucket!r}") from None
        prefix = settings.prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except InvalidInput:
                raise InvalidInput(f"prefix: invalid key prefix {settings.prefix!r}") from None
        self.prefix = prefix
        if http_client is None:
            http_client = urllib3.PoolManager(
                timeout=Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
                maxsize=16,
                cert_reqs="CERT_REQUIRED" if settings.cert_check else "CERT_NONE",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
                retries=Retry(
                    total=settings.retries,
                    backoff_factor=0.5,  # sleeps 0, 1, 2 s between attempts
                    status_forcelist=[500, 502, 503, 504],
                    raise_on_status=False,  # the last answer reaches minio, which names the S3 error
                    respect_retry_after_header=False,  # keep failures bounded in time
                ),
            )
        self._http = http_client
        try:
            self.client = Minio(
                settings.endpoint,
                access_key=settings.access_key,
                secret_key=settings.secret_key,
                secure=settings.secure,
                region=settings.region,
                http_client=http_client,
                cert_check=settings.cert_check,
            )
        except ValueError as exc:
            raise InvalidInput(f"endpoint: {exc}; got {settings.endpoint!r}") from None
        self._bucket_ready = not settings.create_bucket
        self._lock = threading.Lock()
        self._conditional: bool | None = None  # does the server honour If-None-Match / If-Match? (probed once)

    def __repr__(self) -> str:
        return f"S3Store({self._where()})"

    def _where(self) -> str:
        path = self.settings.bucket + ("/" + self.prefix if self.prefix else "")
        return f"{self.settings.url}/{path}"

    # ------------------------------------------------------------ helpers

    def _name(self, key: str) -> str:
        check_key(key)
        name = f"{self.prefix}/{key}" if self.prefix else key
        if len(name.encode()) > MAX_OBJECT_NAME_BYTES:
            raise InvalidInput(f"key: object key longer than {MAX_OBJECT_NAME_BYTES} bytes: {echo(key)}")
        return name

    def _unavailable(self, op: str, key: str | None, exc: BaseException) -> StoreUnavailable:
        # ``public`` names no endpoint, bucket or key (it may reach a client);
        # ``reason`` is the whole story, for the detail that servers log.
        if isinstance(exc, S3Error):
            public = str(exc.code)
            reason = f"{exc.code}: {exc.message}" if exc.message else str(exc.code)
            if exc.code in _AUTH_CODES:
                public += " (check the access key, secret key and their permissions)"
                reason += " (check the access key, secret key and their permissions)"
        elif isinstance(exc, urllib3.exceptions.MaxRetryError):
            refused = "refused" in str(exc.reason).lower()
            public = f"no answer after {self.settings.retries + 1} attempts" + (
                " (connection refused)" if refused else ""
            )
            reason = f"no answer after {self.settings.retries + 1} attempts: {exc.reason}"
        elif isinstance(exc, (ServerError, InvalidResponseError)):
            public = "unexpected answer (is this an S3 endpoint?)"
            reason = f"{public}: {exc}"
        else:
            public = type(exc).__name__
            reason = f"{type(exc).__name__}: {exc}"
        what = f"{op} of {key!r}" if key is not None else op
        kind = StoreDenied if isinstance(exc, S3Error) and exc.code in _AUTH_CODES else StoreUnavailable
        return kind(
            f"object store unavailable: {op} failed: {public}",
            detail=_one_line(f"S3 {what} failed at {self._where()}: {reason}"),
        )

    @contextmanager
    def _errors(self, op: str, key: str | None, expected: Collection[str] = ()) -> Iterator[None]:
        """The one error mapping: any failure becomes StoreUnavailable (see
        _unavailable), except an S3 error whose code is in ``expected``, which
        passes through unchanged for the caller to map to what it means there
        (a missing key, a lost conditional write)."""
        try:
            yield
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            if isinstance(exc, S3Error) and exc.code in expected:
                raise
            raise self._unavailable(op, key, exc) from exc

    def ensure_bucket(self, _op: str = "bucket check", _key: str | None = None) -> None:
        """Creates the bucket if absent (once per store, when create_bucket is
        set); every operation calls it first, so errors name that operation."""
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return
            bucket = self.settings.bucket
            with self._errors(_op, _key):
                if not self.client.bucket_exists(bucket):
                    try:
                        self.client.make_bucket(bucket, location=self.settings.region)
                    except S3Error as exc:
                        if exc.code != "BucketAlreadyOwnedByYou":  # another replica won the race
                            raise
            self._bucket_ready = True

    def check(self) -> None:
        """Raises StoreUnavailable unless the endpoint answers, the credentials
        work and the bucket exists (for startup and readiness checks)."""
        self.ensure_bucket()
        with self._errors("bucket check", None):
            exists = self.client.bucket_exists(self.settings.bucket)
        if not exists:
            raise StoreUnavailable(
                "object store unavailable: the bucket does not exist",
                detail=f"S3 bucket {self.settings.bucket!r} does not exist at {self.settings.url}",
            )

    def close(self) -> None:
        self._http.clear()

    # ------------------------------------------------------------ ObjectStore

    def put(self, key: str, data: bytes) -> None:
        name = self._name(key)
        self.ensure_bucket("put", key)
        data = bytes(data)
        with self._errors("put", key):
            self.client.put_object(self.settings.bucket, name, io.BytesIO(data), len(data))

    def get(self, key: str) -> bytes:
        # One GetObject path (errors, not-found mapping) for plain and tagged reads.
        return self.get_tagged(key)[0]

    def exists(self, key: str) -> bool:
        name = self._name(key)
        self.ensure_bucket("exists", key)
        try:
            with self._errors("exists", key, _NOT_FOUND_CODES):
                self.client.stat_object(self.settings.bucket, name)
        except S3Error:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if prefix:
            check_key(prefix.rstrip("/"))
        name = f"{self.prefix}/{prefix}" if self.prefix else prefix
        skip = len(self.prefix) + 1 if self.prefix else 0
        self.ensure_bucket("list", prefix)
        with self._errors("list", prefix):
            for obj in self.client.list_objects(self.settings.bucket, prefix=name, recursive=True):
                if obj.object_name and not obj.is_dir:
                    modified = obj.last_modified.timestamp() if obj.last_modified else 0.0
                    yield ObjectInfo(obj.object_name[skip:], obj.size or 0, modified)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self.ensure_bucket("delete", key)
        with self._errors("delete", key):
            self.client.remove_object(self.settings.bucket, name)

    def usage_bytes(self, prefix: str) -> int:
        """Bytes stored under ``prefix`` (storage quotas; one listing)."""
        name = self._name(prefix.rstrip("/")) + "/"
        self.ensure_bucket("usage", prefix)
        with self._errors("usage", prefix):
            return sum(o.size or 0 for o in self.client.list_objects(self.settings.bucket, prefix=name, recursive=True))

    def delete_prefix(self, prefix: str) -> None:
        key = prefix.rstrip("/")
        name = self._name(key)
        self.ensure_bucket("delete", prefix)
        bucket = self.settings.bucket
        with self._errors("delete", prefix):
            names = [name] + [
                obj.object_name
                for obj in self.client.list_objects(bucket, prefix=name + "/", recursive=True)
                if obj.object_name and not obj.is_dir
            ]
            # remove_objects is lazy: the requests go out while its errors are read.
            errors = list(self.client.remove_objects(bucket, (DeleteObject(n) for n in names)))
        errors = [e for e in errors if e.code not in _NOT_FOUND_CODES]
        if errors:
            first = errors[0]
            raise StoreUnavailable(
                f"object store unavailable: delete failed: {len(errors)} object(s) not deleted ({first.code})",
                detail=_one_line(
                    f"S3 delete of {prefix!r} failed at {self._where()}: {len(errors)} object(s) not deleted, "
                    f"first {first.name!r}: {first.code}: {first.message}"
                ),
            )

    # ------------------------------------------------ conditional writes (see .conditional)

    def conditional_writes(self) -> bool:
        """Whether this server honours conditional PUTs: probed once, by
        creating an object twice with ``If-None-Match: *`` (a server that
        ignores the header lets the second through)."""
        if self._conditional is None:
            probe = f"leases/probe-{uuid.uuid4().hex}"
            self.put_if_absent(probe, b"1")
            try:
                self.put_if_absent(probe, b"2")
                supported = False
            except WriteConflict:
                supported = True
            finally:
                self.delete(probe)
            if not supported:
                log.warning(
                    "S3 store at %s ignores If-None-Match: leases fall back to write and read back", self.settings.url
                )
            self._conditional = supported
        return self._conditional

    def _put_conditional(self, key: str, data: bytes, headers: DictType) -> str:
        name = self._name(key)
        self.ensure_bucket("put", key)
        try:
            with self._errors("put", key, _CONFLICT_CODES):
                # minio's put_object takes no request headers; its one-part PutObject does.
                result = self.client._put_object(self.settings.bucket, name, bytes(data), headers)
        except S3Error as exc:
            raise WriteConflict(f"object {echo(key)}: {exc.code}") from None
        if result.etag is None:  # S3 always answers a PUT with an ETag; guard a server that does not
            raise StoreUnavailable(f"put {echo(key)}: no ETag in the answer")
        return result.etag

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        name = self._name(key)
        self.ensure_bucket("get", key)
        try:
            with self._errors("get", key, _NOT_FOUND_CODES):
                response = self.client.get_object(self.settings.bucket, name)
                try:
                    return response.read(), response.headers.get("etag", "").replace('"', "")
                finally:
                    response.close()
                    response.release_conn()
        except S3Error:
            raise NotFound(f"object {echo(key)} not found", detail=f"no object {name!r} in {self._where()}") from None

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self._put_conditional(key, data, {"If-None-Match": "*"})

    def put_if_tag(self, key: str, data: bytes, tag: str) -> str:
        return self._put_conditional(key, data, {"If-Match": f'"{tag}"'})
