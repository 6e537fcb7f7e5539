"""The editor service's engine: one scheduler thread drives every session.

Sessions are registered with one :class:`~pix2video.engine.editor.Pix2VideoEditor`,
whose ticks batch the ready work of all of them into shared UNet calls. This
module adds what a long-running service needs around it: session ids, a small
buffer of finished frames per session (back-pressure and replay after a
reconnect), pausing a session while its client is away, the idle timeout, and
freeing everything on cancel. No gRPC here.
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


class EditorEngine:
    def __init__(self, settings: EditorServerSettings, store=None, models=None):
        self.settings = settings
        self.models = models or load_models(settings)
        self.store = store if store is not None else settings.open_store()
        self.editor = Pix2VideoEditor(self.models, max_batch_items=settings.max_batch_items)
        self.records: dict[str, SessionRecord] = {}
        self._by_session: dict[int, SessionRecord] = {}
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
        """Runs the whole edit path once on a one-frame synthetic video."""
        import torch

        class _One:
            num_frames, num_steps = 2, 2
            h = w = 64 // self.models.vae_scale_factor

            def latent(self, i):
                return torch.zeros(4, self.h, self.w)

            def depth(self, i):
                return torch.zeros(1, self.h, self.w)

        with self._lock:
            list(self.editor.edit(_One(), EditSettings(prompt="warm up", num_steps=2, frames_in_flight=2)))

    # -- sessions (called from the server's threads) --------------------------

    def open(self, video_id: str, make_settings: Callable[[int], EditSettings]) -> SessionRecord:
        """Opens a session on a stored video; ``make_settings(video_steps)``
        builds the settings once the video's step count is known."""
        if not video_id:
            raise InvalidInput("video_id: required")
        video = StoredVideo(self.store, video_id)
        settings = make_settings(video.num_steps)
        with self._lock:
            if len(self.records) >= self.settings.max_sessions:
                raise Busy(f"sessions: this replica holds its maximum of {self.settings.max_sessions}")
            session = self.editor.open_session(video, settings)
            sid = uuid.uuid4().hex
            rec = SessionRecord(
                id=f"{self.settings.replica_name}.{sid}" if self.settings.replica_name else sid,
                session=session, num_frames=video.num_frames,
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
            if rec.attached:
                raise FailedPrecondition(f"session_id: session {session_id!r} is attached to another stream")
            oldest = min(rec.produced, default=rec.num_produced)
            if not 0 <= next_frame <= rec.num_produced:
                raise InvalidInput(f"next_frame: must be in [0, {rec.num_produced}], got {next_frame}")
            if next_frame < oldest:
                raise FailedPrecondition(f"next_frame: frame {next_frame} is no longer buffered (oldest {oldest})")
            rec.sent = next_frame
            self._attach(rec)
            return rec

    def _attach(self, rec: SessionRecord) -> None:
        rec.attached = True
        self._lock.notify_all()

    def detach(self, rec: SessionRecord) -> None:
        """The stream broke: pause the GPU work, keep the state until the idle timeout."""
        with self._lock:
            if not rec.closed:
                rec.attached = False
                rec.detached_at = time.monotonic()
                rec.wake = lambda: None

    def cancel(self, rec: SessionRecord) -> None:
        with self._lock:
            self._close(rec)

    def take(self, rec: SessionRecord) -> list[tuple[int, np.ndarray]]:
        """Frames ready to send on the stream, in order, from ``rec.sent``."""
        with self._lock:
            return [(i, rec.produced[i]) for i in range(rec.sent, rec.num_produced)]

    def mark_sent(self, rec: SessionRecord, count: int) -> None:
        with self._lock:
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
                if not self.editor.ready_items():
                    self._lock.wait(timeout=0.05)
                    continue
                try:
                    done = self.editor.tick()
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

    def _expire_idle(self) -> None:
        now = time.monotonic()
        for rec in list(self.records.values()):
            if not rec.attached and now - rec.detached_at > self.settings.idle_timeout_seconds:
                log.info("session %s idle for %.0f s: freed", rec.id, now - rec.detached_at)
                self._close(rec)
