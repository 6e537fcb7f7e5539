"""EditorService: protobuf <-> domain only; sessions live in the engine."""

from __future__ import annotations

import asyncio

import grpc

from pix2video_api.editor.v1 import editor_pb2 as pb
from pix2video_api.editor.v1 import editor_pb2_grpc as pb_grpc

from ...engine.settings import EditSettings
from ...errors import InvalidInput
from ..common.convert import array_to_image, check_output_format
from ..common.server import RunningServer, start_server
from .engine import EditorEngine, SessionRecord
from .settings import EditorServerSettings

REFERENCE = {
    pb.REFERENCE_UNSPECIFIED: "anchor+previous", pb.REFERENCE_ANCHOR_PREVIOUS: "anchor+previous",
    pb.REFERENCE_ANCHOR: "anchor", pb.REFERENCE_PREVIOUS: "previous", pb.REFERENCE_ANCHOR_RANDOM: "anchor+random",
}
LAYERS = {
    pb.INJECT_LAYERS_UNSPECIFIED: "decoder", pb.INJECT_LAYERS_DECODER: "decoder",
    pb.INJECT_LAYERS_ALL: "all", pb.INJECT_LAYERS_NONE: "none",
}
UPDATE = {
    pb.LATENT_UPDATE_UNSPECIFIED: "x0", pb.LATENT_UPDATE_X0: "x0",
    pb.LATENT_UPDATE_XT: "xt", pb.LATENT_UPDATE_OFF: "off",
}


def _enum(table: dict, value: int, field: str) -> str:
    if value not in table:
        raise InvalidInput(f"settings.{field}: unknown value {value}")
    return table[value]


def settings_from_proto(msg: pb.EditSettings, video_steps: int, default_in_flight: int) -> EditSettings:
    """Proto settings -> EditSettings; unset fields take the paper's defaults."""
    kw = dict(
        prompt=msg.prompt, negative_prompt=msg.negative_prompt, seed=msg.seed,
        reference=_enum(REFERENCE, msg.reference, "reference"),
        inject_layers=_enum(LAYERS, msg.inject_layers, "inject_layers"),
        latent_update=_enum(UPDATE, msg.latent_update, "latent_update"),
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


class EditorServicer(pb_grpc.EditorServiceServicer):
    def __init__(self, engine: EditorEngine, settings: EditorServerSettings):
        self.engine = engine
        self.settings = settings

    async def _first(self, requests) -> tuple[SessionRecord, object]:
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            raise InvalidInput("open: the first request must be open or resume") from None
        kind = first.WhichOneof("kind")
        if kind == "open":
            msg = first.open
            check_output_format(msg.output, "open.output")
            rec = await asyncio.to_thread(
                self.engine.open, msg.video_id,
                lambda steps: settings_from_proto(msg.settings, steps, self.settings.frames_in_flight),
            )
            return rec, msg.output
        if kind == "resume":
            msg = first.resume
            check_output_format(msg.output, "resume.output")
            return await asyncio.to_thread(self.engine.resume, msg.session_id, msg.next_frame), msg.output
        raise InvalidInput("open: the first request must be open or resume")

    async def Edit(self, request_iterator, context):
        requests = request_iterator.__aiter__()
        rec, output = await self._first(requests)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        rec.wake = lambda: loop.call_soon_threadsafe(wake.set)
        problem: list[str] = []

        async def read_rest():
            async for req in requests:
                if req.WhichOneof("kind") == "cancel":
                    await asyncio.to_thread(self.engine.cancel, rec)
                else:
                    problem.append(f"{req.WhichOneof('kind')}: only cancel may follow open or resume")
                wake.set()

        reader = asyncio.ensure_future(read_rest())
        finished = False
        try:
            yield pb.EditResponse(opened=pb.SessionOpened(session_id=rec.id, num_frames=rec.num_frames, next_frame=rec.sent))
            while True:
                for index, image in self.engine.take(rec):
                    msg = await asyncio.to_thread(array_to_image, image, output)
                    yield pb.EditResponse(frame=pb.EditedFrame(index=index, image=msg))
                    await asyncio.to_thread(self.engine.mark_sent, rec, index + 1)
                if problem:
                    raise InvalidInput(problem[0])
                if rec.sent >= rec.num_frames:
                    finished = True
                    yield pb.EditResponse(done=pb.SessionDone(num_frames=rec.num_frames))
                    return
                if rec.closed:  # cancelled (or timed out): end the stream
                    finished = True
                    return
                await wake.wait()
                wake.clear()
        finally:
            reader.cancel()
            if not finished and not rec.closed:
                # The client went away (or broke the protocol): stop the work,
                # keep the state for a resume until the idle timeout.
                self.engine.detach(rec)


async def build(settings: EditorServerSettings, engine: EditorEngine | None = None) -> RunningServer:
    engine = engine or await asyncio.to_thread(EditorEngine, settings)
    servicer = EditorServicer(engine, settings)

    def add(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_EditorServiceServicer_to_server(servicer, server)
        return [pb.DESCRIPTOR.services_by_name["EditorService"].full_name]

    async def warmup():
        await asyncio.to_thread(engine.warmup)
        engine.start()

    running = await start_server(settings, add, warmup=warmup)
    running.servicer = servicer

    async def stop_engine():
        await asyncio.to_thread(engine.stop)

    running.on_stop.append(stop_engine)
    return running
