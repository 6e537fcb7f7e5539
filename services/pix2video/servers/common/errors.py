"""The one place where domain errors become gRPC status codes.

An aio server interceptor wraps every handler (all four call shapes) so that
servicers just raise :mod:`pix2video.errors` exceptions.

What the client reads is scrubbed (:mod:`.scrub`: no path, endpoint, bucket,
key layout or secret, at most 200 characters); the server's log keeps the
whole message and the error's ``detail``, with the request's trace id, which
goes back to the client in the ``pix2video-trace-id`` trailer (and in the
message itself for server-side faults, so a user can quote it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets

import grpc

from ... import errors
from .logs import current_ids
from .scrub import Scrubber

log = logging.getLogger(__name__)

STATUS = [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Busy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.CorruptObject, grpc.StatusCode.DATA_LOSS),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ModelLoadError, grpc.StatusCode.FAILED_PRECONDITION),
]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    # torch.OutOfMemoryError, matched by name: the transport layer stays torch-free.
    if type(exc).__name__ == "DecompressionBombError":  # PIL's, matched by name like torch's below
        return grpc.StatusCode.INVALID_ARGUMENT, "image: the declared size exceeds the pixel limit"
    if type(exc).__name__ in ("OutOfMemoryError", "MemoryError"):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of memory: {str(exc).splitlines()[0] if str(exc) else ''}"
    if isinstance(exc, errors.Pix2VideoError):
        return grpc.StatusCode.INTERNAL, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})"


TRACE_ID_KEY = "pix2video-trace-id"
# Faults of the server or its dependencies: the client's message carries the trace id.
SERVER_FAULTS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
MAX_LOGGED = 2000  # characters of a message in the log (a hostile client could send megabytes)


def request_ids(context) -> tuple[str, str]:
    """(trace_id, span_id) of the call: its span when tracing is on, else the
    caller's ``traceparent``, else a fresh trace id (so log lines and the
    client's error still match)."""
    ids = current_ids()
    if ids is not None:
        return ids
    try:
        for key, value in context.invocation_metadata() or ():
            if key == "traceparent" and isinstance(value, str):
                m = _TRACEPARENT.match(value.strip())
                if m:
                    return m.group(1), m.group(2)
    except Exception:  # noqa: BLE001 - metadata is best effort here
        pass
    return secrets.token_hex(16), ""


async def _abort(context, exc: BaseException, code: grpc.StatusCode, message: str, method: str, scrub: Scrubber):
    trace_id, span_id = request_ids(context)
    public = scrub(message)
    if code in SERVER_FAULTS:
        public = f"{public} (trace id {trace_id})"
    detail = getattr(exc, "detail", None)
    extra = {"trace_id": trace_id, "span_id": span_id, "rpc": method, "status": code.name}
    if detail:
        extra["detail"] = str(detail)[:MAX_LOGGED]
    if code == grpc.StatusCode.INTERNAL:
        log.error("unexpected error in handler: %s", message[:MAX_LOGGED], exc_info=exc, extra=extra)
    else:
        level = logging.WARNING if code in SERVER_FAULTS else logging.INFO
        log.log(level, "%s %s: %s", method, code.name, message[:MAX_LOGGED], extra=extra)
    trailers = []
    try:
        trailers = [kv for kv in (context.trailing_metadata() or ()) if kv[0] != TRACE_ID_KEY]
    except Exception:  # noqa: BLE001 - older grpcio: no getter
        pass
    await context.abort(code, public, trailing_metadata=(*trailers, (TRACE_ID_KEY, trace_id)))


def _passthrough(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit))


def _passthrough_code(exc: BaseException, context) -> grpc.StatusCode:
    """The status of a call that ended by cancellation or by the handler's own abort."""
    if isinstance(exc, grpc.aio.AbortError):
        try:
            return context.code() or grpc.StatusCode.UNKNOWN
        except Exception:  # noqa: BLE001 - older grpcio: no code() on the context
            return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.CANCELLED


def _ok_code(context) -> grpc.StatusCode:
    try:
        return context.code() or grpc.StatusCode.OK
    except Exception:  # noqa: BLE001
        return grpc.StatusCode.OK


def _end(call, code: grpc.StatusCode) -> None:
    """Ends ``call`` (if any) with ``code``; returns None, for ``call = _end(...)``.

    A call that fails is ended before ``_abort``: ``context.abort`` sends the
    status at once, so ending it in ``finally`` let a client that already had
    its NOT_FOUND scrape the metrics before the call was counted (seen in CI)."""
    if call is not None:
        call.end(code)
    return None


def _wrap_unary(fn, method: str, observer, scrub: Scrubber):
    async def handler(request, context):
        call = observer.begin(method) if observer is not None else None
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await fn(request, context)
            if call is not None:
                call.sent(response)
            code = _ok_code(context)
            return response
        except BaseException as exc:  # noqa: BLE001
            if _passthrough(exc):
                code = _passthrough_code(exc, context)
                raise
            code, message = status_for(exc)
            call = _end(call, code)
            await _abort(context, exc, code, message, method, scrub)
        finally:
            _end(call, code)

    return handler


def _wrap_stream(fn, method: str, observer, scrub: Scrubber):
    async def handler(request, context):
        call = observer.begin(method) if observer is not None else None
        code = grpc.StatusCode.UNKNOWN
        try:
            async for item in fn(request, context):
                if call is not None:
                    call.sent(item)
                yield item
            code = _ok_code(context)
        except BaseException as exc:  # noqa: BLE001
            if _passthrough(exc):
                code = _passthrough_code(exc, context)
                raise
            code, message = status_for(exc)
            call = _end(call, code)
            await _abort(context, exc, code, message, method, scrub)
        finally:
            _end(call, code)

    return handler


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions to status codes; with an ``observer`` (a
    :class:`~.metrics.ServiceMetrics`), also reports each call's rpc, the
    frames it delivered and its final status code (the requests and frames
    counters). ``settings``: the service's settings, whose sensitive values
    (endpoints, bucket, folders, secrets) are scrubbed from every message."""

    def __init__(self, observer=None, settings=None):
        self.observer = observer
        self.scrub = Scrubber.for_settings(settings)

    async def intercept_service(self, continuation, handler_call_details):
        h = await continuation(handler_call_details)
        if h is None:
            return None
        method, obs, scrub = handler_call_details.method, self.observer, self.scrub
        kw = dict(request_deserializer=h.request_deserializer, response_serializer=h.response_serializer)
        if h.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(h.unary_unary, method, obs, scrub), **kw)
        if h.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(h.stream_unary, method, obs, scrub), **kw)
        if h.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(h.unary_stream, method, obs, scrub), **kw)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(h.stream_stream, method, obs, scrub), **kw)
