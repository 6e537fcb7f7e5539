"""A grpc.aio server with what every pix2video service needs: the standard
health service (NOT_SERVING until warm), reflection, explicit message-size
limits, the error interceptor (which also counts calls and frames by status
code), OpenTelemetry's server interceptor when tracing is on, Prometheus
metrics over HTTP on the metrics port, and a graceful stop on SIGTERM.

With the TLS settings both ports speak TLS (mutual with a client CA; see
:mod:`.tls`); with a tokens file or client-certificate tenants every call but
health is authenticated and runs as its tenant (:mod:`.auth`)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .auth import AuthInterceptor, authenticator
from .errors import ErrorInterceptor
from .health import HealthServicer
from .metrics import MetricsEndpoint, start_metrics_endpoint
from .reflection import enable_reflection
from .settings import ServerSettings
from .telemetry import Telemetry
from .tls import ServerTls, server_tls

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
    tls: ServerTls | None = None
    health_server: grpc.aio.Server | None = None  # plaintext, health only (health_port)
    health_port: int | None = None
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
        if self.health_server is not None:
            await self.health_server.stop(0)
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
    tls = server_tls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    auth = authenticator(settings.auth_tokens_file, settings.tenant_from_client_cert)
    # Auth inside the error interceptor: refused calls are counted by status like any other.
    interceptors = [*telemetry.tracing.server_interceptors(), ErrorInterceptor(telemetry.metrics, settings)]
    if auth is not None:
        interceptors.append(AuthInterceptor(auth))
    server = grpc.aio.server(interceptors=interceptors, options=channel_options(settings.max_message_bytes))
    names = add_servicers(server)
    health_servicer = HealthServicer()  # Watch works behind the interceptors
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection([*names, health.SERVICE_NAME], server)  # v1 and v1alpha
    if tls is not None:
        port = server.add_secure_port(settings.address, tls.server_credentials())
    else:
        port = server.add_insecure_port(settings.address)
    if port == 0:
        raise OSError(f"cannot listen on {settings.address}")
    warn_if_exposed(settings, port, tls is not None, auth is not None)
    running = RunningServer(server, port, health_servicer, names, settings, telemetry, tls=tls)
    await running.set_serving(False)
    await server.start()
    if settings.health_port >= 0:
        # Kubernetes' gRPC probes speak plaintext only: a second server with the
        # same health servicer and nothing else (health says nothing about tenants).
        running.health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, running.health_server)
        running.health_port = running.health_server.add_insecure_port(f"{settings.host}:{settings.health_port}")
        if running.health_port == 0:
            await server.stop(0)
            raise OSError(f"cannot listen on {settings.host}:{settings.health_port}")
        await running.health_server.start()
    running.metrics_endpoint = start_metrics_endpoint(telemetry.metrics, settings.host, settings.metrics_port, tls)
    if warmup is not None:
        try:
            await warmup()
        except BaseException:
            await server.stop(0)
            if running.health_server is not None:
                await running.health_server.stop(0)
            if running.metrics_endpoint is not None:
                running.metrics_endpoint.close()
            telemetry.tracing.shutdown()
            raise
    await running.set_serving(True)
    log.info(
        "serving %s on port %d (%s, %s; metrics: %s)",
        ", ".join(names),
        port,
        ("mutual TLS" if tls.mutual else "TLS") if tls is not None else "plaintext",
        "tokens checked" if auth is not None else "no authentication",
        f"port {running.metrics_port}" if running.metrics_port is not None else "off",
    )
    return running


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(settings: ServerSettings, port: int, tls: bool, auth: bool) -> None:
    """Logs a warning when the ports are reachable beyond this machine without
    TLS or without authentication (the default binds loopback only)."""
    if is_loopback(settings.host):
        return
    missing = [what for what, on in (("TLS", tls), ("authentication", auth)) if not on]
    if missing:
        log.warning(
            "listening on %s beyond loopback without %s: anyone who can reach port %d can %s",
            settings.host,
            " or ".join(missing),
            port,
            "read and edit every video" if not auth else "read the traffic",
        )


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
