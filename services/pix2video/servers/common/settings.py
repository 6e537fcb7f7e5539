"""Typed service settings, read once at start from flags and the environment.

Every field of a settings dataclass is a flag ``--field-name`` and an
environment variable ``PIX2VIDEO_FIELD_NAME`` (a class's ``ENV_ALIASES`` adds
a standard name, e.g. ``AWS_SECRET_ACCESS_KEY``); a flag wins over the
environment, which wins over the default. Nothing else reads the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping, Sequence, TypeVar

from ...errors import InvalidInput

T = TypeVar("T")
ENV_PREFIX = "PIX2VIDEO_"
LOG_FORMATS = ("json", "text")
TRACING_KINDS = ("off", "console", "otlp", "memory")


@dataclass(frozen=True)
class ServerSettings:
    """What every service shares.

    host: interface to listen on (loopback by default; images and the chart
        set ``0.0.0.0``). port: gRPC port (0 picks a free one).
    max_message_bytes: largest gRPC message accepted or sent.
    grace_seconds: how long a stopping server lets calls finish (SIGTERM).
    metrics_port: Prometheus metrics over HTTP (``/metrics``) on ``host``; each
        service has its own default (depth 9461, caption 9462, inversion 9463,
        editor 9464); 0 picks a free port, -1 turns the endpoint off.
    log_format: ``json`` (one object a line, with trace_id and span_id) or ``text``.
    tracing: OpenTelemetry traces: ``off`` (no spans at all), ``console``
        (spans printed to stderr), ``otlp`` (OTLP over gRPC to ``otlp_endpoint``)
        or ``memory`` (kept in this process; tests and debugging).
    trace_sample_ratio: share of new traces recorded (a caller's sampling
        decision, carried in ``traceparent``, is followed).
    """

    host: str = "127.0.0.1"
    port: int = 50051
    max_message_bytes: int = 64 * 1024 * 1024
    grace_seconds: float = 30.0
    metrics_port: int = 9460
    log_format: str = "json"
    tracing: str = "off"
    otlp_endpoint: str = "http://localhost:4317"
    trace_sample_ratio: float = 1.0
    tls_cert_file: str = ""
    """PEM certificate chain this server presents; with tls_key_file, gRPC and metrics are served over TLS."""
    tls_key_file: str = ""
    """PEM private key of tls_cert_file (re-read with it when the files change)."""
    tls_client_ca_file: str = ""
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""
    auth_tokens_file: str = ""
    """File of per-tenant API token hashes ('TENANT sha256:HEX' lines); when set, every call needs a token."""
    tenant_from_client_cert: bool = False
    """A call without a token acts for the common name of its client certificate (needs tls_client_ca_file)."""
    health_port: int = -1
    """Extra plaintext port serving only gRPC health, for probes that cannot speak TLS (Kubernetes'); -1: none."""

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise InvalidInput(f"port: must be in [0, 65535], got {self.port}")
        if not -1 <= self.metrics_port <= 65535:
            raise InvalidInput(
                f"metrics_port: must be in [-1, 65535] (0: a free port, -1: off), got {self.metrics_port}"
            )
        if self.log_format not in LOG_FORMATS:
            raise InvalidInput(f"log_format: must be one of {', '.join(LOG_FORMATS)}; got {self.log_format!r}")
        if self.tracing not in TRACING_KINDS:
            raise InvalidInput(f"tracing: must be one of {', '.join(TRACING_KINDS)}; got {self.tracing!r}")
        if self.tracing == "otlp" and not self.otlp_endpoint:
            raise InvalidInput("otlp_endpoint: required when tracing is otlp")
        if not 0.0 <= self.trace_sample_ratio <= 1.0:
            raise InvalidInput(f"trace_sample_ratio: must be in [0, 1], got {self.trace_sample_ratio}")
        if not 1024 <= self.max_message_bytes <= 2**31 - 1:
            raise InvalidInput(f"max_message_bytes: must be in [1024, 2^31), got {self.max_message_bytes}")
        if self.grace_seconds < 0:
            raise InvalidInput(f"grace_seconds: must be >= 0, got {self.grace_seconds}")
        if not -1 <= self.health_port <= 65535:
            raise InvalidInput(f"health_port: must be in [-1, 65535] (-1: none), got {self.health_port}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            which = "tls_key_file" if self.tls_cert_file else "tls_cert_file"
            raise InvalidInput(f"{which}: tls_cert_file and tls_key_file go together; {which} is not set")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise InvalidInput("tls_client_ca_file: mutual TLS needs TLS: set tls_cert_file and tls_key_file too")
        if self.tenant_from_client_cert and not self.tls_client_ca_file:
            raise InvalidInput("tenant_from_client_cert: needs client certificates: set tls_client_ca_file")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ModelServerSettings(ServerSettings):
    """Services that run models.

    model: SD2-depth hub id, folder, or ``tiny``. device/dtype: as the CLI's.
    home: cache folder (tiny models).
    """

    model: str = "stabilityai/stable-diffusion-2-depth"
    caption_model: str = ""
    device: str = "auto"
    dtype: str = "auto"
    home: str = ""


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _convert(field: dataclasses.Field, text: str):
    kind = type(field.default) if field.default is not dataclasses.MISSING else str
    if kind is bool:
        return _parse_bool(text)
    return kind(text)


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def load_settings(
    cls: type[T],
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    prog: str | None = None,
    ignore_unknown: bool = False,
) -> T:
    """Builds ``cls`` from flags (``argv``) over environment (``env``) over defaults.

    ``ignore_unknown`` skips flags that ``cls`` lacks (one command line for several services).
    """
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip().splitlines()[0])
    fields = [f for f in dataclasses.fields(cls) if f.init]
    for f in fields:
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, help=f"env {env_name(f.name)}")
    argv = list(argv) if argv is not None else []
    args = parser.parse_known_args(argv)[0] if ignore_unknown else parser.parse_args(argv)
    values = {}
    for f in fields:
        raw = getattr(args, f.name)
        source = f"--{f.name.replace('_', '-')}"
        if raw is None and env_name(f.name) in env:
            raw, source = env[env_name(f.name)], env_name(f.name)
        alias = getattr(cls, "ENV_ALIASES", {}).get(f.name)
        if raw is None and alias and env.get(alias):
            raw, source = env[alias], alias  # e.g. AWS_SECRET_ACCESS_KEY, the standard name
        if raw is None:
            continue
        try:
            values[f.name] = _convert(f, raw)
        except ValueError:
            raise InvalidInput(f"{f.name}: invalid value {raw!r} (from {source})") from None
    return cls(**values)


def to_env(settings) -> dict[str, str]:
    """The environment that :func:`load_settings` reads back as ``settings``."""
    out = {}
    for f in dataclasses.fields(settings):
        v = getattr(settings, f.name)
        out[env_name(f.name)] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out
