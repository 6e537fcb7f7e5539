"""python -m pix2video.servers.inversion [--flag value ...]  (flags: --help)"""

import sys

from ..common.main import run_service
from .server import build
from .settings import InversionServerSettings

if __name__ == "__main__":
    sys.exit(run_service("python -m pix2video.servers.inversion", InversionServerSettings, build, sys.argv[1:]))
