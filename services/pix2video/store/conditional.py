"""Conditional writes: compare-and-swap on one object, for leases.

A store that offers them has three methods besides the ObjectStore ones:

    get_tagged(key) -> (data, tag)       NotFound when absent
    put_if_absent(key, data) -> tag      WriteConflict when the key exists
    put_if_tag(key, data, tag) -> tag    WriteConflict unless the object's tag is ``tag``

A tag names one version of the object (S3's ETag; the content's MD5 on local
disk). S3 does it with ``If-None-Match: *`` and ``If-Match: <etag>`` on
PutObject (AWS since 2024; SeaweedFS 4.x, the test server, honours both, see
tests/test_lease_cas.py); the local store with a hard link (create only if
absent) and a lock on the folder (replace only if unchanged).

:func:`conditional` finds the methods through the wrappers services put round
a store (a tenant's view maps the key; the observing and retrying wrappers pass
other attributes through), or returns None for a store without them, and
:mod:`.lease` then falls back to write-and-read-back.
"""

from __future__ import annotations

import hashlib

from ..errors import Pix2VideoError


class WriteConflict(Pix2VideoError):
    """A conditional write found the object not as expected (it exists, or it changed)."""


def content_tag(data: bytes) -> str:
    """The tag of a version on a store that names versions by content (MD5, as S3's ETag of one PUT)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def conditional(store):
    """``store`` if it offers conditional writes that work, else None."""
    supported = getattr(store, "conditional_writes", None)
    if supported is None:
        return None
    return store if supported() else None
