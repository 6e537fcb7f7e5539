"""``pix2video sample``: a small synthetic clip (moving shapes) to try the other commands on."""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInput

HELP = "write a small synthetic sample clip"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="output .mp4")
    p.add_argument("--frames", type=int, default=8, help="number of frames, 1 to 10000 (default: 8)")
    p.add_argument("--width", type=int, default=256, help="frame width, an even number up to 4096 (default: 256)")
    p.add_argument("--height", type=int, default=256, help="frame height, an even number up to 4096 (default: 256)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second (default: 8)")


def run(args: argparse.Namespace) -> int:
    from ..video import make_sample_frames, write_video

    if not 1 <= args.frames <= 10_000:
        raise InvalidInput(f"frames: must be in [1, 10000], got {args.frames}")
    for name in ("width", "height"):
        v = getattr(args, name)
        if not 2 <= v <= 4096 or v % 2:
            raise InvalidInput(f"{name}: must be an even number in [2, 4096], got {v}")
    if not 0 < args.fps <= 1000:
        raise InvalidInput(f"fps: must be in (0, 1000], got {args.fps}")
    n = write_video(args.output, make_sample_frames(args.frames, args.width, args.height), fps=args.fps)
    print(f"wrote {n} frames to {args.output}", file=sys.stderr)
    return 0
