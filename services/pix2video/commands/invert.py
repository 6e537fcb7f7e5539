"""``pix2video invert``: depth, caption and DDIM inversion into the latent store; prints the video id."""

from __future__ import annotations

import argparse
import sys

from . import job
from .progress import Progress

HELP = "depth, caption and DDIM inversion into the latent store; prints the video id"


def add_arguments(p: argparse.ArgumentParser) -> None:
    job.add_inversion_args(p)
    job.add_runtime_args(p)


def run(args: argparse.Namespace) -> int:
    progress = Progress(not args.quiet)
    try:
        if args.server:
            info, _ = job.run_remote(args, progress)
            video_id, cached, n, prompt = info.video_id, info.cached, info.num_frames, info.source_prompt
        else:
            _, result, _, _ = job.invert_here(args, progress)
            m = result.manifest
            video_id, cached, n, prompt = result.video_id, result.cached, m.num_frames, m.source_prompt
        progress.end()
    finally:
        progress.close()
    print(video_id)
    print(f"{'cached' if cached else 'inverted'}: {n} frames, source prompt {prompt!r}", file=sys.stderr)
    progress.summary(n)
    return 0
