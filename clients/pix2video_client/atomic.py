"""The one atomic-write helper: a file appears at its path complete or not at all.

It is written under a temporary name beside the target (same folder, so the
rename cannot cross file systems) and renamed into place. The temporary file
is created with ``os.open(..., 0o666)`` rather than ``mkstemp``, so the
finished file gets the usual permissions (0666 less the umask), not 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class AtomicFile:
    """``tmp``: a new empty file beside ``path``, named ``.<name>.<random><suffix>``
    (the suffix kept, so tools that go by it, such as a muxer, still work).
    :meth:`commit` renames it onto ``path``; :meth:`discard` removes it. As a
    context manager it commits on success and discards on any exception."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        while True:
            tmp = self.path.parent / f".{self.path.name}.{secrets.token_hex(4)}{self.path.suffix}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            break
        os.close(fd)
        self.tmp = tmp

    def commit(self, fsync: bool = False) -> None:
        """Renames the temporary file into place (``fsync`` first: durable on a crash)."""
        if fsync:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_bytes_atomic(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Writes ``data`` to ``path`` atomically (and durably when ``fsync``)."""
    out = AtomicFile(path)
    try:
        with open(out.tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        out.commit()
    except BaseException:
        out.discard()
        raise
