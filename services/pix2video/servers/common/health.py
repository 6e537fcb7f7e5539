"""The standard health service, with a Watch that works behind our interceptors.

grpcio's asyncio HealthServicer writes Watch's responses with
``context.write`` and returns None; the error interceptor (like any that
wraps stream handlers) iterates a stream handler's results, so Watch failed
with INTERNAL (TypeError) and client-side health checking could not work.
This Watch is an async generator over the same statuses.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health


class _Writer:
    """Stands in for the context the stock Watch writes to: collects its responses."""

    def __init__(self, context):
        self.context = context
        self.queue: asyncio.Queue = asyncio.Queue()

    async def write(self, response) -> None:
        await self.queue.put(response)

    def __getattr__(self, name):  # abort() and the rest: the real context's
        return getattr(self.context, name)


class HealthServicer(health.aio.HealthServicer):
    """grpcio's asyncio health service, with Watch as an async generator."""

    async def Watch(self, request, context):
        writer = _Writer(context)
        watcher = asyncio.ensure_future(super().Watch(request, writer))
        try:
            while True:
                get = asyncio.ensure_future(writer.queue.get())
                await asyncio.wait({get, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    watcher.result()  # the stock Watch ended: its error, if any
                    return
                yield get.result()
        finally:
            watcher.cancel()
