"""asyncio SDK, the same calls as :class:`~pix2video_client.Pix2VideoClient`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import AsyncIterator

import grpc

from pix2video_api.editor.v1 import editor_pb2
from pix2video_api.inversion.v1 import inversion_pb2

from .client import (
    CANCEL_WAIT_SECONDS,
    EDIT,
    GET_VIDEO,
    INVERT,
    STAGE_NAMES,
    ClientConnections,
    Progress,
    key_requests,
    upload_requests,
)
from .edit_stream import EditProgress
from .errors import Pix2VideoClientError, from_rpc_error
from .retry import Deadline, next_delay
from .tracing import RpcSpan
from .types import EditOptions, Frame, InversionOptions, VideoInfo, frame_from_proto, output_format


class AsyncPix2VideoClient(ClientConnections):
    """Arguments as :class:`~pix2video_client.Pix2VideoClient`; use ``async with``."""

    _channel_kind = "aio_channel"

    async def close(self) -> None:
        await self._inv_channel.close()
        for ch in self._ed_channels:
            await ch.close()
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
        """``await call(timeout)`` retried under the SDK's policy (see :mod:`.retry`)."""
        deadline = Deadline(self.timeout)
        for attempt in range(self.retries + 1):
            try:
                return await call(deadline.left())
            except grpc.RpcError as exc:
                delay = next_delay(exc, attempt, self.backoff)
                if delay is None or attempt == self.retries or not deadline.allows(delay):
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(delay)

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

        async def call(timeout):
            requests = key_requests(str(source), options) if as_key else upload_requests(path, options)
            result = None
            metadata = self._security.metadata(rpc.metadata)
            async for resp in self.inversion.Invert(requests, timeout=timeout, metadata=metadata):
                if resp.HasField("progress") and progress:
                    progress(STAGE_NAMES.get(resp.progress.stage, "unknown"), resp.progress.done, resp.progress.total)
                elif resp.HasField("result"):
                    result = resp.result
            return VideoInfo.from_proto(result)

        return await self._traced(rpc, lambda: self._retrying(call))

    async def get_video(self, video_id: str) -> VideoInfo:
        rpc = self._tracer.rpc(GET_VIDEO)

        async def call(timeout):
            req = inversion_pb2.GetVideoRequest(video_id=video_id)
            metadata = self._security.metadata(rpc.metadata)
            return VideoInfo.from_proto(await self.inversion.GetVideo(req, timeout=timeout, metadata=metadata))

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
        progress = EditProgress(
            editor_pb2.OpenSession(video_id=video_id, settings=(options or EditOptions()).to_proto(prompt), output=fmt),
            len(self.editors),
            self.retries,
            self.backoff,
        )
        rpc = self._tracer.rpc(EDIT)
        frames = self._edit(progress, rpc)
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

    async def _edit(self, p: EditProgress, rpc: RpcSpan) -> AsyncIterator[Frame]:
        while True:
            stub = self._replicas.stub(p.session_id) if p.resuming else None  # a resume goes to the session's replica
            call = (stub or self.editors[p.address]).Edit(metadata=self._security.metadata(rpc.metadata))
            try:
                await call.write(p.request())
                async for resp in call:
                    frame = p.on_response(resp)
                    if resp.HasField("opened"):
                        rpc.set("pix2video.session_id", p.session_id)
                    if frame is not None:
                        yield frame_from_proto(frame)
                    if p.done:
                        await call.done_writing()
                        return
                p.on_end()
            except grpc.RpcError as exc:
                await asyncio.sleep(p.on_error(exc))
                rpc.set("pix2video.resumes", p.attempt)
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
