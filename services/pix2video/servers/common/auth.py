"""Who is calling: per-tenant API tokens (or the mTLS client certificate),
checked by one server interceptor that runs each handler as its tenant.

Tokens travel in metadata ``authorization: Bearer <token>``. The server keeps
only their SHA-256 hashes, one line per token in the tokens file::

    # tenant   token hash
    acme       sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

(``python -m pix2video.servers.common.auth new TENANT`` makes a token and
its line.) A tenant may have several lines, so a token is rotated by adding
the new one, moving clients, then deleting the old. The file is re-read when
it changes (a Kubernetes Secret updates in place); a file that stops parsing
is logged and the last good table keeps serving.

Tokens are random and long, so a plain SHA-256 is enough: nothing to
brute-force, and no slow KDF on every call. With ``tenant_from_client_cert``
a call without a token acts for the tenant named by the common name of its
verified client certificate (mutual TLS).

A missing or unknown token gets UNAUTHENTICATED, the same message either
way. The standard health service answers without a token (Kubernetes probes
cannot send one); it tells nothing about any tenant.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass

import grpc

from ...errors import InvalidInput
from ...tenancy import TENANT_PATTERN, acting_as

log = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
CHECK_INTERVAL_SECONDS = 1.0
# Open to every caller: health (probes), nothing else.
PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
UNAUTHENTICATED_MESSAGE = "authentication required: send 'authorization: Bearer <token>' with a valid token"


def hash_token(token: str) -> str:
    """The tokens file's form of ``token``."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random API token (256 bits, URL-safe)."""
    return "p2v_" + secrets.token_urlsafe(32)


def parse_tokens(text: str, source: str = "tokens file") -> dict[str, str]:
    """Token hash -> tenant. Raises InvalidInput naming the line (never its content)."""
    table: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not TENANT_PATTERN.fullmatch(parts[0]) or not _HASH.fullmatch(parts[1]):
            raise InvalidInput(
                f"auth_tokens_file: {source} line {n}: expected 'TENANT sha256:<64 hex digits>' "
                f"(tenant matching {TENANT_PATTERN.pattern})"
            )
        tenant, digest = parts
        if table.get(digest, tenant) != tenant:
            raise InvalidInput(f"auth_tokens_file: {source} line {n}: the same token hash is listed for two tenants")
        table[digest] = tenant
    return table


class TokenTable:
    """The tokens file, re-read when it changes (checked at most once a second)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._next_check = 0.0
        self.reloads = 0
        self._signature, self._table = self._read()

    def _read(self) -> tuple[tuple, dict[str, str]]:
        try:
            st = os.stat(self.path)
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"auth_tokens_file: cannot read {self.path!r}: {exc}") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns), parse_tokens(text, repr(self.path))

    def _refresh(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + CHECK_INTERVAL_SECONDS
            try:
                st = os.stat(self.path)
                if (st.st_ino, st.st_size, st.st_mtime_ns) == self._signature:
                    return
                self._signature, self._table = self._read()
                self.reloads += 1
            except (OSError, InvalidInput) as exc:
                log.error("auth: keeping the current tokens; the tokens file is not usable: %s", exc)
                return
        log.info("auth: tokens file changed; %d tokens loaded", len(self._table))

    def tenant(self, token: str) -> str | None:
        """The tenant of ``token``, or None."""
        self._refresh()
        return self._table.get(hash_token(token))

    def __len__(self) -> int:
        return len(self._table)


def _bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            scheme, _, token = value.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


@dataclass
class Denied(Exception):
    code: grpc.StatusCode
    message: str


class Authenticator:
    """Resolves a call's tenant from its token or its client certificate.

    Args:
        tokens: the token table (None: tokens are not accepted).
        tenant_from_client_cert: a call without a token acts for its verified
            client certificate's common name.
    """

    def __init__(self, tokens: TokenTable | None, tenant_from_client_cert: bool = False):
        self.tokens = tokens
        self.tenant_from_client_cert = tenant_from_client_cert

    def tenant(self, metadata, context) -> str:
        token = _bearer(metadata)
        if token is not None:
            tenant = self.tokens.tenant(token) if (self.tokens is not None and token) else None
            if tenant is None:
                raise Denied(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            return tenant
        if self.tenant_from_client_cert:
            # Only set by gRPC for a certificate that verified against the client CA.
            names = (context.auth_context() or {}).get("x509_common_name") or []
            if names:
                cn = names[0].decode("utf-8", "replace") if isinstance(names[0], bytes) else str(names[0])
                if TENANT_PATTERN.fullmatch(cn):
                    return cn
                raise Denied(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"client certificate: its common name is not a tenant name (must match {TENANT_PATTERN.pattern})",
                )
        raise Denied(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


def _wrap_unary(fn, auth: Authenticator):
    async def handler(request, context):
        try:
            tenant = auth.tenant(context.invocation_metadata(), context)
        except Denied as d:
            await context.abort(d.code, d.message)
        # The handler's coroutine runs in this task: the tenant is set for it,
        # for tasks it creates and for asyncio.to_thread work (both copy the context).
        with acting_as(tenant):
            return await fn(request, context)

    return handler


def _wrap_stream(fn, auth: Authenticator):
    async def handler(request, context):
        try:
            tenant = auth.tenant(context.invocation_metadata(), context)
        except Denied as d:
            await context.abort(d.code, d.message)
        with acting_as(tenant):
            async for item in fn(request, context):
                yield item

    return handler


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without a valid token (or client certificate) and runs
    every other handler inside :func:`pix2video.tenancy.acting_as` its tenant.

    Installed inside the error interceptor, so refused calls are counted
    with their status like any other."""

    def __init__(self, auth: Authenticator):
        self.auth = auth

    async def intercept_service(self, continuation, handler_call_details):
        h = await continuation(handler_call_details)
        if h is None or handler_call_details.method.startswith(PUBLIC_METHOD_PREFIXES):
            return h
        kw = dict(request_deserializer=h.request_deserializer, response_serializer=h.response_serializer)
        if h.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(h.unary_unary, self.auth), **kw)
        if h.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(h.stream_unary, self.auth), **kw)
        if h.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(h.unary_stream, self.auth), **kw)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(h.stream_stream, self.auth), **kw)


def authenticator(tokens_file: str, tenant_from_client_cert: bool) -> Authenticator | None:
    """The settings' authenticator, or None when authentication is off."""
    if not tokens_file and not tenant_from_client_cert:
        return None
    return Authenticator(TokenTable(tokens_file) if tokens_file else None, tenant_from_client_cert)


def main(argv: list[str]) -> int:
    """``new TENANT``: prints a new token (give it to the tenant) on stdout and
    its tokens-file line on stderr. ``hash``: reads a token on stdin, prints its line."""
    usage = "usage: python -m pix2video.servers.common.auth new TENANT | hash TENANT < token"
    if len(argv) != 2 or argv[0] not in ("new", "hash") or not TENANT_PATTERN.fullmatch(argv[1]):
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "new":
        token = new_token()
        print(token)
        print(f"{argv[1]} {hash_token(token)}", file=sys.stderr)
    else:
        print(f"{argv[1]} {hash_token(sys.stdin.readline().strip())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
