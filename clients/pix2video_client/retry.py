"""The SDK's retry policy (one for the sync and the asyncio client).

Only what is safe is retried: inversion calls are idempotent (a video's id is
a hash of its content, so a repeated upload is a cache hit), so they are
retried on UNAVAILABLE (the service or a dependency is briefly away), and on
RESOURCE_EXHAUSTED only when the server said when to come back (its
``pix2video-retry-after-ms`` trailing metadata: a full queue, which refused
the call before doing anything; a message too large carries no hint and is
not retried). Never retried: FAILED_PRECONDITION (e.g. refused store
credentials), INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED.

Waits grow exponentially from ``backoff`` with full jitter (so that clients
refused together do not return together), at least the server's hint, and
every attempt stays inside the call's overall deadline.
"""

from __future__ import annotations

import random
import time

import grpc

RETRY_AFTER_KEY = "pix2video-retry-after-ms"
MAX_BACKOFF_SECONDS = 30.0


def retry_after(exc: grpc.RpcError) -> float | None:
    """The server's retry hint in seconds, if it sent one."""
    try:
        metadata = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - an error raised before the call had metadata
        return None
    for key, value in metadata:
        if key == RETRY_AFTER_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return None
    return None


def next_delay(exc: grpc.RpcError, attempt: int, backoff: float) -> float | None:
    """Seconds to wait before attempt ``attempt + 1`` (0-based), or None: do not retry."""
    code = exc.code()
    hint = retry_after(exc) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
    if code != grpc.StatusCode.UNAVAILABLE and hint is None:
        return None
    delay = random.uniform(0.5, 1.0) * min(MAX_BACKOFF_SECONDS, backoff * 2**attempt)
    return max(delay, hint or 0.0)


class Deadline:
    """The overall deadline of a call and its retries (None: none)."""

    def __init__(self, timeout: float | None):
        self.end = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    def allows(self, delay: float) -> bool:
        """Whether an attempt started after ``delay`` would still have time to run."""
        return self.end is None or time.monotonic() + delay < self.end
