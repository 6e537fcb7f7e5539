"""Starting a service whose worker runs batches of items from concurrent calls
(depth: frames through DPT; caption: images through BLIP): one ``build`` for both."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import grpc

from .batcher import DynamicBatcher
from .metrics import BatchMetrics
from .server import RunningServer, start_server
from .telemetry import Telemetry


async def build_batched_service(
    settings: Any,
    *,
    name: str,
    service_name: str,
    item: str,
    model: str,
    load_worker: Callable[[], Any],
    run_batch: Callable[[Any], Callable[[list], list]],
    make_servicer: Callable[[Any, DynamicBatcher], Any],
    register: Callable[[Any, grpc.aio.Server], None],
    unary_method: str,
    worker: Any = None,
) -> RunningServer:
    """Loads the worker (``load_worker()`` in a thread; unless given), starts the
    server, warms up in the batcher's worker thread, then reports SERVING.

    Args:
        name: the service's short name (metrics, telemetry, the batcher's thread).
        service_name: the gRPC service's full name (health, reflection).
        item, model: what a batch holds and runs through (metric descriptions).
        run_batch: worker -> the function the batcher calls with a list of items.
        make_servicer: (worker, batcher) -> the servicer.
        register: (servicer, server) -> None: adds the servicer to the server.
        unary_method: the method whose responses count as one frame each.
    """
    if worker is None:
        worker = await asyncio.to_thread(load_worker)  # torch enters here, not at import
    telemetry = Telemetry(settings, name)
    stats = BatchMetrics(telemetry.metrics, name, item, model)
    batcher = DynamicBatcher(
        run_batch(worker), settings.batch_size, settings.max_wait_ms, name=f"{name}-batcher", on_batch=stats.on_batch
    )
    stats.watch(batcher)
    telemetry.metrics.count_frames(f"{service_name}/{unary_method}", lambda response: 1)
    servicer = make_servicer(worker, batcher)

    def add(server: grpc.aio.Server) -> list[str]:
        register(servicer, server)
        return [service_name]

    running = await start_server(
        settings, add, warmup=lambda: batcher.run_in_worker(worker.warmup), telemetry=telemetry
    )
    running.on_stop.append(batcher.close)
    running.servicer = servicer  # for tests and metrics: servicer.batcher.batches / .items
    return running
