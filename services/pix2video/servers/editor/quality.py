"""Per-session edit quality in the editor, for sessions whose open request sets ``evaluate``.

The figures are the paper's CLIP-Text and CLIP-Image (``pix2video.quality``),
measured on the frames a stream sent, once its last frame went out: in a
worker thread (``asyncio.to_thread``), so neither the event loop nor a
scheduler tick waits on CLIP. They are returned in ``done`` and exported as
gauges labelled by session id; only the last ``quality_sessions_kept``
sessions keep their series, so the label set stays bounded. Pixel-MSE needs
the source frames, which the editor does not hold (the store keeps x_T and
depth only): ``pix2video eval --source`` measures it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ...errors import FailedPrecondition, ModelLoadError


@dataclass(frozen=True)
class SessionFigures:
    clip_text: float
    clip_image: float
    frames: int
    seconds: float


class SessionQuality:
    """The editor's CLIP scorer (loaded on first use) and the per-session quality gauges.

    Args:
        metrics: the service's metrics registry (``Telemetry.metrics``).
        clip_model: CLIP hub id, folder or ``toy`` (``quality_clip_model``).
        kept: sessions whose series stay exported (``quality_sessions_kept``).
    """

    def __init__(self, metrics, clip_model: str, kept: int):
        self.clip_model, self.kept = clip_model, kept
        self._scorer = None
        self._lock = threading.Lock()  # one load, and one CLIP forward at a time
        self._sessions: deque[str] = deque()
        self.clip_text = metrics.gauge(
            "pix2video_editor_edit_clip_text",
            "CLIP-Text of a finished edit that asked for evaluation: mean cosine between the prompt's and each "
            "frame's CLIP embeddings.",
            ["session_id"],
        )
        self.clip_image = metrics.gauge(
            "pix2video_editor_edit_clip_image",
            "CLIP-Image of a finished edit that asked for evaluation: mean cosine between consecutive frames' CLIP "
            "image embeddings.",
            ["session_id"],
        )
        self.seconds = metrics.gauge(
            "pix2video_editor_edit_quality_seconds",
            "Seconds measuring a finished edit's quality took (after its last frame was sent).",
            ["session_id"],
        )

    def ready(self) -> None:
        """Loads the CLIP model now (blocking); FailedPrecondition if it cannot."""
        from ...quality.clip_scores import ClipScorer

        with self._lock:
            if self._scorer is not None:
                return
            try:
                self._scorer = ClipScorer(self.clip_model)
            except ModelLoadError as exc:
                # The reason names the model's folder: the log has it (detail), the client does not.
                raise FailedPrecondition(
                    "open.evaluate: this editor cannot measure quality (its CLIP model does not load)", detail=str(exc)
                ) from exc

    def measure(self, session_id: str, frames: list[np.ndarray], prompt: str) -> SessionFigures:
        """CLIP-Text and CLIP-Image of one session's frames (blocking: run it in a thread)."""
        from ...quality.metrics import evaluate

        self.ready()
        start = time.perf_counter()
        with self._lock:
            report = evaluate(np.stack(frames), prompt, self._scorer)
        figures = SessionFigures(report.clip_text, report.clip_image, report.frames, time.perf_counter() - start)
        self._export(session_id, figures)
        return figures

    def _export(self, session_id: str, f: SessionFigures) -> None:
        with self._lock:
            self.clip_text.labels(session_id).set(f.clip_text)
            self.clip_image.labels(session_id).set(f.clip_image)
            self.seconds.labels(session_id).set(f.seconds)
            self._sessions.append(session_id)
            while len(self._sessions) > self.kept:
                old = self._sessions.popleft()
                for gauge in (self.clip_text, self.clip_image, self.seconds):
                    gauge.remove(old)
