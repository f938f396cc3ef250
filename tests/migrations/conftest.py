"""Fixtures and helpers for the migration tests: empty databases and ways to look inside them.

Every test here starts from a database that has never been migrated (a new SQLite file, or
a new database on the server) and drops it afterwards, so no test sees another's schema.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import URL, Connection, inspect, text
from sqlalchemy.pool import NullPool

from convostore import migrate
from convostore.sql.engine import create_engine
from convostore.sql.tables import described_here
from tests.conftest import create_server_database, drop_database, require_backend

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_TABLES = frozenset(
    {
        "users",
        "threads",
        "messages",
        "context_tokens",
        "context_messages",
        "adk_sessions",
        "adk_events",
        "adk_app_states",
        "adk_user_states",
        "langgraph_checkpoints",
        "langgraph_checkpoint_blobs",
        "langgraph_checkpoint_writes",
    }
)
URL_ENV_VARS = ("CONVOSTORE_DATABASE_URL", "DATABASE_URL")

SERVER_BACKENDS = [
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, fresh_server_database: URL | None) -> URL:
    """A never-migrated database on ``backend``: a new SQLite file, or a new server database."""
    if backend == "sqlite":
        return URL.create("sqlite+aiosqlite", database=str(tmp_path / "empty.db"))
    assert fresh_server_database is not None
    return fresh_server_database


@pytest.fixture(params=SERVER_BACKENDS)
def empty_server_url(request: pytest.FixtureRequest) -> Iterator[URL]:
    """A new, never-migrated database on each selected server backend, dropped afterwards."""
    # Synchronous on purpose: require_backend() runs its own event loop on first use.
    name: str = request.param
    require_backend(request.config, name)
    url = asyncio.run(create_server_database(name, migrated=False))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


def plain(url: URL) -> str:
    """The URL as a string a subprocess can use (password included)."""
    return url.render_as_string(hide_password=False)


async def table_names(url: URL) -> set[str]:
    """The tables of the models in the database at ``url``, read by SQLAlchemy's inspector."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            names: list[str] = await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
    # SQLite's search index (FTS5 and its shadow tables) is no table of the models.
    return {name for name in names if described_here(name, "table")}


async def version_rows(url: URL) -> list[str]:
    """Every row of ``alembic_version`` (a correctly migrated database has exactly one)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


async def execute(url: URL, *statements: str) -> None:
    """Run raw SQL statements in one transaction (to damage or stamp a database on purpose)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def alembic_check(url: URL) -> None:
    """``alembic check`` on ``url`` with the packaged config; raises if models and schema differ."""

    def check(connection: Connection) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        command.check(config)

    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(check)
    finally:
        await engine.dispose()


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment without any database URL, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in URL_ENV_VARS}
    env.update(extra)
    return env


def alembic_command(*args: str) -> list[str]:
    """The ``alembic`` CLI of this interpreter's environment."""
    return [sys.executable, "-m", "alembic", *args]
