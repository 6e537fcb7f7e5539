"""Prometheus metrics of one service, served over HTTP on its metrics port.

Each running server has its own :class:`ServiceMetrics` with its own
``CollectorRegistry`` (``serve --all`` and the tests run several services in
one process, so nothing goes to prometheus_client's global registry).

Conventions: names ``pix2video_<what>_<unit>``, base units (seconds, bytes),
counters end in ``_total``; labels have a few known values each (rpc names,
status codes, stages, store operations), never session or video ids.

Metrics every service has (this module):

=========================================== ========= ======================================
``pix2video_grpc_requests_total``           counter   rpc, code: calls handled
``pix2video_grpc_frames_total``             counter   rpc, code: frames a call delivered
``pix2video_grpc_request_duration_seconds`` histogram rpc: whole call, streams included
``pix2video_grpc_requests_in_flight``       gauge     rpc
``pix2video_store_operations_total``        counter   operation, result (ok/not_found/conflict/error)
``pix2video_store_operation_seconds``       histogram operation
``pix2video_store_bytes_total``             counter   operation (put/get)
``pix2video_gpu_memory_allocated_bytes``    gauge     device: in use by tensors (CUDA only)
``pix2video_gpu_memory_reserved_bytes``     gauge     device: held by torch's caching allocator
``pix2video_build_info``                    gauge     service, version
``process_*``, ``python_*``                           the standard process collectors
=========================================== ========= ======================================

The services add their own (see each ``server.py``): depth, caption and
inversion per-frame latency, the editor's per-frame latency by stage, end to
end and time to first frame, batch sizes and queue depths, its injected-feature
slots (preallocated and in use) and the UNet graphs captured at warm-up.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# 5 ms .. 60 s: a depth frame on a GPU takes milliseconds, a 50-step edit of a
# frame on a busy replica tens of seconds.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# Items per batched model call.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pix2video")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


class GpuMemoryCollector:
    """GPU memory of this process, per CUDA device, read at scrape time.

    Absent when torch is not loaded, has no CUDA, or has not initialised it (a
    scrape never initialises CUDA itself).
    """

    def collect(self):
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        used = GaugeMetricFamily(
            "pix2video_gpu_memory_allocated_bytes",
            "GPU memory in use by tensors (torch.cuda.memory_allocated).",
            labels=["device"],
        )
        reserved = GaugeMetricFamily(
            "pix2video_gpu_memory_reserved_bytes",
            "GPU memory held by torch's caching allocator (torch.cuda.memory_reserved).",
            labels=["device"],
        )
        for i in range(torch.cuda.device_count()):
            used.add_metric([str(i)], float(torch.cuda.memory_allocated(i)))
            reserved.add_metric([str(i)], float(torch.cuda.memory_reserved(i)))
        yield used
        yield reserved

    def describe(self):
        return []  # labels depend on the devices; no up-front description


class RpcCall:
    """One call seen by the interceptor: count its frames, then :meth:`end` it."""

    __slots__ = ("metrics", "rpc", "count", "frames", "started")

    def __init__(self, metrics: "ServiceMetrics", rpc: str, count: Callable[[object], int] | None):
        self.metrics, self.rpc, self.count = metrics, rpc, count
        self.frames = 0
        self.started = time.perf_counter()
        metrics.rpc_in_flight.labels(rpc).inc()

    def sent(self, response) -> None:
        if self.count is not None and response is not None:
            self.frames += self.count(response)

    def end(self, code) -> None:
        m, name = self.metrics, getattr(code, "name", str(code))
        m.rpc_in_flight.labels(self.rpc).dec()
        m.rpc_requests.labels(self.rpc, name).inc()
        if self.frames:
            m.rpc_frames.labels(self.rpc, name).inc(self.frames)
        m.rpc_seconds.labels(self.rpc).observe(time.perf_counter() - self.started)


class ServiceMetrics:
    """The registry and the shared metrics of one service.

    Args:
        service: the service's name (``depth``, ``caption``, ``inversion``, ``editor``).
    """

    def __init__(self, service: str):
        self.service = service
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        r.register(GpuMemoryCollector())
        self.gauge(
            "pix2video_build_info", "Always 1; the labels tell the service and its version.", ["service", "version"]
        ).labels(service, _version()).set(1)
        self.rpc_requests = self.counter(
            "pix2video_grpc_requests_total", "gRPC calls handled, by rpc and status code.", ["rpc", "code"]
        )
        self.rpc_frames = self.counter(
            "pix2video_grpc_frames_total",
            "Frames delivered by gRPC calls (depth maps, captions, edited frames, inverted frames), by rpc and the "
            "call's status code.",
            ["rpc", "code"],
        )
        self.rpc_seconds = self.histogram(
            "pix2video_grpc_request_duration_seconds", "Duration of gRPC calls, streams included.", ["rpc"]
        )
        self.rpc_in_flight = self.gauge("pix2video_grpc_requests_in_flight", "gRPC calls being handled.", ["rpc"])
        self.store_operations = self.counter(
            "pix2video_store_operations_total",
            "Object store operations, by operation and result.",
            ["operation", "result"],
        )
        self.store_seconds = self.histogram(
            "pix2video_store_operation_seconds", "Latency of object store operations.", ["operation"]
        )
        self.store_bytes = self.counter(
            "pix2video_store_bytes_total", "Bytes written to and read from the object store.", ["operation"]
        )
        self._frame_counters: dict[str, Callable[[object], int]] = {}

    # -- making metrics in this registry --------------------------------------

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name.removesuffix("_total"), doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, doc, list(labels), registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = SECONDS_BUCKETS
    ) -> Histogram:
        return Histogram(name, doc, list(labels), buckets=tuple(buckets), registry=self.registry)

    # -- the interceptor's hooks ------------------------------------------------

    def count_frames(self, rpc: str, count: Callable[[object], int]) -> None:
        """Tells how many frames a response message of ``rpc`` carries
        (``"pkg.Service/Method"``); rpcs not named deliver no frames."""
        self._frame_counters[rpc] = count

    def begin(self, method: str) -> RpcCall:
        rpc = method.lstrip("/")
        return RpcCall(self, rpc, self._frame_counters.get(rpc))


def observe_many(histogram, value: float, times: int) -> None:
    """``times`` observations of ``value`` (every frame of a batch)."""
    for _ in range(times):
        histogram.observe(value)


class MetricsEndpoint:
    """``/metrics`` over HTTP for one registry, in a daemon thread; over HTTPS
    with ``tls`` (a :class:`~.tls.ServerTls`: its files are re-checked at each
    connection, so a rotated certificate is served without a restart)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, tls=None):
        if tls is None:
            self.httpd, self.thread = start_http_server(port, addr=host or "0.0.0.0", registry=registry)
        else:
            self.httpd, self.thread = _start_https_server(registry, host or "0.0.0.0", port, tls)
        self.port = self.httpd.server_port

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _start_https_server(registry: CollectorRegistry, host: str, port: int, tls):
    """prometheus_client's WSGI server with our own SSLContext (one that
    follows the certificate files) instead of one built once from paths."""
    from wsgiref.simple_server import make_server

    from prometheus_client import exposition

    class Server(exposition.ThreadingWSGIServer):
        def get_request(self):
            tls.changed()  # picks up rotated files before this connection's handshake
            return super().get_request()

        def handle_error(self, request, client_address):
            # A failed handshake (plaintext, unknown or missing client
            # certificate) is the client's problem: one line, no traceback on stderr.
            log.info("metrics: connection from %s failed: %s", client_address[0], sys.exc_info()[1])

    Server.address_family, addr = exposition._get_best_family(host, port)
    httpd = make_server(addr, port, exposition.make_wsgi_app(registry), Server, handler_class=exposition._SilentHandler)
    # The handshake runs in the connection's own thread (at its first read),
    # so a client that connects and says nothing does not stall the others.
    httpd.socket = tls.ssl_context().wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


def start_metrics_endpoint(metrics: ServiceMetrics, host: str, port: int, tls=None) -> MetricsEndpoint | None:
    """Serves ``metrics`` on ``host:port`` (0: a free port; -1: not at all).

    A port that cannot be opened is logged, not fatal: the service still
    serves, and Prometheus reports the target down (alert Pix2VideoTargetDown).
    """
    if port < 0:
        return None
    try:
        return MetricsEndpoint(metrics.registry, host, port, tls)
    except OSError as exc:
        log.error("%s: metrics endpoint not started: cannot listen on %s:%d (%s)", metrics.service, host, port, exc)
        return None


class BatchMetrics:
    """Per-item latency, batch size and queue depth of a DynamicBatcher.

    ``pix2video_<prefix>_<unit>_seconds`` (histogram): per item, the model
    call it was batched into (items of one batch share its duration);
    ``pix2video_<prefix>_batch_size`` (histogram): items per model call;
    ``pix2video_<prefix>_queued_<unit>s`` (gauge): items waiting for a call.
    """

    def __init__(self, metrics: ServiceMetrics, prefix: str, unit: str, model: str):
        self.item_seconds = metrics.histogram(
            f"pix2video_{prefix}_{unit}_seconds",
            f"{model} latency per {unit}: the batched {model} call it ran in ({unit}s of one batch share it).",
        )
        self.batch_size = metrics.histogram(
            f"pix2video_{prefix}_batch_size", f"{unit.capitalize()}s per {model} call.", buckets=BATCH_BUCKETS
        )
        self.queued = metrics.gauge(
            f"pix2video_{prefix}_queued_{unit}s", f"{unit.capitalize()}s accepted and waiting for a {model} call."
        )

    def on_batch(self, items: int, seconds: float) -> None:
        self.batch_size.observe(items)
        observe_many(self.item_seconds, seconds, items)

    def watch(self, batcher) -> None:
        self.queued.set_function(lambda: batcher.queued)
