"""OpenTelemetry traces of one service.

Each running server has its own :class:`Tracing`: with ``tracing`` set to
``console``, ``otlp`` or ``memory`` it owns a TracerProvider (resource
``service.name = pix2video-<service>``, so services that share a process in
``serve --all`` still show as four), installs the gRPC server interceptor of
opentelemetry-instrumentation-grpc (the W3C ``traceparent`` of a call's
metadata becomes the parent of its server span) and instruments the channels
the service calls other services with (the current span's context goes out
in ``traceparent``). With ``off`` there is no provider, no interceptor and
:meth:`Tracing.span` returns a shared no-op context: the cost is one
attribute test per span site.

Spans of one inversion job: the client's span -> ``Invert`` (server) ->
``decode``, ``depth`` -> ``EstimateDepth`` (client, then the depth service's
server span), ``caption`` -> ``Caption`` (likewise), ``inversion``, ``store``
and one span per store operation. Of one edit: the client's span -> ``Edit``
(server) -> ``open session`` (with its store reads) and one ``edit frame``
span per frame sent, from the frame's first denoising step to its message
going out, with its time per stage as attributes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode

from .settings import ServerSettings

log = logging.getLogger(__name__)

_NULL = contextlib.nullcontext()
_memory: InMemorySpanExporter | None = None


def memory_exporter() -> InMemorySpanExporter:
    """The exporter that every service with ``tracing=memory`` in this process
    writes its finished spans to (synchronously)."""
    global _memory
    if _memory is None:
        _memory = InMemorySpanExporter()
    return _memory


def _not_infrastructure(details) -> bool:
    """Health checks and reflection get no spans (probes call them every few seconds)."""
    method = getattr(details, "method", None) or getattr(details, "full_method", "") or ""
    if isinstance(method, bytes):
        method = method.decode()
    return not method.lstrip("/").startswith(("grpc.health.", "grpc.reflection."))


def perf_to_epoch_ns(perf_seconds: float) -> int:
    """A ``time.perf_counter()`` reading as an epoch timestamp in ns (span times)."""
    return time.time_ns() - int((time.perf_counter() - perf_seconds) * 1e9)


class Tracing:
    """Tracing of one service.

    Args:
        settings: ``tracing``, ``otlp_endpoint``, ``trace_sample_ratio``.
        service: the service's short name; the resource's ``service.name`` is
            ``pix2video-<service>``.
    """

    def __init__(self, settings: ServerSettings, service: str):
        self.kind = settings.tracing
        self.enabled = self.kind != "off"
        self.provider: TracerProvider | None = None
        if not self.enabled:
            self.tracer = trace.NoOpTracer()
            return
        resource = Resource.create({"service.name": f"pix2video-{service}", "service.namespace": "pix2video"})
        sampler = ParentBased(TraceIdRatioBased(settings.trace_sample_ratio))
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        if self.kind == "memory":
            self.provider.add_span_processor(SimpleSpanProcessor(memory_exporter()))
        elif self.kind == "console":
            self.provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        else:  # otlp
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            endpoint = settings.otlp_endpoint
            insecure = not endpoint.startswith("https://")
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure)))
        self.tracer = self.provider.get_tracer("pix2video.servers")
        log.info(
            "tracing %s: spans of pix2video-%s go to %s",
            self.kind,
            service,
            settings.otlp_endpoint if self.kind == "otlp" else self.kind,
        )

    # -- gRPC -------------------------------------------------------------------

    def server_interceptors(self) -> list:
        """The aio server interceptor (first in the chain, so its span covers
        the error mapping and records the final status), or none when off."""
        if not self.enabled:
            return []
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return [aio_server_interceptor(tracer_provider=self.provider, filter_=_not_infrastructure)]

    def instrument_channel(self, channel):
        """A sync channel whose calls get client spans and carry ``traceparent``."""
        if not self.enabled:
            return channel
        from opentelemetry.instrumentation.grpc import client_interceptor
        from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

        return intercept_channel(
            channel, client_interceptor(tracer_provider=self.provider, filter_=_not_infrastructure)
        )

    # -- spans --------------------------------------------------------------------

    def span(self, name: str, attributes: Mapping[str, object] | None = None):
        """A span around a block, child of the current one (no-op when off)."""
        if not self.enabled:
            return _NULL
        return self.tracer.start_as_current_span(name, attributes=attributes)

    def recording(self) -> bool:
        """Whether a span of this service is current (a child would be recorded)."""
        return self.enabled and trace.get_current_span().is_recording()

    def record(
        self,
        name: str,
        start_perf: float,
        end_perf: float | None = None,
        attributes: Mapping[str, object] | None = None,
        parent: trace.Span | None = None,
        error: str | None = None,
    ) -> None:
        """A finished span from ``time.perf_counter()`` readings, child of
        ``parent`` (default the current span): work that ran elsewhere (the
        editor's scheduler thread) reported afterwards."""
        if not self.enabled:
            return
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        end_perf = time.perf_counter() if end_perf is None else end_perf
        span = self.tracer.start_span(name, context=ctx, start_time=perf_to_epoch_ns(start_perf), attributes=attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=perf_to_epoch_ns(end_perf))

    def current_span(self) -> trace.Span | None:
        return trace.get_current_span() if self.enabled else None

    def shutdown(self) -> None:
        """Flushes and stops the exporter (pending spans are sent)."""
        if self.provider is not None:
            self.provider.shutdown()
