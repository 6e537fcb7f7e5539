"""The CLI's flags for reaching a suite that uses TLS and API tokens.

There is no flag for the token itself: a flag's value shows in ``ps`` to
every user of the machine. The token comes from ``--token-file`` or the
``PIX2VIDEO_TOKEN`` environment variable.
"""

from __future__ import annotations

import argparse
import os

from .errors import InvalidInput


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--tls-ca-file",
        default=None,
        metavar="PEM",
        help="CA bundle that verifies the services; turns TLS on (default: plaintext)",
    )
    group.add_argument(
        "--tls-cert-file", default=None, metavar="PEM", help="client certificate, for mutual TLS (default: none)"
    )
    group.add_argument("--tls-key-file", default=None, metavar="PEM", help="key of --tls-cert-file (default: none)")
    group.add_argument(
        "--tls-server-name",
        default=None,
        metavar="NAME",
        help="name to verify in the services' certificates (default: the host of --server)",
    )
    group.add_argument(
        "--token-file", default=None, metavar="PATH", help="file holding the API token (default: $PIX2VIDEO_TOKEN)"
    )


def client_kwargs(args: argparse.Namespace) -> dict:
    """Pix2VideoClient keyword arguments from the flags; InvalidInput names a bad flag."""
    from pix2video_client.security import TokenFile

    for flag in ("tls_ca_file", "tls_cert_file", "tls_key_file", "token_file"):
        path = getattr(args, flag)
        if path is not None and not os.access(path, os.R_OK):
            raise InvalidInput(f"{flag}: cannot read {path!r}")
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise InvalidInput("tls_cert_file, tls_key_file: give both or neither")
    if args.tls_server_name and not args.tls_ca_file:
        raise InvalidInput("tls_server_name: only with --tls-ca-file")
    try:
        token = TokenFile(args.token_file) if args.token_file else None
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return dict(
        token=token,
        tls_ca_file=args.tls_ca_file,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        tls_server_name=args.tls_server_name,
    )
