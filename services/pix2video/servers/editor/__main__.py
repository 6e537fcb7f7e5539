"""python -m pix2video.servers.editor [--flag value ...]  (flags: --help)"""

import sys

from ..common.main import run_service
from .server import build
from .settings import EditorServerSettings

if __name__ == "__main__":
    sys.exit(run_service("python -m pix2video.servers.editor", EditorServerSettings, build, sys.argv[1:]))
