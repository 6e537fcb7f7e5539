"""Checks of an edit's or an inversion's scalar inputs; torch-free, so settings
classes (and the command line's help) can import them without loading torch."""

from __future__ import annotations

from pix2video_client.options import DTYPE_NAMES, MAX_PROMPT_CHARS, MAX_STEPS, MIN_STEPS

from ..errors import InvalidInput
from ..limits import check_text, echo


def check_prompt(prompt: object, name: str = "prompt", allow_empty: bool = False) -> str:
    """A prompt of at most MAX_PROMPT_CHARS characters, no NUL (non-empty
    unless ``allow_empty``, as for a negative prompt): checked before
    tokenising, and length first, so a huge blank prompt is not quoted back."""
    text = check_text(prompt, name, MAX_PROMPT_CHARS)
    if not allow_empty and not text.strip():
        raise InvalidInput(f"{name}: must be a non-empty string, got {echo(text)}")
    return text


def check_num_steps(num_steps: object, name: str = "num_steps") -> int:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not MIN_STEPS <= num_steps <= MAX_STEPS:
        raise InvalidInput(f"{name}: must be an integer in [{MIN_STEPS}, {MAX_STEPS}], got {num_steps!r}")
    return num_steps


def check_dtype(dtype: str, name: str = "dtype") -> str:
    """``auto`` or a name of :data:`~pix2video_client.options.DTYPE_NAMES`."""
    if dtype != "auto" and dtype not in DTYPE_NAMES:
        raise InvalidInput(f"{name}: must be auto or one of {', '.join(DTYPE_NAMES)}; got {dtype!r}")
    return dtype
