"""pytest plugin: one real S3 server (SeaweedFS) per test session.

Enable with ``pytest_plugins = ["s3_fixture"]`` in tests/conftest.py (or
``-p s3_fixture``). The server starts only when a test asks for
``s3_settings``; tests that share it keep apart by giving their stores
distinct ``prefix`` settings.
"""

from __future__ import annotations

import pytest
from s3server import running_s3_server, weed_binary


@pytest.fixture(scope="session")
def s3_settings(tmp_path_factory):
    """S3Settings of a bucket on a SeaweedFS server that lives for the session."""
    weed_binary()  # fails, not skips: the S3 tests are part of what CI proves
    with running_s3_server(tmp_path_factory.mktemp("s3server")) as settings:
        yield settings
