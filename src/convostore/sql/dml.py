"""Dialect DML: the statements whose SQL differs per backend, and the statement cache.

* :func:`upsert`: insert a row or update the existing one (``ON CONFLICT DO UPDATE`` on
  SQLite and PostgreSQL, ``ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB);
* :func:`insert_ignore`: insert a row unless its key exists;
* :func:`insert_rows`: many rows in one ``executemany`` (multi-row ``VALUES`` on SQLite);
* :func:`cached` and :func:`params_for`: hot statements built once, with bind parameters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BindParameter,
    Table,
    bindparam,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.dml import Insert

from convostore.sql import sqlite_driver
from convostore.sql.engine import Family, family_from_name

__all__ = [
    "Executor",
    "UpdateFn",
    "cached",
    "family_of",
    "insert_ignore",
    "insert_rows",
    "is_cached",
    "params_for",
    "upsert",
]

# A function from the incoming row (``excluded`` / ``inserted``) to the SET clause.
UpdateFn = Callable[[Any], Mapping[str, Any]]
T = TypeVar("T")

_statements: dict[tuple[Hashable, ...], Any] = {}
# The ids of the statements in _statements (which keeps them alive, so an id is never
# reused): the ones convostore.sql.sqlite_writer may run precompiled.
_hot: set[int] = set()


Executor = AsyncSession | AsyncConnection
"""What repositories run statements on: a caller's ``AsyncSession`` (a unit of work), or
the connection of a transaction a façade owns. Repositories only ``execute()`` on it."""


def family_of(executor: Executor) -> Family:
    """The backend family an executor is bound to."""
    bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
    return family_from_name(bind.dialect.name)


def upsert(
    kind: Family,
    table: Table,
    values: Mapping[str, Any],
    *,
    key: list[str],
    update: UpdateFn,
) -> Insert:
    """``INSERT values``, or on a duplicate ``key`` apply ``update(incoming)`` to the row."""
    if kind == "mysql":
        my_stmt = mysql.insert(table).values(dict(values))
        return my_stmt.on_duplicate_key_update(dict(update(my_stmt.inserted)))
    dialect_insert = postgresql.insert if kind == "postgresql" else sqlite.insert
    stmt = dialect_insert(table).values(dict(values))
    return stmt.on_conflict_do_update(index_elements=key, set_=dict(update(stmt.excluded)))


def insert_ignore(
    kind: Family, table: Table, values: Mapping[str, Any], *, key: list[str]
) -> Insert:
    """``INSERT values`` unless a row with the same ``key`` exists (then nothing happens)."""
    if kind == "mysql":
        # Not INSERT IGNORE: that would also turn real errors (truncation...) into warnings.
        my_stmt = mysql.insert(table).values(dict(values))
        return my_stmt.on_duplicate_key_update({key[0]: table.c[key[0]]})
    dialect_insert = postgresql.insert if kind == "postgresql" else sqlite.insert
    return dialect_insert(table).values(dict(values)).on_conflict_do_nothing(index_elements=key)


def cached(key: tuple[Hashable, ...], build: Callable[[], T]) -> T:
    """Build a statement once per ``key`` and reuse it.

    Building a statement and computing its cache key costs SQLAlchemy more than running a
    small one, so hot statements are built once, with bind parameters for every value
    (see :func:`params_for`), and executed with a parameter dict.
    """
    statement = _statements.get(key)
    if statement is None:
        statement = _statements[key] = build()
        for each in statement if isinstance(statement, tuple) else (statement,):
            _hot.add(id(each))
    return cast(T, statement)


def is_cached(statement: object) -> bool:
    """Whether ``statement`` was built by :func:`cached` (and so lives as long as the process)."""
    return id(statement) in _hot


def params_for(table: Table, names: Iterable[str]) -> dict[str, BindParameter[Any]]:
    """Bind parameters named and typed after ``table``'s columns ``names``."""
    return {name: bindparam(name, type_=table.c[name].type) for name in names}


async def insert_rows(
    session: Executor, table: Table, rows: Sequence[Mapping[str, Any]], *, last: bool = False
) -> None:
    """Insert ``rows``; ``last`` as for :func:`~convostore.sql.counters.bump_counter`.

    One ``executemany``, except on SQLite, where several rows go in multi-row ``INSERT …
    VALUES`` statements: the search index's triggers (migration 0005) write into FTS5,
    which flushes its pending words at every statement's savepoint, so one statement per
    row would flush once per row (twice the cost of the insert, measured).
    """
    if len(rows) > 1 and family_of(session) == "sqlite":
        await _insert_rows_sqlite(session, table, rows, last=last)
        return
    stmt = cached(
        ("insert", table, last),
        lambda: _ends(table.insert(), _no_check) if last else table.insert(),
    )
    await session.execute(stmt, list(rows))


async def _insert_rows_sqlite(
    session: Executor, table: Table, rows: Sequence[Mapping[str, Any]], *, last: bool
) -> None:
    # Multi-row VALUES written out here: SQLAlchemy's insert().values([...]) builds and
    # compiles a new statement for every call, which costs more than it saves. The values
    # go through the columns' own bind processors, as they would in a compiled statement.
    bind = session.get_bind() if isinstance(session, AsyncSession) else session
    dialect = bind.dialect
    names = tuple(rows[0])
    processors = [table.c[name].type._cached_bind_processor(dialect) for name in names]
    quote = dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in names)}) VALUES "
    group = "(" + ", ".join("?" * len(names)) + ")"
    per_statement = max(1, _SQLITE_VARIABLES // len(names))
    connection = session if isinstance(session, AsyncConnection) else await session.connection()
    columns = tuple(zip(names, processors, strict=True))
    # A batch's rows share objects (its timestamp): a column holding the same object as
    # in the row before reuses its converted value instead of converting it again.
    previous: list[Any] = [_MISSING] * len(names)
    converted: list[Any] = [None] * len(names)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values: list[Any] = []
        append = values.append
        for row in chunk:
            for index, (name, process) in enumerate(columns):
                value = row[name]
                if process is None:
                    append(value)
                elif value is previous[index]:
                    append(converted[index])
                else:
                    previous[index] = value
                    converted[index] = process(value)
                    append(converted[index])
        final = last and start + per_statement >= len(rows)
        options = {sqlite_driver.COMMIT_AFTER: _no_check} if final else {}
        await connection.exec_driver_sql(
            head + ", ".join([group] * len(chunk)), tuple(values), execution_options=options
        )


_MISSING: Any = object()


def _ends(stmt: T, check: Callable[[list[Any]], None]) -> T:
    """``stmt`` marked as the last of its transaction, to be committed in the same round trip.

    Only the thin SQLite driver acts on the mark, and only when the transaction belongs to
    the façade (:data:`convostore.sql.sqlite_driver.OWNED`); ``check`` sees the statement's rows
    before that commit and may refuse them by raising. Everywhere else the mark is inert.
    """
    return cast(T, stmt.execution_options(**{sqlite_driver.COMMIT_AFTER: check}))  # type: ignore[attr-defined]


def _no_check(rows: list[Any]) -> None:
    return None


# Bound parameters per SQLite statement: SQLITE_MAX_VARIABLE_NUMBER is 32766 since 3.32,
# 999 before (the library Python's sqlite3, and so aiosqlite, is linked against).
_SQLITE_VARIABLES = 32_000 if sqlite3.sqlite_version_info >= (3, 32) else 999
