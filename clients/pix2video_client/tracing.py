"""Optional OpenTelemetry tracing for the SDK.

Only used when ``opentelemetry-api`` is installed; the SDK never requires it.
Each SDK call gets a CLIENT span (child of the caller's current span) and
sends its W3C trace context (``traceparent``, and ``tracestate``/``baggage``
when set) in the gRPC metadata, so the services' spans join the caller's
trace. ``edit_video`` makes one INTERNAL span around the whole job, so the
inversion and the edit share one trace.

Spans go to the ``tracer_provider`` given to the client, else to the
application's global provider (the API's no-op one unless the application
set one up), so an application without OpenTelemetry pays nothing.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

try:  # optional dependency
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
    from opentelemetry.trace import SpanKind as _SpanKind
    from opentelemetry.trace import Status as _Status
    from opentelemetry.trace import StatusCode as _StatusCode
except ImportError:  # pragma: no cover - exercised where opentelemetry is absent
    _trace = None

AVAILABLE = _trace is not None
INSTRUMENTATION = "pix2video_client"


class RpcSpan:
    """A CLIENT span for one SDK call (possibly several attempts)."""

    __slots__ = ("span", "metadata")

    def __init__(self, span, metadata: tuple[tuple[str, str], ...] | None):
        self.span, self.metadata = span, metadata

    def fail(self, code_name: str, details: str = "") -> None:
        if self.span is not None:
            self.span.set_attribute("rpc.grpc.status_code_name", code_name)
            self.span.set_status(_Status(_StatusCode.ERROR, f"{code_name}: {details}"[:300]))

    def set(self, key: str, value) -> None:
        if self.span is not None:
            self.span.set_attribute(key, value)

    def end(self) -> None:
        if self.span is not None:
            self.span.end()
            self.span = None


_NO_SPAN = RpcSpan(None, None)


class ClientTracer:
    """Spans of one client; inert when OpenTelemetry is not installed."""

    def __init__(self, tracer_provider=None):
        if _trace is None:
            self._tracer = None
            return
        self._tracer = _trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)

    def rpc(self, full_method: str) -> RpcSpan:
        """Starts a CLIENT span named after ``full_method`` ("pkg.Service/Method")
        and returns it with the metadata that carries its context."""
        if self._tracer is None:
            return _NO_SPAN
        service, _, method = full_method.partition("/")
        span = self._tracer.start_span(
            full_method,
            kind=_SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )
        # Without an SDK the span is the caller's context (or an invalid one,
        # which injects nothing): what is sent is always the right parent.
        carrier: dict[str, str] = {}
        _propagate.inject(carrier, context=_trace.set_span_in_context(span))
        return RpcSpan(span, tuple(carrier.items()) or None)

    @contextlib.contextmanager
    def job(self, name: str, **attributes) -> Iterator[None]:
        """An INTERNAL span around a whole job (current while the block runs)."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span(name, attributes=attributes or None):
            yield
