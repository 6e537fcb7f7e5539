"""``python -m pix2video.servers.depth [flags]``: runs the depth service until SIGTERM.

Every setting is a flag (``--batch-size 8``) or an environment variable
(``PIX2VIDEO_BATCH_SIZE=8``); see ``--help``. Exit codes: 0 after a graceful
stop, 2 bad settings, 3 models could not be loaded, 1 anything unexpected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from ...errors import InvalidInput, ModelLoadError
from ..common.server import serve_forever
from ..common.settings import load_settings
from .settings import DepthSettings

PROG = "python -m pix2video.servers.depth"


def _setup_logging() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("transformers", "diffusers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


async def _serve(settings: DepthSettings) -> None:
    from .server import build

    await serve_forever([await build(settings)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = load_settings(DepthSettings, argv, prog=PROG)
    except InvalidInput as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging()
    try:
        asyncio.run(_serve(settings))
    except InvalidInput as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:  # e.g. the port is taken
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
