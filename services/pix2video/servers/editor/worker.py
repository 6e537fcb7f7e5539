"""The editor service's worker: one scheduler thread drives every session.

Sessions are registered with one :class:`~pix2video.engine.editor.Pix2VideoEditor`,
whose ticks batch the ready work of all of them into shared UNet calls. This
module adds what a long-running service needs around it: session ids, a small
buffer of finished frames per session (back-pressure and replay after a
reconnect), pausing a session while its client is away, the idle timeout, and
freeing everything on cancel. No gRPC here.

Timing: a stage timer on the editor (host clock on the CPU, CUDA events on a
GPU, so the loop never waits for the device to time it) adds up, per frame,
the time of the denoising, latent-update and decode stages it took part in,
and when its first stage began; the server reads them with the frame and
turns them into metrics and a span.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...engine.editor import EditSession, Pix2VideoEditor
from ...engine.settings import EditSettings
from ...engine.timers import CudaEventTimer, FrameStats, HostTimer
from ...errors import Busy, FailedPrecondition, InvalidInput, NotFound
from ...store import StoredVideo
from ..common.models import load_models
from .settings import EditorServerSettings

log = logging.getLogger(__name__)


@dataclass
class SessionRecord:
    id: str
    session: EditSession
    num_frames: int
    produced: dict[int, np.ndarray] = field(default_factory=dict)  # recent finished frames by index
    num_produced: int = 0
    sent: int = 0  # frames the current (or last) stream has sent
    attached: bool = False
    detached_at: float = 0.0
    closed: bool = False
    wake: Callable[[], None] = lambda: None  # set by the stream: wakes it from the scheduler thread
    stream: int = 0  # which stream owns the session; a resume takes it over
    stats: dict[int, FrameStats] = field(default_factory=dict)  # timing of frames not yet sent


class EditorWorker:
    def __init__(self, settings: EditorServerSettings, store=None, models=None):
        self.settings = settings
        self.models = models or load_models(settings)
        self.store = store if store is not None else settings.open_store()
        self.editor = Pix2VideoEditor(
            self.models,
            max_batch_items=settings.max_batch_items,
            runner=settings.make_runner(self.models),
            feature_slots=settings.feature_slots,
        )
        self.records: dict[str, SessionRecord] = {}
        self._by_session: dict[int, SessionRecord] = {}
        # Every read of the sessions goes through store_io: the store itself, or
        # what the server wraps it in (counted and timed operations).
        self.store_io = self.store
        cuda = getattr(self.models.device, "type", str(self.models.device)) == "cuda"
        self.timer = CudaEventTimer(self._on_stage, self.models.device) if cuda else HostTimer(self._on_stage)
        self.editor.timer = self.timer
        # on_unet_call(items, seconds) after each batched denoising call (metrics).
        self.on_unet_call: Callable[[int, float], None] | None = None
        # One lock for the editor and the registry: opening or closing a session
        # waits for at most one tick.
        self._lock = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="editor-scheduler", daemon=True)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        self._thread.join(30)
        with self._lock:
            for rec in list(self.records.values()):
                self._close(rec)

    def warmup(self) -> None:
        """Captures (and compiles) the UNet graphs of every batch bucket at the
        warm-up frame size, then runs the whole edit path once on a two-frame
        synthetic video."""
        import torch

        class _One:
            num_frames, num_steps = 2, 2
            h = w = 64 // self.models.vae_scale_factor

            def latent(self, i):
                return torch.zeros(4, self.h, self.w)

            def depth(self, i):
                return torch.zeros(1, self.h, self.w)

        with self._lock:
            if self.editor.runner.cuda_graphs:
                self.editor.warm_up(self.settings.warm_up_height, self.settings.warm_up_width)
                log.info("editor warm-up: %s", self.editor.runner.warm)
            self.editor.timer = None  # warm-up frames are not service frames
            try:
                list(self.editor.edit(_One(), EditSettings(prompt="warm up", num_steps=2, frames_in_flight=2)))
            finally:
                self.editor.timer = self.timer

    # -- sessions (called from the server's threads) --------------------------

    def open(self, video_id: str, make_settings: Callable[[int], EditSettings]) -> SessionRecord:
        """Opens a session on a stored video; ``make_settings(video_steps)``
        builds the settings once the video's step count is known."""
        if not video_id:
            raise InvalidInput("video_id: required")
        video = StoredVideo(self.store_io, video_id)
        settings = make_settings(video.num_steps)
        with self._lock:
            if len(self.records) >= self.settings.max_sessions:
                raise Busy(f"sessions: this replica holds its maximum of {self.settings.max_sessions}")
            session = self.editor.open_session(video, settings)
            sid = uuid.uuid4().hex
            rec = SessionRecord(
                id=f"{self.settings.replica_name}.{sid}" if self.settings.replica_name else sid,
                session=session,
                num_frames=video.num_frames,
            )
            self.records[rec.id] = rec
            self._by_session[session.id] = rec
            self._attach(rec)
            return rec

    def resume(self, session_id: str, next_frame: int) -> SessionRecord:
        with self._lock:
            rec = self.records.get(session_id)
            if rec is None:
                raise NotFound(f"session_id: no open session {session_id!r} (finished, cancelled or timed out)")
            oldest = min(rec.produced, default=rec.num_produced)
            if not 0 <= next_frame <= rec.num_produced:
                raise InvalidInput(f"next_frame: must be in [0, {rec.num_produced}], got {next_frame}")
            if next_frame < oldest:
                raise FailedPrecondition(f"next_frame: frame {next_frame} is no longer buffered (oldest {oldest})")
            rec.sent = next_frame
            self._attach(rec)
            return rec

    def _attach(self, rec: SessionRecord) -> None:
        # A client resumes when its stream broke, possibly before the server has
        # noticed: the new stream takes over, and the old one is woken to see
        # that it no longer owns the session.
        superseded = rec.wake
        rec.stream += 1
        rec.attached = True
        rec.wake = lambda: None
        superseded()
        self._lock.notify_all()

    def detach(self, rec: SessionRecord, stream: int) -> None:
        """The stream broke: pause the GPU work, keep the state until the idle
        timeout. A stream that was taken over detaches nothing."""
        with self._lock:
            if not rec.closed and rec.stream == stream:
                rec.attached = False
                rec.detached_at = time.monotonic()
                rec.wake = lambda: None

    def cancel(self, rec: SessionRecord) -> None:
        with self._lock:
            self._close(rec)

    def take(self, rec: SessionRecord) -> list[tuple[int, np.ndarray, FrameStats | None]]:
        """Frames ready to send on the stream, in order, from ``rec.sent``, with
        their timing (None for a frame sent before: a replay after a resume)."""
        with self._lock:
            return [(i, rec.produced[i], rec.stats.get(i)) for i in range(rec.sent, rec.num_produced)]

    def mark_sent(self, rec: SessionRecord, count: int) -> None:
        with self._lock:
            for i in [i for i in rec.stats if i < count]:
                del rec.stats[i]
            rec.sent = max(rec.sent, count)
            # Keep buffered_frames already-sent frames for a replay after a reconnect.
            for i in [i for i in rec.produced if i < rec.sent - self.settings.buffered_frames]:
                del rec.produced[i]
            if rec.sent >= rec.num_frames:
                self._close(rec)
            self._lock.notify_all()

    def _close(self, rec: SessionRecord) -> None:
        if rec.closed:
            return
        rec.closed = True
        self.editor.close_session(rec.session.id)
        self.records.pop(rec.id, None)
        self._by_session.pop(rec.session.id, None)
        rec.produced.clear()
        rec.stats.clear()
        rec.wake()

    # -- the scheduler thread -------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                self._expire_idle()
                for rec in self.records.values():
                    ahead = rec.num_produced - rec.sent
                    rec.session.paused = not rec.attached or ahead >= self.settings.buffered_frames
                ticks = self.editor.ticks
                try:
                    done = self.editor.tick()
                    if self.editor.ticks == ticks:  # nothing was ready: sleep until a change
                        self._lock.wait(timeout=0.05)
                        continue
                    self.timer.flush(wait=bool(done))
                except Exception:  # noqa: BLE001 - one bad tick must not kill the replica
                    log.exception("editor tick failed; closing the sessions in it")
                    for rec in list(self.records.values()):
                        if not rec.session.paused:
                            self._close(rec)
                    continue
                for sid, frame in done:
                    rec = self._by_session.get(sid)
                    if rec is not None:
                        rec.produced[frame.index] = frame.image
                        rec.num_produced = frame.index + 1
                        rec.wake()

    def _on_stage(self, stage: str, started: float, seconds: float, items: list) -> None:
        """The timer's sink (scheduler thread, lock held): per-frame sums."""
        if stage == "denoise" and self.on_unet_call is not None:
            self.on_unet_call(len(items), seconds)
        for sid, index in items:
            rec = self._by_session.get(sid)
            if rec is None:
                continue
            st = rec.stats.get(index)
            if st is None:
                st = rec.stats[index] = FrameStats(started)
            setattr(st, stage, getattr(st, stage) + seconds)

    # -- gauges (read without the lock at scrape time: a tick may hold it long) --

    def gauges(self) -> dict[str, int]:
        """Sessions and frames right now, for the metrics endpoint."""
        for _ in range(3):
            try:
                records = list(self.records.values())
                flights = [len(s.flight) for s in list(self.editor.sessions.values())]
                break
            except RuntimeError:  # changed size while copied: read again
                continue
        else:
            return {}
        return {
            "active": len(records),
            "detached": sum(1 for r in records if not r.attached),
            "in_flight": sum(flights),
            "queued": sum(max(r.num_frames - r.num_produced, 0) for r in records) - sum(flights),
            "buffered": sum(max(r.num_produced - r.sent, 0) for r in records),
        }

    def _expire_idle(self) -> None:
        now = time.monotonic()
        for rec in list(self.records.values()):
            if not rec.attached and now - rec.detached_at > self.settings.idle_timeout_seconds:
                log.info("session %s idle for %.0f s: freed", rec.id, now - rec.detached_at)
                self._close(rec)
