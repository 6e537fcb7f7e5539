"""Progress of a command's stages on stderr.

On a terminal each stage has its own bar, closed when the stage ends (so its
rate is the stage's own). Anywhere else (a log, a pipe) each stage ends with
one plain line, ``    depth: 8 frames in 0.41 s``, and nothing else: no
escape sequences, no carriage returns. :meth:`Progress.summary` prints the
final line, ``8 frames in 3.20 s (2.50 frames/s)``. Disabled (``-q``), it
prints nothing at all.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A ``progress(stage, done, total)`` callback; a new stage name ends the current stage."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, terminal: bool | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.started = self._stage_start = time.perf_counter()
        self._stage: str | None = None
        self._done = self._total = 0
        self._bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.end()
            self._stage, self._stage_start = stage, time.perf_counter()
            if self.enabled and self.terminal:
                from tqdm import tqdm

                self._bar = tqdm(total=total or None, desc=f"{stage:>9}", unit="frame", file=self.stream, leave=True)
        self._done, self._total = done, total
        if self._bar is not None:
            self._bar.total = total or None
            self._bar.n = done
            self._bar.refresh()

    def end(self) -> None:
        """Ends the current stage (its bar closed, or its line written), if any.

        A stage ends when the next begins or the work it was part of returns,
        so it ran to completion: its count is its total when it had one."""
        if self._stage is None:
            return
        count = max(self._done, self._total)
        seconds = time.perf_counter() - self._stage_start
        if self._bar is not None:
            self._bar.n = count
            self._bar.close()
            self._bar = None
        elif self.enabled:
            what = f"{count} frame{'s' if count != 1 else ''} in " if count else ""
            print(f"{self._stage:>9}: {what}{seconds:.2f} s", file=self.stream, flush=True)
        self._stage = None

    def close(self) -> None:
        """Closes a bar left open (an error mid-stage) without a line for it."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._stage = None

    def summary(self, frames: int) -> None:
        """The final line: frames, seconds since this object was made, frames per second."""
        self.end()
        if not self.enabled:
            return
        seconds = time.perf_counter() - self.started
        rate = frames / seconds if seconds > 0 else 0.0
        print(f"{frames} frames in {seconds:.2f} s ({rate:.2f} frames/s)", file=self.stream, flush=True)
