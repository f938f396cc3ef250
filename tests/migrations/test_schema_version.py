"""What the façades do with a database that is not at the revision the code expects.

* A server database behind head is refused with the command to run, unless the caller
  opts in with ``migrate=True``; SQLite migrates itself unless told not to.
* A database ahead of the code (a newer convostore migrated it) is refused everywhere,
  even with ``migrate=True`` and on SQLite, and left as it is.
* No message carries the password.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import URL

from convostore import (
    ConfigurationError,
    Database,
    SchemaVersionError,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    connect,
    migrate,
)
from convostore.sql.engine import create_engine
from tests.migrations.conftest import SCHEMA_TABLES, execute, plain, table_names, version_rows

PASSWORD = "hunter2-not-a-real-secret"
FUTURE = "ffff_future"


def with_password(url: URL) -> URL:
    """``url`` with a password the server ignores: PostgreSQL here trusts local connections.

    MariaDB's root has no password and would refuse a wrong one, so its URL is left alone.
    """
    return url.set(password=PASSWORD) if url.get_backend_name() == "postgresql" else url


def all_messages(exc: BaseException) -> str:
    """The text of an exception and of everything chained to it."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


async def test_server_database_behind_head_is_refused_with_the_command_to_run(
    empty_server_url: URL,
) -> None:
    url = with_password(empty_server_url)
    if url.get_backend_name() == "postgresql":
        assert PASSWORD in plain(url)

    db = SQLAlchemyDatabase(plain(url))
    with pytest.raises(SchemaVersionError) as refused:
        await db.async_init()
    await db.close()
    with pytest.raises(SchemaVersionError) as refused_connect:
        await connect(plain(url))

    for exc in (refused.value, refused_connect.value):
        message = str(exc)
        assert "python -m convostore.migrate upgrade --url" in message
        assert "alembic -x url=" in message
        assert "upgrade head" in message
        assert "migrate=True" in message
        assert empty_server_url.database is not None
        assert empty_server_url.database in message
        assert PASSWORD not in all_messages(exc)
    assert PASSWORD not in repr(db)
    # Checking the version must not create anything, not even alembic_version.
    assert await table_names(empty_server_url) == set()


async def test_server_database_with_migrate_true_is_upgraded(empty_server_url: URL) -> None:
    db = await Database(plain(empty_server_url), agent_name="a", migrate=True).async_init()
    try:
        assert await migrate.current(db.engine) == migrate.head()
        await db.add_message("t1", "u1", "user", message="hello")
    finally:
        await db.close()
    # Now at head, the default (check only) is satisfied.
    engine = await connect(plain(empty_server_url))
    try:
        store = SQLAlchemyContextStore(engine, session_id="s1", project="p")
        assert await store.get_history() == []
    finally:
        await engine.dispose()
    assert await version_rows(empty_server_url) == [migrate.head()]


async def test_connect_with_migrate_true_upgrades_a_server_database(empty_server_url: URL) -> None:
    engine = await connect(plain(empty_server_url), migrate=True)
    await engine.dispose()
    assert await table_names(empty_server_url) == SCHEMA_TABLES | {"alembic_version"}


async def test_assert_at_head(empty_url: URL) -> None:
    engine = create_engine(empty_url)
    try:
        with pytest.raises(SchemaVersionError, match="upgrade"):
            await migrate.assert_at_head(engine)
        await migrate.upgrade(engine)
        await migrate.assert_at_head(engine)
    finally:
        await engine.dispose()


async def test_sqlite_migrates_itself_unless_told_not_to(tmp_path: Path) -> None:
    refused = str(tmp_path / "manual.db")
    db = Database(refused, migrate=False)
    with pytest.raises(SchemaVersionError, match=r"python -m convostore\.migrate upgrade"):
        await db.async_init()
    await db.close()
    with pytest.raises(SchemaVersionError):
        await connect(refused, migrate=False)

    automatic = tmp_path / "auto.db"
    db = await Database(str(automatic)).async_init()
    await db.close()
    url = URL.create("sqlite+aiosqlite", database=str(automatic))
    assert await version_rows(url) == [migrate.head()]


async def test_database_newer_than_the_code_is_refused(empty_url: URL) -> None:
    await migrate.upgrade(empty_url)
    await execute(empty_url, f"UPDATE alembic_version SET version_num = '{FUTURE}'")
    url = plain(with_password(empty_url))

    attempts = []
    for migrate_flag in (None, True, False):
        db = Database(url, migrate=migrate_flag)
        with pytest.raises(SchemaVersionError) as refused:
            await db.async_init()
        await db.close()
        attempts.append(refused.value)
        with pytest.raises(SchemaVersionError) as refused:
            await connect(url, migrate=migrate_flag)
        attempts.append(refused.value)
    with pytest.raises(SchemaVersionError) as refused:
        await migrate.upgrade(url)
    attempts.append(refused.value)

    for exc in attempts:
        assert FUTURE in str(exc)
        assert "upgrade convostore" in str(exc)
        assert PASSWORD not in all_messages(exc)
    assert await version_rows(empty_url) == [FUTURE]


async def test_unknown_target_revision_is_a_configuration_error(tmp_path: Path) -> None:
    url = URL.create("sqlite+aiosqlite", database=str(tmp_path / "t.db"))
    with pytest.raises(ConfigurationError, match="no_such_revision"):
        await migrate.upgrade(url, "no_such_revision")
