"""Secrets: a password in the database URL appears in no error, repr, log line or CLI output.

Live servers: PostgreSQL accepts the URL (trust authentication ignores the password), so
every call succeeds while logging runs at DEBUG; MariaDB refuses it (root has no
password), so every call fails. Unreachable servers (a closed port) fail at connect.
The CLI runs in a real process (``python -m convostore.cli``) and in-process for every
subcommand, with the URL on the command line and in the environment. SQLite URLs carry no
password, so SQLite has nothing to test here.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL
from typer.testing import CliRunner

from convostore import (
    ContextMessage,
    ConvostoreError,
    Database,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    connect,
    create_engine,
)
from convostore.cli import app

PASSWORD = "S3cretPW-4f9q"
ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = [
    f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test",
    f"mysql://root:{PASSWORD}@127.0.0.1:1/test",
    f"mariadb://root:{PASSWORD}@127.0.0.1:1/test",
    f"postgres://app:{PASSWORD}@localhost:1/test",
]


def assert_clean(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, f"password leaked in: {text[:300]!r}"


def chain_texts(exc: BaseException) -> list[str]:
    """str and repr of the exception and every cause and context, plus the traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        current = current.__cause__ or current.__context__
    return texts


def calls_for(url: str) -> tuple[list[Any], list[Callable[[], Awaitable[Any]]]]:
    """Objects built on ``url`` and a call of each public kind through them."""
    db = Database(url, agent_name="a")
    db2 = SQLAlchemyDatabase(url, agent_name=None)
    store = SQLAlchemyContextStore(url=url, session_id="s", project="p")
    calls: list[Callable[[], Awaitable[Any]]] = [
        db.async_init,
        lambda: db.get_user("u"),
        lambda: db.credit("u", 1),
        lambda: db2.add_message("t", "u", "user", message="x"),
        store.get_history,
        lambda: store.append(ContextMessage(role="user")),
        store.list_sessions,
        store.fork,
        lambda: connect(url),
    ]
    return [db, db2, store], calls


async def close_all(objects: list[Any]) -> None:
    for obj in objects:
        await obj.close()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.pool", "convostore", "alembic"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.mark.parametrize("url", UNREACHABLE)
async def test_unreachable_servers(url: str, debug_logs: pytest.LogCaptureFixture) -> None:
    objects, calls = calls_for(url)
    try:
        assert_clean(*(repr(o) for o in objects), *(str(o) for o in objects))
        for call in calls:
            with pytest.raises(ConvostoreError) as caught:
                await call()
            assert_clean(*chain_texts(caught.value))
        engine = create_engine(url)
        assert_clean(repr(engine), str(engine.url), repr(engine.url), repr(engine.sync_engine))
        await engine.dispose()
    finally:
        await close_all(objects)
    assert_clean(debug_logs.text, *(repr(r.args) for r in debug_logs.records))


async def test_live_servers(
    backend: str, db_url: URL, debug_logs: pytest.LogCaptureFixture
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite URLs carry no password")
    url = db_url.set(password=PASSWORD).render_as_string(hide_password=False)
    assert PASSWORD in url
    objects, calls = calls_for(url)
    try:
        assert_clean(*(repr(o) for o in objects), *(str(o) for o in objects))
        for call in calls:
            if backend == "mariadb":  # root has no password: every call is refused
                with pytest.raises(ConvostoreError) as caught:
                    await call()
                assert_clean(*chain_texts(caught.value))
                continue
            result = await call()  # PostgreSQL's trust authentication ignores the password
            assert_clean(repr(result), str(result))
            if hasattr(result, "dispose"):
                await result.dispose()
    finally:
        await close_all(objects)
    assert_clean(debug_logs.text, *(repr(r.args) for r in debug_logs.records))


CLI_COMMANDS = [
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "current", "--json"],
    ["db", "check"],
    ["db", "downgrade", "base"],
    ["sessions", "list"],
    ["sessions", "show", "s"],
    ["threads", "list", "--agent", "a"],
    ["threads", "show", "t", "--agent", "a"],
    ["export", "--output", "-"],
    ["stats"],
    ["prune", "--older-than", "30d", "--dry-run"],
]


@pytest.mark.parametrize("url", UNREACHABLE[:2])
@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: "-".join(c).strip("-"))
def test_cli_output(command: list[str], url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, [*command, "--url", url])
    assert result.exit_code != 0
    assert_clean(result.stdout, result.stderr, repr(result.exception))
    from_env = runner.invoke(app, command, env={"CONVOSTORE_DATABASE_URL": url})
    assert from_env.exit_code != 0
    assert_clean(from_env.stdout, from_env.stderr, repr(from_env.exception))


def test_cli_process_output() -> None:
    """The real process, stderr included (warnings, logging, tracebacks would show here)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "PYTHONWARNINGS": "always",
        "CONVOSTORE_DATABASE_URL": UNREACHABLE[1],
    }
    for args in (["stats", "--url", UNREACHABLE[0]], ["db", "current"]):
        done = subprocess.run(
            [sys.executable, "-m", "convostore.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "error:" in done.stderr
        assert_clean(done.stdout, done.stderr)
