"""Checks on where an edit's output goes (used by ``pix2video edit``)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidInput


def check_output_is_not_input(input_path: str | os.PathLike, output_path: str | os.PathLike) -> None:
    """An edit never overwrites the clip it is made from (the same path, or
    another name of the same file)."""
    src, out = Path(input_path), Path(output_path)
    same = src.resolve() == out.resolve()
    if not same and src.exists() and out.exists():
        same = os.path.samefile(src, out)
    if same:
        raise InvalidInput(f"output: {str(output_path)!r} is the input video; choose another output path")
