"""What a client may see of an error message.

Messages are written to name the field and the value received, but a
message can still carry what only the operator may know: a temporary file's
path, the store's folder, an S3 endpoint or bucket, an object's full name
(the key layout), a secret, or a long echo of the input. The error
interceptor passes every message through a :class:`Scrubber` before it
leaves the server (the full message goes to the server's log, with the
request's trace id):

1. the values of the service's own sensitive settings (endpoints, bucket,
   folders, secrets, model paths) are replaced, wherever they appear;
2. URLs, IP addresses and host:port pairs become ``<address>``;
3. object names of the store's layout (``tenants/...``, ``videos/...``)
   become ``<object>``; absolute and relative file paths become ``<path>``;
4. the result is one line of at most :data:`MAX_MESSAGE` characters, so no
   echo of the input is longer than that.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

MAX_MESSAGE = 200  # characters of a message a client receives (before the trace id)
MIN_REDACTED = 3  # shorter setting values are not hunted for (they would match ordinary words)

# Settings fields whose values a client must never see (matched against the field's name).
SENSITIVE_FIELD = re.compile(
    r"secret|token|password|passwd|access_key|credential|endpoint|address|bucket|prefix|"
    r"(^|_)dir$|(^|_)home$|(^|_)file$|(^|_)path$|(^|_)root$|^model$|caption_model|cert|(^|_)ca(_|$)|key_file"
)

_REPLACEMENTS = [
    (re.compile(r"\bBearer\s+\S+", re.I), "Bearer <redacted>"),
    (re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*"), "<address>"),
    (re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.])"), "<address>"),
    (re.compile(r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](?::\d{1,5})?"), "<address>"),
    (re.compile(r"(?<![\w.-])(?:localhost|[A-Za-z][\w-]*(?:\.[\w-]+)*):\d{2,5}(?![\d.])"), "<address>"),
    (re.compile(r"(?<![\w.-])(?:tenants|videos|uploads)/[^\s'\",;]*"), "<object>"),
    (re.compile(r"(?<![\w.:/-])(?:~|\.{1,2})?/[^\s'\"/,;:()\[\]]+(?:/[^\s'\"/,;:()\[\]]*)*"), "<path>"),
]


def sensitive_values(settings) -> list[str]:
    """The values of ``settings``' sensitive fields (see SENSITIVE_FIELD)."""
    if settings is None or not dataclasses.is_dataclass(settings):
        return []
    out = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name, None)
        if isinstance(value, str) and SENSITIVE_FIELD.search(f.name):
            out.append(value)
    return out


class Scrubber:
    """Cleans messages for clients; ``values`` are replaced wherever they
    appear as a whole token (bucket names, folders, secrets, ...)."""

    def __init__(self, values: Iterable[str] = ()):
        kept = sorted({v.strip() for v in values if v and len(v.strip()) >= MIN_REDACTED}, key=len, reverse=True)
        self._values = [re.compile(r"(?<![\w-])" + re.escape(v) + r"(?![\w-])") for v in kept]

    @classmethod
    def for_settings(cls, settings) -> "Scrubber":
        return cls(sensitive_values(settings))

    def __call__(self, message: str) -> str:
        text = " ".join(str(message).split())
        for pattern in self._values:
            text = pattern.sub("<redacted>", text)
        for pattern, replacement in _REPLACEMENTS:
            text = pattern.sub(replacement, text)
        if len(text) > MAX_MESSAGE:
            text = text[: MAX_MESSAGE - 3] + "..."
        return text
