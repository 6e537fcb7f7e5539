"""The editor service's worker: one scheduler thread owns the editor and every session.

Sessions are registered with one :class:`~pix2video.engine.editor.Pix2VideoEditor`,
whose ticks batch the ready work of all of them into shared UNet calls. The
scheduler thread alone touches the editor and the session records: the server
posts commands to it (open, resume, cancel, detach, violation, ack) through a
queue and gets each answer as a future; frames go back to each stream through
its own :class:`Stream` (an asyncio queue fed with ``call_soon_threadsafe``).
Nothing on the event loop waits for a tick, and no lock is shared with one.
Gauges read a snapshot the scheduler thread publishes after each turn.

A session ends in exactly one way, recorded as its reason (:data:`ENDINGS`):
sent every frame (``done``), cancelled by message (``cancelled``), its stream
broke and nobody resumed within the detach grace (``detach_expired``), the
client broke the protocol (``protocol``), the client stopped reading for the
stall timeout (``stalled``), no progress for the idle timeout (``idle``), a
failed tick (``failed``) or the replica stopping (``shutdown``). Every ending
frees the session's device state, feature slots and host buffers at once.

No gRPC here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import hashlib
import hmac
import logging
import queue
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...engine.editor import EditSession, Pix2VideoEditor
from ...engine.settings import EditSettings
from ...engine.step_parallel import DeviceTimers, StepParallelEditor
from ...engine.timers import CudaEventTimer, FrameStats, HostTimer
from ...errors import Busy, FailedPrecondition, InvalidInput, NotFound, Pix2VideoError
from ..common.models import load_models
from .settings import EditorServerSettings

__all__ = ["CudaEventTimer", "EditorWorker", "FrameStats", "HostTimer", "ServedSession", "Stream"]

log = logging.getLogger(__name__)

ENDINGS = ("done", "cancelled", "detach_expired", "protocol", "stalled", "idle", "failed", "shutdown")
# What a stream still attached to an ending session is told (status name, message).
END_STATUS = {
    "stalled": ("DEADLINE_EXCEEDED", "the client read no frame for the stall timeout: session freed"),
    "idle": ("DEADLINE_EXCEEDED", "the session made no progress for the idle timeout: session freed"),
    "failed": ("INTERNAL", "the editor failed to compute this session's frames"),
    "shutdown": ("UNAVAILABLE", "the editor replica is stopping"),
    "protocol": ("INVALID_ARGUMENT", "only cancel may follow open or resume"),
}
NO_SESSION = "session_id: no open session with this id (finished, cancelled, timed out or never opened)"


class PermissionDenied(Pix2VideoError):
    """The caller may not act on this session (right tenant, wrong or missing secret)."""


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Stream:
    """One Edit stream's inbox, filled from the scheduler thread, read on the event loop.

    Items: ``("frame", index, image, stats)``; ``("end", status, message)``
    (status None: end normally). An end drops the frames still queued, so a
    freed session leaves no host buffers behind in a stream nobody reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def push(self, item: tuple) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def end(self, status: str | None, message: str = "") -> None:
        def put():
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(("end", status, message))

        try:
            self.loop.call_soon_threadsafe(put)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            pass


@dataclass
class ServedSession(EditSession):
    """The one record of a served session: the engine's state (EditSession)
    and the service's, owned by the scheduler thread, under one id."""

    tenant: str = ""
    secret: bytes = b""  # sha256 of the resume secret; the secret itself is never kept
    buffer_limit: int = 8  # frames made but not yet sent before the session pauses
    produced: dict[int, np.ndarray] = field(default_factory=dict)  # recent frames, for sending and replay
    num_produced: int = 0  # frames made so far (or skipped, below emit_from)
    acked: int = 0  # frames the attached stream has handed to the transport
    stream: Stream | None = None
    detached_at: float = 0.0
    last_progress: float = 0.0  # a frame made or sent, or a client attached
    last_ack: float = 0.0
    stats: dict[int, FrameStats] = field(default_factory=dict)  # timing of frames not yet sent

    def runnable(self) -> bool:
        # Work only for a client that is there and keeps up (back-pressure).
        return self.stream is not None and self.num_produced - self.acked < self.buffer_limit

    @property
    def host_bytes(self) -> int:
        return sum(a.nbytes for a in self.produced.values())


@dataclass(frozen=True)
class Opened:
    """What a stream learns when it attaches."""

    session_id: str
    num_frames: int
    next_frame: int
    resume_secret: str = ""  # only on open


@dataclass(frozen=True)
class Snapshot:
    """Counts published by the scheduler thread for the metrics endpoint."""

    active: int = 0
    detached: int = 0
    in_flight: int = 0
    queued: int = 0
    buffered: int = 0
    feature_slots: int = 0
    feature_slots_used: int = 0
    host_buffer_bytes: int = 0


class EditorWorker:
    def __init__(self, settings: EditorServerSettings, store=None, models=None):
        self.settings = settings
        devices = settings.device_list()
        if models is None:
            # Step-parallel: loaded on the first device, copied to the others.
            models = load_models(dataclasses.replace(settings, device=devices[0]) if devices else settings)
        self.models = models
        self.store = store if store is not None else settings.open_store()
        if devices:
            self.editor: Pix2VideoEditor | StepParallelEditor = StepParallelEditor.on_devices(
                self.models,
                devices,
                runner=settings.make_runner,
                max_batch_items=settings.max_batch_items,
                feature_slots=settings.feature_slots,
            )
            self.editor.on_handoff = self._on_handoff
        else:
            self.editor = Pix2VideoEditor(
                self.models,
                max_batch_items=settings.max_batch_items,
                runner=settings.make_runner(self.models),
                feature_slots=settings.feature_slots,
            )
        # Every read of the sessions goes through store_io: the store itself, or
        # what the server wraps it in (counted and timed operations).
        self.store_io = self.store
        stage_devices = self.editor.devices if devices else [self.models.device]
        timers = [self._stage_timer(d) for d in stage_devices]
        self.timer = DeviceTimers(timers) if devices else timers[0]
        self.editor.timer = self.timer
        # Hooks for metrics, called on the scheduler thread.
        self.on_unet_call: Callable[[int, float], None] | None = None  # (items, seconds) per batched call
        self.on_device_unet_call: Callable[[str, float], None] | None = None  # (device, seconds) per call
        self.on_handoff: Callable[[str, float], None] | None = None  # (boundary, seconds) per frame handed on
        self.on_session_end: Callable[[str], None] | None = None  # (reason) per ending
        self.snapshot = Snapshot(feature_slots=self.editor.context.capacity)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="editor-scheduler", daemon=True)

    @property
    def sessions(self) -> dict[str, ServedSession]:
        """The open sessions (read only on the scheduler thread, or in tests once it is idle)."""
        return self.editor.sessions  # type: ignore[return-value]

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends every session (``shutdown``: their streams get UNAVAILABLE, so
        clients move to another replica) and stops the scheduler thread."""
        if self._thread.is_alive():
            try:
                self.call(self._shutdown).result(30)
            except concurrent.futures.TimeoutError:
                log.warning("editor scheduler did not stop within 30 s")
            self._thread.join(30)
        else:
            self._shutdown()

    def _shutdown(self) -> None:
        for s in list(self.sessions.values()):
            self._end(s, "shutdown")
        self._stopping = True
        if isinstance(self.editor, StepParallelEditor):
            self.editor.close()  # its stage threads

    def warmup(self) -> None:
        """Captures (and compiles) the UNet graphs of every batch bucket at the
        warm-up frame size, then runs the whole edit path once on a two-frame
        synthetic video. Before :meth:`start`: nothing else touches the editor."""
        import torch

        if self._thread.is_alive():
            raise RuntimeError("warmup: the scheduler thread is already running")

        steps = max(2, getattr(self.editor, "num_stages", 1))  # the step-parallel editor: a step per device

        class _One:
            num_frames, num_steps = 2, steps
            h = w = 64 // self.models.vae_scale_factor

            def latent(self, i):
                return torch.zeros(4, self.h, self.w)

            def depth(self, i):
                return torch.zeros(1, self.h, self.w)

        if self.editor.runner.cuda_graphs:
            self.editor.warm_up(self.settings.warm_up_height, self.settings.warm_up_width)
            log.info("editor warm-up: %s", self.editor.runner.warm)
        self.editor.timer = None  # warm-up frames are not service frames
        try:
            list(self.editor.edit(_One(), EditSettings(prompt="warm up", num_steps=steps, frames_in_flight=2)))
        finally:
            self.editor.timer = self.timer

    # -- commands (posted from any thread; run on the scheduler thread) --------

    def call(self, fn: Callable, *args) -> concurrent.futures.Future:
        """Runs ``fn(*args)`` on the scheduler thread between ticks; its result or error comes in the future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self._stopping:
            future.set_exception(Busy("editor: this replica is stopping"))
        else:
            self._commands.put((fn, args, future))
        return future

    async def run(self, fn: Callable, *args):
        """:meth:`call` from the event loop: awaits the answer without blocking the loop."""
        return await asyncio.wrap_future(self.call(fn, *args))

    def open(
        self,
        tenant: str,
        video,
        settings: EditSettings,
        stream: Stream,
        start_frame: int = 0,
    ) -> Opened:
        """Registers a session on ``video`` (an opened FrameSource, read off
        this thread) for ``tenant``, attached to ``stream``. Encodes its
        prompts here, between ticks: their length is bounded, so this holds
        other sessions' ticks up by one short encoding at most."""
        if len(self.sessions) >= self.settings.max_sessions:
            raise Busy(f"sessions: this replica holds its maximum of {self.settings.max_sessions} (max_sessions)")
        quota = self.settings.max_sessions_per_tenant
        if quota and sum(1 for s in self.sessions.values() if s.tenant == tenant) >= quota:
            raise Busy(f"sessions: this tenant holds its quota of {quota} open sessions (max_sessions_per_tenant)")
        secret = secrets.token_urlsafe(32)
        sid = uuid.uuid4().hex
        sid = f"{self.settings.replica_name}.{sid}" if self.settings.replica_name else sid
        now = time.monotonic()
        self.editor.open_session(
            video,
            settings,
            start_frame=start_frame,
            session_id=sid,
            session_type=ServedSession,
            tenant=tenant,
            secret=secret_hash(secret),
            buffer_limit=self.settings.buffered_frames,
            num_produced=start_frame,
            acked=start_frame,
            stream=stream,
            last_progress=now,
            last_ack=now,
        )
        return Opened(sid, video.num_frames, start_frame, secret)

    def resume(self, tenant: str, session_id: str, secret: str, next_frame: int, stream: Stream) -> Opened:
        """Attaches ``stream`` to a session of ``tenant`` holding its secret,
        from ``next_frame``; the stream attached before (if any) ends ABORTED."""
        s = self.sessions.get(session_id)
        if s is None or not hmac.compare_digest(s.tenant.encode(), tenant.encode()):
            raise NotFound(NO_SESSION)  # another tenant's session looks like none at all
        if not secret or not hmac.compare_digest(s.secret, secret_hash(secret)):
            raise PermissionDenied("resume_secret: does not match this session's")
        oldest = min(s.produced, default=s.num_produced)
        if not s.emit_from <= next_frame <= s.num_produced:
            raise InvalidInput(f"next_frame: must be in [{s.emit_from}, {s.num_produced}], got {next_frame}")
        if next_frame < oldest:
            raise FailedPrecondition(f"next_frame: frame {next_frame} is no longer buffered (oldest {oldest})")
        if s.stream is not None:
            s.stream.end("ABORTED", "resumed elsewhere: another stream took this session over")
        s.stream = stream
        s.acked = next_frame
        s.last_progress = s.last_ack = time.monotonic()
        for i in range(next_frame, s.num_produced):
            stream.push(("frame", i, s.produced[i], s.stats.get(i)))
        return Opened(s.id, s.num_frames, next_frame)

    def _attached(self, session_id: str, stream: Stream) -> ServedSession | None:
        s = self.sessions.get(session_id)
        return s if s is not None and s.stream is stream else None

    def ack(self, session_id: str, stream: Stream, count: int) -> None:
        """``stream`` has handed frames up to ``count`` to the transport."""
        s = self._attached(session_id, stream)
        if s is None:
            return
        now = time.monotonic()
        s.acked = max(s.acked, count)
        s.last_progress = s.last_ack = now
        for i in [i for i in s.stats if i < count]:
            del s.stats[i]
        # Keep buffered_frames sent frames for a replay after a reconnect.
        for i in [i for i in s.produced if i < s.acked - self.settings.buffered_frames]:
            del s.produced[i]
        if s.acked >= s.num_frames:
            self._end(s, "done")

    def cancel(self, session_id: str, stream: Stream) -> None:
        s = self._attached(session_id, stream)
        if s is not None:
            self._end(s, "cancelled")

    def violation(self, session_id: str, stream: Stream) -> None:
        """The client broke the protocol (a second open, say): freed at once."""
        s = self._attached(session_id, stream)
        if s is not None:
            self._end(s, "protocol")

    def detach(self, session_id: str, stream: Stream) -> None:
        """``stream`` broke: the work stops; the state is kept for the detach grace.
        A stream that was taken over detaches nothing."""
        s = self._attached(session_id, stream)
        if s is not None:
            s.stream = None
            s.detached_at = time.monotonic()

    def _end(self, s: ServedSession, reason: str) -> None:
        """Frees everything ``s`` holds, tells its stream (if any) and records why."""
        self.editor.close_session(s.id)
        s.produced.clear()
        s.stats.clear()
        if s.stream is not None:
            s.stream.end(*END_STATUS.get(reason, (None, "")))
            s.stream = None
        s.embeds = {}
        log.info("session %s ended: %s", s.id, reason)
        if self.on_session_end is not None:
            self.on_session_end(reason)

    # -- the scheduler thread -------------------------------------------------

    def _run(self) -> None:
        idle = False
        while not self._stopping:
            if self._run_commands(wait=0.05 if idle else 0.0):
                self._publish()  # what a command changed shows at once, not after the next tick
            if self._stopping:
                break
            self._expire()
            idle = not self._tick()
            self._publish()
        self._run_commands(wait=0.0)  # answer what came in while stopping
        self._publish()

    def _run_commands(self, wait: float) -> bool:
        """Runs the commands posted so far (waiting up to ``wait`` for one); False if there were none."""
        try:
            fn, args, future = self._commands.get(timeout=wait) if wait else self._commands.get_nowait()
        except queue.Empty:
            return False
        while True:
            if not future.set_running_or_notify_cancel():
                pass
            elif self._stopping:
                future.set_exception(Busy("editor: this replica is stopping"))
            else:
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - the caller gets it
                    future.set_exception(exc)
            try:
                fn, args, future = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _tick(self) -> bool:
        """One tick; False when nothing was ready."""
        ticks = self.editor.ticks
        try:
            done = self.editor.tick()
            if self.editor.ticks == ticks:
                return False
            self.timer.flush(wait=bool(done))
        except Exception:  # noqa: BLE001 - one bad tick must not kill the replica
            log.exception("editor tick failed; ending the sessions in it")
            for s in [s for s in self.sessions.values() if s.runnable()]:
                self._end(s, "failed")
            return True
        now = time.monotonic()
        for sid, frame in done:
            s = self.sessions.get(sid)
            if s is None:
                continue
            s.produced[frame.index] = frame.image
            s.num_produced = frame.index + 1
            s.last_progress = now
            if s.stream is not None:
                s.stream.push(("frame", frame.index, frame.image, s.stats.get(frame.index)))
        return True

    def _expire(self) -> None:
        now = time.monotonic()
        st = self.settings
        for s in list(self.sessions.values()):
            if s.stream is None and now - s.detached_at > st.detach_grace_seconds:
                self._end(s, "detach_expired")
            elif s.stream is not None and s.acked < s.num_produced and now - s.last_ack > st.stall_timeout_seconds:
                self._end(s, "stalled")
            elif now - s.last_progress > st.idle_timeout_seconds:
                self._end(s, "idle")

    def _publish(self) -> None:
        sessions = list(self.sessions.values())
        if isinstance(self.editor, StepParallelEditor):
            flights = self.editor.frames_in_flight()  # every stage's, not only the first's
        else:
            flights = sum(len(s.flight) for s in sessions)
        ctx = self.editor.context
        self.snapshot = Snapshot(
            active=len(sessions),
            detached=sum(1 for s in sessions if s.stream is None),
            in_flight=flights,
            queued=sum(s.num_frames - s.next_frame for s in sessions),
            buffered=sum(max(s.num_produced - s.acked, 0) for s in sessions),
            feature_slots=ctx.capacity,
            feature_slots_used=len(ctx.slot_of),
            host_buffer_bytes=sum(s.host_bytes for s in sessions),
        )

    def _stage_timer(self, device):
        sink = functools.partial(self._on_device_stage, str(device))
        return CudaEventTimer(sink, device) if getattr(device, "type", str(device)) == "cuda" else HostTimer(sink)

    def _on_device_stage(self, device: str, stage: str, started: float, seconds: float, items: list) -> None:
        if stage == "denoise" and self.on_device_unet_call is not None:
            self.on_device_unet_call(device, seconds)
        self._on_stage(stage, started, seconds, items)

    def _on_handoff(self, stage: int, seconds: float) -> None:
        if self.on_handoff is not None:
            devices = self.editor.devices
            self.on_handoff(f"{devices[stage]}->{devices[stage + 1]}", seconds)

    def _on_stage(self, stage: str, started: float, seconds: float, items: list) -> None:
        """The timer's sink (scheduler thread): per-frame sums."""
        if stage == "denoise" and self.on_unet_call is not None:
            self.on_unet_call(len(items), seconds)
        for sid, index in items:
            s = self.sessions.get(sid)
            if s is None or index < s.emit_from:
                continue
            st = s.stats.get(index)
            if st is None:
                st = s.stats[index] = FrameStats(started)
            setattr(st, stage, getattr(st, stage) + seconds)
