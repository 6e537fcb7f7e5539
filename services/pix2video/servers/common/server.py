"""A grpc.aio server with what every pix2video service needs: the standard
health service (NOT_SERVING until warm), reflection, explicit message-size
limits, the error interceptor (which also counts calls and frames by status
code), OpenTelemetry's server interceptor when tracing is on, Prometheus
metrics over HTTP on the metrics port, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .errors import ErrorInterceptor
from .metrics import MetricsEndpoint, start_metrics_endpoint
from .settings import ServerSettings
from .telemetry import Telemetry

log = logging.getLogger(__name__)

# add_servicers(server) registers the service's servicers and returns their full names.
AddServicers = Callable[[grpc.aio.Server], list[str]]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]
    settings: ServerSettings
    telemetry: Telemetry | None = None
    metrics_endpoint: MetricsEndpoint | None = None
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is served on (None: off, or it could not be opened)."""
        return self.metrics_endpoint.port if self.metrics_endpoint is not None else None

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self) -> None:
        """Reports NOT_SERVING (load balancers drain), then lets calls finish."""
        await self.set_serving(False)
        await self.server.stop(self.settings.grace_seconds)
        for cb in self.on_stop:
            await cb()
        if self.metrics_endpoint is not None:
            await asyncio.to_thread(self.metrics_endpoint.close)
            self.metrics_endpoint = None
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.tracing.shutdown)


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


async def start_server(
    settings: ServerSettings,
    add_servicers: AddServicers,
    warmup: Callable[[], Awaitable[None]] | None = None,
    telemetry: Telemetry | None = None,
) -> RunningServer:
    """Starts listening at once (health answers NOT_SERVING, metrics are
    served), runs ``warmup``, then reports SERVING.

    ``telemetry``: the service's metrics and tracing (default: new ones named
    ``pix2video``); its calls are counted and, with tracing on, traced.
    """
    telemetry = telemetry or Telemetry(settings, "pix2video")
    interceptors = [*telemetry.tracing.server_interceptors(), ErrorInterceptor(telemetry.metrics, settings)]
    server = grpc.aio.server(interceptors=interceptors, options=channel_options(settings.max_message_bytes))
    names = add_servicers(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(settings.address)
    if port == 0:
        raise OSError(f"cannot listen on {settings.address}")
    running = RunningServer(server, port, health_servicer, names, settings, telemetry)
    await running.set_serving(False)
    await server.start()
    running.metrics_endpoint = start_metrics_endpoint(telemetry.metrics, settings.host, settings.metrics_port)
    if warmup is not None:
        try:
            await warmup()
        except BaseException:
            await server.stop(0)
            if running.metrics_endpoint is not None:
                running.metrics_endpoint.close()
            telemetry.tracing.shutdown()
            raise
    await running.set_serving(True)
    log.info(
        "serving %s on port %d (metrics: %s)",
        ", ".join(names),
        port,
        f"port {running.metrics_port}" if running.metrics_port is not None else "off",
    )
    return running


async def serve_forever(servers: list[RunningServer]) -> None:
    """Runs until SIGTERM or SIGINT, then stops every server gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping (grace %.0f s)", max(s.settings.grace_seconds for s in servers))
    await asyncio.gather(*(s.stop() for s in servers))


async def _stop_all(servers: list[RunningServer]) -> None:
    # A coroutine (run_coroutine_threadsafe takes no future), and gather() runs
    # on the servers' own loop.
    await asyncio.gather(*(s.stop() for s in servers))


class ServerThread:
    """Runs servers on an event loop in a background thread (tests, notebooks).

    ``start(coro_factory)`` runs ``await coro_factory()`` on that loop, which
    should return a list of RunningServer; ``stop()`` stops them.
    """

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[RunningServer] = []

    def run(self, coro, timeout: float | None = 300):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, factory) -> list[RunningServer]:
        self.servers += self.run(factory())
        return self.servers

    def stop(self) -> None:
        try:
            self.run(_stop_all(self.servers), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
