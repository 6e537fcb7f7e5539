"""``pix2video eval``: the paper's quality metrics of an edited clip (see :mod:`pix2video.quality`)."""

from __future__ import annotations

HELP = "CLIP-Text, CLIP-Image and Pixel-MSE of an edited clip (the paper's Table 2 metrics)"


def add_arguments(p) -> None:
    from ..quality.commands import add_eval_arguments

    add_eval_arguments(p)


def run(args) -> int:
    from ..quality.commands import run_eval

    return run_eval(args)
