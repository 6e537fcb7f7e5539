"""pix2video client SDK: needs grpcio and protobuf only (no torch, no engine)."""

from .client import Pix2VideoClient
from .errors import (
    Aborted,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    IncompleteEdit,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Pix2VideoClientError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .types import EditOptions, EditQuality, Frame, InversionOptions, VideoInfo

__all__ = [
    "Pix2VideoClient",
    "AsyncPix2VideoClient",
    "EditOptions",
    "EditQuality",
    "InversionOptions",
    "Frame",
    "VideoInfo",
    "Pix2VideoClientError",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "FailedPrecondition",
    "Unavailable",
    "DeadlineExceeded",
    "Cancelled",
    "DataLoss",
    "Unauthenticated",
    "PermissionDenied",
    "Aborted",
    "IncompleteEdit",
]


def __getattr__(name):
    if name == "AsyncPix2VideoClient":
        from .aio import AsyncPix2VideoClient

        return AsyncPix2VideoClient
    raise AttributeError(name)
