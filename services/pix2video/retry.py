"""Retries with exponential backoff and jitter, inside a time budget and the
caller's deadline (no gRPC here: callers say what is worth retrying).

A dependency that restarts (a rolling update of depth, an S3 node that comes
back) is ridden out as long as it returns within the budget; a failure that
retrying cannot fix (bad input, refused credentials) is raised at once.

The caller's deadline travels in a context variable (:func:`deadline`), so
code on a worker thread started with :func:`asyncio.to_thread` (which copies
the context) sees the gRPC call's deadline without it being passed through
every signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from .errors import FailedPrecondition, InvalidInput, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("pix2video_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Runs the block with a deadline ``seconds`` from now (None: none); an
    enclosing earlier deadline still wins."""
    if seconds is None:
        yield
        return
    end = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left() -> float | None:
    """Seconds to the current deadline (None: no deadline)."""
    end = _deadline.get()
    return None if end is None else end - time.monotonic()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: waits ``initial * multiplier**k``
    (at most ``max_backoff``), less a random share up to ``jitter`` of it,
    while the next attempt would still start inside ``budget`` seconds of the
    first and inside the caller's deadline."""

    budget: float = 30.0
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self):
        if self.budget < 0:
            raise InvalidInput(f"retry budget: must be >= 0, got {self.budget}")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise InvalidInput(f"retry backoff: need 0 < initial ({self.initial_backoff}) <= max ({self.max_backoff})")
        if self.multiplier < 1:
            raise InvalidInput(f"retry multiplier: must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise InvalidInput(f"retry jitter: must be in [0, 1], got {self.jitter}")

    def delays(self) -> Iterator[float]:
        k = 0
        while True:
            base = min(self.max_backoff, self.initial_backoff * self.multiplier**k)
            yield base * (1 - self.jitter * random.random())
            k += 1

    def call(
        self,
        fn: Callable[[float | None], T],
        retryable: Callable[[BaseException], bool],
        what: str = "call",
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """``fn(timeout)`` until it succeeds, fails with what ``retryable``
        rejects, or the budget or deadline runs out (then its last error).
        ``timeout`` is the time left to the caller's deadline (None: none), for
        the attempt's own deadline."""
        start = time.monotonic()
        end = start + self.budget
        caller_end = _deadline.get()
        delays = self.delays()
        attempt = 1
        longest = 0.0  # the longest attempt so far: the guess at the next one's length
        while True:
            began = time.monotonic()
            left = None if caller_end is None else caller_end - began
            try:
                return fn(left)
            except Exception as exc:  # noqa: BLE001 - sorted by retryable
                if not retryable(exc):
                    raise
                delay = next(delays)
                now = time.monotonic()
                # Give up while the caller can still be told why: an attempt
                # that would likely not finish before the caller's deadline
                # turns the real error into DEADLINE_EXCEEDED. It is judged by
                # the longest attempt so far, not the last: attempts are uneven
                # (an S3 store's attempt may first wait on its bucket check's
                # lock, held by a readiness probe), and one judged by a short
                # last attempt once outran a 30 s deadline on a loaded machine.
                longest = max(longest, now - began)
                if now + delay >= end or (caller_end is not None and now + delay + longest >= caller_end):
                    log.warning("%s: giving up after %d attempts in %.1f s: %s", what, attempt, now - start, exc)
                    raise
                log.info("%s: attempt %d failed (%s); retrying in %.2f s", what, attempt, exc, delay)
                sleep(delay)
                attempt += 1


def transient(exc: BaseException) -> bool:
    """Worth retrying: a dependency could not be reached; not a refusal that
    stays a refusal (FailedPrecondition: wrong credentials, missing bucket)."""
    return isinstance(exc, Unavailable) and not isinstance(exc, FailedPrecondition)
