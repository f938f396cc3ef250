"""convostore.sql.sqlite_driver: the thin aiosqlite connection, directly and through SQLAlchemy."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from convostore import (
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    ValidationError,
    connect,
    create_engine,
)
from convostore.sql import sqlite_driver


async def test_statements_rows_and_counts(tmp_path: Path) -> None:
    connection = await sqlite_driver.creator(str(tmp_path / "d.db"))()
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            await cursor.executemany("INSERT INTO t (v) VALUES (?)", [("a",), ("b",), ("c",)])
            assert cursor.rowcount == 3
            await cursor.execute("INSERT INTO t (v) VALUES (?)", ("d",))
            assert cursor.lastrowid == 4
            await connection.commit()
            await cursor.execute("SELECT k, v FROM t ORDER BY k")
            assert [d[0] for d in cursor.description] == ["k", "v"]
            assert await cursor.fetchone() == (1, "a")
            assert await cursor.fetchmany(2) == [(2, "b"), (3, "c")]
            assert await cursor.fetchall() == [(4, "d")]
            assert await cursor.fetchone() is None
    finally:
        await connection.close()


async def test_commit_and_rollback_follow_the_transaction(tmp_path: Path) -> None:
    connection = await sqlite_driver.creator(str(tmp_path / "d.db"))()
    try:
        cursor = connection.cursor()
        await cursor.execute("CREATE TABLE t (v TEXT)")
        await connection.commit()
        await cursor.execute("INSERT INTO t VALUES ('kept')")
        await connection.commit()
        await cursor.execute("INSERT INTO t VALUES ('dropped')")
        await connection.rollback()
        # With no transaction open these are free, and still correct.
        await connection.rollback()
        await connection.commit()
        await cursor.execute("SELECT v FROM t")
        assert await cursor.fetchall() == [("kept",)]
    finally:
        await connection.close()


async def test_driver_errors_keep_their_types(tmp_path: Path) -> None:
    connection = await sqlite_driver.creator(str(tmp_path / "d.db"))()
    try:
        cursor = connection.cursor()
        await cursor.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        await cursor.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError):
            await cursor.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.OperationalError):
            await cursor.execute("SELECT nope FROM t")
    finally:
        await connection.close()


@pytest.mark.parametrize("fast", [True, False], ids=["thin", "stock"])
async def test_both_paths_behave_alike_under_sqlalchemy(tmp_path: Path, fast: bool) -> None:
    engine = create_engine(str(tmp_path / "e.db"), fast_sqlite=fast)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"))
            await conn.execute(text("INSERT INTO t VALUES (1, 'x')"))
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2, 'y')"))
            with pytest.raises(IntegrityError):
                await conn.execute(text("INSERT INTO t VALUES (1, 'dup')"))
            await conn.rollback()
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT k, v FROM t"))).all()
            pragmas = [
                (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            ]
        assert [tuple(r) for r in rows] == [(1, "x")]
        assert pragmas == ["wal", 1, 5000]
    finally:
        await engine.dispose()


async def driver_class(path: Path) -> type:
    engine = create_engine(str(path))
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            return type(raw.driver_connection)
    finally:
        await engine.dispose()


async def test_environment_selects_the_stock_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await driver_class(tmp_path / "t.db") is sqlite_driver.Connection
    monkeypatch.setenv("CONVOSTORE_SQLITE_DRIVER", "aiosqlite")
    assert await driver_class(tmp_path / "s.db") is aiosqlite.Connection


class CountingConnection(sqlite_driver.Connection):
    """The thin driver, counting its round trips to the worker thread."""

    trips = 0

    async def call(self, fn: Any, *args: Any) -> Any:
        type(self).trips += 1
        return await super().call(fn, *args)


async def test_an_append_add_message_and_credit_are_one_round_trip_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "Connection", CountingConnection)
    engine = await connect(tmp_path / "trips.db")
    seen: list[str] = []
    # Every statement still reaches SQLAlchemy's events, deferred or not.
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda c, cu, sql, *a: seen.append(sql)
    )
    try:
        store = SQLAlchemyContextStore(engine, session_id="s", project="/p")
        db = SQLAlchemyDatabase(engine=engine, agent_name="a")
        message = ContextMessage(role="user", content=[{"type": "text", "text": "hi"}])
        await store.append(message)
        await db.add_message("t", "u", "user", message="hi")
        await db.credit("u", 1)
        for call in (
            lambda: store.append(message),
            lambda: db.add_message("t", "u", "user", message="again"),
            lambda: db.credit("u", 1),
        ):
            CountingConnection.trips, seen[:] = 0, []
            await call()
            assert CountingConnection.trips == 1
            assert seen, "a statement went by without SQLAlchemy's events"
        assert len(await store.get_history()) == 2
        assert [m.idx for m in await db.get_messages("t", "u")] == [0, 1]
        assert (await db.get_user("u")).available_balance == 2
    finally:
        await engine.dispose()


async def test_a_deferred_statement_fails_inside_the_call_and_nothing_stays(
    tmp_path: Path,
) -> None:
    engine = create_engine(str(tmp_path / "d.db"))
    deferred = text("INSERT INTO t VALUES (1)").execution_options(**{sqlite_driver.DEFER: True})
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))
            await conn.execute(deferred)  # the duplicate: queued, not yet run
            with pytest.raises(IntegrityError):
                await conn.execute(text("SELECT count(*) FROM t"))
            await conn.rollback()
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT k FROM t"))).scalars().all() == [1]
            # A rollback drops queued statements unrun.
            await conn.execute(deferred)
            await conn.rollback()
            await conn.execute(text("INSERT INTO t VALUES (3)"))
            await conn.commit()
            assert (await conn.execute(text("SELECT k FROM t ORDER BY k"))).scalars().all() == [
                1,
                3,
            ]
    finally:
        await engine.dispose()


def refuse(rows: list[Any]) -> None:
    raise ValidationError(f"refused {rows}")


async def test_commit_after_commits_only_owned_transactions_and_honours_the_check(
    tmp_path: Path,
) -> None:
    engine = create_engine(str(tmp_path / "c.db"))
    owned = engine.execution_options(**{sqlite_driver.OWNED: True})

    def last(value: int, check: Any) -> Any:
        return text(f"INSERT INTO t VALUES ({value}) RETURNING k").execution_options(
            **{sqlite_driver.COMMIT_AFTER: check}
        )

    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
        # Owned: the commit rides with the statement, so a rollback afterwards keeps it.
        async with owned.connect() as conn:
            await conn.execute(last(1, lambda rows: None))
            await conn.rollback()
        # Not owned (a caller's unit of work): the mark is inert, the caller decides.
        async with engine.connect() as conn:
            await conn.execute(last(2, lambda rows: None))
            await conn.rollback()
        # The check refuses the rows: rolled back on the driver's thread, error raised.
        async with owned.connect() as conn:
            await conn.execute(text("INSERT INTO t VALUES (3)"))
            with pytest.raises(ValidationError, match="refused"):
                await conn.execute(last(4, refuse))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT k FROM t"))).scalars().all() == [1]
    finally:
        await engine.dispose()
