"""Dynamic batching: items from every concurrent call, one model call per batch.

``await batcher.submit(item)`` returns that item's result. Items that arrive
together (from any number of calls and streams) are grouped into batches of at
most ``max_batch``; a batch waits at most ``max_wait_ms`` after its first item
for more to come. ``fn(items) -> results`` is blocking model code; it runs in
one dedicated worker thread, so model work is serialised (one GPU, one stream
of kernels) and the event loop stays free to read and write messages.

While a batch runs, new items queue up; the next batch takes them at once, so
under load batches fill up by themselves and the wait only matters when idle.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, Sequence, TypeVar

from ...errors import Busy, Unavailable

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class DynamicBatcher(Generic[Item, Result]):
    """Groups concurrently submitted items into batches for ``fn``.

    Args:
        fn: blocking ``fn(list_of_items) -> list_of_results`` (same length, same
            order). An exception fails exactly the submissions of that batch.
        max_batch: most items per call of ``fn``.
        max_wait_ms: longest a batch waits after its first item for more.
        max_queue: most items waiting (not yet in a batch); beyond it ``submit``
            raises :class:`Busy` (RESOURCE_EXHAUSTED). 0: unbounded.
        name: name of the worker thread (logs, profilers).
        on_batch: optional ``on_batch(items, seconds)`` after each call of ``fn``
            that succeeded (metrics): how many items, how long ``fn`` took.

    Counters: ``batches`` (calls of ``fn``) and ``items`` (items passed to it).
    """

    def __init__(
        self,
        fn: Callable[[list[Item]], Sequence[Result]],
        max_batch: int,
        max_wait_ms: float,
        max_queue: int = 0,
        name: str = "batcher",
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.name = name
        self.on_batch = on_batch
        self.batches = 0
        self.items = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: collections.deque[tuple[Item, asyncio.Future]] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closed = False

    # -- public ---------------------------------------------------------------

    async def submit(self, item: Item) -> Result:
        """Queues ``item`` and returns its result once its batch has run."""
        if self._closed:
            raise Unavailable(f"{self.name}: shutting down")
        if self.max_queue and len(self._pending) >= self.max_queue:
            raise Busy(f"{self.name}: queue full ({self.max_queue} items waiting)")
        self._start()
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        # If the caller is cancelled, so is the future; the collector skips it.
        return await future

    async def run_in_worker(self, fn: Callable, *args):
        """Runs ``fn(*args)`` in the worker thread, between batches (warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Stops taking items, fails those still waiting, lets a running batch end."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(Unavailable(f"{self.name}: shutting down"))
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    # -- internals --------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._collect(), name=f"{self.name}-collector")

    def _live(self) -> int:
        # Submissions cancelled while waiting need no batch slot.
        while self._pending and self._pending[0][1].done():
            self._pending.popleft()
        return sum(1 for _, f in self._pending if not f.done())

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._live() == 0:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = loop.time() + self.max_wait
            while self._live() < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch: list[tuple[Item, asyncio.Future]] = []
            while self._pending and len(batch) < self.max_batch:
                item, future = self._pending.popleft()
                if not future.done():
                    batch.append((item, future))
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        items = [item for item, _ in batch]
        self.batches += 1
        self.items += len(items)
        try:
            # shield: closing the batcher must not abandon a batch mid-way with
            # its futures unresolved; the worker thread finishes it anyway.
            start = time.perf_counter()
            results = await asyncio.shield(loop.run_in_executor(self._executor, self.fn, items))
            seconds = time.perf_counter() - start
            results = list(results)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: fn returned {len(results)} results for {len(items)} items")
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(Unavailable(f"{self.name}: shutting down"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to exactly this batch's callers
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            if self.on_batch is not None:
                try:
                    self.on_batch(len(items), seconds)
                except Exception:  # noqa: BLE001 - metrics must not fail the batch
                    log.exception("%s: on_batch hook failed", self.name)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
