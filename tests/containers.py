"""Containers for the tests: the engine (podman, or docker where a daemon
answers), the image built by deploy/docker/build-local.sh, and containers run
on the host network that are always removed.

    with engine.run("weed", image, args, ...) as c:   # detached; removed on exit
        ...
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/pix2video-base:bookworm"
REQUIRE_ENV = "PIX2VIDEO_REQUIRE_CONTAINERS"  # .ci/run sets it: no engine is then a failure, not a skip
SWITCH_ENV = "PIX2VIDEO_CI_CONTAINERS"  # .ci/run: on (1) by default, 0 skips the container test


def find_engine() -> str | None:
    """``docker`` when its daemon answers, else ``podman``, else None."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0:
        return docker
    return shutil.which("podman")


class Engine:
    def __init__(self, binary: str):
        self.binary = binary

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.binary} {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return proc

    def logs(self, name: str) -> str:
        proc = self("logs", name, check=False)
        return (proc.stdout + proc.stderr)[-4000:]

    @contextmanager
    def run(
        self,
        name: str,
        image: str,
        args: Sequence[str],
        *,
        options: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Iterator[str]:
        """Starts ``image args`` detached on the host network, read-only root,
        as uid 10001; yields the container's name; stops and removes it."""
        full = f"pix2video-test-{name}-{uuid.uuid4().hex[:8]}"
        flags = ["--network", "host", "--read-only", "--user", "10001:10001", "--tmpfs", "/tmp:rw,mode=1777"]
        for key, value in (env or {}).items():
            flags += ["-e", f"{key}={value}"]
        self("run", "-d", "--name", full, *flags, *options, image, *args, timeout=180)
        try:
            yield full
        finally:
            self("rm", "-f", "-v", "-t", "5", full, check=False, timeout=60)  # -v: its anonymous /models volume too

    def running(self, name: str) -> bool:
        proc = self("inspect", "--format", "{{.State.Running}}", name, check=False)
        return proc.stdout.strip() == "true"


def build_image(tag: str, log: Path, timeout: float = 900) -> float:
    """Runs deploy/docker/build-local.sh (tiny set baked in); returns its seconds."""
    start = time.monotonic()
    with open(log, "wb") as out:
        # Its own session: on a timeout the whole group goes (the script's wheel
        # server and the engine too), not only the shell.
        proc = subprocess.Popen(
            ["bash", str(ROOT / "deploy/docker/build-local.sh"), "--tag", tag, "--model-sets", "tiny"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PYTHON": sys.executable, **os.environ},
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise RuntimeError(f"build-local.sh ran past {timeout:g} s:\n{log.read_text()[-4000:]}") from None
    if returncode != 0:
        raise RuntimeError(f"build-local.sh failed ({returncode}):\n{log.read_text()[-4000:]}")
    return time.monotonic() - start
