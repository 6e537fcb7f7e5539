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

from ...engine.checks import check_dtype
from ...errors import InvalidInput
from ...flags import flag_help, metavar

T = TypeVar("T")
ENV_PREFIX = "PIX2VIDEO_"
LOG_FORMATS = ("json", "text")
TRACING_KINDS = ("off", "console", "otlp", "memory")


@dataclass(frozen=True)
class ServerSettings:
    """What every service shares."""

    host: str = "127.0.0.1"
    """Interface to listen on, gRPC and metrics (loopback; the images and the chart set 0.0.0.0)."""
    port: int = 50051
    """gRPC port (0 picks a free one)."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message accepted or sent, in bytes."""
    grace_seconds: float = 30.0
    """How long a stopping server (SIGTERM) lets calls finish."""
    metrics_port: int = 9460
    """Prometheus metrics over HTTP (/metrics) on host; 0 picks a free port, -1 turns the endpoint off."""
    log_format: str = "json"
    """Log lines: json (one object a line, with trace_id and span_id) or text."""
    tracing: str = "off"
    """OpenTelemetry traces: off (no spans), console (spans on stderr), otlp (OTLP over gRPC to otlp_endpoint)
    or memory (kept in this process; tests and debugging)."""
    otlp_endpoint: str = "http://localhost:4317"
    """Where traces go when tracing is otlp."""
    trace_sample_ratio: float = 1.0
    """Share of new traces recorded (a caller's sampling decision, carried in traceparent, is followed)."""
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
    """Services that run models."""

    model: str = "stabilityai/stable-diffusion-2-depth"
    """SD2-depth hub id, a local folder in its layout, or tiny (built-in random tiny models)."""
    caption_model: str = ""
    """BLIP hub id or folder (none: <model>/captioner, else BLIP base)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (CUDA when available)."""
    dtype: str = "auto"
    """Weights' dtype: auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16 or float64."""
    home: str = ""
    """Cache folder (the tiny models); none: ~/.cache/pix2video."""

    def __post_init__(self):
        super().__post_init__()
        check_dtype(self.dtype)


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


def settings_parser(cls: type, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser with one flag per field of ``cls``; each flag's help is the
    field's attribute docstring, its default and its environment variable."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(cls.__doc__ or "").strip().splitlines()[0],
        epilog=f"Every setting is also an environment variable {ENV_PREFIX}NAME; a flag wins over it.",
    )
    for f in dataclasses.fields(cls):
        if f.init:
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                default=None,
                metavar=metavar(f),
                help=flag_help(cls, f.name, extra=f"env {env_name(f.name)}"),
            )
    return parser


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
    parser = settings_parser(cls, prog)
    fields = [f for f in dataclasses.fields(cls) if f.init]
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
