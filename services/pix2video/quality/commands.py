"""``pix2video eval`` and ``pix2video compare``: their flags, and the body of ``eval``.

``pix2video.commands.eval`` / ``.compare`` register them with the CLI; the work is here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidInput
from .options import DEFAULT_CLIP_MODEL, FLOW_METHODS


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("edited", help="edited video file")
    p.add_argument("--source", default=None, help="the unedited source video (needed for Pixel-MSE)")
    p.add_argument("--prompt", required=True, help="the edit's target prompt")
    p.add_argument(
        "--source-resize",
        default="crop",
        choices=["crop", "pad", "squash"],
        help="how the source was fitted to the edit's size (the edit's --resize; default crop)",
    )
    _add_metric_args(p)
    p.add_argument("--json", default=None, help="write the figures to this JSON file (default: none)")


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    from ..commands.job import add_preset_arg

    p.add_argument("input", help="input video file")
    p.add_argument("--prompt", required=True, help="target prompt")
    p.add_argument("-o", "--output-dir", required=True, help="folder for table.md, table.json, grid.png, *.mp4")
    p.add_argument("--source-prompt", default=None, help="prompt for inversion (default: BLIP caption of frame 1)")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    add_preset_arg(p)
    p.add_argument("--variants", default=None, help="comma-separated subset of the variants (default all)")
    p.add_argument("--grid-frames", type=int, default=4, help="frames sampled as grid columns (default 4)")
    _add_metric_args(p)
    p.add_argument("--model", default="stabilityai/stable-diffusion-2-depth", help="SD2-depth hub id, folder or tiny")
    p.add_argument("--caption-model", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--store", default=None, help="latent store folder (default: ~/.cache/pix2video/store)")


def _add_metric_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metrics")
    g.add_argument(
        "--clip-model",
        default=DEFAULT_CLIP_MODEL,
        help=f"CLIP hub id or folder, or toy for the toy world's (default {DEFAULT_CLIP_MODEL})",
    )
    g.add_argument("--flow", default="dis", choices=list(FLOW_METHODS), help="optical flow for Pixel-MSE")
    g.add_argument("--metrics-device", default="cpu", help="device of the CLIP model (default cpu)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars (default: progress on stderr)")


def _bars(quiet: bool):
    from ..commands.progress import Progress

    return Progress(not quiet)


def run_eval(args) -> int:
    import numpy as np

    from ..engine.images import fit_frame
    from ..video import read_video
    from .clip_scores import ClipScorer
    from .metrics import evaluate
    from .report import dumps, markdown_table

    if args.json and not Path(args.json).parent.is_dir():
        raise InvalidInput(f"json: folder of {args.json!r} does not exist")
    frames, info = read_video(args.edited)
    edited = np.stack(frames)
    source = None
    if args.source:
        h, w = edited.shape[1:3]
        src, _ = read_video(
            args.source, max_frames=len(edited), transform=lambda f: fit_frame(f, w, h, args.source_resize)
        )
        if len(src) != len(edited):
            raise InvalidInput(f"source: has {len(src)} frames, the edit has {len(edited)}; they must match")
        source = np.stack(src)
    bars = _bars(args.quiet)
    try:
        scorer = ClipScorer(args.clip_model, device=args.metrics_device)
        report = evaluate(edited, args.prompt, scorer, source=source, flow_method=args.flow, progress=bars)
    finally:
        bars.close()
    print(markdown_table({Path(args.edited).name: report}))
    if report.flow_method:
        print(f"Pixel-MSE at 512x512 in 0..255; flow: {report.flow_method}; occluded: {report.occluded_fraction:.1%}")
    if args.json:
        Path(args.json).write_text(dumps(report.to_json()))
    return 0
