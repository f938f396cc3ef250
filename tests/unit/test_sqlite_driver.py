"""convostore.sqlite_driver: the thin aiosqlite connection, used directly and through SQLAlchemy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from convostore import create_engine, sqlite_driver


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
