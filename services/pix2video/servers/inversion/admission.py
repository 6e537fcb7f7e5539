"""Admission control of one inversion replica (asyncio, no gRPC).

A call is admitted at once or refused at once: past ``max_running +
max_waiting`` admitted calls, or past the temporary disk all uploads may hold
together, it gets :class:`~pix2video.errors.Busy` (RESOURCE_EXHAUSTED at the
edge, with a retry hint). An admitted call holds its ticket until its job ends
(not until its client leaves: an abandoned job still occupies the device until
it stops at its next batch), so ``depth`` counts every job, running or waiting.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import Callable

from ...errors import Busy


class Ticket:
    """One admitted call: its upload folder, disk reservation and running slot."""

    def __init__(self, admission: "Admission", folder: str):
        self.admission = admission
        self.folder = folder
        self.reserved = 0
        self.running = False
        self.job_started = False  # from then on the job's end releases the ticket
        self.on_release: list[Callable[[], None]] = []  # e.g. the tenant's quota slot
        self.released = False

    def reserve(self, nbytes: int) -> None:
        """Accounts ``nbytes`` more of temporary disk; Busy if all uploads together would pass the bound."""
        a = self.admission
        if a.temp_bytes + nbytes > a.max_temp_bytes:
            raise Busy(
                f"upload: this replica holds {a.temp_bytes} bytes of uploads; {nbytes} more would pass "
                f"max_temp_bytes={a.max_temp_bytes}"
            )
        a.temp_bytes += nbytes
        self.reserved += nbytes

    async def run_slot(self) -> None:
        """Waits for one of the ``max_running`` slots."""
        await self.admission._slots.acquire()
        self.running = True

    def release(self) -> None:
        """Frees the folder, the disk and the slot (idempotent; call on the event loop)."""
        if self.released:
            return
        self.released = True
        a = self.admission
        shutil.rmtree(self.folder, ignore_errors=True)
        a.temp_bytes -= self.reserved
        self.reserved = 0
        if self.running:
            a._slots.release()
            self.running = False
        for release in self.on_release:
            release()
        a.admitted -= 1
        a.on_depth(a.admitted)


class Admission:
    def __init__(
        self,
        max_running: int,
        max_waiting: int,
        max_temp_bytes: int,
        retry_after: float,
        upload_dir: str = "",
        on_depth: Callable[[int], None] = lambda _n: None,
    ):
        self.max_running, self.max_waiting = max_running, max_waiting
        self.max_temp_bytes = max_temp_bytes
        self.retry_after = retry_after
        self.upload_dir = upload_dir or None
        self.on_depth = on_depth
        self.admitted = 0
        self.temp_bytes = 0
        self._slots = asyncio.Semaphore(max_running)

    def admit(self) -> Ticket:
        """A ticket, or Busy at once when the replica is full."""
        if self.admitted >= self.max_running + self.max_waiting:
            raise Busy(
                f"inversion: {self.admitted} jobs running or waiting on this replica, the most it takes "
                f"(max_running_jobs={self.max_running}, max_waiting_jobs={self.max_waiting}); retry later"
            )
        folder = tempfile.mkdtemp(prefix="pix2video-upload-", dir=self.upload_dir)
        self.admitted += 1
        self.on_depth(self.admitted)
        return Ticket(self, folder)
