"""The whole suite in one process: ``pix2video serve --all``.

Each service still listens on its own port with its own settings, exactly as
when deployed apart; the inversion service reaches depth and caption over
gRPC. Shared flags (model, device, store) are given once.
"""

from __future__ import annotations

import dataclasses

from ..errors import InvalidInput
from .common.server import RunningServer
from .registry import SERVICES as _NAMES
from .registry import builder, settings_class

# name -> (settings class, build coroutine), the registry's table loaded.
SERVICES = {name: (settings_class(name), builder(name)) for name in _NAMES}


async def start_suite(settings: dict) -> dict[str, RunningServer]:
    """Starts depth and caption, then inversion (pointed at them), then the editor.

    ``settings`` maps each service name to its settings object; the inversion
    service's depth and caption addresses are set to the ports just opened.
    """
    check_upstream_security(settings)
    running: dict[str, RunningServer] = {}
    for name in ("depth", "caption"):
        running[name] = await SERVICES[name][1](settings[name])
    inv = settings["inversion"]
    host = "127.0.0.1" if inv.host in ("0.0.0.0", "::", "") else inv.host
    inv = dataclasses.replace(
        inv, depth_address=f"{host}:{running['depth'].port}", caption_address=f"{host}:{running['caption'].port}"
    )
    running["inversion"] = await SERVICES["inversion"][1](inv)
    running["editor"] = await SERVICES["editor"][1](settings["editor"])
    return running


def check_upstream_security(settings: dict) -> None:
    """The inversion service can reach depth and caption as they are set up:
    trusts their TLS, and authenticates when they check tokens."""
    inv = settings["inversion"]
    for name in ("depth", "caption"):
        s = settings[name]
        if s.tls_cert_file and not inv.upstream_tls_ca_file:
            raise InvalidInput(f"upstream_tls_ca_file: {name} serves TLS; give the CA bundle that verifies it")
        if s.tls_client_ca_file and not inv.upstream_tls_cert_file:
            raise InvalidInput(f"upstream_tls_cert_file: {name} requires client certificates (mutual TLS)")
        by_cert = s.tenant_from_client_cert and inv.upstream_tls_cert_file
        if s.auth_tokens_file and not (inv.upstream_token_file or by_cert):
            raise InvalidInput(f"upstream_token_file: {name} checks tokens; give the file holding this service's token")
