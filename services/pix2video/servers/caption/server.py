"""The caption service's gRPC edge: protobuf <-> arrays, nothing else.

Each ``Caption`` call is checked, then submitted to the batcher, which groups
the images of concurrent calls into one BLIP call.
"""

from __future__ import annotations

import asyncio
import logging

from pix2video_api.caption.v1 import caption_pb2, caption_pb2_grpc

from ...limits import FrameLimits
from ..common.batched_service import build_batched_service
from ..common.batcher import DynamicBatcher
from ..common.convert import image_to_array
from ..common.server import RunningServer
from .settings import CaptionSettings

log = logging.getLogger(__name__)

SERVICE_NAME = caption_pb2.DESCRIPTOR.services_by_name["CaptionService"].full_name


class CaptionServicer(caption_pb2_grpc.CaptionServiceServicer):
    """Args: worker: a CaptionWorker (``check_max_new_tokens``, ``caption``);
    batcher: a DynamicBatcher over ``(image, max_new_tokens)`` items; limits:
    the image sizes accepted (checked from the header, before decoding)."""

    def __init__(self, worker, batcher: DynamicBatcher, limits: FrameLimits | None = None):
        self.worker = worker
        self.batcher = batcher
        self.limits = limits or FrameLimits()

    async def Caption(self, request: caption_pb2.CaptionRequest, context) -> caption_pb2.CaptionResponse:
        max_new_tokens = self.worker.check_max_new_tokens(request.max_new_tokens)
        # Decoding (PNG/JPEG) runs off the event loop, which serves every call.
        image = await asyncio.to_thread(image_to_array, request.image, "image", self.limits)
        text = await self.batcher.submit((image, max_new_tokens))
        return caption_pb2.CaptionResponse(caption=text)


def _run_batch(worker):
    def run(items):
        return worker.caption([image for image, _ in items], [n for _, n in items])

    return run


async def build(settings: CaptionSettings, worker=None) -> RunningServer:
    """Loads the worker (in a thread; unless given), starts the server, warms up
    in the batcher's worker thread, then reports SERVING."""

    def load_worker():
        from .worker import CaptionWorker  # torch enters here, not at import

        return CaptionWorker(settings)

    return await build_batched_service(
        settings,
        name="caption",
        service_name=SERVICE_NAME,
        item="image",
        model="BLIP",
        load_worker=load_worker,
        run_batch=_run_batch,
        make_servicer=lambda w, batcher: CaptionServicer(w, batcher, settings.frame_limits),
        register=caption_pb2_grpc.add_CaptionServiceServicer_to_server,
        unary_method="Caption",
        worker=worker,
    )
