"""InversionService: protobuf <-> domain only; the work is in the worker.

Every store access of a call (its upload key, the cache lookup, the video it
writes, GetVideo) goes through the calling tenant's view of the store, so
one tenant's videos do not exist for another (NOT_FOUND, and ``cached=False``
when B inverts a clip A already has)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import grpc

from pix2video_api.inversion.v1 import inversion_pb2 as pb
from pix2video_api.inversion.v1 import inversion_pb2_grpc as pb_grpc
from pix2video_client.enums import RESIZE, STAGE, from_proto
from pix2video_client.options import DEFAULT_HEIGHT, DEFAULT_NUM_STEPS, DEFAULT_WIDTH
from pix2video_client.security import TokenFile, channel_credentials

from ...errors import InvalidInput, NotFound
from ...jobs import InversionSettings
from ...limits import MAX_FILE_NAME, check_object_key, check_text, check_video_id, echo
from ...quotas import ConcurrencyQuota, CountedStore, StorageQuota
from ...store import read_manifest
from ...store.tenant import TenantStore, tenant_prefix
from ...tenancy import current_tenant
from ..common.metrics import BATCH_BUCKETS, observe_many
from ..common.server import RunningServer, start_server
from ..common.telemetry import Telemetry
from .remote import RemoteStages
from .settings import InversionServerSettings
from .worker import InversionWorker

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InversionService"].full_name
JOB_STAGES = ("receive", "decode", "depth", "caption", "inversion", "store")
JOB_RESULTS = ("inverted", "cached", "failed", "cancelled")


class InversionMetrics:
    """The inversion service's own metrics and timing hooks (see the names)."""

    def __init__(self, telemetry: Telemetry):
        m = telemetry.metrics
        self.tracing = telemetry.tracing
        self.frame_seconds = m.histogram(
            "pix2video_inversion_frame_seconds",
            "DDIM inversion latency per frame: the batched VAE encoding and inverse DDIM steps it ran in "
            "(frames of one batch share it).",
        )
        self.batch_size = m.histogram(
            "pix2video_inversion_batch_size", "Frames per batched inversion call.", buckets=BATCH_BUCKETS
        )
        self.stage_seconds = m.histogram(
            "pix2video_inversion_stage_seconds", "Duration of each stage of an inversion job.", ["stage"]
        )
        self.jobs = m.counter("pix2video_inversion_jobs_total", "Inversion jobs, by result.", ["result"])
        self.queue_depth = m.gauge(
            "pix2video_inversion_queue_depth",
            "Inversion requests in progress or waiting (for the device or the upload).",
        )
        for name in JOB_STAGES:
            self.stage_seconds.labels(name)
        for result in JOB_RESULTS:
            self.jobs.labels(result)
        m.count_frames(f"{SERVICE_NAME}/Invert", lambda r: r.result.num_frames if r.HasField("result") else 0)

    @contextmanager
    def stage(self, name: str):
        """A stage of a job: a span, and its duration in the stage histogram."""
        start = time.perf_counter()
        try:
            with self.tracing.span(name):
                yield
        finally:
            self.stage_seconds.labels(name).observe(time.perf_counter() - start)

    def on_batch(self, frames: int, seconds: float) -> None:
        self.batch_size.observe(frames)
        observe_many(self.frame_seconds, seconds, frames)


def settings_from_proto(msg: pb.InversionSettings) -> InversionSettings:
    try:
        resize = from_proto(RESIZE, msg.resize, "resize")
    except ValueError as exc:
        raise InvalidInput(f"settings.{exc}") from None
    if msg.max_frames < 0:
        raise InvalidInput(f"settings.max_frames: must be >= 0, got {msg.max_frames}")
    try:
        return InversionSettings(
            width=msg.width or DEFAULT_WIDTH,
            height=msg.height or DEFAULT_HEIGHT,
            resize=resize,
            num_steps=msg.num_steps or DEFAULT_NUM_STEPS,
            source_prompt=msg.source_prompt if msg.HasField("source_prompt") else None,
        )
    except InvalidInput as exc:
        raise InvalidInput(f"settings.{exc}") from None


def video_info(manifest, cached: bool) -> pb.VideoInfo:
    return pb.VideoInfo(
        video_id=manifest.video_id,
        cached=cached,
        num_frames=manifest.num_frames,
        width=manifest.width,
        height=manifest.height,
        num_steps=manifest.num_steps,
        source_prompt=manifest.source_prompt,
        fps=manifest.fps,
    )


class InversionServicer(pb_grpc.InversionServiceServicer):
    def __init__(
        self,
        worker: InversionWorker,
        stages: RemoteStages,
        settings: InversionServerSettings,
        metrics: InversionMetrics | None = None,
    ):
        self.worker = worker
        self.stages = stages
        self.settings = settings
        self.metrics = metrics or InversionMetrics(Telemetry(settings, "inversion"))
        self.running_quota = ConcurrencyQuota("max_inversions_per_tenant", settings.max_inversions_per_tenant)
        self.storage_quota = StorageQuota(
            "max_stored_bytes_per_tenant",
            settings.max_stored_bytes_per_tenant,
            lambda tenant: self.worker.store.usage_bytes(tenant_prefix(tenant)),
        )

    def tenant_store(self) -> TenantStore:
        """The calling tenant's view of the store (its writes counted for its quota)."""
        tenant = current_tenant()
        return TenantStore(CountedStore(self.worker.store_io, self.storage_quota, tenant), tenant)

    async def _receive_file(self, start: pb.InvertStart, requests, folder: str, store) -> str:
        """The video as a local file: the upload's chunks, or the store object.

        The file's name is fixed: the client's file name is only a label (the
        container is probed from the bytes when the file is read)."""
        path = os.path.join(folder, "input")
        if start.HasField("object_key"):
            key = check_object_key(start.object_key, "start.object_key")
            try:
                data = await asyncio.to_thread(store.get, key)
            except NotFound as exc:
                raise NotFound(f"start.object_key: no object {echo(key)}", detail=exc.detail) from None
            except InvalidInput as exc:
                raise InvalidInput(f"start.object_key: {exc}") from None
            Path(path).write_bytes(data)
            return path
        if not start.HasField("upload"):
            raise InvalidInput("start.source: set upload or object_key")
        check_text(start.upload.filename, "start.upload.filename", MAX_FILE_NAME)
        limit = self.settings.max_upload_bytes
        if start.upload.size_bytes < 0 or start.upload.size_bytes > limit:
            raise InvalidInput(f"start.upload.size_bytes: must be in [0, {limit}], got {start.upload.size_bytes}")
        size = 0
        with open(path, "wb") as f:
            async for req in requests:
                if req.WhichOneof("kind") != "chunk":
                    raise InvalidInput("chunk: after start, only chunk requests may follow")
                size += len(req.chunk)
                if size > limit:
                    raise InvalidInput(f"upload: exceeds max_upload_bytes={limit}")
                f.write(req.chunk)
        if start.upload.size_bytes and size != start.upload.size_bytes:
            raise InvalidInput(f"upload: received {size} bytes, start.upload.size_bytes said {start.upload.size_bytes}")
        if size == 0:
            raise InvalidInput("upload: no bytes received")
        return path

    async def Invert(self, request_iterator, context):
        self.metrics.queue_depth.inc()
        result = "failed"
        try:
            async for response in self._invert(request_iterator):
                if response.HasField("result"):
                    result = "cached" if response.result.cached else "inverted"
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            result = "cancelled"  # the client went away (the job itself may finish and be cached)
            raise
        finally:
            self.metrics.queue_depth.dec()
            self.metrics.jobs.labels(result).inc()

    async def _invert(self, request_iterator):
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            raise InvalidInput("start: the first request must be start") from None
        if first.WhichOneof("kind") != "start":
            raise InvalidInput("start: the first request must be start")
        start = first.start
        settings = settings_from_proto(start.settings)
        tenant, store = current_tenant(), self.tenant_store()
        await asyncio.to_thread(self.storage_quota.check, tenant)
        release = self.running_quota.acquire(tenant)
        jobs: list = []  # _run puts the job here once started; from then on the job holds the slot
        try:
            async for response in self._run(start, settings, requests, store, release, jobs):
                yield response
        finally:
            if not jobs:
                release()

    async def _run(self, start, settings, requests, store, release, jobs: list):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def progress(stage: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(events.put_nowait, pb.Progress(stage=STAGE[stage], done=done, total=total))

        with tempfile.TemporaryDirectory(prefix="pix2video-upload-") as folder:
            progress("decode", 0, 0)
            with self.metrics.stage("receive"):
                path = await self._receive_file(start, requests, folder, store)
            job = asyncio.ensure_future(
                asyncio.to_thread(
                    self.worker.invert_file,
                    path,
                    settings,
                    start.settings.max_frames,
                    self.stages.depth,
                    self.stages.caption,
                    progress,
                    self.metrics.stage,
                    self.metrics.on_batch,
                    store=store,
                )
            )
            # The tenant's slot is held until the job ends, even after its client left.
            jobs.append(job)
            job.add_done_callback(lambda _job: release())
            try:
                while not (job.done() and events.empty()):
                    getter = asyncio.ensure_future(events.get())
                    await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield pb.InvertResponse(progress=getter.result())
                    else:
                        getter.cancel()
                result = job.result()
            finally:
                if not job.done():
                    # The client went away; the job finishes in its thread (it may
                    # serve a concurrent request for the same video) and is cached.
                    job.add_done_callback(lambda j: j.exception())
        yield pb.InvertResponse(result=video_info(result.manifest, result.cached))

    async def GetVideo(self, request, context):
        video_id = check_video_id(request.video_id)
        manifest = await asyncio.to_thread(read_manifest, self.tenant_store(), video_id)
        if manifest is None:
            raise NotFound(f"video_id: no inverted video {video_id!r}")
        return video_info(manifest, cached=True)


def upstream_security(settings: InversionServerSettings) -> dict:
    """TLS credentials, server name and token for the calls to depth and caption."""
    try:
        credentials = channel_credentials(
            settings.upstream_tls_ca_file, settings.upstream_tls_cert_file, settings.upstream_tls_key_file
        )
        token = TokenFile(settings.upstream_token_file) if settings.upstream_token_file else None
    except ValueError as exc:
        raise InvalidInput(f"upstream_{exc}") from None
    return dict(credentials=credentials, token=token, server_name=settings.upstream_tls_server_name)


async def build(settings: InversionServerSettings, worker: InversionWorker | None = None) -> RunningServer:
    telemetry = Telemetry(settings, "inversion")
    worker = worker or await asyncio.to_thread(InversionWorker, settings)
    worker.store_io = telemetry.observe_store(worker.store)
    stages = RemoteStages(
        settings.depth_address,
        settings.caption_address,
        settings.call_timeout_seconds,
        settings.max_message_bytes,
        wrap_channel=telemetry.tracing.instrument_channel,
        **upstream_security(settings),
    )
    servicer = InversionServicer(worker, stages, settings, InversionMetrics(telemetry))

    def add(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_InversionServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    running = await start_server(settings, add, warmup=lambda: asyncio.to_thread(worker.warmup), telemetry=telemetry)
    running.servicer = servicer
    return running
