"""TLS and API tokens for the SDK's channels (grpcio only).

A token is sent as ``authorization: Bearer <token>`` on every call. It comes
from the ``token`` argument or, when that is None, the ``PIX2VIDEO_TOKEN``
environment variable (the CLI reads a file instead: a command-line flag would
show the token to anyone running ``ps``). TLS trusts ``tls_ca_file`` (default:
the system's roots) and, for mutual TLS, presents ``tls_cert_file`` and
``tls_key_file``.
"""

from __future__ import annotations

import os
import threading
from collections import namedtuple
from dataclasses import dataclass, field
from typing import Callable

import grpc

TOKEN_ENV = "PIX2VIDEO_TOKEN"


def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {str(path)!r}: {exc.strerror}") from None


def _check_token(token: str, what: str) -> str:
    token = token.strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(f"{what}: a token is one word of printable characters")
    return token


def channel_credentials(
    tls_ca_file: str | os.PathLike | None = None,
    tls_cert_file: str | os.PathLike | None = None,
    tls_key_file: str | os.PathLike | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files, or None when none is given (plaintext)."""
    if not (tls_ca_file or tls_cert_file or tls_key_file):
        return None
    if bool(tls_cert_file) != bool(tls_key_file):
        raise ValueError("tls_cert_file, tls_key_file: a client certificate needs its key, and the key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls_ca_file, "tls_ca_file") if tls_ca_file else None,
        private_key=_read(tls_key_file, "tls_key_file") if tls_key_file else None,
        certificate_chain=_read(tls_cert_file, "tls_cert_file") if tls_cert_file else None,
    )


class TokenFile:
    """A token kept in a file (a mounted Secret): re-read when the file changes."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._token = ""
        self()  # a missing or empty file fails now, not at the first call

    def __call__(self) -> str:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._token:
                return self._token  # mid-rotation: keep the last one
            raise ValueError(f"token_file: cannot read {self.path!r}: {exc.strerror}") from None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if sig != self._signature:
                text = _read(self.path, "token_file").decode("utf-8", "replace")
                self._token = _check_token(text, f"token_file: {self.path!r}")
                self._signature = sig
            return self._token


def resolve_token(token: str | Callable[[], str] | None) -> Callable[[], str] | None:
    """``token``, else ``$PIX2VIDEO_TOKEN``, as a callable (None: no token)."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
        if token is None:
            return None
        what = TOKEN_ENV
    else:
        what = "token"
    if callable(token):
        return token
    value = _check_token(token, what)
    return lambda: value


def bearer(token: Callable[[], str]) -> tuple[str, str]:
    return ("authorization", f"Bearer {token()}")


@dataclass
class ChannelSecurity:
    """How the SDK's channels are made: TLS credentials, channel options, token."""

    credentials: grpc.ChannelCredentials | None = None
    token: Callable[[], str] | None = None
    options: list = field(default_factory=list)

    @classmethod
    def make(
        cls,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | Callable[[], str] | None = None,
        tls_ca_file: str | os.PathLike | None = None,
        tls_cert_file: str | os.PathLike | None = None,
        tls_key_file: str | os.PathLike | None = None,
        tls_server_name: str | None = None,
    ) -> "ChannelSecurity":
        files = channel_credentials(tls_ca_file, tls_cert_file, tls_key_file)
        if files is not None and credentials is not None:
            raise ValueError("credentials: give either credentials or the tls_* files, not both")
        creds = files or credentials
        if tls_server_name and creds is None:
            raise ValueError("tls_server_name: only with TLS (give tls_ca_file or credentials)")
        options = [("grpc.ssl_target_name_override", tls_server_name)] if tls_server_name else []
        return cls(creds, resolve_token(token), options)

    def metadata(self, metadata=()) -> list:
        """``metadata`` plus the token's authorization entry."""
        out = list(metadata or ())
        if self.token is not None:
            out.append(bearer(self.token))
        return out

    def channel(self, address: str, options: list) -> grpc.Channel:
        opts = [*options, *self.options]
        if self.credentials is not None:
            return grpc.secure_channel(address, self.credentials, options=opts)
        return grpc.insecure_channel(address, options=opts)

    def aio_channel(self, address: str, options: list):
        opts = [*options, *self.options]
        if self.credentials is not None:
            return grpc.aio.secure_channel(address, self.credentials, options=opts)
        return grpc.aio.insecure_channel(address, options=opts)


class _Details(
    namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token to every call of a (sync) channel:
    ``grpc.intercept_channel(channel, TokenInterceptor(token))``."""

    def __init__(self, token: Callable[[], str]):
        self.token = token

    def _details(self, d):
        md = [*(d.metadata or ()), bearer(self.token)]
        return _Details(d.method, d.timeout, md, d.credentials, d.wait_for_ready, getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)
