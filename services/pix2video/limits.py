"""Limits on every client-supplied string: one definition, used at every door.

An id or key is checked against its pattern and length before any use (a
store look-up, a log line, a metadata echo), so out-of-pattern input is
INVALID_ARGUMENT at once and never reaches a file system or an S3 request.
Error messages show at most :data:`MAX_ECHO` characters of what was sent.
"""

from __future__ import annotations

import re

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
