"""Synchronous SDK: invert a video, stream its edited frames, or both in one call."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import grpc

from pix2video_api.editor.v1 import editor_pb2, editor_pb2_grpc
from pix2video_api.inversion.v1 import inversion_pb2, inversion_pb2_grpc

from .edit_stream import EditProgress
from .enums import STAGE
from .errors import Pix2VideoClientError, from_rpc_error
from .retry import Deadline, next_delay
from .security import ChannelSecurity
from .tracing import ClientTracer, RpcSpan
from .types import EditOptions, Frame, InversionOptions, VideoInfo, frame_from_proto, output_format

CHUNK_BYTES = 1 << 20
CANCEL_WAIT_SECONDS = 5.0
Progress = Callable[[str, int, int], None]  # (stage, done, total)
STAGE_NAMES = {v: k for k, v in STAGE.items()}  # Stage value -> name
INVERT = inversion_pb2.DESCRIPTOR.services_by_name["InversionService"].full_name + "/Invert"
GET_VIDEO = inversion_pb2.DESCRIPTOR.services_by_name["InversionService"].full_name + "/GetVideo"
EDIT = editor_pb2.DESCRIPTOR.services_by_name["EditorService"].full_name + "/Edit"


def traced(rpc: RpcSpan, call: Callable[[], object]):
    """Runs ``call()`` as the span ``rpc``: its status from the outcome, ended after."""
    try:
        return call()
    except Pix2VideoClientError as exc:
        rpc.fail(exc.code.name, exc.details)
        raise
    except BaseException as exc:
        rpc.fail(type(exc).__name__)
        raise
    finally:
        rpc.end()


def channel(address: str, max_message_bytes: int, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    opts = [("grpc.max_send_message_length", max_message_bytes), ("grpc.max_receive_message_length", max_message_bytes)]
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=opts)
    return grpc.insecure_channel(address, options=opts)


def editor_addresses(editor: str | Sequence[str] | None, inversion: str) -> list[str]:
    """The editor addresses a client was given (a comma-separated string is a list too)."""
    if editor is None:
        return [inversion]
    addresses = [a.strip() for a in editor.split(",")] if isinstance(editor, str) else [str(a) for a in editor]
    if not addresses or not all(addresses):
        raise ValueError(f"editor: empty address in {editor!r}")
    return addresses


def check_output_is_not_source(source: str | os.PathLike, output: str | os.PathLike) -> None:
    """Refuses to write an edit over the clip it is made from."""
    src, out = Path(source), Path(output)
    same = src.resolve() == out.resolve()
    if not same and src.exists() and out.exists():
        same = os.path.samefile(src, out)
    if same:
        raise ValueError(f"output: {str(output)!r} is the input video; choose another output path")


def upload_requests(path: Path, options: InversionOptions, chunk_bytes: int = CHUNK_BYTES):
    size = path.stat().st_size
    yield inversion_pb2.InvertRequest(
        start=inversion_pb2.InvertStart(
            settings=options.to_proto(), upload=inversion_pb2.Upload(size_bytes=size, filename=path.name)
        )
    )
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            yield inversion_pb2.InvertRequest(chunk=chunk)


def key_requests(key: str, options: InversionOptions):
    yield inversion_pb2.InvertRequest(start=inversion_pb2.InvertStart(settings=options.to_proto(), object_key=key))


class ReplicaRouter:
    """Stubs for the editor replica named in a session id.

    Editor session ids are ``<replica>.<id>`` when the editor runs with a
    ``replica_name`` (its pod name in Kubernetes). Given an address template
    such as ``{replica}.pix2video-editor-headless.ns.svc.cluster.local:50064``
    (the chart publishes it), a resumed stream goes straight to that replica
    rather than wherever the load balancer sends a new connection.
    """

    def __init__(self, template: str | None, make_channel):
        if template is not None and "{replica}" not in template:
            raise ValueError(f"editor_replica_address: must contain {{replica}}, got {template!r}")
        self.template, self.make_channel = template, make_channel
        self.channels: dict[str, object] = {}

    def address(self, session_id: str) -> str | None:
        if self.template is None or "." not in session_id:
            return None
        return self.template.format(replica=session_id.split(".", 1)[0])

    def stub(self, session_id: str):
        address = self.address(session_id)
        if address is None:
            return None
        if address not in self.channels:
            self.channels[address] = self.make_channel(address)
        return editor_pb2_grpc.EditorServiceStub(self.channels[address])

    def drain(self) -> list:
        """Forgets the channels and returns them, for the caller to close."""
        channels, self.channels = list(self.channels.values()), {}
        return channels


class ClientConnections:
    """The channels, stubs and retry policy that both SDK clients open the same way.

    ``_channel_kind`` names the :class:`ChannelSecurity` factory: ``"channel"``
    for the blocking client, ``"aio_channel"`` for the asyncio one.
    """

    _channel_kind = "channel"

    def __init__(
        self,
        inversion: str,
        editor: str | Sequence[str] | None = None,
        *,
        timeout: float | None = 3600.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_message_bytes: int = 64 * 1024 * 1024,
        credentials: grpc.ChannelCredentials | None = None,
        tracer_provider=None,
        editor_replica_address: str | None = None,
        token=None,
        tls_ca_file: str | os.PathLike | None = None,
        tls_cert_file: str | os.PathLike | None = None,
        tls_key_file: str | os.PathLike | None = None,
        tls_server_name: str | None = None,
    ):
        self._tracer = ClientTracer(tracer_provider)
        self._security = security = ChannelSecurity.make(
            credentials, token, tls_ca_file, tls_cert_file, tls_key_file, tls_server_name
        )
        opts = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        factory = getattr(security, self._channel_kind)

        def make(address: str):
            return factory(address, opts)

        self._inv_channel = make(inversion)
        self._ed_channels = [make(a) for a in editor_addresses(editor, inversion)]
        self.inversion = inversion_pb2_grpc.InversionServiceStub(self._inv_channel)
        self.editors = [editor_pb2_grpc.EditorServiceStub(ch) for ch in self._ed_channels]
        self.editor = self.editors[0]
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._replicas = ReplicaRouter(editor_replica_address, make)


class Pix2VideoClient(ClientConnections):
    """Client of the inversion and editor services.

    Args:
        inversion: address (host:port) of the inversion service.
        editor: address of the editor service (default: the same as inversion),
            or a list of editor replicas' addresses: an edit whose replica
            stops answering continues on the next, from the first frame not
            yet received (the same frames as an undisturbed run).
        timeout: deadline in seconds of each inversion call (None: no deadline).
        retries: attempts after the first for idempotent calls and edit resumes,
            on UNAVAILABLE (inversion calls also on a full queue that sent a retry
            hint), with exponential backoff and jitter from ``backoff`` seconds,
            inside the call's ``timeout`` (see :mod:`.retry`).
        credentials: TLS channel credentials (None: plaintext, unless tls_* files are given).
        token: API token sent as ``authorization: Bearer`` on every call (a
            string or a callable returning one; None: ``$PIX2VIDEO_TOKEN``, if set).
        tls_ca_file: PEM CA bundle that verifies the services (TLS on; default roots when
            only a client certificate is given).
        tls_cert_file, tls_key_file: PEM client certificate and key (mutual TLS).
        tls_server_name: name to verify in the services' certificates, when it
            is not the address's host.
        editor_replica_address: template with ``{replica}`` for reaching the
            editor replica that holds a session when resuming (see ReplicaRouter).
        tracer_provider: OpenTelemetry TracerProvider for the SDK's spans (default:
            the global one); ignored when opentelemetry is not installed. Each call
            carries its trace context in ``traceparent`` metadata either way.
    """

    def close(self) -> None:
        self._inv_channel.close()
        for ch in self._ed_channels:
            ch.close()
        for ch in self._replicas.drain():
            ch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _retrying(self, call: Callable[[float | None], object]):
        """``call(timeout)`` retried under the SDK's policy (see :mod:`.retry`);
        ``timeout`` is what is left of the call's deadline."""
        deadline = Deadline(self.timeout)
        for attempt in range(self.retries + 1):
            try:
                return call(deadline.left())
            except grpc.RpcError as exc:
                delay = next_delay(exc, attempt, self.backoff)
                if delay is None or attempt == self.retries or not deadline.allows(delay):
                    raise from_rpc_error(exc) from None
                time.sleep(delay)

    # -- inversion ----------------------------------------------------------

    def invert(
        self,
        source: str | os.PathLike,
        options: InversionOptions | None = None,
        *,
        key: bool | None = None,
        progress: Progress | None = None,
    ) -> VideoInfo:
        """Inverts a local video file (uploaded) or, with ``key=True`` or when no
        such file exists, a video already in the service's object store.
        Idempotent, so retried on UNAVAILABLE and on a full queue's
        RESOURCE_EXHAUSTED (see :mod:`.retry`), inside ``timeout`` overall."""
        options = options or InversionOptions()
        path = Path(source)
        as_key = key if key is not None else not path.is_file()

        rpc = self._tracer.rpc(INVERT)

        def call(timeout):
            requests = key_requests(str(source), options) if as_key else upload_requests(path, options)
            result = None
            metadata = self._security.metadata(rpc.metadata)
            for resp in self.inversion.Invert(requests, timeout=timeout, metadata=metadata):
                if resp.HasField("progress") and progress:
                    p = resp.progress
                    progress(STAGE_NAMES.get(p.stage, "unknown"), p.done, p.total)
                elif resp.HasField("result"):
                    result = resp.result
            return VideoInfo.from_proto(result)

        return traced(rpc, lambda: self._retrying(call))

    def get_video(self, video_id: str) -> VideoInfo:
        rpc = self._tracer.rpc(GET_VIDEO)
        request = inversion_pb2.GetVideoRequest(video_id=video_id)
        return traced(
            rpc,
            lambda: self._retrying(
                lambda timeout: VideoInfo.from_proto(
                    self.inversion.GetVideo(request, timeout=timeout, metadata=self._security.metadata(rpc.metadata))
                )
            ),
        )

    # -- editing ------------------------------------------------------------

    def edit(
        self,
        video_id: str,
        prompt: str,
        options: EditOptions | None = None,
        *,
        encoding: str = "png",
        jpeg_quality: int = 0,
    ) -> Iterator[Frame]:
        """Edited frames in order as the editor finishes them. A broken stream is
        resumed on the same session (same frames as an unbroken run); closing
        the iterator early cancels the session on the server."""
        fmt = output_format(encoding, jpeg_quality)
        progress = EditProgress(
            editor_pb2.OpenSession(video_id=video_id, settings=(options or EditOptions()).to_proto(prompt), output=fmt),
            len(self.editors),
            self.retries,
            self.backoff,
        )
        rpc = self._tracer.rpc(EDIT)
        try:
            yield from self._edit(progress, rpc)
        except Pix2VideoClientError as exc:
            rpc.fail(exc.code.name, exc.details)
            raise
        finally:
            rpc.end()

    def _edit(self, p: EditProgress, rpc: RpcSpan) -> Iterator[Frame]:
        while True:
            outbox: queue.Queue = queue.Queue()
            outbox.put(p.request())

            def requests(box: queue.Queue):
                while (item := box.get()) is not None:
                    yield item

            # A resume must reach the replica that holds the session.
            stub = self._replicas.stub(p.session_id) if p.resuming else None
            call = (stub or self.editors[p.address]).Edit(
                requests(outbox), metadata=self._security.metadata(rpc.metadata)
            )
            try:
                for resp in call:
                    frame = p.on_response(resp)
                    if resp.HasField("opened"):
                        rpc.set("pix2video.session_id", p.session_id)
                    if frame is not None:
                        yield frame_from_proto(frame)
                    if p.done:
                        return
                p.on_end()
            except grpc.RpcError as exc:
                time.sleep(p.on_error(exc))
                rpc.set("pix2video.resumes", p.attempt)
            except GeneratorExit:
                # The caller stopped early: ask the server to free the session now,
                # and wait (briefly) for it to end the stream, so the cancel is
                # delivered rather than lost in a dropped connection.
                outbox.put(editor_pb2.EditRequest(cancel=editor_pb2.CancelSession()))
                outbox.put(None)
                timer = threading.Timer(CANCEL_WAIT_SECONDS, call.cancel)
                timer.start()
                try:
                    for _ in call:
                        pass
                except grpc.RpcError:
                    pass
                finally:
                    timer.cancel()
                raise
            finally:
                outbox.put(None)

    def edit_video(
        self,
        source: str | os.PathLike,
        prompt: str,
        output: str | os.PathLike,
        *,
        inversion: InversionOptions | None = None,
        options: EditOptions | None = None,
        progress: Progress | None = None,
    ) -> VideoInfo:
        """Inverts (or finds) a clip, edits it and writes an .mp4 (needs the
        ``video`` extra). Frames travel as raw RGB, losslessly. The file
        appears at ``output`` only once every frame arrived: an edit that
        cannot be completed raises (IncompleteEdit, ...) and leaves no file
        there (or the one that was there before)."""
        from .video import write_mp4

        check_output_is_not_source(source, output)

        with self._tracer.job("pix2video.edit_video"):  # one trace: inversion and edit
            info = self.invert(source, inversion, progress=progress)

            def frames():
                for f in self.edit(info.video_id, prompt, options, encoding="raw"):
                    if progress:
                        progress("edit", f.index + 1, info.num_frames)
                    yield f.to_array()

            write_mp4(output, frames(), info.fps)
        return info
