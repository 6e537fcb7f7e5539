"""gRPC clients of the depth and caption services, as the plain callables the
inversion job takes. Frames travel as RAW_RGB8 (lossless: depth and captions
equal what the embedded engine computes)."""

from __future__ import annotations

from typing import Callable

import grpc
import numpy as np
import torch

from pix2video_api.caption.v1 import caption_pb2, caption_pb2_grpc
from pix2video_api.common.v1 import common_pb2
from pix2video_api.depth.v1 import depth_pb2, depth_pb2_grpc
from pix2video_client.security import TokenInterceptor

from ...errors import Unavailable
from ..common.convert import msg_to_array
from ..common.server import channel_options

RAW = common_pb2.ImageEncoding.IMAGE_ENCODING_RAW_RGB8


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
        credentials: grpc.ChannelCredentials | None = None,
        token: Callable[[], str] | None = None,
        server_name: str = "",
    ):
        """``wrap_channel``: applied to each channel (tracing: client spans and
        the W3C ``traceparent`` of the current span in every call's metadata).
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
        self._depth = depth_pb2_grpc.DepthServiceStub(make(depth_address))
        self._caption = caption_pb2_grpc.CaptionServiceStub(make(caption_address))
        self.timeout = timeout

    def depth(self, frames: np.ndarray) -> torch.Tensor:
        requests = (depth_pb2.EstimateDepthRequest(frame=_raw(f)) for f in frames)
        try:
            maps = [msg_to_array(r.depth, "depth") for r in self._depth.EstimateDepth(requests, timeout=self.timeout)]
        except grpc.RpcError as exc:
            raise Unavailable(f"depth service at {self.depth_address}: {exc.code().name}: {exc.details()}") from None
        if len(maps) != len(frames):
            raise Unavailable(f"depth service at {self.depth_address}: {len(maps)} maps for {len(frames)} frames")
        return torch.from_numpy(np.stack(maps))

    def caption(self, frames: np.ndarray) -> list[str]:
        out = []
        for f in frames:
            try:
                out.append(
                    self._caption.Caption(caption_pb2.CaptionRequest(image=_raw(f)), timeout=self.timeout).caption
                )
            except grpc.RpcError as exc:
                raise Unavailable(
                    f"caption service at {self.caption_address}: {exc.code().name}: {exc.details()}"
                ) from None
        return out
