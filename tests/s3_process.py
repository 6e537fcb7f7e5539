"""A SeaweedFS process that a test kills (SIGKILL) and restarts on the same
ports and data folder, as an S3 node that crashes and comes back does.

    with S3Process(tmp_path) as s3:     # s3.settings: S3Settings (plain HTTP)
        s3.kill()                       # SIGKILL the whole process group
        s3.start()                      # same ports, same data, waits until it serves
        s3.start(secret_key="other")    # ... or with other credentials

Built on :mod:`s3server` (its command line, port picking and probe).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from s3server import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    _log_tail,
    _pick_ports,
    _probe,
    _remove_sockets,
    _stop,
    weed_command,
)

from pix2video.store.s3 import S3Settings


class S3Process:
    def __init__(self, tmp_dir: str | os.PathLike, bucket: str = BUCKET):
        self.dir = Path(tmp_dir) / "weed"
        self.data = self.dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = _pick_ports(random.Random())
        self.settings = S3Settings(
            endpoint=f"127.0.0.1:{self.ports['s3']}",
            bucket=bucket,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=False,
        )
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # The server dies with the thread that started it (PR_SET_PDEATHSIG), so
        # every start runs on this one long-lived thread, whichever thread asks
        # (a test may restart it from a timer).
        self._spawns: queue.Queue = queue.Queue()
        threading.Thread(target=self._spawner, daemon=True).start()

    def _spawner(self) -> None:
        while True:
            args, reply = self._spawns.get()
            try:
                reply.put(subprocess.Popen(**args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                reply.put(exc)

    def start(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, timeout: float = 60.0) -> None:
        """Starts the server (credentials from its environment) and waits until a PUT/GET works."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
        for var in ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL"):
            env.pop(var, None)
        self.starts += 1
        log = self.dir / f"weed-{self.starts}.log"
        _remove_sockets(self.ports)
        with open(log, "wb") as f:
            reply: queue.Queue = queue.Queue()
            # No preexec_fn: Python code between fork and exec can deadlock in a
            # process whose gRPC threads hold locks (seen: abseil aborting the
            # child). setpriv sets the parent-death signal in the child instead.
            launcher = ["setpriv", "--pdeathsig", "SIGTERM"] if shutil.which("setpriv") else []
            args = dict(
                args=launcher + weed_command(self.data, self.ports),
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._spawns.put((args, reply))
            proc = reply.get()
            if isinstance(proc, BaseException):
                raise proc
            self.proc = proc
        probe = dataclasses.replace(self.settings, access_key=access_key, secret_key=secret_key)
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                _probe(probe)
                return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"SeaweedFS did not come back (exit {self.proc.poll()}, {last!r}):\n{_log_tail(log)}")

    def kill(self) -> None:
        """SIGKILL, no grace: the server gets no chance to flush or answer."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        _remove_sockets(self.ports)

    def __enter__(self) -> "S3Process":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
