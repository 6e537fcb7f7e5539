"""The one place where domain errors become gRPC status codes.

An aio server interceptor wraps every handler (all four call shapes) so that
servicers just raise :mod:`pix2video.errors` exceptions.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from ... import errors

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
    if type(exc).__name__ in ("OutOfMemoryError", "MemoryError"):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of memory: {str(exc).splitlines()[0] if str(exc) else ''}"
    if isinstance(exc, errors.Pix2VideoError):
        return grpc.StatusCode.INTERNAL, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})"


async def _abort(context, exc: BaseException, code: grpc.StatusCode, message: str):
    if code == grpc.StatusCode.INTERNAL:
        log.exception("unexpected error in handler", exc_info=exc)
    await context.abort(code, message)


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


def _wrap_unary(fn, method: str, observer):
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
            await _abort(context, exc, code, message)
        finally:
            if call is not None:
                call.end(code)

    return handler


def _wrap_stream(fn, method: str, observer):
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
            await _abort(context, exc, code, message)
        finally:
            if call is not None:
                call.end(code)

    return handler


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions to status codes; with an ``observer`` (a
    :class:`~.metrics.ServiceMetrics`), also reports each call's rpc, the
    frames it delivered and its final status code (the requests and frames
    counters)."""

    def __init__(self, observer=None):
        self.observer = observer

    async def intercept_service(self, continuation, handler_call_details):
        h = await continuation(handler_call_details)
        if h is None:
            return None
        method, obs = handler_call_details.method, self.observer
        kw = dict(request_deserializer=h.request_deserializer, response_serializer=h.response_serializer)
        if h.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(h.unary_unary, method, obs), **kw)
        if h.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(h.stream_unary, method, obs), **kw)
        if h.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(h.unary_stream, method, obs), **kw)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(h.stream_stream, method, obs), **kw)
