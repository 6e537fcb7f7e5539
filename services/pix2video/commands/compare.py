"""``pix2video compare``: one clip edited by each method variant, measured side by side
(see :mod:`pix2video.quality.compare`)."""

from __future__ import annotations

HELP = "edit one clip with each method variant: metrics table (markdown, JSON), PNG grid, side-by-side mp4s"


def add_arguments(p) -> None:
    from ..quality.commands import add_compare_arguments

    add_compare_arguments(p)


def run(args) -> int:
    from ..quality.compare import run_compare

    return run_compare(args)
