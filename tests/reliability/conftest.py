"""Fixtures for the reliability suites: a clean database URL for sync tests.

The suites that drive their own event loops (hypothesis state machines, subprocess
writers) are plain sync tests, so they take :func:`clean_url` instead of the async
``db_url`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import URL

from tests.conftest import _servers, empty_tables, run_sync


@pytest.fixture
def clean_url(backend: str, request: pytest.FixtureRequest) -> URL:
    """A database at head with empty tables: a new SQLite file, or the session's server one."""
    if backend == "sqlite":
        path: Path = request.getfixturevalue("sqlite_file")
        return URL.create("sqlite+aiosqlite", database=str(path))
    url = _servers[backend].url
    assert url is not None
    run_sync(empty_tables(url))
    return url
