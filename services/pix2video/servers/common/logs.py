"""Structured logs: one JSON object a line, with the current trace and span ids.

``{"time": "2026-01-01T12:00:00.123Z", "level": "INFO", "logger": "...",
"message": "...", "trace_id": "4bf9...", "span_id": "00f0..."}``; ``trace_id``
and ``span_id`` (lowercase hex, as in ``traceparent``) are present when the
record was logged inside a recorded span, so a log line can be found from a
trace and the other way round. Exceptions go in ``exception``; fields passed
with ``extra=`` are kept.
"""

from __future__ import annotations

import json
import logging
import time

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the services depend on it
    _trace = None

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span as hex, or None outside one."""
    if _trace is None:
        return None
    ctx = _trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class TraceContextFilter(logging.Filter):
    """Stamps ``trace_id`` and ``span_id`` on records where they are logged
    (a handler may format them later, on another thread)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            ids = current_ids()
            record.trace_id, record.span_id = ids if ids else ("", "")
        return True


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object a line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)
        span_id = getattr(record, "span_id", None)
        if trace_id is None:
            ids = current_ids()
            trace_id, span_id = ids if ids else ("", "")
        if trace_id:
            out["trace_id"], out["span_id"] = trace_id, span_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in ("trace_id", "span_id") and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)
