"""Entry point shared by the services' ``__main__`` modules and ``pix2video serve``.

Every setting is a flag (``--batch-size 8``) or an environment variable
(``PIX2VIDEO_BATCH_SIZE=8``); see ``--help``. Exit codes: 0 after a graceful
stop, 2 bad settings, 3 models could not be loaded, 1 anything else (a port
that cannot be opened).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from ...errors import InvalidInput, ModelLoadError
from .logs import JsonFormatter, TraceContextFilter
from .server import serve_forever
from .settings import load_settings


def setup_logging(log_format: str = "json") -> None:
    """Logs to stderr at INFO: ``json`` (one object a line with the current
    trace_id and span_id; see :mod:`.logs`) or ``text``."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        handler.addFilter(TraceContextFilter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for name in ("transformers", "diffusers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_until_signal(prog: str, start, log_format: str = "json") -> int:
    """Runs ``await start()`` (a list of RunningServer) until SIGTERM; maps
    start-up failures to one line and an exit code."""
    setup_logging(log_format)

    async def main():
        await serve_forever(await start())

    try:
        asyncio.run(main())
    except InvalidInput as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_service(prog: str, settings_cls, build, argv) -> int:
    try:
        settings = load_settings(settings_cls, argv, prog=prog)
    except InvalidInput as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2

    async def start():
        return [await build(settings)]

    return run_until_signal(prog, start, settings.log_format)
