"""Entry point shared by the services' ``__main__`` modules."""

from __future__ import annotations

import asyncio
import logging
import sys

from ...errors import Pix2VideoError
from .server import serve_forever
from .settings import load_settings


def run_service(prog: str, settings_cls, build, argv) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(settings_cls, argv, prog=prog)
    except Pix2VideoError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2

    async def main():
        running = await build(settings)
        await serve_forever([running])

    asyncio.run(main())
    return 0
