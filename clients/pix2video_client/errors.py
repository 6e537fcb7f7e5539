"""Typed exceptions of the SDK, one per gRPC status a caller may handle."""

from __future__ import annotations

import grpc


class Pix2VideoClientError(Exception):
    """Base class; ``code`` is the gRPC status code, ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidArgument(Pix2VideoClientError):
    """The request was malformed; the message names the field."""


class NotFound(Pix2VideoClientError):
    """Unknown video id or session id."""


class ResourceExhausted(Pix2VideoClientError):
    """The server is at capacity or the message was too large; retry later or elsewhere."""


class FailedPrecondition(Pix2VideoClientError):
    """Valid request that cannot be served in the current state."""


class Unavailable(Pix2VideoClientError):
    """The service (or one it depends on) cannot be reached."""


class DeadlineExceeded(Pix2VideoClientError):
    """The call ran past its deadline."""


class Cancelled(Pix2VideoClientError):
    """The call was cancelled."""


class DataLoss(Pix2VideoClientError):
    """Stored data failed its checksum."""


class Unauthenticated(Pix2VideoClientError):
    """No token, or one the service does not know (see ``token`` / PIX2VIDEO_TOKEN)."""


class PermissionDenied(Pix2VideoClientError):
    """A valid caller asked for something it may not do."""


class Aborted(Pix2VideoClientError):
    """The server gave the call up (an edit stream resumed elsewhere)."""


class IncompleteEdit(Pix2VideoClientError):
    """An edit stream stopped before every frame arrived (``received`` of
    ``num_frames``) and could not be continued: its output is incomplete.
    ``code`` is the status of the failure (DATA_LOSS when the stream simply
    ended without ``done``)."""

    def __init__(self, code: grpc.StatusCode, details: str, received: int = 0, num_frames: int | None = None):
        super().__init__(code, details)
        self.received, self.num_frames = received, num_frames


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.ABORTED: Aborted,
}

# Failures worth retrying for an idempotent call (or resuming an edit).
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


def from_rpc_error(exc: grpc.RpcError) -> Pix2VideoClientError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return _BY_CODE.get(code, Pix2VideoClientError)(code, details or "")
