"""Read-only SQLite: ``?mode=ro`` / ``read_only=True``, and the CLI's read commands, which
open files read-only so that read-only storage (or someone else's database) can be listed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from convostore import (
    ConfigurationError,
    ContextMessage,
    DatabaseError,
    SchemaVersionError,
    SQLAlchemyContextStore,
    connect,
    create_engine,
    migrate,
)
from tests.cli.conftest import json_out, seed

NOBODY = 65534


@pytest.mark.parametrize(
    "form", ["sqlite:///{}?mode=ro", "sqlite+aiosqlite:///{}?mode=ro", "read_only=True"]
)
async def test_a_read_only_engine_reads_and_never_writes(seeded: str, form: str) -> None:
    read_only = form == "read_only=True"
    url = seeded if read_only else form.format(seeded)
    engine = await connect(url, read_only=read_only)
    try:
        store = SQLAlchemyContextStore(engine, project="/work/alpha", session_id="s-1")
        assert len(await store.get_history()) == 2
        with pytest.raises(DatabaseError, match="readonly"):
            await store.append(ContextMessage(role="user"))
    finally:
        await engine.dispose()
    assert sorted(p.name for p in Path(seeded).parent.glob("seeded.db*"))[0] == "seeded.db"
    assert not list(Path(seeded).parent.glob("*mode=ro*"))  # no file named after the query


async def test_a_read_only_engine_checks_the_schema_and_never_migrates(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{path}", "0001")
    with pytest.raises(SchemaVersionError):
        await connect(path, read_only=True)
    assert await migrate.current(f"sqlite+aiosqlite:///{path}") == "0001"


def test_read_only_is_for_sqlite_files() -> None:
    with pytest.raises(ConfigurationError, match="read-only role"):
        create_engine("postgresql://app@db/x", read_only=True)


def test_the_cli_lists_without_writing(seeded: str) -> None:
    before = Path(seeded).stat().st_mtime_ns
    sessions = json_out("sessions", "list", "--url", seeded)
    assert {row["session_id"] for row in sessions} >= {"s-1"}
    assert Path(seeded).stat().st_mtime_ns == before


@pytest.fixture
def read_only_directory() -> Iterator[Path]:
    """A directory (and database) that user nobody can read but not write."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv, to read as another user")
    directory = Path(tempfile.mkdtemp(prefix="convostore-ro-"))
    try:
        directory.chmod(0o755)
        seed(str(directory / "chat.db"))
        assert sorted(p.name for p in directory.iterdir()) == ["chat.db"]  # closed cleanly
        (directory / "chat.db").chmod(0o444)
        directory.chmod(0o555)
        yield directory
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd="/",
    )


def test_a_database_in_a_read_only_directory_can_be_listed(read_only_directory: Path) -> None:
    """Opening for reading once ran the WAL pragma and the schema upgrade, and SQLite
    needs to create the WAL index: all refused in a directory the user cannot write."""
    path = str(read_only_directory / "chat.db")
    listed = as_nobody(
        sys.executable, "-m", "convostore.cli", "sessions", "list", "--url", path, "--json"
    )
    assert listed.returncode == 0, listed.stderr
    assert "s-1" in {row["session_id"] for row in json.loads(listed.stdout)}
    script = (
        "import asyncio, sys\n"
        "from convostore import connect, SQLAlchemyContextStore\n"
        "async def main():\n"
        "    engine = await connect(sys.argv[1])\n"
        "    store = SQLAlchemyContextStore(engine, project='/work/alpha', session_id='s-1')\n"
        "    print(len(await store.get_history()))\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
    )
    for url in (f"sqlite://{path}?mode=ro", f"sqlite+aiosqlite:///{path}?mode=ro"):
        read = as_nobody(sys.executable, "-c", script, url)
        assert read.returncode == 0, read.stderr
        assert read.stdout.strip() == "2"
    assert sorted(p.name for p in read_only_directory.iterdir()) == ["chat.db"]
