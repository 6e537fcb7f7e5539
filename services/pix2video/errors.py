"""Domain errors raised by the engine and stores.

They carry a message that names the offending argument and the value received,
so that the CLI can print one line and the gRPC edge can map each kind to a
status code (InvalidInput -> INVALID_ARGUMENT, NotFound -> NOT_FOUND, ...)
without the engine knowing about either.
"""


class Pix2VideoError(Exception):
    """Base class of every error the engine raises on purpose.

    ``detail``: what only an operator may see (a store's endpoint, bucket or
    folder, the full object name): servers log it with the request's trace id
    and never send it to a client; the message itself names none of these.
    """

    def __init__(self, *args, detail: str | None = None):
        super().__init__(*args)
        self.detail = detail


class InvalidInput(Pix2VideoError, ValueError):
    """An argument was malformed or out of range."""


class NotFound(Pix2VideoError, KeyError):
    """A referenced object (video id, model folder, file) does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ModelLoadError(Pix2VideoError):
    """A model folder or hub id could not be loaded (missing component, bad config)."""


class CorruptObject(Pix2VideoError):
    """A stored object failed its checksum or could not be decoded."""


class Busy(Pix2VideoError):
    """Out of capacity (full queue, too many sessions, out of GPU memory)."""


class FailedPrecondition(Pix2VideoError):
    """The request is valid but cannot be served in the current state
    (e.g. resuming at a frame that is no longer buffered)."""


class Unavailable(Pix2VideoError):
    """A dependency (another service, the object store) cannot be reached."""
