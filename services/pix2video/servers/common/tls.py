"""Server-side TLS: credentials from certificate and key files, optionally a
client CA (mutual TLS), re-read when the files change.

cert-manager (or any rotation) replaces the files of a mounted Secret in
place; the gRPC server asks :meth:`ServerTls.fetch` for its certificate
configuration at every handshake (``grpc.dynamic_ssl_server_credentials``), so
new connections get the new certificate without a restart, and connections
already open keep theirs. The metrics endpoint's ``ssl.SSLContext`` is
reloaded from the same files.

A change is seen by ``stat`` (inode, size, mtime of each file, symlinks
followed, as Kubernetes swaps its ``..data`` link). A half-written or
mismatched set of files is refused and logged; the last good set keeps
serving. File paths are named in logs and start-up errors (operators read
those), never in anything sent to a client.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass

import grpc

from ...errors import InvalidInput

log = logging.getLogger(__name__)

# How often a handshake may re-stat the files (seconds): cheap, but not on
# every one of a burst of connections.
CHECK_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class TlsFiles:
    """PEM files a server presents and trusts."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""  # non-empty: clients must present a certificate signed by it


def _signature(paths: list[str]) -> tuple:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _read(path: str, what: str) -> bytes:
    try:
        return open(path, "rb").read()
    except OSError as exc:
        raise InvalidInput(f"{what}: cannot read {path!r}: {exc.strerror}") from None


def check_pem_set(cert: bytes, key: bytes, client_ca: bytes | None, files: TlsFiles) -> None:
    """Raises InvalidInput unless the certificate and key match and the CA
    bundle parses (the stdlib's OpenSSL checks them as a TLS server would)."""
    import tempfile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain reads files; the bytes are the ones read once above, so
    # check those (a rotation between two reads cannot pass a mixed set).
    with tempfile.TemporaryDirectory(prefix="pix2video-tls-") as d:
        c, k = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        with open(c, "wb") as f:
            f.write(cert)
        with open(os.open(k, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(key)
        try:
            ctx.load_cert_chain(c, k)
        except (ssl.SSLError, ValueError) as exc:
            raise InvalidInput(
                f"tls_cert_file/tls_key_file: {files.cert_file!r} and {files.key_file!r} are not a matching "
                f"PEM certificate and key ({exc.__class__.__name__}: {exc})"
            ) from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise InvalidInput(
                f"tls_client_ca_file: {files.client_ca_file!r} is not a PEM CA bundle ({exc.__class__.__name__})"
            ) from None


class ServerTls:
    """The server's TLS material, reloaded when its files change.

    Raises InvalidInput at construction when the files are missing or do not
    form a valid set (bad settings fail at start, not at the first handshake).
    """

    def __init__(self, files: TlsFiles):
        self.files = files
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._signature: tuple | None = None
        self.reloads = 0  # how many times new files were taken (tests, logs)
        self._contexts: list[ssl.SSLContext] = []
        cert, key, ca = self._load()
        self.cert, self.key, self.client_ca = cert, key, ca

    @property
    def mutual(self) -> bool:
        return bool(self.files.client_ca_file)

    def _paths(self) -> list[str]:
        f = self.files
        return [f.cert_file, f.key_file] + ([f.client_ca_file] if f.client_ca_file else [])

    def _load(self) -> tuple[bytes, bytes, bytes | None]:
        f = self.files
        try:
            sig = _signature(self._paths())
        except OSError as exc:
            raise InvalidInput(f"tls: cannot read {exc.filename!r}: {exc.strerror}") from None
        cert = _read(f.cert_file, "tls_cert_file")
        key = _read(f.key_file, "tls_key_file")
        ca = _read(f.client_ca_file, "tls_client_ca_file") if f.client_ca_file else None
        check_pem_set(cert, key, ca, f)
        self._signature = sig
        return cert, key, ca

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], root_certificates=self.client_ca)

    def changed(self) -> bool:
        """Re-reads the files if they changed (at most once a CHECK_INTERVAL);
        True when a new valid set was taken."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_check:
                return False
            self._next_check = now + CHECK_INTERVAL_SECONDS
            try:
                if _signature(self._paths()) == self._signature:
                    return False
                cert, key, ca = self._load()
            except (OSError, InvalidInput) as exc:
                # Mid-rotation (one file replaced, not yet the other) or broken:
                # keep serving the last good set; the next check tries again.
                log.warning("tls: keeping the current certificate; new files not usable yet: %s", exc)
                self._signature = None  # retry on the next check even if nothing moves
                return False
            if (cert, key, ca) == (self.cert, self.key, self.client_ca):
                return False
            self.cert, self.key, self.client_ca = cert, key, ca
            self.reloads += 1
            for ctx in self._contexts:
                self._fill(ctx)
        log.info("tls: certificate files changed; new connections use the new certificate")
        return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC core at each handshake; None keeps the current one.
        try:
            return self._configuration() if self.changed() else None
        except Exception:  # noqa: BLE001 - an exception here would fail the handshake
            log.exception("tls: certificate reload failed")
            return None

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), self._fetch, require_client_authentication=self.mutual
        )

    # -- the metrics endpoint (stdlib ssl) ----------------------------------

    def _fill(self, ctx: ssl.SSLContext) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pix2video-tls-") as d:
            c, k = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
            with open(c, "wb") as f:
                f.write(self.cert)
            with open(os.open(k, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(self.key)
            ctx.load_cert_chain(c, k)  # replaces the chain for later handshakes
        if self.client_ca is not None:
            ctx.load_verify_locations(cadata=self.client_ca.decode("ascii", "replace"))

    def ssl_context(self) -> ssl.SSLContext:
        """A server SSLContext (TLS 1.2+, client certificates required under
        mutual TLS), refilled when :meth:`changed` takes new files (the
        metrics server calls it before each connection)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._fill(ctx)
        if self.mutual:
            ctx.verify_mode = ssl.CERT_REQUIRED
        self._contexts.append(ctx)
        return ctx


def server_tls(cert_file: str, key_file: str, client_ca_file: str = "") -> ServerTls | None:
    """ServerTls for the settings' files, or None when TLS is off (no cert)."""
    if not cert_file:
        return None
    return ServerTls(TlsFiles(cert_file, key_file, client_ca_file))
