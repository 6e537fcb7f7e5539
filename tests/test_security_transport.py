"""Transport security and tenants, from the outside: TLS and mutual TLS on
every port (gRPC and metrics), certificate and token rotation without a
restart, API tokens checked by the interceptor, tenants kept apart in the
store (NOT_FOUND, cached=False), per-tenant quotas, and secrets kept out of
the logs.

Real servers on loopback port 0, real channels, throwaway certificate
authorities (tests/certs.py), tiny models, a real SeaweedFS S3 server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import logging
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from certs import CA
from reliability import call_passed, reliability_row
from s3server import s3_server_fields

from pix2video.errors import InvalidInput
from pix2video.servers.caption.settings import CaptionSettings
from pix2video.servers.common import auth as auth_mod
from pix2video.servers.common.server import ServerThread, start_server
from pix2video.servers.common.settings import ServerSettings, load_settings
from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.editor.settings import EditorServerSettings
from pix2video.servers.inversion.server import build as build_inversion
from pix2video.servers.inversion.settings import InversionServerSettings
from pix2video.servers.suite import start_suite
from pix2video.store import read_manifest
from pix2video.store.tenant import TenantStore
from pix2video.tenancy import current_tenant
from pix2video.video import make_sample_frames, write_video
from pix2video_api.inversion.v1 import inversion_pb2, inversion_pb2_grpc
from pix2video_client import EditOptions, InversionOptions, Pix2VideoClient
from pix2video_client import errors as client_errors
from pix2video_client.aio import AsyncPix2VideoClient

STEPS = 2
SIZE = 64
INV = InversionOptions(width=SIZE, height=SIZE, num_steps=STEPS, source_prompt="a red ball")
TOKENS = {"tenant-a": "tok-a-" + "a" * 40, "tenant-b": "tok-b-" + "b" * 40, "tenant-c": "tok-c-" + "c" * 40}
ABSENT = "0" * 40  # a well-formed video id that no one has
SERVICE_TOKEN = "tok-svc-" + "s" * 40
SECRET_S3 = "s3-secret-for-the-log-grep-9f3c"  # not SeaweedFS's: only ever sent to a server that rejects it


class Captured(logging.Handler):
    """Every log record of the module, formatted, for the secrets grep at the end."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        try:
            self.lines.append(self.format(record) + (f" {record.exc_info[1]!r}" if record.exc_info else ""))
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture(scope="module")
def captured():
    handler = Captured()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


@dataclasses.dataclass
class Pki:
    dir: Path
    ca: CA
    ca_file: Path
    other_ca: CA
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN client (no tenant meaning unless tenant_from_client_cert)
    client_key: Path
    foreign_cert: Path  # signed by other_ca
    foreign_key: Path
    tokens_file: Path
    service_token_file: Path


def write_tokens(path: Path, tokens: dict[str, str]) -> None:
    lines = ["# tenant  hash"] + [f"{t} {auth_mod.hash_token(tok)}" for t, tok in tokens.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)  # a Secret update: the whole file at once


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, other = CA("test CA"), CA("another CA")
    (d / "ca.crt").write_bytes(ca.pem)
    sc, sk = ca.issue("pix2video").write(d, "server")
    cc, ck = ca.issue("client", server=False).write(d, "client")
    fc, fk = other.issue("tenant-a", server=False).write(d, "foreign")
    tokens = d / "tokens"
    write_tokens(tokens, {**TOKENS, "svc": SERVICE_TOKEN})
    svc = d / "svc-token"
    svc.write_text(SERVICE_TOKEN + "\n")
    return Pki(d, ca, d / "ca.crt", other, sc, sk, cc, ck, fc, fk, tokens, svc)


def tls_settings(pki: Pki, mutual: bool = True) -> dict:
    return dict(
        tls_cert_file=str(pki.server_cert),
        tls_key_file=str(pki.server_key),
        tls_client_ca_file=str(pki.ca_file) if mutual else "",
        auth_tokens_file=str(pki.tokens_file),
    )


def client_creds(pki: Pki, cert: bool = True, root: bytes | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root or pki.ca_file.read_bytes(),
        pki.client_key.read_bytes() if cert else None,
        pki.client_cert.read_bytes() if cert else None,
    )


def bearer(tenant: str) -> tuple:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


@pytest.fixture(scope="module")
def suite(tiny_dir, s3_settings, pki, tmp_path_factory, captured):
    home = tmp_path_factory.mktemp("home")
    shared = dict(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        model=str(tiny_dir),
        device="cpu",
        dtype="float32",
        home=str(home),
        **tls_settings(pki),
    )
    s3 = s3_server_fields(s3_settings, "sectransport")
    upstream = dict(
        upstream_tls_ca_file=str(pki.ca_file),
        upstream_tls_cert_file=str(pki.client_cert),
        upstream_tls_key_file=str(pki.client_key),
        upstream_token_file=str(pki.service_token_file),
    )
    settings = {
        "depth": DepthSettings(**shared),
        "caption": CaptionSettings(**shared),
        "inversion": InversionServerSettings(**shared, **s3, **upstream, batch_size=4),
        "editor": EditorServerSettings(**shared, **s3, idle_timeout_seconds=30, buffered_frames=3),
    }
    thread = ServerThread()
    running = thread.run(start_suite(settings))
    thread.servers = list(running.values())
    # A second inversion service on the same bucket, with tight per-tenant quotas.
    quota = dataclasses.replace(
        settings["inversion"],
        depth_address=f"127.0.0.1:{running['depth'].port}",
        caption_address=f"127.0.0.1:{running['caption'].port}",
        s3_prefix="sectransport-quota",
        max_inversions_per_tenant=1,
        max_stored_bytes_per_tenant=1,
    )
    running["quota"] = thread.run(build_inversion(quota))
    thread.servers.append(running["quota"])
    yield running
    thread.stop()


def sdk(suite, pki, tenant: str | None, name: str = "inversion", **kw) -> Pix2VideoClient:
    return Pix2VideoClient(
        f"127.0.0.1:{suite[name].port}",
        f"127.0.0.1:{suite['editor'].port}",
        timeout=120,
        retries=0,
        token=TOKENS[tenant] if tenant else None,
        tls_ca_file=pki.ca_file,
        tls_cert_file=pki.client_cert,
        tls_key_file=pki.client_key,
        **kw,
    )


def make_clip(folder: Path, name: str, seed: int, frames: int = 3) -> Path:
    path = folder / name
    write_video(path, make_sample_frames(frames, 64 + 8 * seed, 64), fps=8)  # a different clip per seed
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip"), "clip.mp4", 0)


def get_video(port: int, creds, video_id: str = ABSENT, metadata=()):
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) if creds else grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return inversion_pb2_grpc.InversionServiceStub(ch).GetVideo(
            inversion_pb2.GetVideoRequest(video_id=video_id), timeout=10, metadata=metadata
        )


def code_of(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# -- the reliability table (docs/RELIABILITY.md): one row per attack on the suite -----------

# test -> (row id, what was done, the statuses the test asserts). Recorded only
# when the test passed, so the status column is what the clients did get.
ATTACKS = {
    "test_tls_refuses_plaintext_and_mtls_refuses_missing_or_foreign_client_certs": (
        "tls",
        "plaintext, no client certificate, a foreign CA's certificate, a client distrusting the server's CA",
        "UNAVAILABLE (handshake refused) for each; NOT_FOUND for the good client",
    ),
    "test_no_or_bad_token_is_unauthenticated_on_every_service": (
        "token",
        "no token, an unknown token, a token in the wrong scheme, on inversion and depth",
        "UNAUTHENTICATED, naming no token",
    ),
    "test_tenant_b_cannot_see_get_or_reuse_tenant_a_video": (
        "tenant-get",
        "tenant B asks for tenant A's video id and inverts the same clip",
        "NOT_FOUND, worded as for an id that never existed; B's own inversion runs (no cache hit on A's)",
    ),
    "test_tenant_b_cannot_edit_tenant_a_video": (
        "tenant-edit",
        "tenant B opens an edit of tenant A's video",
        "NOT_FOUND; A's edit of it completes",
    ),
    "test_invert_by_object_key_reads_only_the_tenants_prefix": (
        "tenant-key",
        "tenant B inverts tenant A's upload by its key and by its full store key",
        "NOT_FOUND for both",
    ),
    "test_quota_of_concurrent_inversions_and_stored_bytes": (
        "tenant-quota",
        "a tenant past max_inversions_per_tenant=1, then past max_stored_bytes_per_tenant",
        "RESOURCE_EXHAUSTED naming the quota; another tenant is not held back",
    ),
}


def _suite_serves(suite, pki) -> bool:
    """Every service reports SERVING over mutual TLS, and inversion answers a call."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ok = client_creds(pki)
    for name in ("depth", "caption", "inversion", "editor", "quota"):
        with grpc.secure_channel(f"127.0.0.1:{suite[name].port}", ok) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            if status != health_pb2.HealthCheckResponse.SERVING:
                return False
    return code_of(lambda: get_video(suite["inversion"].port, ok, ABSENT, bearer("tenant-a"))) == (
        grpc.StatusCode.NOT_FOUND
    )


@pytest.fixture(autouse=True)
def attack_row(request):
    if request.node.originalname not in ATTACKS:
        yield
        return
    row_id, what, status = ATTACKS[request.node.originalname]
    suite, pki = request.getfixturevalue("suite"), request.getfixturevalue("pki")
    with reliability_row(f"security.{row_id}", "Attacks (security)", what) as row:
        yield
        if not call_passed(request):
            row.discard()
            return
        row.status, row.kept_serving, row.lost = status, _suite_serves(suite, pki), "nothing"


# -- transport ------------------------------------------------------------------


def test_tls_refuses_plaintext_and_mtls_refuses_missing_or_foreign_client_certs(suite, pki):
    port = suite["inversion"].port
    ok = client_creds(pki)
    assert code_of(lambda: get_video(port, ok, ABSENT, bearer("tenant-a"))) == grpc.StatusCode.NOT_FOUND
    # A plaintext client gets no answer from a TLS port.
    assert code_of(lambda: get_video(port, None, ABSENT, bearer("tenant-a"))) == grpc.StatusCode.UNAVAILABLE
    # Mutual TLS: no client certificate, or one from another CA, fails the handshake.
    no_cert = client_creds(pki, cert=False)
    assert code_of(lambda: get_video(port, no_cert, ABSENT, bearer("tenant-a"))) == grpc.StatusCode.UNAVAILABLE
    foreign = grpc.ssl_channel_credentials(
        pki.ca_file.read_bytes(), pki.foreign_key.read_bytes(), pki.foreign_cert.read_bytes()
    )
    assert code_of(lambda: get_video(port, foreign, ABSENT, bearer("tenant-a"))) == grpc.StatusCode.UNAVAILABLE
    # A client that does not trust the server's CA refuses the server.
    distrust = grpc.ssl_channel_credentials(pki.other_ca.pem, pki.client_key.read_bytes(), pki.client_cert.read_bytes())
    assert code_of(lambda: get_video(port, distrust, ABSENT, bearer("tenant-a"))) == grpc.StatusCode.UNAVAILABLE
    # Every service of the suite speaks TLS, health included.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for name in ("depth", "caption", "inversion", "editor"):
        with grpc.secure_channel(f"127.0.0.1:{suite[name].port}", ok) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING, name
        with grpc.insecure_channel(f"127.0.0.1:{suite[name].port}") as ch:
            assert (
                code_of(lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5))
                == grpc.StatusCode.UNAVAILABLE
            ), name


def test_no_or_bad_token_is_unauthenticated_on_every_service(suite, pki):
    ok = client_creds(pki)
    port = suite["inversion"].port
    for md in ((), (("authorization", "Bearer not-a-token"),), (("authorization", "Basic " + TOKENS["tenant-a"]),)):
        with pytest.raises(grpc.RpcError) as exc:
            get_video(port, ok, ABSENT, md)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert TOKENS["tenant-a"] not in exc.value.details()
    # The SDK maps it to its own error; the depth service checks tokens too.
    with sdk(suite, pki, None) as c, pytest.raises(client_errors.Unauthenticated):
        c.get_video(ABSENT)
    from pix2video_api.depth.v1 import depth_pb2, depth_pb2_grpc

    with grpc.secure_channel(f"127.0.0.1:{suite['depth'].port}", ok) as ch:
        stub = depth_pb2_grpc.DepthServiceStub(ch)
        assert code_of(lambda: list(stub.EstimateDepth(iter([depth_pb2.EstimateDepthRequest()]), timeout=10))) == (
            grpc.StatusCode.UNAUTHENTICATED
        )


# -- tenants ----------------------------------------------------------------------


def test_tenant_b_cannot_see_get_or_reuse_tenant_a_video(suite, pki, clip, s3_settings):
    with sdk(suite, pki, "tenant-a") as a, sdk(suite, pki, "tenant-b") as b:
        first = a.invert(clip, INV)
        assert not first.cached
        assert a.invert(clip, INV).cached  # A's own cache
        assert a.get_video(first.video_id).num_frames == 3
        # B: the id does not exist, exactly as an id that never existed.
        with pytest.raises(client_errors.NotFound) as got:
            b.get_video(first.video_id)
        with pytest.raises(client_errors.NotFound) as never:
            b.get_video(ABSENT)
        assert got.value.details.replace(first.video_id, "ID") == never.value.details.replace(ABSENT, "ID")
        # B's inversion of the same bytes is B's own work, not A's cache hit.
        mine = b.invert(clip, INV)
        assert not mine.cached and mine.video_id == first.video_id
        assert b.invert(clip, INV).cached
    # In the bucket: each under its own prefix, nothing at the root layout.
    store = suite["inversion"].servicer.worker.store
    for tenant in ("tenant-a", "tenant-b"):
        assert read_manifest(TenantStore(store, tenant), first.video_id) is not None
    assert read_manifest(store, first.video_id) is None
    assert read_manifest(TenantStore(store, "tenant-c"), first.video_id) is None


def test_tenant_b_cannot_edit_tenant_a_video(suite, pki, tmp_path):
    # Needs the editor to open videos through TenantStore(store, current_tenant()).
    clip = make_clip(tmp_path, "edit.mp4", 7, frames=2)
    with sdk(suite, pki, "tenant-a") as a, sdk(suite, pki, "tenant-b") as b:
        info = a.invert(clip, INV)
        with pytest.raises(client_errors.NotFound):
            list(b.edit(info.video_id, "a swan", EditOptions()))
        frames = list(a.edit(info.video_id, "a swan", EditOptions(), encoding="raw"))
        assert len(frames) == 2


def test_tenant_b_never_waits_on_tenant_a_inverting_the_same_clip(tmp_path, clip_frames):
    """The per-video lock is the tenant's: a wait on A's job would tell B that A
    is inverting this very clip."""
    import numpy as np
    import torch

    from pix2video.jobs import InversionSettings, invert_video
    from pix2video.store import LocalDiskStore

    store = LocalDiskStore(tmp_path / "store")
    frames = np.ascontiguousarray(clip_frames[:2])
    settings = InversionSettings(64, 64, num_steps=2, source_prompt="a ball")
    a_started, a_may_finish = threading.Event(), threading.Event()

    def depth(tenant):
        def fn(f):
            if tenant == "tenant-a":
                a_started.set()
                assert a_may_finish.wait(30)
            return torch.zeros(len(f), 1, 8, 8)

        return fn

    def run(tenant, out):
        out[tenant] = invert_video(
            frames,
            settings,
            store=TenantStore(store, tenant),
            model_identity={"model": "none"},
            depth_fn=depth(tenant),
            caption_fn=lambda f: ["unused"],
            invert_fn=lambda f, d, prompt, steps: torch.zeros(len(f), 4, 8, 8),
        )

    out: dict = {}
    a = threading.Thread(target=run, args=("tenant-a", out))
    a.start()
    try:
        assert a_started.wait(30)
        b = threading.Thread(target=run, args=("tenant-b", out))
        b.start()
        b.join(10)
        assert not b.is_alive(), "tenant B's inversion waited on tenant A's"
        assert not out["tenant-b"].cached
    finally:
        a_may_finish.set()
        a.join(30)
    assert out["tenant-a"].video_id == out["tenant-b"].video_id and not out["tenant-a"].cached


def test_invert_by_object_key_reads_only_the_tenants_prefix(suite, pki, clip):
    store = suite["inversion"].servicer.worker.store
    TenantStore(store, "tenant-a").put("uploads/clip.mp4", clip.read_bytes())
    with sdk(suite, pki, "tenant-a") as a, sdk(suite, pki, "tenant-b") as b:
        assert a.invert("uploads/clip.mp4", INV, key=True).num_frames == 3
        with pytest.raises(client_errors.NotFound):
            b.invert("uploads/clip.mp4", INV, key=True)
        with pytest.raises(client_errors.NotFound):  # nor by its full key
            b.invert("tenants/tenant-a/uploads/clip.mp4", INV, key=True)


def test_quota_of_concurrent_inversions_and_stored_bytes(suite, pki, tmp_path):
    port = suite["quota"].port
    ok = client_creds(pki)
    release = threading.Event()

    def slow_upload():
        yield inversion_pb2.InvertRequest(
            start=inversion_pb2.InvertStart(settings=INV.to_proto(), upload=inversion_pb2.Upload(filename="x.mp4"))
        )
        yield inversion_pb2.InvertRequest(chunk=b"\0" * 10)
        release.wait(30)

    with grpc.secure_channel(f"127.0.0.1:{port}", ok) as ch:
        stub = inversion_pb2_grpc.InversionServiceStub(ch)
        held = stub.Invert(slow_upload(), metadata=bearer("tenant-a"), timeout=60)
        quota = suite["quota"].servicer.running_quota
        deadline = time.monotonic() + 20
        while quota.held("tenant-a") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert quota.held("tenant-a") == 1  # A's first inversion is running (receiving its upload)
        try:
            with sdk(suite, pki, "tenant-a", name="quota") as a, pytest.raises(client_errors.ResourceExhausted) as exc:
                a.invert(make_clip(tmp_path, "q1.mp4", 3), INV)
            assert "max_inversions_per_tenant" in exc.value.details
            # B is not held back by A's quota.
            with sdk(suite, pki, "tenant-b", name="quota") as b:
                assert not b.invert(make_clip(tmp_path, "q2.mp4", 4), INV).cached
        finally:
            release.set()
        with pytest.raises(grpc.RpcError):
            list(held)  # 10 bytes of zeros are no video
    # The slot is free again; then A's stored bytes pass the (1 byte) quota.
    with sdk(suite, pki, "tenant-c", name="quota") as c:
        c.invert(make_clip(tmp_path, "q3.mp4", 5), INV)
        with pytest.raises(client_errors.ResourceExhausted) as exc:
            c.invert(make_clip(tmp_path, "q4.mp4", 6), INV)
        assert "max_stored_bytes_per_tenant" in exc.value.details
    with sdk(suite, pki, "tenant-a", name="quota") as a:
        a.invert(make_clip(tmp_path, "q5.mp4", 8), INV)  # A had stored nothing through this service yet


# -- clients: SDK (sync, async) and CLI ---------------------------------------------


def test_async_sdk_with_certificates_and_token_from_the_environment(suite, pki, tmp_path, monkeypatch):
    monkeypatch.setenv("PIX2VIDEO_TOKEN", TOKENS["tenant-a"])
    with sdk(suite, pki, "tenant-a") as c:
        video_id = c.invert(make_clip(tmp_path, "async.mp4", 9), INV).video_id

    async def run():
        async with AsyncPix2VideoClient(
            f"127.0.0.1:{suite['inversion'].port}",
            retries=0,
            tls_ca_file=pki.ca_file,
            tls_cert_file=pki.client_cert,
            tls_key_file=pki.client_key,
        ) as c:
            return await c.get_video(video_id)

    assert asyncio.run(run()).num_frames == 3
    monkeypatch.setenv("PIX2VIDEO_TOKEN", TOKENS["tenant-b"])
    with pytest.raises(client_errors.NotFound):
        asyncio.run(run())


def test_cli_with_certificates_and_a_token_file(suite, pki, clip, tmp_path, capsys, monkeypatch):
    from pix2video.cli import main

    monkeypatch.delenv("PIX2VIDEO_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["tenant-a"] + "\n")
    base = ["invert", str(clip), "--server", f"127.0.0.1:{suite['inversion'].port}", "--width", "64", "--height", "64"]
    base += ["--steps", str(STEPS), "--source-prompt", "a red ball", "-q"]
    tls = [
        "--tls-ca-file",
        str(pki.ca_file),
        "--tls-cert-file",
        str(pki.client_cert),
        "--tls-key-file",
        str(pki.client_key),
    ]
    assert main(base + tls + ["--token-file", str(token_file)]) == 0
    out = capsys.readouterr()
    assert len(out.out.strip()) == 40
    monkeypatch.setenv("PIX2VIDEO_TOKEN", TOKENS["tenant-a"])
    assert main(base + tls) == 0
    capsys.readouterr()
    monkeypatch.delenv("PIX2VIDEO_TOKEN")
    assert main(base + tls) == 1  # no token
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "UNAUTHENTICATED" in err[0]
    assert main(base + ["--token-file", str(token_file)]) == 1  # plaintext to a TLS port
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert main(base + tls + ["--token-file", str(tmp_path / "missing")]) == 2
    assert "token_file" in capsys.readouterr().err


# -- the interceptor's contract, rotation, metrics ------------------------------------


def probe_handler():
    """Reports the tenant a handler runs as, from its coroutine, a thread and a task."""

    async def seen() -> bytes:
        in_thread = await asyncio.to_thread(current_tenant)
        in_task = await asyncio.create_task(asyncio.sleep(0, current_tenant()))
        return f"{current_tenant()},{in_thread},{in_task}".encode()

    async def unary(request, context):
        await asyncio.sleep(0.05)  # overlap concurrent calls of other tenants
        return await seen()

    async def stream(request, context):
        for _ in range(3):
            await asyncio.sleep(0.02)
            yield await seen()

    async def bidi(requests, context):
        async for _ in requests:
            yield await seen()

    return grpc.method_handlers_generic_handler(
        "probe.Probe",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        },
    )


def add_probe(server):
    server.add_generic_rpc_handlers((probe_handler(),))
    return []


@pytest.fixture
def probe_dir(pki, tmp_path):
    """Server certificate files of its own (the test rotates them)."""
    c, k = pki.ca.issue("probe").write(tmp_path, "server")
    return tmp_path, c, k


def start_probe(thread: ServerThread, settings: ServerSettings):
    return thread.start(lambda: _start(settings))[-1]


async def _start(settings):
    return [await start_server(settings, add_probe)]


def test_every_handler_shape_runs_as_the_callers_tenant(pki, probe_dir):
    _, c, k = probe_dir
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        tls_cert_file=str(c),
        tls_key_file=str(k),
        auth_tokens_file=str(pki.tokens_file),
    )
    with ServerThread() as thread:
        port = start_probe(thread, settings).port
        creds = grpc.ssl_channel_credentials(pki.ca_file.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", creds) as ch:
            unary, stream, bidi = (
                ch.unary_unary("/probe.Probe/Unary"),
                ch.unary_stream("/probe.Probe/Stream"),
                ch.stream_stream("/probe.Probe/Bidi"),
            )
            results: dict = {}

            def call(tenant):
                md = bearer(tenant)
                results[tenant] = (
                    unary(b"", metadata=md, timeout=10),
                    list(stream(b"", metadata=md, timeout=10)),
                    list(bidi(iter([b"", b""]), metadata=md, timeout=10)),
                )

            threads = [threading.Thread(target=call, args=(t,)) for t in ("tenant-a", "tenant-b", "tenant-c") * 2]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            for tenant, (u, s, b) in results.items():
                want = f"{tenant},{tenant},{tenant}".encode()
                assert u == want and s == [want] * 3 and b == [want] * 2
            assert code_of(lambda: unary(b"", timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(lambda: list(stream(b"", timeout=10))) == grpc.StatusCode.UNAUTHENTICATED


def test_tenant_from_the_client_certificate(pki, probe_dir):
    d, c, k = probe_dir
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        tls_cert_file=str(c),
        tls_key_file=str(k),
        tls_client_ca_file=str(pki.ca_file),
        tenant_from_client_cert=True,
        auth_tokens_file=str(pki.tokens_file),
    )
    with ServerThread() as thread:
        port = start_probe(thread, settings).port

        def ask(cn, md=()):
            issued = pki.ca.issue(cn, server=False)
            creds = grpc.ssl_channel_credentials(pki.ca_file.read_bytes(), issued.key, issued.cert)
            with grpc.secure_channel(f"localhost:{port}", creds) as ch:
                return ch.unary_unary("/probe.Probe/Unary")(b"", metadata=md, timeout=10).decode().split(",")[0]

        assert ask("tenant-d") == "tenant-d"
        assert ask("tenant-d", bearer("tenant-b")) == "tenant-b"  # a token, when sent, names the tenant
        assert code_of(lambda: ask("Not A Tenant")) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: ask("tenant-d", (("authorization", "Bearer wrong"),))) == grpc.StatusCode.UNAUTHENTICATED


def test_rotated_certificate_and_tokens_are_picked_up_without_a_restart(pki, probe_dir):
    d, c, k = probe_dir
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        tls_cert_file=str(c),
        tls_key_file=str(k),
        auth_tokens_file=str(d / "tokens"),
    )
    write_tokens(d / "tokens", {"tenant-a": TOKENS["tenant-a"]})
    new_ca = CA("rotated CA")

    def call(root: bytes, tenant_token: str):
        with grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(root)) as ch:
            return ch.unary_unary("/probe.Probe/Unary")(
                b"", metadata=(("authorization", f"Bearer {tenant_token}"),), timeout=10
            )

    def scrape(root: bytes) -> int:
        ctx = ssl.create_default_context(cadata=root.decode())
        with urllib.request.urlopen(f"https://localhost:{running.metrics_port}/metrics", context=ctx, timeout=10) as r:
            return r.status

    with ServerThread() as thread:
        running = start_probe(thread, settings)
        port = running.port
        assert call(pki.ca.pem, TOKENS["tenant-a"]).startswith(b"tenant-a")
        assert scrape(pki.ca.pem) == 200
        with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
            urllib.request.urlopen(f"http://localhost:{running.metrics_port}/metrics", timeout=5).read()
        # cert-manager renews: new key and certificate (from a new CA here, so the
        # client can tell which one it got); a new token is added to the Secret.
        issued = new_ca.issue("probe")
        k.write_bytes(issued.key)  # one file first: the old pair keeps serving meanwhile
        time.sleep(1.1)
        assert call(pki.ca.pem, TOKENS["tenant-a"]).startswith(b"tenant-a")
        c.write_bytes(issued.cert)
        write_tokens(d / "tokens", {"tenant-a": TOKENS["tenant-a"], "tenant-b": TOKENS["tenant-b"]})
        time.sleep(1.1)
        assert call(new_ca.pem, TOKENS["tenant-b"]).startswith(b"tenant-b")
        assert code_of(lambda: call(pki.ca.pem, TOKENS["tenant-a"])) == grpc.StatusCode.UNAVAILABLE
        assert scrape(new_ca.pem) == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            scrape(pki.ca.pem)
        assert running.tls.reloads == 1
        # A tokens file that stops parsing keeps the last good table.
        (d / "tokens").write_text("garbage line\n")
        time.sleep(1.1)
        assert call(new_ca.pem, TOKENS["tenant-b"]).startswith(b"tenant-b")


def test_health_only_port_answers_plaintext_probes_and_nothing_else(pki, probe_dir):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _, c, k = probe_dir
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        health_port=0,
        tls_cert_file=str(c),
        tls_key_file=str(k),
        auth_tokens_file=str(pki.tokens_file),
    )
    with ServerThread() as thread:
        running = start_probe(thread, settings)
        with grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as ch:
            check = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            md = bearer("tenant-a")
            assert code_of(lambda: ch.unary_unary("/probe.Probe/Unary")(b"", metadata=md, timeout=10)) == (
                grpc.StatusCode.UNIMPLEMENTED
            )
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            assert code_of(
                lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            ) == (grpc.StatusCode.UNAVAILABLE)


def test_metrics_endpoint_requires_client_certificates_under_mtls(pki, probe_dir):
    _, c, k = probe_dir
    settings = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        tls_cert_file=str(c),
        tls_key_file=str(k),
        tls_client_ca_file=str(pki.ca_file),
    )
    with ServerThread() as thread:
        running = start_probe(thread, settings)
        url = f"https://localhost:{running.metrics_port}/metrics"
        ctx = ssl.create_default_context(cadata=pki.ca.pem.decode())
        ctx.load_cert_chain(pki.client_cert, pki.client_key)
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            assert b"pix2video_build_info" in r.read()
        bare = ssl.create_default_context(cadata=pki.ca.pem.decode())
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            urllib.request.urlopen(url, context=bare, timeout=10).read()


def test_exposed_without_tls_or_tokens_warns_and_loopback_by_default(caplog):
    assert ServerSettings().host == "127.0.0.1"
    with ServerThread() as thread, caplog.at_level(logging.WARNING):
        thread.start(lambda: _start(ServerSettings(host="0.0.0.0", port=0, metrics_port=-1)))
    assert any("beyond loopback without TLS or authentication" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with ServerThread() as thread, caplog.at_level(logging.WARNING):
        thread.start(lambda: _start(ServerSettings(port=0, metrics_port=-1)))
    assert not any("beyond loopback" in r.getMessage() for r in caplog.records)


# -- settings and secrets ------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(tls_cert_file="c.pem"), "tls_key_file"),
        (dict(tls_key_file="k.pem"), "tls_cert_file"),
        (dict(tls_client_ca_file="ca.pem"), "tls_client_ca_file"),
        (dict(tenant_from_client_cert=True), "tenant_from_client_cert"),
    ],
)
def test_tls_settings_are_checked(kw, field):
    with pytest.raises(InvalidInput, match=field):
        ServerSettings(**kw)


def test_bad_tls_files_or_tokens_file_fail_at_start(pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    cases = [
        (dict(tls_cert_file=str(bad), tls_key_file=str(pki.server_key)), "tls_cert_file"),
        (
            dict(tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.client_key)),
            "tls_cert_file",
        ),  # key of another cert
        (dict(tls_cert_file=str(pki.server_cert), tls_key_file=str(tmp_path / "missing")), "missing"),
        (dict(auth_tokens_file=str(bad)), "auth_tokens_file"),
    ]
    for kw, needle in cases:
        with ServerThread() as thread, pytest.raises(InvalidInput, match=needle):
            thread.start(lambda kw=kw: _start(ServerSettings(port=0, metrics_port=-1, **kw)))


def test_s3_credentials_from_aws_variables_or_a_file_and_never_half(tmp_path):
    base = {"PIX2VIDEO_STORE": "s3", "PIX2VIDEO_S3_ENDPOINT": "127.0.0.1:1"}
    s = load_settings(
        InversionServerSettings, [], env={**base, "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": SECRET_S3}
    )
    assert (s.s3_access_key, s.s3_secret()) == ("AKIDTEST", SECRET_S3)
    assert SECRET_S3 not in repr(s)
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(SECRET_S3 + "\n")
    s = load_settings(
        InversionServerSettings,
        ["--s3-secret-key-file", str(secret_file)],
        env={**base, "AWS_ACCESS_KEY_ID": "AKIDTEST"},
    )
    assert s.s3_secret() == SECRET_S3
    with pytest.raises(InvalidInput, match="s3_secret_key"):
        load_settings(InversionServerSettings, [], env={**base, "AWS_ACCESS_KEY_ID": "AKIDTEST"})
    with pytest.raises(InvalidInput, match="s3_access_key"):
        load_settings(InversionServerSettings, [], env={**base, "AWS_SECRET_ACCESS_KEY": SECRET_S3})


def test_docs_show_no_secret_as_a_flag():
    """A secret on a command line shows in ps and in shell history: the docs pass
    them in files or the environment only."""
    root = Path(__file__).resolve().parent.parent
    docs = [root / "README.md", root / "clients" / "README.md"]
    docs += [p for d in ("docs", "deploy", "helm") for p in sorted((root / d).rglob("*.md"))]
    flags = re.compile(r"--s3-secret-key(?!-file)\b|--token(?!-file)\b|--from-literal=[\w-]*(secret|token|key)")
    found = [f"{p.relative_to(root)}: {m.group(0)}" for p in docs for m in flags.finditer(p.read_text())]
    assert found == []


def test_secrets_never_reach_the_logs(captured, tiny_dir, s3_settings, pki, tmp_path):
    """Runs a real service process with every kind of secret (S3 secret in
    AWS_SECRET_ACCESS_KEY and rejected by the store, tokens, TLS key), sends it
    good and bad tokens, then greps its logs, and this module's, for them."""
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID=s3_settings.access_key,
        AWS_SECRET_ACCESS_KEY=SECRET_S3,  # wrong: every store call fails, and its error is logged
        PYTHONPATH=os.pathsep.join(sys.path),
    )
    cmd = [sys.executable, "-m", "pix2video.servers.inversion", "--port", "0", "--metrics-port", "-1"]
    cmd += ["--model", str(tiny_dir), "--device", "cpu", "--dtype", "float32", "--home", str(tmp_path / "home")]
    cmd += ["--store", "s3", "--s3-endpoint", s3_settings.endpoint, "--s3-bucket", s3_settings.bucket]
    for k, v in tls_settings(pki).items():
        cmd += ["--" + k.replace("_", "-"), v]
    near_miss = TOKENS["tenant-b"][:-1] + "x"  # a token someone tried: as secret as a valid one
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    port = None
    try:
        deadline = time.monotonic() + 90
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("{") and "serving" in line:
                port = int(json.loads(line)["message"].split(" on port ")[1].split()[0])
        assert port is not None, "".join(lines)
        ok = client_creds(pki)
        assert code_of(lambda: get_video(port, ok, ABSENT, (("authorization", "Bearer " + near_miss),))) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        # The store rejects the secret: FAILED_PRECONDITION (not retried), and the server logs the failure.
        assert code_of(lambda: get_video(port, ok, ABSENT, bearer("tenant-a"))) == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[1]
    logs = "".join(lines) + rest
    assert "stopping" in logs and "serving" in logs  # the logs were written
    secrets = [SECRET_S3, SERVICE_TOKEN, *TOKENS.values(), near_miss, s3_settings.secret_key]
    secrets += [pki.server_key.read_text().splitlines()[1], pki.client_key.read_text().splitlines()[1]]
    mine = "\n".join(captured.lines)
    assert len(captured.lines) > 10
    for secret in secrets:
        assert secret not in logs
        assert secret not in mine
