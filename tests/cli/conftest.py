"""Helpers for the CLI tests: an in-process runner and a database seeded through the façades."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import URL
from typer.testing import CliRunner, Result

from convostore import ContextMessage, Database, SQLAlchemyContextStore, connect
from convostore.cli import app


def run_cli(*args: str, input: bytes | str | None = None) -> Result:
    """Invoke ``convostore`` in this process, stdout and stderr kept apart."""
    return CliRunner().invoke(app, list(args), input=input)


def ok(*args: str, input: bytes | str | None = None) -> Result:
    """Invoke ``convostore`` and require exit code 0."""
    result = run_cli(*args, input=input)
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


def json_out(*args: str, input: bytes | str | None = None) -> Any:
    """Invoke ``convostore ... --json`` and parse its stdout."""
    return orjson.loads(ok(*args, "--json", input=input).stdout)


def url_arg(url: URL) -> str:
    """A URL as the command line takes it (password included)."""
    return url.render_as_string(hide_password=False)


def records(path: Path) -> list[Any]:
    """The records of an export file, without the header (whose timestamp differs)."""
    lines = path.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines[1:]]


async def _seed(url: str) -> None:
    engine = await connect(url, migrate=True)
    try:
        one = SQLAlchemyContextStore(engine, project="/work/alpha", session_id="s-1")
        await one.append_many(
            [
                ContextMessage(role="user", content=[{"type": "text", "text": "Hello [b]x[/b]"}]),
                ContextMessage(
                    role="assistant",
                    content=[
                        {"type": "text", "text": "long answer " * 200},
                        {"type": "tool_use", "id": "u1", "name": "search", "input": {"q": 0.1}},
                    ],
                ),
            ]
        )
        await one.add_context_tokens(120, 45)
        two = SQLAlchemyContextStore(engine, project="/work/beta", session_id="s-2")
        await two.append(ContextMessage(role="user", content=[{"type": "image", "n": None}]))
    finally:
        await engine.dispose()
    bot = Database(url, agent_name="bot", migrate=True)
    try:
        await bot.credit("alice", 250)
        await bot.set_current_thread_id("alice", "t-1")
        await bot.add_message("t-1", "alice", "user", message="hi", content="hi ✓")
        await bot.add_message(
            "t-1",
            "alice",
            "agent",
            message="pay",
            kind="requires_payment",
            satoshis=21,
            extra_outputs={"invoice": "lnbc1", "nested": [1, 2.5, None]},
        )
        await bot.add_message("t-2", "carol", "user", message="other thread")
    finally:
        await bot.close()
    default = Database(url)
    try:
        await default.add_message("t-9", "bob", "user", message="default agent")
    finally:
        await default.close()


def seed(url: URL | str) -> None:
    """Fill a database at ``url`` with two sessions, three agent threads and a user."""
    asyncio.run(_seed(url_arg(url) if isinstance(url, URL) else url))


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may fall back on ./convostore.db or the developer's database variables."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONVOSTORE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
def seeded(tmp_path: Path) -> str:
    """An SQLite file holding the seed data."""
    path = str(tmp_path / "seeded.db")
    seed(path)
    return path
