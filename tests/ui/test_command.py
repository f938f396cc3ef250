"""``convostore ui`` as a command: what it prints, and what it needs from a request."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import URL

from tests.conftest import run_sync
from tests.ui.seed import seed
from tests.ui.viewer import Viewer, make_database


def _status(address: str) -> int:
    try:
        with urllib.request.urlopen(address, timeout=30) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.sqlite
def test_host_needs_a_token_and_one_is_printed(tmp_path: Path) -> None:
    url = make_database(tmp_path / "hosted.db")
    server = Viewer(url, options=("--host", "127.0.0.1"))
    try:
        base, _, token = server.base.partition("/?token=")
        assert len(token) >= 24
        assert _status(base + "/") == 401
        # urllib follows the redirect without the cookie: the page itself then says 401,
        # which shows the token was taken off the URL.
        assert _status(f"{base}/stats?token=wrong") == 401
    finally:
        server.close()


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
def test_the_password_is_never_printed(db_url: URL) -> None:
    # The local server trusts 127.0.0.1, so any password connects.
    url = db_url.set(password="pw-Zq81x")
    run_sync(seed(url))
    server = Viewer(url)
    try:
        with urllib.request.urlopen(server.base + "/", timeout=30) as response:
            page = response.read().decode()
        assert "pw-Zq81x" not in page
        assert "***" in server.printed
    finally:
        server.close()
    assert "pw-Zq81x" not in server.printed
