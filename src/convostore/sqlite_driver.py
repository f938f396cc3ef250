"""A thin aiosqlite connection that costs one thread round trip per statement.

aiosqlite runs every call on the connection's worker thread. SQLAlchemy's asyncio adapter
makes four such calls per statement (create a cursor, execute, fetch, close) plus one per
commit, and a rollback whenever a connection returns to the pool: nine round trips of
~80-100 µs for an append of two statements, which dominates the cost of a small write.

:class:`Connection` is an ``aiosqlite.Connection`` whose cursors do all of that in one
round trip (execute, fetch every row, close) and whose ``commit``/``rollback`` skip the
round trip when no transaction is open. Everything else (connecting, closing, functions,
the worker thread itself) is aiosqlite's own. It reaches SQLAlchemy through the public
``async_creator`` argument of ``create_async_engine``; :func:`convostore.create_engine`
uses it for SQLite unless ``CONVOSTORE_SQLITE_DRIVER=aiosqlite`` (or ``fast_sqlite=False``)
asks for the stock path. Both paths run the same test suites.

Trade-off: results are fetched whole, so there are no server-side cursors; convostore
pages long reads with keyset queries instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any

import aiosqlite

__all__ = ["Connection", "Cursor", "connect"]

_Result = tuple[Any, list[Any], int, int | None]


class Connection(aiosqlite.Connection):
    """An aiosqlite connection with single-round-trip statements."""

    _in_transaction = False

    def cursor(self) -> Cursor:  # type: ignore[override]
        """A cursor (awaitable, or used as ``async with``); free to create."""
        return Cursor(self)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker thread (aiosqlite's queue) and return its result."""
        return await self._execute(fn, *args)  # type: ignore[no-untyped-call]

    async def commit(self) -> None:
        if self._in_transaction:
            await self.call(self._finish, "commit")

    async def rollback(self) -> None:
        if self._in_transaction:
            await self.call(self._finish, "rollback")

    def _finish(self, how: str) -> None:
        # Runs on the worker thread.
        connection = self._conn
        if how == "commit":
            connection.commit()
        else:
            connection.rollback()
        self._in_transaction = connection.in_transaction

    def _run(self, sql: str, parameters: Any, many: bool) -> _Result:
        # Runs on the worker thread: the whole statement, rows included, in one call.
        connection = self._conn
        cursor = connection.cursor()
        try:
            if many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters)
            description = cursor.description
            rows = cursor.fetchall() if description is not None else []
            return description, rows, cursor.rowcount, cursor.lastrowid
        finally:
            cursor.close()
            self._in_transaction = connection.in_transaction


class Cursor:
    """The part of a DB-API cursor that SQLAlchemy's asyncio adapter uses, prefetched."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    def __await__(self) -> Generator[Any, None, Cursor]:
        # SQLAlchemy 2.0 awaits connection.cursor(); 2.1 enters it with ``async with``.
        return self._ready().__await__()

    async def _ready(self) -> Cursor:
        return self

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        connection = self._connection
        result = await connection.call(
            connection._run, sql, () if parameters is None else parameters, False
        )
        self._store(result)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        result = await self._connection.call(self._connection._run, sql, parameters, True)
        self._store(result)
        return self

    def _store(self, result: _Result) -> None:
        self.description, self._rows, self.rowcount, self.lastrowid = result

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None


def connect(database: str, **kwargs: Any) -> Connection:
    """Like ``aiosqlite.connect``, returning a :class:`Connection` (await it to open)."""

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return connection

    connection = Connection(connector, 64)
    # The worker thread must not keep the interpreter alive (SQLAlchemy does the same).
    # aiosqlite < 0.22's connection was itself the thread.
    thread: Any = getattr(connection, "_thread", connection)
    thread.daemon = True
    return connection


def creator(database: str, **kwargs: Any) -> Callable[[], Awaitable[Connection]]:
    """An ``async_creator`` for ``create_async_engine``: opens a :class:`Connection`."""

    async def create() -> Connection:
        connection = connect(database, **kwargs)
        await connection
        return connection

    return create
