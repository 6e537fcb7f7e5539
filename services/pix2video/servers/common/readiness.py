"""Readiness that means it: the health status follows the service's dependencies.

Each check is a blocking callable that raises when its dependency cannot be
used (the store with its credentials and bucket, a peer service's health).
They run before the service first reports SERVING and every ``interval``
seconds after; while one fails the service reports NOT_SERVING, and each
change is logged once, naming what failed (not once per check).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

log = logging.getLogger(__name__)

Check = Callable[[], None]


def _one_line(exc: BaseException) -> str:
    # The operator's detail (endpoint, bucket) where the error has one: this is a log line, not a reply.
    text = " ".join(str(getattr(exc, "detail", None) or exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Readiness:
    def __init__(self, checks: dict[str, Check], interval: float, timeout: float = 10.0):
        """``checks``: name (what the log line says failed) -> check."""
        self.checks = checks
        self.interval = interval
        self.timeout = timeout
        self.failure: str | None = "not checked yet"
        self._task: asyncio.Task | None = None

    async def check_once(self) -> str | None:
        """The first failing dependency as ``name: reason``, or None when all are fine."""
        for name, check in self.checks.items():
            try:
                await asyncio.wait_for(asyncio.to_thread(check), self.timeout)
            except asyncio.TimeoutError:
                return f"{name}: no answer within {self.timeout:g} s"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                return f"{name}: {_one_line(exc)}"
        return None

    async def update(self, set_serving: Callable[[bool], object], service: str) -> None:
        failure = await self.check_once()
        if failure != self.failure:
            if failure is None:
                log.info("%s ready: every dependency answers; SERVING", service)
            else:
                log.warning("%s not ready: %s; NOT_SERVING", service, failure)
        self.failure = failure
        await set_serving(failure is None)

    async def start(self, set_serving: Callable[[bool], object], service: str) -> None:
        """Checks once now (before the first SERVING), then every interval in a task."""
        await self.update(set_serving, service)

        async def loop():
            while True:
                await asyncio.sleep(self.interval)
                await self.update(set_serving, service)

        self._task = asyncio.ensure_future(loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
