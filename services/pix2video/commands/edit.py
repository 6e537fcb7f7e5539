"""``pix2video edit``: invert a clip (or find its stored inversion) and edit it with a prompt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.settings import EditSettings
from ..errors import InvalidInput
from ..flags import add_field_flags
from . import job
from .progress import Progress

HELP = "edit a video with a text prompt"

# EditSettings field -> flag; type, choices, default and help come from the field.
# num_steps is --steps, shared with the inversion (see job.add_inversion_args).
EDIT_FLAGS = {
    "prompt": "--prompt",
    "negative_prompt": "--negative-prompt",
    "guidance_scale": "--guidance",
    "seed": "--seed",
    "reference": "--reference",
    "inject_layers": "--inject-layers",
    "latent_update": "--latent-update",
    "update_strength": "--update-strength",
    "update_start": "--update-start",
    "update_end": "--update-end",
    "update_normalisation": "--update-normalisation",
    "frames_in_flight": "--frames-in-flight",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    job.add_inversion_args(p)
    g = p.add_argument_group("edit (Pix2Video method switches)")
    add_field_flags(g, EditSettings, {"prompt": "--prompt"})
    g.add_argument("-o", "--output", required=True, help="output .mp4, .m4v or .mov (required)")
    g.add_argument(
        "--frames-dir", default=None, help="also write each edited frame as PNG into this folder (default: none)"
    )
    add_field_flags(g, EditSettings, {k: v for k, v in EDIT_FLAGS.items() if k != "prompt"})
    g.add_argument(
        "--eval",
        action="store_true",
        help="with --server: the editor measures the finished edit (CLIP-Text, CLIP-Image) and they are printed "
        "(default: off; for Pixel-MSE, or a local edit, run pix2video eval)",
    )
    job.add_runtime_args(p)


def run(args: argparse.Namespace) -> int:
    from ..edit_output import check_output_is_not_input
    from ..video import AtomicOutput, tee_frames_to_dir, write_video

    if not args.output.lower().endswith((".mp4", ".m4v", ".mov")):
        raise InvalidInput(f"output: must end in .mp4, .m4v or .mov, got {args.output!r}")
    if not getattr(args, "key", False):  # never write the edit over the clip it is made from
        check_output_is_not_input(args.input, args.output)
    AtomicOutput(args.output).discard()  # fail now, not after inverting, if the folder is missing
    if args.frames_dir and Path(args.frames_dir).exists() and not Path(args.frames_dir).is_dir():
        raise InvalidInput(f"frames_dir: {args.frames_dir!r} exists and is not a folder")
    if getattr(args, "eval", False) and not args.server:
        raise InvalidInput("eval: --eval asks the editor service (--server); for a local edit run pix2video eval")
    measured: list = []
    args.on_quality = measured.append if getattr(args, "eval", False) else None
    progress = Progress(not args.quiet)
    try:
        if args.server:
            info, images = job.run_remote(args, progress)
            video_id, cached, n, fps = info.video_id, info.cached, info.num_frames, info.fps
        else:
            engine, result, settings, local = job.invert_here(args, progress)
            video_id, cached, n, fps = result.video_id, result.cached, result.manifest.num_frames, local.fps
            images = (f.image for f in engine.edit(result.video_id, settings))
        progress.end()
        print(f"{'reused stored inversion' if cached else 'inverted'} {video_id} ({n} frames)", file=sys.stderr)

        def frames():
            progress("edit", 0, n)
            for i, image in enumerate(images):
                progress("edit", i + 1, n)
                yield image

        stream = frames()
        if args.frames_dir:
            stream = tee_frames_to_dir(stream, args.frames_dir)
        # The input's own rate: a stored inversion found by content may have
        # been made from a clip with the same frames at another rate.
        written = write_video(args.output, stream, fps=fps)
        progress.end()
    finally:
        progress.close()
    print(f"wrote {written} frames to {args.output}", file=sys.stderr)
    progress.summary(written)
    if args.on_quality is not None:
        from ..quality.report import print_quality

        print_quality(measured[0] if measured else None)
    return 0
