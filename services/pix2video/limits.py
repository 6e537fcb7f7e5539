"""Limits on every client-supplied string: one definition, used at every door.

An id or key is checked against its pattern and length before any use (a
store look-up, a log line, a metadata echo), so out-of-pattern input is
INVALID_ARGUMENT at once and never reaches a file system or an S3 request.
Error messages show at most :data:`MAX_ECHO` characters of what was sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInput

MAX_ECHO = 64  # characters of a rejected value quoted back in an error message

# Video ids are the first 40 hex digits of a SHA-256 content hash (jobs.video_id_for).
VIDEO_ID = re.compile(r"[0-9a-f]{40}")
# Session ids: an optional replica name, a dot, then 32 hex digits (uuid4().hex).
SESSION_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_-]{0,62}\.)?[0-9a-f]{32}")
# Object keys a client may name: '/'-separated parts of safe characters, no '.' or '..' parts.
OBJECT_KEY = re.compile(r"(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
MAX_OBJECT_KEY = 512
# An upload's file name is only a label (the container is probed from the bytes).
MAX_FILE_NAME = 255


def echo(value: object) -> str:
    """``value`` quoted for an error message, cut to MAX_ECHO characters."""
    text = str(value)
    return repr(text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "...") + (
        f" ({len(text)} characters)" if len(text) > MAX_ECHO else ""
    )


def check_pattern(value: object, pattern: re.Pattern, name: str, max_len: int = 256) -> str:
    """Returns ``value`` if it is a string of at most ``max_len`` characters matching
    ``pattern`` in full, else raises InvalidInput naming ``name``."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name}: required")
    if len(value) > max_len:
        raise InvalidInput(f"{name}: at most {max_len} characters, got {len(value)}")
    if not pattern.fullmatch(value):
        raise InvalidInput(f"{name}: not a valid {name.replace('_', ' ')}: {echo(value)}")
    return value


def check_video_id(value: object, name: str = "video_id") -> str:
    return check_pattern(value, VIDEO_ID, name, 40)


def check_session_id(value: object, name: str = "session_id") -> str:
    return check_pattern(value, SESSION_ID, name, 96)


def check_object_key(value: object, name: str = "object_key") -> str:
    return check_pattern(value, OBJECT_KEY, name, MAX_OBJECT_KEY)


def check_text(value: object, name: str, max_len: int) -> str:
    """A free-text field (prompt, file name): a string of at most ``max_len`` characters, no NUL."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name}: must be a string")
    if len(value) > max_len:
        raise InvalidInput(f"{name}: at most {max_len} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidInput(f"{name}: must not contain NUL characters")
    return value


# -- frames -------------------------------------------------------------------------

# Default pixel limit: a DCI 4K frame (4096 x 2160). Larger frames are refused
# from their declared size, before any pixel is decoded (a 200 kB PNG can
# declare 8192 x 8192 and decode to 200 MB).
DEFAULT_MAX_FRAME_PIXELS = 4096 * 2160
# Default minimum side: the VAE's downsampling factor, so a frame has at least
# one latent (and one depth-map) pixel.
DEFAULT_MIN_FRAME_SIDE = 8


@dataclass(frozen=True)
class FrameLimits:
    """The sizes of image and video frame accepted from a client.

    max_pixels: largest width x height; min_side: smallest width or height.
    """

    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    min_side: int = DEFAULT_MIN_FRAME_SIDE

    def __post_init__(self):
        if not isinstance(self.min_side, int) or self.min_side < 1:
            raise InvalidInput(f"min_frame_side: must be at least 1, got {self.min_side!r}")
        if not isinstance(self.max_pixels, int) or not self.min_side**2 <= self.max_pixels <= MAX_FRAME_PIXELS_CEILING:
            raise InvalidInput(
                f"max_frame_pixels: must be in [min_frame_side^2 = {self.min_side**2}, {MAX_FRAME_PIXELS_CEILING}], "
                f"got {self.max_pixels!r}"
            )

    def check(self, width: int, height: int, field: str) -> None:
        """Raises InvalidInput naming ``field`` unless a ``width`` x ``height``
        frame is within the limits (call it with the declared size, before decoding)."""
        if width <= 0 or height <= 0:
            raise InvalidInput(f"{field}: the frame declares no size ({width}x{height})")
        if width < self.min_side or height < self.min_side:
            raise InvalidInput(
                f"{field}: a {width}x{height} frame is smaller than the minimum of {self.min_side} pixels a side"
            )
        if width * height > self.max_pixels:
            raise InvalidInput(
                f"{field}: a {width}x{height} frame ({width * height} pixels) exceeds the limit of "
                f"{self.max_pixels} pixels"
            )


# The largest max_pixels a deployment may configure (FFmpeg's own ceiling is INT_MAX / 8).
MAX_FRAME_PIXELS_CEILING = 2**28
