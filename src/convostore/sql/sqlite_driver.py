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

One round trip per transaction. Two execution options, set on a statement, let a write
transaction reach the worker thread once (SQLAlchemy's ``before_cursor_execute`` event, which
:func:`convostore.create_engine` registers, hands them to the connection, so echo and every
user hook still see each statement when it is issued):

* :data:`DEFER`: the statement's result is not needed (no rows, no rowcount), so it is queued
  and runs, in order, in the next round trip: the next statement's, or the commit's. Its
  errors surface there, inside the same call and the same transaction, which rolls back
  whole. A rollback before then drops it unrun.
* :data:`COMMIT_AFTER` (a check function): this is the last statement of a transaction whose
  owner commits right after it, so the commit runs in the same round trip. The check sees the
  statement's rows on the worker thread first; if it raises, the transaction is rolled back
  there and the error is raised. It only takes effect on connections whose transaction the
  caller owns (:data:`OWNED`, a connection-level option): inside a caller's unit of work the
  statement runs as any other and the caller commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any

import aiosqlite

__all__ = ["COMMIT_AFTER", "DEFER", "OWNED", "Connection", "Cursor", "connect", "hand_over"]

DEFER = "convostore_defer"
COMMIT_AFTER = "convostore_commit_after"
OWNED = "convostore_owned"

_Result = tuple[Any, list[Any], int, int | None]
_Statement = tuple[str, Any, bool]
Check = Callable[[list[Any]], None]


class Connection(aiosqlite.Connection):
    """An aiosqlite connection with single-round-trip statements and transactions."""

    _in_transaction = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Statements queued by DEFER, and what the event handed over for the statement it
        # saw (applied only if that statement is the next to run: a hook that raised after
        # the hand-over must not leave it to another statement).
        self._pending: list[_Statement] = []
        self._handed: tuple[str, bool, Check | None] | None = None

    def cursor(self) -> Cursor:  # type: ignore[override]
        """A cursor (awaitable, or used as ``async with``); free to create."""
        return Cursor(self)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker thread (aiosqlite's queue) and return its result."""
        return await self._execute(fn, *args)  # type: ignore[no-untyped-call]

    async def commit(self) -> None:
        if self._pending or self._in_transaction:
            await self.call(self._flush_and_finish, self._take_pending(), "commit")

    async def rollback(self) -> None:
        # Queued statements never ran: dropping them is their rollback.
        self._pending = []
        if self._in_transaction:
            await self.call(self._flush_and_finish, [], "rollback")

    async def close(self) -> None:
        self._pending = []
        await super().close()

    def _take_pending(self) -> list[_Statement]:
        pending, self._pending = self._pending, []
        return pending

    def _flush_and_finish(self, pending: list[_Statement], how: str) -> None:
        # Runs on the worker thread.
        connection = self._conn
        try:
            for sql, parameters, many in pending:
                self._run(sql, parameters, many)
            if how == "commit":
                connection.commit()
            else:
                connection.rollback()
        except BaseException:
            if connection.in_transaction:
                connection.rollback()
            raise
        finally:
            self._in_transaction = connection.in_transaction

    async def _statement(self, sql: str, parameters: Any, many: bool) -> _Result:
        handed, self._handed = self._handed, None
        defer, check = False, None
        if handed is not None and handed[0] == sql:
            _, defer, check = handed
        if defer:
            self._pending.append((sql, parameters, many))
            return None, [], -1, None
        result: _Result = await self.call(
            self._flush_and_run, self._take_pending(), sql, parameters, many, check
        )
        return result

    def _flush_and_run(
        self,
        pending: list[_Statement],
        sql: str,
        parameters: Any,
        many: bool,
        check: Check | None,
    ) -> _Result:
        # Runs on the worker thread: the queued statements, this one with its rows, and the
        # commit when this statement ends its owner's transaction.
        connection = self._conn
        try:
            for queued in pending:
                self._run(*queued)
            result = self._run(sql, parameters, many)
            if check is not None:
                check(result[1])
                connection.commit()
            return result
        except BaseException:
            # Nothing of this transaction may stay half-applied when a queued statement or
            # the check failed: roll back here, on the thread that owns the connection.
            if (pending or check is not None) and connection.in_transaction:
                connection.rollback()
            raise
        finally:
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
        result = await self._connection._statement(
            sql, () if parameters is None else parameters, False
        )
        self._store(result)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        # Materialised: a deferred executemany runs after the caller's iterator is gone.
        result = await self._connection._statement(sql, list(parameters), True)
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


def hand_over(
    conn: Any, _cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool
) -> None:
    """``before_cursor_execute`` handler: pass a statement's DEFER / COMMIT_AFTER to the driver.

    Registered by :func:`convostore.create_engine` on engines that use this driver.
    """
    if context is None:
        return
    options = context.execution_options
    defer = options.get(DEFER, False)
    check = options.get(COMMIT_AFTER) if options.get(OWNED, False) else None
    if not defer and check is None:
        return
    driver = conn.connection.driver_connection
    if isinstance(driver, Connection):
        driver._handed = (_statement, bool(defer), check)
