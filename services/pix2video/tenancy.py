"""Tenants: who a request acts for (no gRPC here).

A tenant is named by its API token or its mTLS client certificate; the
services' auth interceptor (``servers/common/auth.py``) resolves it and sets
it for the handler with :func:`acting_as`. Everything below the transport reads
it with :func:`current_tenant`; code on another thread (the editor's
scheduler) is handed the tenant explicitly, since a context variable does not
follow work posted to a thread's queue.

With authentication off every request acts for :data:`DEFAULT_TENANT`, so a
single-tenant deployment behaves as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator

from .errors import InvalidInput

DEFAULT_TENANT = "default"
# Tenant names go into store keys and metric labels: lower-case, short, no '/'.
TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

_current: contextvars.ContextVar[str] = contextvars.ContextVar("pix2video_tenant", default=DEFAULT_TENANT)


def check_tenant(name: str) -> str:
    """Returns ``name`` if it is a valid tenant name, else raises InvalidInput."""
    if not isinstance(name, str) or not TENANT_PATTERN.fullmatch(name):
        raise InvalidInput(f"tenant: must match {TENANT_PATTERN.pattern}, got {str(name)[:64]!r}")
    return name


def current_tenant() -> str:
    """The tenant the current request acts for."""
    return _current.get()


@contextlib.contextmanager
def acting_as(tenant: str) -> Iterator[str]:
    """Runs the block as ``tenant`` (the auth interceptor wraps each call in this)."""
    token = _current.set(check_tenant(tenant))
    try:
        yield tenant
    finally:
        _current.reset(token)
