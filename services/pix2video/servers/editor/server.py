"""EditorService: protobuf <-> domain only; sessions live in the worker."""

from __future__ import annotations

import asyncio
import time

import grpc

from pix2video_api.editor.v1 import editor_pb2 as pb
from pix2video_api.editor.v1 import editor_pb2_grpc as pb_grpc
from pix2video_client.enums import INJECT_LAYERS_VALUE, LATENT_UPDATE, REFERENCE, from_proto

from ...engine.checks import check_prompt
from ...engine.settings import EditSettings
from ...errors import InvalidInput
from ...limits import check_session_id, check_video_id
from ...store import StoredVideo
from ...store.tenant import TenantStore
from ...tenancy import current_tenant
from ..common.convert import array_to_image, check_output_format
from ..common.metrics import BATCH_BUCKETS
from ..common.readiness import Readiness
from ..common.server import RunningServer, start_server
from ..common.telemetry import Telemetry
from .quality import SessionQuality
from .settings import EditorServerSettings
from .worker import ENDINGS, EditorWorker, FrameStats, Opened, PermissionDenied, Stream

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EditorService"].full_name
FRAME_STAGES = ("denoise", "latent_update", "decode", "encode")


def _enum(table: dict[str, int], value: int, field: str) -> str:
    # The SDK's tables (pix2video_client.enums) are the one definition of these names.
    try:
        return from_proto(table, value, field)
    except ValueError as exc:
        raise InvalidInput(f"settings.{exc}") from None


def settings_from_proto(msg: pb.EditSettings, video_steps: int, default_in_flight: int) -> EditSettings:
    """Proto settings -> EditSettings; unset fields take the paper's defaults."""
    kw = dict(
        prompt=msg.prompt,
        negative_prompt=msg.negative_prompt,
        seed=msg.seed,
        reference=_enum(REFERENCE, msg.reference, "reference"),
        inject_layers=_enum(INJECT_LAYERS_VALUE, msg.inject_layers, "inject_layers"),
        latent_update=_enum(LATENT_UPDATE, msg.latent_update, "latent_update"),
        num_steps=msg.num_steps if msg.HasField("num_steps") else video_steps,
        frames_in_flight=msg.frames_in_flight or default_in_flight,
    )
    for name in ("guidance_scale", "update_strength", "update_start", "update_end"):
        if msg.HasField(name):
            kw[name] = getattr(msg, name)
    try:
        return EditSettings(**kw)
    except InvalidInput as exc:
        raise InvalidInput(f"settings.{exc}") from None


class EditorMetrics:
    """The editor's own metrics, its per-frame span, and its hooks into the worker."""

    def __init__(self, telemetry: Telemetry, worker: EditorWorker, settings: EditorServerSettings):
        m = telemetry.metrics
        self.tracing = telemetry.tracing
        self.frame_seconds = m.histogram(
            "pix2video_edit_frame_seconds",
            "Editor time per edited frame: the denoising steps, latent updates and decode it took part in, and its "
            "encoding for the wire (batched calls count whole for each of their frames).",
        )
        self.stage_seconds = m.histogram(
            "pix2video_edit_frame_stage_seconds",
            "Editor time per edited frame by stage: denoise, latent_update, decode, encode.",
            ["stage"],
        )
        self.stage = {name: self.stage_seconds.labels(name) for name in FRAME_STAGES}
        self.latency = m.histogram(
            "pix2video_editor_frame_latency_seconds",
            "End-to-end latency of an edited frame on the stream: from its first denoising step to its message "
            "being handed to the stream (waits between steps, behind other sessions and for the client included).",
        )
        self.first_frame = m.histogram(
            "pix2video_editor_time_to_first_frame_seconds",
            "From a session's open request to its first frame handed to the stream.",
        )
        self.unet_batch = m.histogram(
            "pix2video_editor_unet_batch_size",
            "Work items (frames, each both guidance branches) per batched UNet call.",
            buckets=BATCH_BUCKETS,
        )
        self.unet_seconds = m.histogram(
            "pix2video_editor_unet_call_seconds",
            "Duration of the editor's batched denoising calls (UNet and DDIM step).",
        )
        worker.on_unet_call = self.on_unet_call
        # Per device (the step-parallel editor has one stage per device; one label otherwise).
        self.device_unet_seconds = m.histogram(
            "pix2video_editor_device_unet_call_seconds",
            "Duration of each device's batched denoising calls (UNet and DDIM step), by device.",
            ["device"],
        )
        worker.on_device_unet_call = lambda device, seconds: self.device_unet_seconds.labels(device).observe(seconds)
        self.handoff_seconds = m.histogram(
            "pix2video_editor_handoff_seconds",
            "Step-parallel editor: from a frame leaving one device's steps to its entering the next device's, by "
            "boundary (host clock: the wait at the next device's door included).",
            ["boundary"],
        )
        worker.on_handoff = lambda boundary, seconds: self.handoff_seconds.labels(boundary).observe(seconds)
        ended = m.counter(
            "pix2video_editor_sessions_ended_total",
            "Editor sessions ended, by reason: done, cancelled, detach_expired (stream broke, not resumed within the "
            "detach grace), protocol, stalled (client stopped reading), idle, failed, shutdown.",
            ["reason"],
        )
        self.ended = {reason: ended.labels(reason) for reason in ENDINGS}
        worker.on_session_end = lambda reason: self.ended[reason].inc()
        # Gauges read the snapshot the scheduler thread publishes after each turn.
        gauges = (
            ("pix2video_editor_active_sessions", "Open sessions (attached or detached) on this replica.", "active"),
            (
                "pix2video_editor_detached_sessions",
                "Open sessions whose stream broke (kept for the detach grace, for a resume).",
                "detached",
            ),
            ("pix2video_editor_frames_in_flight", "Frames being denoised, all sessions.", "in_flight"),
            ("pix2video_editor_queued_frames", "Frames of open sessions waiting to enter the flight.", "queued"),
            ("pix2video_editor_buffered_frames", "Edited frames waiting to be sent to their client.", "buffered"),
            (
                "pix2video_editor_feature_slots",
                "Injected-feature slots preallocated (they grow when short).",
                "feature_slots",
            ),
            ("pix2video_editor_feature_slots_used", "Injected-feature slots held by sessions.", "feature_slots_used"),
            (
                "pix2video_editor_host_buffer_bytes",
                "Host memory held by edited frames kept for sending and replay, all sessions.",
                "host_buffer_bytes",
            ),
        )
        for name, doc, key in gauges:
            m.gauge(name, doc).set_function(lambda key=key: float(getattr(worker.snapshot, key)))
        m.gauge("pix2video_editor_max_sessions", "Most open sessions this replica accepts (max_sessions).").set(
            settings.max_sessions
        )
        runner = worker.editor.runner
        m.gauge("pix2video_editor_unet_graphs", "CUDA graphs of the UNet captured on this replica.").set_function(
            lambda: float(runner.warm.graphs)
        )
        m.gauge(
            "pix2video_editor_warmup_seconds", "Start-up UNet graph capture and compilation, before SERVING."
        ).set_function(lambda: float(runner.warm.seconds))
        m.count_frames(f"{SERVICE_NAME}/Edit", lambda r: 1 if r.WhichOneof("kind") == "frame" else 0)
        self.quality = SessionQuality(m, settings.quality_clip_model, settings.quality_sessions_kept)

    def on_unet_call(self, items: int, seconds: float) -> None:
        self.unet_batch.observe(items)
        self.unet_seconds.observe(seconds)

    def frame_sent(self, session_id: str, index: int, stats: FrameStats, encode: float, parent) -> None:
        """A frame went out: its stage times, its total, its end-to-end latency and its span."""
        end = time.perf_counter()
        parts = {
            "denoise": stats.denoise,
            "latent_update": stats.latent_update,
            "decode": stats.decode,
            "encode": encode,
        }
        for name, seconds in parts.items():
            self.stage[name].observe(seconds)
        self.frame_seconds.observe(sum(parts.values()))
        self.latency.observe(end - stats.started)
        if self.tracing.enabled:
            attributes = {"pix2video.session_id": session_id, "pix2video.frame.index": index}
            attributes.update({f"pix2video.frame.{k}_seconds": v for k, v in parts.items()})
            self.tracing.record("edit frame", stats.started, end, attributes, parent=parent)


class EditorServicer(pb_grpc.EditorServiceServicer):
    def __init__(self, worker: EditorWorker, settings: EditorServerSettings, metrics: EditorMetrics | None = None):
        self.worker = worker
        self.settings = settings
        self.metrics = metrics or EditorMetrics(Telemetry(settings, "editor"), worker, settings)

    async def _first(self, requests, stream: Stream, tenant: str) -> tuple[Opened, object, bool, str | None]:
        """Reads the first request and opens or resumes its session: (what the
        stream sends first, the output format, whether it is a new session,
        the prompt to measure the finished edit with when it asked to be evaluated)."""
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            raise InvalidInput("open: the first request must be open or resume") from None
        kind = first.WhichOneof("kind")
        worker = self.worker
        if kind == "open":
            msg = first.open
            check_output_format(msg.output, "open.output")
            video_id = check_video_id(msg.video_id, "open.video_id")
            # Length limits before any work: what encoding costs is bounded.
            check_prompt(msg.settings.prompt, "open.settings.prompt")
            check_prompt(msg.settings.negative_prompt, "open.settings.negative_prompt", allow_empty=True)
            # The video through the tenant's view of the store: another tenant's is NOT_FOUND.
            store = TenantStore(worker.store_io, tenant)
            video = await asyncio.to_thread(StoredVideo, store, video_id)
            settings = settings_from_proto(msg.settings, video.num_steps, self.settings.frames_in_flight)
            if not 0 <= msg.start_frame < video.num_frames:
                raise InvalidInput(f"open.start_frame: must be in [0, {video.num_frames - 1}], got {msg.start_frame}")
            # Quality only of a stream that sends every frame (a reopen elsewhere measures nothing).
            measure = msg.evaluate and msg.start_frame == 0
            if measure:
                await asyncio.to_thread(self.metrics.quality.ready)  # before any work: a missing CLIP fails now
            opened = await worker.run(worker.open, tenant, video, settings, stream, msg.start_frame)
            return opened, msg.output, True, settings.prompt if measure else None
        if kind == "resume":
            msg = first.resume
            check_output_format(msg.output, "resume.output")
            session_id = check_session_id(msg.session_id, "resume.session_id")
            opened = await worker.run(worker.resume, tenant, session_id, msg.resume_secret, msg.next_frame, stream)
            return opened, msg.output, False, None
        raise InvalidInput("open: the first request must be open or resume")

    async def Edit(self, request_iterator, context):
        opened_at = time.perf_counter()
        metrics, worker = self.metrics, self.worker
        span = metrics.tracing.current_span()  # the call's server span: parent of the frame spans
        requests = request_iterator.__aiter__()
        stream = Stream(asyncio.get_running_loop())
        tenant = current_tenant()  # on the loop, in the call's context; handed to the scheduler explicitly
        try:
            with metrics.tracing.span("open session"):
                opened, output, new, measure_prompt = await self._first(requests, stream, tenant)
        except PermissionDenied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        sid = opened.session_id

        async def read_rest():
            async for req in requests:
                kind = req.WhichOneof("kind")
                if kind == "cancel":
                    worker.call(worker.cancel, sid, stream)
                    return
                # Anything else (a second open, say) breaks the protocol: freed at once.
                worker.call(worker.violation, sid, stream)
                stream.queue.put_nowait(("end", "INVALID_ARGUMENT", f"{kind}: only cancel may follow open or resume"))
                return

        reader = asyncio.ensure_future(read_rest())
        ended = False  # the session ended (or the stream was told to stop): nothing to detach
        try:
            yield pb.EditResponse(
                opened=pb.SessionOpened(
                    session_id=sid,
                    num_frames=opened.num_frames,
                    next_frame=opened.next_frame,
                    resume_secret=opened.resume_secret,
                )
            )
            first_pending = new
            sent: list | None = [] if measure_prompt is not None else None  # frames to measure at the end
            next_index = opened.next_frame
            while next_index < opened.num_frames:
                item = await stream.queue.get()
                if item[0] == "end":
                    ended = True
                    _, status, message = item
                    if status is None:  # cancelled: the client asked for the end
                        return
                    await context.abort(getattr(grpc.StatusCode, status), message)
                _, index, image, stats = item
                if index != next_index:  # a replay overlapping what this stream sent: skip it
                    continue
                encode_start = time.perf_counter()
                msg = await asyncio.to_thread(array_to_image, image, output)
                encode = time.perf_counter() - encode_start
                try:
                    yield pb.EditResponse(frame=pb.EditedFrame(index=index, image=msg))
                finally:
                    # Also when the stream is closed at this yield (the client
                    # cancelled right after this frame): the frame was handed to
                    # the stream, and is counted in the frames counter, so it gets
                    # its latency and span too. After the yield alone, the last
                    # frame before a cancel sometimes had none (seen in CI).
                    if stats is not None:
                        metrics.frame_sent(sid, index, stats, encode, span)
                if sent is not None:
                    sent.append(image)
                next_index = index + 1
                worker.call(worker.ack, sid, stream, next_index)
                if first_pending:
                    first_pending = False
                    metrics.first_frame.observe(time.perf_counter() - opened_at)
            ended = True
            quality = None
            if sent is not None:  # after the last frame, in a thread: no tick and no other stream waits on CLIP
                f = await asyncio.to_thread(metrics.quality.measure, sid, sent, measure_prompt)
                quality = pb.EditQuality(
                    clip_text=f.clip_text, clip_image=f.clip_image, frames=f.frames, seconds=f.seconds
                )
            yield pb.EditResponse(done=pb.SessionDone(num_frames=opened.num_frames, quality=quality))
        finally:
            reader.cancel()
            if not ended:
                # The client went away (cancelled or broken stream): the work
                # stops, the state is kept for the detach grace (a resume).
                worker.call(worker.detach, sid, stream)


async def build(settings: EditorServerSettings, worker: EditorWorker | None = None) -> RunningServer:
    telemetry = Telemetry(settings, "editor")
    worker = worker or await asyncio.to_thread(EditorWorker, settings)
    worker.store_io = telemetry.observe_store(worker.store)
    servicer = EditorServicer(worker, settings, EditorMetrics(telemetry, worker, settings))

    def add(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_EditorServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    async def warmup():
        await asyncio.to_thread(worker.warmup)
        worker.start()

    # Readiness: SERVING only while the store answers with these credentials and bucket.
    readiness = Readiness({"store": worker.store.check}, settings.readiness_interval_seconds)
    running = await start_server(settings, add, warmup=warmup, telemetry=telemetry, readiness=readiness)
    running.servicer = servicer

    async def stop_worker():
        await asyncio.to_thread(worker.stop)

    running.on_stop.append(stop_worker)
    return running
