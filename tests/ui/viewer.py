"""``convostore ui`` in a subprocess for the tests, and the databases they browse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Final

from sqlalchemy import URL

from convostore import migrate
from convostore.encryption import Keyring
from tests.conftest import run_sync
from tests.ui.seed import long_session, seed

LONG: Final = 10_000
"""Messages in the long session of :func:`make_database` (``long=True``)."""


def make_database(path: Path, *, keyring: Keyring | None = None, long: bool = False) -> URL:
    """An SQLite file with the seed data (and the long session, with ``long``)."""
    url = URL.create("sqlite+aiosqlite", database=str(path))
    run_sync(migrate.upgrade(url))
    run_sync(seed(url, keyring=keyring))
    if long:
        run_sync(long_session(url, LONG))
    return url


class Viewer:
    """``convostore ui`` on a free port, until the test ends."""

    def __init__(
        self, url: URL, *, env: dict[str, str] | None = None, options: tuple[str, ...] = ()
    ) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CONVOSTORE_ENCRYPTION")}
        environ.update(env or {}, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "convostore.cli",
                "ui",
                "--url",
                url.render_as_string(hide_password=False),
                "--port",
                "0",
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environ,
        )
        assert self.process.stdout is not None
        printed = []
        # The command prints the URL once it listens: wait for that line.
        for line in self.process.stdout:
            printed.append(line)
            if line.startswith("convostore ui: "):
                self.base = line.split()[2].rstrip("/")
                break
        else:
            raise AssertionError(f"convostore ui did not start: {''.join(printed)}")
        self.printed = "".join(printed)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
