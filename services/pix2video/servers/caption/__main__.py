"""python -m pix2video.servers.caption [--flag value ...]: runs the caption service until SIGTERM (flags: --help)."""

import sys

from ..common.main import run_service
from .server import build
from .settings import CaptionSettings

if __name__ == "__main__":
    sys.exit(run_service("python -m pix2video.servers.caption", CaptionSettings, build, sys.argv[1:]))
