"""The depth service's gRPC edge: protobuf <-> arrays, nothing else.

``EstimateDepth`` is a bidi stream. A reader task takes requests as they
arrive, checks each and submits it to the batcher at once (so frames of one
stream, and of all streams, are batched together); the handler yields the
results in request order. At most ``window`` frames of a stream are in flight:
beyond that the reader stops reading and gRPC flow control slows the client.
An invalid request ends the stream with INVALID_ARGUMENT after the responses
to the requests before it.
"""

from __future__ import annotations

import asyncio
import logging

from pix2video_api.depth.v1 import depth_pb2, depth_pb2_grpc

from ...errors import InvalidInput
from ...limits import FrameLimits
from ..common.batched_service import build_batched_service
from ..common.batcher import DynamicBatcher
from ..common.convert import image_to_array, tensor_to_msg
from ..common.server import RunningServer
from .settings import DepthSettings

log = logging.getLogger(__name__)

SERVICE_NAME = depth_pb2.DESCRIPTOR.services_by_name["DepthService"].full_name
MAX_OUTPUT_SIDE = 1024


class DepthServicer(depth_pb2_grpc.DepthServiceServicer):
    """Args: worker: a DepthWorker (``output_size``, ``estimate``); batcher: a
    DynamicBatcher over ``(frame, (output_height, output_width))`` items;
    window: most frames of one stream in flight; limits: the frame sizes
    accepted (checked from each frame's header, before decoding)."""

    def __init__(self, worker, batcher: DynamicBatcher, window: int = 64, limits: FrameLimits | None = None):
        self.worker = worker
        self.batcher = batcher
        self.window = window
        self.limits = limits or FrameLimits()

    def _prepare(self, request: depth_pb2.EstimateDepthRequest):
        for name in ("output_width", "output_height"):
            v = getattr(request, name)
            if not 0 <= v <= MAX_OUTPUT_SIDE:
                raise InvalidInput(
                    f"{name}: must be in [0, {MAX_OUTPUT_SIDE}] "
                    f"(0: the latent size, frame / {self.worker.vae_scale_factor}), got {v}"
                )
        frame = image_to_array(request.frame, "frame", self.limits)
        size = self.worker.output_size(frame.shape[0], frame.shape[1], request.output_height, request.output_width)
        return frame, size

    async def EstimateDepth(self, request_iterator, context):
        # Entries in request order: a future per accepted frame, then None at the
        # end of the stream or the exception that ended reading.
        order: asyncio.Queue = asyncio.Queue()
        window = asyncio.Semaphore(self.window)

        async def read() -> None:
            index = 0
            try:
                async for request in request_iterator:
                    await window.acquire()
                    try:
                        # Decoding (PNG/JPEG) runs off the event loop, which
                        # serves every stream.
                        item = await asyncio.to_thread(self._prepare, request)
                    except InvalidInput as exc:
                        raise InvalidInput(f"{exc} (request {index})") from None
                    await order.put(asyncio.ensure_future(self.batcher.submit(item)))
                    index += 1
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the writer, in order
                await order.put(exc)
            else:
                await order.put(None)

        reader = asyncio.create_task(read())
        pending: list[asyncio.Future] = []
        try:
            index = 0
            while True:
                entry = await order.get()
                if entry is None:
                    break
                if isinstance(entry, BaseException):
                    raise entry
                pending.append(entry)
                depth = await entry
                pending.pop()
                window.release()
                yield depth_pb2.EstimateDepthResponse(index=index, depth=tensor_to_msg(depth))
                index += 1
        finally:
            reader.cancel()
            while not order.empty():
                entry = order.get_nowait()
                if isinstance(entry, asyncio.Future):
                    pending.append(entry)
            for f in pending:
                f.cancel()


def _run_batch(worker):
    def run(items):
        return worker.estimate([frame for frame, _ in items], [size for _, size in items])

    return run


async def build(settings: DepthSettings, worker=None) -> RunningServer:
    """Loads the worker (in a thread; unless given), starts the server, warms up
    in the batcher's worker thread, then reports SERVING."""

    def load_worker():
        from .worker import DepthWorker  # torch enters here, not at import

        return DepthWorker(settings)

    return await build_batched_service(
        settings,
        name="depth",
        service_name=SERVICE_NAME,
        item="frame",
        model="DPT",
        load_worker=load_worker,
        run_batch=_run_batch,
        make_servicer=lambda w, batcher: DepthServicer(
            w, batcher, window=max(64, 4 * settings.batch_size), limits=settings.frame_limits
        ),
        register=depth_pb2_grpc.add_DepthServiceServicer_to_server,
        unary_method="EstimateDepth",
        worker=worker,
    )
