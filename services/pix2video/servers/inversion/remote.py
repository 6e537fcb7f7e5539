"""gRPC clients of the depth and caption services, as the plain callables the
inversion job takes. Frames travel as RAW_RGB8 (lossless: depth and captions
equal what the embedded engine computes)."""

from __future__ import annotations

from typing import Callable

import grpc
import numpy as np
import torch
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub

from pix2video_api.caption.v1 import caption_pb2, caption_pb2_grpc
from pix2video_api.common.v1 import common_pb2
from pix2video_api.depth.v1 import depth_pb2, depth_pb2_grpc
from pix2video_client.security import TokenInterceptor

from ...errors import Unavailable
from ...retry import RetryPolicy
from ..common.convert import msg_to_array
from ..common.server import channel_options

RAW = common_pb2.ImageEncoding.IMAGE_ENCODING_RAW_RGB8
# Answers of a peer that a later attempt may not get: it is restarting, or full.
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _raw(frame: np.ndarray) -> common_pb2.Image:
    h, w = frame.shape[:2]
    return common_pb2.Image(data=np.ascontiguousarray(frame).tobytes(), encoding=RAW, width=w, height=h)


class RemoteStages:
    """Depth and caption over gRPC (blocking; called from the job's thread)."""

    def __init__(
        self,
        depth_address: str,
        caption_address: str,
        timeout: float,
        max_message_bytes: int,
        wrap_channel: Callable[[grpc.Channel], grpc.Channel] | None = None,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: Callable[[], str] | None = None,
        server_name: str = "",
    ):
        """``wrap_channel``: applied to each channel (tracing: client spans and
        the W3C ``traceparent`` of the current span in every call's metadata).
        ``retry``: how UNAVAILABLE / RESOURCE_EXHAUSTED answers are retried
        (depth and captions are pure functions of the frames, so a call can
        be repeated whole); default: not at all.
        ``credentials``: TLS (None: plaintext); ``server_name``: the name to
        verify in their certificates when not the address's host; ``token``:
        returns the API token sent to both (None: none)."""
        opts = channel_options(max_message_bytes)
        wrap = wrap_channel or (lambda channel: channel)

        def make(address: str) -> grpc.Channel:
            if credentials is not None:
                name = [("grpc.ssl_target_name_override", server_name)] if server_name else []
                channel = grpc.secure_channel(address, credentials, options=opts + name)
            else:
                channel = grpc.insecure_channel(address, options=opts)
            if token is not None:
                channel = grpc.intercept_channel(channel, TokenInterceptor(token))
            return wrap(channel)

        self.depth_address, self.caption_address = depth_address, caption_address
        depth_channel, caption_channel = make(depth_address), make(caption_address)
        self._depth = depth_pb2_grpc.DepthServiceStub(depth_channel)
        self._caption = caption_pb2_grpc.CaptionServiceStub(caption_channel)
        self._health = {"depth": HealthStub(depth_channel), "caption": HealthStub(caption_channel)}
        self.timeout = timeout
        self.retry = retry or RetryPolicy(budget=0)

    def _attempt_timeout(self, left: float | None) -> float:
        return self.timeout if left is None else max(0.001, min(self.timeout, left))

    def depth(self, frames: np.ndarray) -> torch.Tensor:
        def attempt(left):
            requests = (depth_pb2.EstimateDepthRequest(frame=_raw(f)) for f in frames)
            try:
                call = self._depth.EstimateDepth(requests, timeout=self._attempt_timeout(left))
                maps = [msg_to_array(r.depth, "depth") for r in call]
            except grpc.RpcError as exc:
                raise _failure("depth", self.depth_address, exc) from None
            if len(maps) != len(frames):
                raise Unavailable(f"depth service at {self.depth_address}: {len(maps)} maps for {len(frames)} frames")
            return maps

        maps = self.retry.call(attempt, _retryable, what="depth service")
        return torch.from_numpy(np.stack(maps))

    def caption(self, frames: np.ndarray) -> list[str]:
        out = []
        for f in frames:

            def attempt(left, f=f):
                request = caption_pb2.CaptionRequest(image=_raw(f))
                try:
                    return self._caption.Caption(request, timeout=self._attempt_timeout(left)).caption
                except grpc.RpcError as exc:
                    raise _failure("caption", self.caption_address, exc) from None

            out.append(self.retry.call(attempt, _retryable, what="caption service"))
        return out

    def check(self, name: str, timeout: float = 5.0) -> None:
        """Raises Unavailable unless the ``depth`` or ``caption`` service reports SERVING (readiness)."""
        address = self.depth_address if name == "depth" else self.caption_address
        try:
            status = self._health[name].Check(HealthCheckRequest(service=""), timeout=timeout).status
        except grpc.RpcError as exc:
            raise Unavailable(f"{name} service at {address}: {exc.code().name}") from None
        if status != HealthCheckResponse.SERVING:
            raise Unavailable(f"{name} service at {address}: {HealthCheckResponse.ServingStatus.Name(status)}")


class _Retryable(Unavailable):
    """A peer's answer worth retrying (it restarts, or is momentarily full)."""


def _failure(name: str, address: str, exc: grpc.RpcError) -> Unavailable:
    kind = _Retryable if exc.code() in RETRY_CODES else Unavailable
    return kind(f"{name} service at {address}: {exc.code().name}: {exc.details()}")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable)
