"""create_engine(): SQLite pragmas, in-memory lifetime, directories, backend families.

A missing driver (ConfigurationError) is not tested: every driver is installed here.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import URL, insert, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import QueuePool

from convostore import connect, migrate
from convostore.errors import ConfigurationError
from convostore.sql.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    Engine,
    create_engine,
    family,
    family_from_name,
    sqlite_path,
)
from convostore.sql.tables import ContextSessionRecord

NOW = datetime(2024, 1, 1, tzinfo=UTC)


async def _pragmas(conn: AsyncConnection) -> dict[str, object]:
    names = ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
    return {name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar() for name in names}


async def _add_session(engine: AsyncEngine, session_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(ContextSessionRecord).values(
                project="p", session_id=session_id, input_tokens=1, output_tokens=2,
                next_position=0, preview=None, created_at=NOW, updated_at=NOW,
            )
        )  # fmt: skip


async def _session_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(ContextSessionRecord.session_id).order_by(ContextSessionRecord.session_id)
        )
        return list(result.scalars())


async def test_sqlite_file_gets_the_pragmas_on_every_connection(tmp_path: Path) -> None:
    engine = create_engine(str(tmp_path / "x.db"))
    try:
        async with engine.connect() as first, engine.connect() as second:
            expected = {
                "journal_mode": "wal",
                "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                "synchronous": 1,  # NORMAL
                "foreign_keys": 1,
            }
            assert await _pragmas(first) == expected
            assert await _pragmas(second) == expected
    finally:
        await engine.dispose()
    assert (tmp_path / "x.db").exists()


@pytest.mark.parametrize("form", ["sqlite://{}", "sqlite+aiosqlite:///{}", "{}"])
async def test_no_directory_is_created(tmp_path: Path, form: str) -> None:
    """A mistyped directory once became a new, empty database in a new directory."""
    path = tmp_path / "a" / "b" / "c.db"
    with pytest.raises(ConfigurationError, match="create it first"):
        create_engine(form.format(path))
    with pytest.raises(ConfigurationError, match="create it first"):
        await connect(path)
    assert not (tmp_path / "a").exists()
    path.parent.mkdir(parents=True)
    engine = create_engine(form.format(path))
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert path.is_file()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://:memory:", ":memory:", "sqlite+aiosqlite://"])
async def test_memory_database_survives_across_connections(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        await _add_session(engine, "one")
        await _add_session(engine, "two")
        assert await _session_ids(engine) == ["one", "two"]
        async with engine.connect() as conn:
            assert (await _pragmas(conn))["foreign_keys"] == 1
    finally:
        await engine.dispose()


async def test_memory_databases_are_private_to_their_engine() -> None:
    first, second = create_engine(":memory:"), create_engine(":memory:")
    try:
        await migrate.upgrade(first)
        await _add_session(first, "one")
        async with second.connect() as conn:
            tables = await conn.execute(text("SELECT name FROM sqlite_master"))
            assert tables.all() == []
    finally:
        await first.dispose()
        await second.dispose()


async def test_concurrent_callers_share_the_memory_database() -> None:
    engine = create_engine("sqlite://:memory:")
    try:
        await migrate.upgrade(engine)
        await asyncio.gather(*(_add_session(engine, f"s{i}") for i in range(8)))
        assert await _session_ids(engine) == [f"s{i}" for i in range(8)]
    finally:
        await engine.dispose()


async def test_keyword_arguments_override_the_defaults(tmp_path: Path) -> None:
    engine = create_engine(str(tmp_path / "x.db"), pool_size=2, echo=False)
    try:
        assert engine.pool.size() == 2  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_server_engines_are_created_without_connecting() -> None:
    # Nothing listens on port 9; creating the engine must not try.
    postgres = create_engine("postgres://u:pw@127.0.0.1:9/d")
    maria = create_engine("mariadb://u:pw@127.0.0.1:9/d")
    try:
        assert postgres.url.drivername == "postgresql+asyncpg"
        assert family(postgres) == "postgresql"
        assert maria.url.drivername == "mariadb+asyncmy"
        assert maria.url.query["charset"] == "utf8mb4"
        assert family(maria) == "mysql"
    finally:
        await postgres.dispose()
        await maria.dispose()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("sqlite", "sqlite"), ("postgresql", "postgresql"), ("mysql", "mysql"), ("mariadb", "mysql")],
)
def test_family_from_name(name: str, expected: str) -> None:
    assert family_from_name(name) == expected


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        family_from_name("oracle")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///x.db", Path("x.db")),
        ("sqlite+aiosqlite:////abs/x.db", Path("/abs/x.db")),
        ("sqlite+aiosqlite:///file:data/x.db?uri=true", Path("data/x.db")),
        ("sqlite+aiosqlite:///:memory:", None),
        ("sqlite+aiosqlite://", None),
        ("sqlite+aiosqlite:///file:x?mode=memory&uri=true", None),
        ("postgresql+asyncpg://u@h/d", None),
    ],
)
def test_sqlite_path(url: str, expected: Path | None) -> None:
    assert sqlite_path(make_url(url)) == expected


def test_sqlite_path_of_a_created_url() -> None:
    assert sqlite_path(URL.create("sqlite+aiosqlite", database="/a/b.db")) == Path("/a/b.db")


def idle(engine: AsyncEngine) -> int:
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedin()


async def test_engines_close_like_a_connection(tmp_path: Path) -> None:
    # axio-context-sqlite's examples end in `await conn.close()`; code written for an
    # AsyncEngine keeps dispose().
    engine = create_engine(str(tmp_path / "closing.db"))
    assert isinstance(engine, AsyncEngine)
    assert isinstance(engine, Engine)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    assert idle(engine) == 1
    await engine.close()
    assert idle(engine) == 0
    async with create_engine(str(tmp_path / "closing.db")) as scoped:
        async with scoped.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert idle(scoped) == 1
    assert idle(scoped) == 0


async def test_connect_takes_a_path_and_returns_a_closeable_engine(tmp_path: Path) -> None:
    engine = await connect(tmp_path / "chat.db")
    try:
        assert isinstance(engine, Engine)
        assert (tmp_path / "chat.db").exists()
    finally:
        await engine.close()
