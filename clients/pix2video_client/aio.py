"""asyncio SDK, the same calls as :class:`~pix2video_client.Pix2VideoClient`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import AsyncIterator

import grpc

from pix2video_api.editor.v1 import editor_pb2, editor_pb2_grpc
from pix2video_api.inversion.v1 import inversion_pb2, inversion_pb2_grpc

from .client import (
    CANCEL_WAIT_SECONDS,
    EDIT,
    GET_VIDEO,
    INVERT,
    STAGE_NAMES,
    Progress,
    ReplicaRouter,
    key_requests,
    upload_requests,
)
from .errors import RETRYABLE, Pix2VideoClientError, from_rpc_error
from .tracing import ClientTracer, RpcSpan
from .types import EditOptions, Frame, InversionOptions, VideoInfo, frame_from_proto, output_format


class AsyncPix2VideoClient:
    """Arguments as :class:`~pix2video_client.Pix2VideoClient`; use ``async with``."""

    def __init__(
        self,
        inversion: str,
        editor: str | None = None,
        *,
        timeout: float | None = 3600.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_message_bytes: int = 64 * 1024 * 1024,
        credentials: grpc.ChannelCredentials | None = None,
        tracer_provider=None,
        editor_replica_address: str | None = None,
    ):
        self._tracer = ClientTracer(tracer_provider)
        opts = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]

        def make(addr):
            if credentials is not None:
                return grpc.aio.secure_channel(addr, credentials, options=opts)
            return grpc.aio.insecure_channel(addr, options=opts)

        self._inv_channel, self._ed_channel = make(inversion), make(editor or inversion)
        self.inversion = inversion_pb2_grpc.InversionServiceStub(self._inv_channel)
        self.editor = editor_pb2_grpc.EditorServiceStub(self._ed_channel)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._replicas = ReplicaRouter(editor_replica_address, make)

    async def close(self) -> None:
        await self._inv_channel.close()
        await self._ed_channel.close()
        for ch in self._replicas.drain():
            await ch.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    @staticmethod
    async def _traced(rpc: RpcSpan, call):
        try:
            return await call()
        except Pix2VideoClientError as exc:
            rpc.fail(exc.code.name, exc.details)
            raise
        except BaseException as exc:
            rpc.fail(type(exc).__name__)
            raise
        finally:
            rpc.end()

    async def _retrying(self, call):
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retries:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(self.backoff * 2**attempt)

    async def invert(
        self,
        source: str | os.PathLike,
        options: InversionOptions | None = None,
        *,
        key: bool | None = None,
        progress: Progress | None = None,
    ) -> VideoInfo:
        options = options or InversionOptions()
        path = Path(source)
        as_key = key if key is not None else not path.is_file()

        rpc = self._tracer.rpc(INVERT)

        async def call():
            requests = key_requests(str(source), options) if as_key else upload_requests(path, options)
            result = None
            async for resp in self.inversion.Invert(requests, timeout=self.timeout, metadata=rpc.metadata):
                if resp.HasField("progress") and progress:
                    progress(STAGE_NAMES.get(resp.progress.stage, "unknown"), resp.progress.done, resp.progress.total)
                elif resp.HasField("result"):
                    result = resp.result
            return VideoInfo.from_proto(result)

        return await self._traced(rpc, lambda: self._retrying(call))

    async def get_video(self, video_id: str) -> VideoInfo:
        rpc = self._tracer.rpc(GET_VIDEO)

        async def call():
            req = inversion_pb2.GetVideoRequest(video_id=video_id)
            return VideoInfo.from_proto(await self.inversion.GetVideo(req, timeout=self.timeout, metadata=rpc.metadata))

        return await self._traced(rpc, lambda: self._retrying(call))

    async def edit(
        self,
        video_id: str,
        prompt: str,
        options: EditOptions | None = None,
        *,
        encoding: str = "png",
        jpeg_quality: int = 0,
    ) -> AsyncIterator[Frame]:
        """Edited frames in order; resumes a broken stream on the same session;
        leaving the loop early cancels the session on the server."""
        fmt = output_format(encoding, jpeg_quality)
        first = editor_pb2.EditRequest(
            open=editor_pb2.OpenSession(
                video_id=video_id, settings=(options or EditOptions()).to_proto(prompt), output=fmt
            )
        )
        rpc = self._tracer.rpc(EDIT)
        frames = self._edit(first, fmt, rpc)
        try:
            async for frame in frames:
                yield frame
        except Pix2VideoClientError as exc:
            rpc.fail(exc.code.name, exc.details)
            raise
        finally:
            # Closing here (not at garbage collection) delivers the cancel of a
            # caller that stopped early, as before.
            await frames.aclose()
            rpc.end()

    async def _edit(self, first, fmt, rpc: RpcSpan) -> AsyncIterator[Frame]:
        session_id, received, attempt = None, 0, 0
        while True:
            stub = self._replicas.stub(session_id) if session_id else None  # a resume goes to the session's replica
            call = (stub or self.editor).Edit(metadata=rpc.metadata)
            await call.write(first)
            try:
                async for resp in call:
                    kind = resp.WhichOneof("kind")
                    if kind == "opened":
                        session_id = resp.opened.session_id
                        rpc.set("pix2video.session_id", session_id)
                    elif kind == "frame":
                        received, attempt = resp.frame.index + 1, 0
                        yield frame_from_proto(resp.frame)
                    elif kind == "done":
                        await call.done_writing()
                        return
                return
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or session_id is None or attempt >= self.retries:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(self.backoff * 2**attempt)
                attempt += 1
                first = editor_pb2.EditRequest(
                    resume=editor_pb2.ResumeSession(session_id=session_id, next_frame=received, output=fmt)
                )
            except (GeneratorExit, asyncio.CancelledError):
                # Deliver the cancel before hanging up (see the sync client).
                try:
                    await call.write(editor_pb2.EditRequest(cancel=editor_pb2.CancelSession()))
                    await call.done_writing()
                    await asyncio.wait_for(call.wait_for_connection(), CANCEL_WAIT_SECONDS)
                    await asyncio.wait_for(call.code(), CANCEL_WAIT_SECONDS)
                except (grpc.RpcError, asyncio.TimeoutError, asyncio.InvalidStateError):
                    pass
                finally:
                    call.cancel()
                raise
