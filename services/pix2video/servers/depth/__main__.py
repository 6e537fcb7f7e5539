"""python -m pix2video.servers.depth [--flag value ...]: runs the depth service until SIGTERM (flags: --help)."""

import sys

from ..common.main import run_service
from .server import build
from .settings import DepthSettings

if __name__ == "__main__":
    sys.exit(run_service("python -m pix2video.servers.depth", DepthSettings, build, sys.argv[1:]))
