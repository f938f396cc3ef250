"""SQL that differs between backends, in one place.

* :func:`upsert`: insert a row or update the existing one (``ON CONFLICT DO UPDATE`` on
  SQLite and PostgreSQL, ``ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB);
* :func:`insert_ignore`: insert a row unless its key exists;
* :func:`bump_counter`: add ``n`` to a counter column of a row, creating the row if needed,
  and return the new value, all under the row's write lock. This is how positions are
  allocated: SQLite and PostgreSQL do it in one ``INSERT … ON CONFLICT … RETURNING``;
  MySQL/MariaDB, which has no ``RETURNING`` on upserts, sets the new value with
  ``LAST_INSERT_ID(expr)``, which its OK packet hands back (the cursor's ``lastrowid``);
* :func:`insert_at_counter`: allocate positions and insert rows at them; on PostgreSQL a
  single row is one statement (a data-modifying CTE), see :func:`appends_in_one_statement`;
* :func:`cached` and :func:`params_for`: hot statements built once, with bind parameters.
* :func:`text_matches`: the rows whose ``search_text`` matches a search, with a rank that
  depends on the message alone: SQLite's FTS5, PostgreSQL's ``tsvector`` (``ts_rank``),
  MySQL/MariaDB's ``MATCH … AGAINST`` in boolean mode.

:func:`is_retryable` says which failures roll back a whole transaction that can simply be
run again (deadlocks, serialization failures, lock timeouts, SQLite's busy database).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Executable,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    column,
    func,
    insert,
    literal,
    literal_column,
    select,
    table,
    tuple_,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.dml import Insert

from convostore.rules import INT64_MAX, checked_counter
from convostore.search import PAD
from convostore.sql import sqlite_driver
from convostore.sql.engine import Family, family_from_name

__all__ = [
    "INT64_MAX",
    "Executor",
    "appends_in_one_statement",
    "bump_counter",
    "bump_counters",
    "cached",
    "checked_counter",
    "family_of",
    "insert_at_counter",
    "insert_ignore",
    "insert_rows",
    "is_cached",
    "is_retryable",
    "params_for",
    "text_matches",
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


async def bump_counter(
    session: Executor,
    table: Table,
    key_values: Mapping[str, Any],
    *,
    counter: str,
    n: int,
    insert_values: Mapping[str, Any] | None = None,
    also_update: UpdateFn | None = None,
    last: bool = False,
) -> int:
    """Add ``n`` to ``table.counter`` for the row at ``key_values`` and return the new value.

    A missing row is inserted with ``counter = n`` plus ``insert_values``. The row stays
    write-locked until the transaction ends, so the range ``[new - n, new)`` belongs to
    this transaction alone. ``also_update`` adds assignments to the update of an existing
    row (for example keeping a preview); it must build the same expressions on every call
    (no captured per-call values), since the statement is built once per call site.
    ``last``: nothing follows in this transaction, so its commit may ride along with this
    statement (see :mod:`convostore.sql.sqlite_driver`).
    """
    kind = family_of(session)
    insert_values = insert_values or {}
    columns = (*key_values, *insert_values)

    def build() -> Executable:
        column = table.c[counter]
        amount = bindparam("n", type_=column.type)

        def assignments(incoming: Any) -> dict[str, ColumnElement[Any]]:
            changes: dict[str, Any] = dict(also_update(incoming)) if also_update else {}
            # Last, because MySQL applies ON DUPLICATE KEY assignments in order. There,
            # LAST_INSERT_ID(expr) also hands the new value back in the statement's OK
            # packet (the cursor's lastrowid), which saves the read-back.
            bumped = column + amount
            changes[counter] = func.last_insert_id(bumped) if kind == "mysql" else bumped
            return changes

        stmt = upsert(
            kind,
            table,
            {**params_for(table, columns), counter: amount},
            key=list(key_values),
            update=assignments,
        )
        if kind == "mysql":
            return stmt
        returning = stmt.returning(column)
        return _ends(returning, _counter_check(table.name, counter)) if last else returning

    site = getattr(also_update, "__code__", None)
    stmt = cached((kind, "bump", table.name, counter, columns, site, last), build)
    result = await session.execute(stmt, {**key_values, **insert_values, "n": n})
    # On MySQL/MariaDB lastrowid is 0 when the row was inserted (the tables have no
    # AUTO_INCREMENT): it then holds n.
    value = (result.lastrowid or n) if kind == "mysql" else result.scalar_one()  # type: ignore[attr-defined]
    return checked_counter(value, table.name, counter)


async def bump_counters(
    session: Executor,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
    counter: str,
    also_update: UpdateFn,
) -> dict[tuple[Any, ...], int]:
    """Bump the counters of several rows at once; return each key's new value.

    ``rows`` holds one row per key, in key order (the order rows are locked in, the same for
    every batch, so concurrent batches cannot deadlock on each other), with the amount to
    add in its ``counter`` column and the values to insert if the row is missing. One
    multi-row upsert: ``INSERT … VALUES (…), (…) ON CONFLICT … RETURNING`` on SQLite and
    PostgreSQL; on MySQL/MariaDB the upsert then a locking read of the new values.
    ``also_update`` is as for :func:`bump_counter`.
    """
    kind = family_of(session)
    columns = tuple(rows[0])

    def build() -> tuple[Executable, Executable | None]:
        column = table.c[counter]

        def assignments(incoming: Any) -> dict[str, ColumnElement[Any]]:
            changes: dict[str, Any] = dict(also_update(incoming))
            # Last, because MySQL applies ON DUPLICATE KEY assignments in order.
            changes[counter] = column + incoming[counter]
            return changes

        stmt = upsert(kind, table, params_for(table, columns), key=list(key), update=assignments)
        keys = [table.c[k] for k in key]
        if kind != "mysql":
            return stmt.returning(*keys, column), None
        locked = select(*keys, column).where(tuple_(*keys).in_(bindparam("keys", expanding=True)))
        return stmt, locked.with_for_update()

    site = also_update.__code__
    stmt, locked = cached((kind, "bump_many", table.name, counter, columns, site), build)
    if locked is None:
        result = (await session.execute(stmt, list(rows))).all()
    else:
        await session.execute(stmt, list(rows))
        wanted = [tuple(row[k] for k in key) for row in rows]
        result = (await session.execute(locked, {"keys": wanted})).all()
    return {tuple(found[:-1]): checked_counter(found[-1], table.name, counter) for found in result}


async def insert_rows(
    session: Executor, table: Table, rows: Sequence[Mapping[str, Any]], *, last: bool = False
) -> None:
    """Insert ``rows``; ``last`` as for :func:`bump_counter`.

    One ``executemany``, except on SQLite, where several rows go in multi-row ``INSERT …
    VALUES`` statements: the search index's triggers (migration 0005) write into FTS5,
    which flushes its pending words at every statement's savepoint, so one statement per
    row would flush once per row (twice the cost of the insert, measured).
    """
    if len(rows) > 1 and family_of(session) == "sqlite":
        await _insert_rows_sqlite(session, table, rows, last=last)
        return
    stmt = cached(
        ("insert", table.name, last),
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
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values: list[Any] = []
        for row in chunk:
            for name, process in zip(names, processors, strict=True):
                value = row[name]
                values.append(value if process is None else process(value))
        final = last and start + per_statement >= len(rows)
        options = {sqlite_driver.COMMIT_AFTER: _no_check} if final else {}
        await connection.exec_driver_sql(
            head + ", ".join([group] * len(chunk)), tuple(values), execution_options=options
        )


def _ends(stmt: T, check: Callable[[list[Any]], None]) -> T:
    """``stmt`` marked as the last of its transaction, to be committed in the same round trip.

    Only the thin SQLite driver acts on the mark, and only when the transaction belongs to
    the façade (:data:`convostore.sql.sqlite_driver.OWNED`); ``check`` sees the statement's rows
    before that commit and may refuse them by raising. Everywhere else the mark is inert.
    """
    return cast(T, stmt.execution_options(**{sqlite_driver.COMMIT_AFTER: check}))  # type: ignore[attr-defined]


def _no_check(rows: list[Any]) -> None:
    return None


def _counter_check(table: str, counter: str) -> Callable[[list[Any]], None]:
    def check(rows: list[Any]) -> None:
        for row in rows:
            checked_counter(row[0], table, counter)

    return check


def _position_check(table: str, counter: str) -> Callable[[list[Any]], None]:
    # A position is the counter less one: it overflowed if the counter did.
    def check(rows: list[Any]) -> None:
        for (position,) in rows:
            checked_counter(position + 1 if type(position) is int else position, table, counter)

    return check


def appends_in_one_statement(kind: Family) -> bool:
    """Whether :func:`insert_at_counter` makes a single-row append one statement.

    When it does, the caller may run that statement on its own (autocommit): it is atomic
    by itself, and skipping ``BEGIN``/``COMMIT`` saves two round trips.
    """
    return kind == "postgresql"


async def insert_at_counter(
    session: Executor,
    counter_table: Table,
    key_values: Mapping[str, Any],
    *,
    counter: str,
    insert_values: Mapping[str, Any],
    also_update: UpdateFn,
    target: Table,
    position: str,
    rows: Sequence[Mapping[str, Any]],
    last: bool = False,
) -> int:
    """Allocate ``len(rows)`` positions from a counter row and insert ``rows`` at them.

    Returns the first position; row ``i`` gets ``first + i`` in its ``position`` column.
    On PostgreSQL a single row goes in one statement: a data-modifying CTE bumps the
    counter and the ``INSERT … SELECT`` reads the new value from it (the foreign key to
    the counter row is checked at the end of the statement, when that row exists). On
    SQLite a single row is the bump, deferred, and an ``INSERT … SELECT`` that reads the
    bumped counter: one round trip to the driver's thread, its commit included when
    ``last`` (nothing follows in this transaction). Everywhere else, and for several rows,
    it is :func:`bump_counter` then one ``INSERT``.
    """
    kind = family_of(session)
    if len(rows) == 1 and kind == "sqlite":
        return await _insert_one_at_counter_sqlite(
            session,
            counter_table,
            key_values,
            counter=counter,
            insert_values=insert_values,
            also_update=also_update,
            target=target,
            position=position,
            row=rows[0],
            last=last,
        )
    if len(rows) != 1 or not appends_in_one_statement(kind):
        after = await bump_counter(
            session,
            counter_table,
            key_values,
            counter=counter,
            n=len(rows),
            insert_values=insert_values,
            also_update=also_update,
        )
        first = after - len(rows)
        await insert_rows(
            session,
            target,
            [{**row, position: first + offset} for offset, row in enumerate(rows)],
            last=last,
        )
        return first
    (row,) = rows
    columns = (*key_values, *insert_values)
    row_columns = tuple(row)

    def build() -> Executable:
        column = counter_table.c[counter]
        amount = bindparam("n", type_=column.type)
        stmt = upsert(
            kind,
            counter_table,
            {**params_for(counter_table, columns), counter: amount},
            key=list(key_values),
            update=lambda incoming: {**also_update(incoming), counter: column + amount},
        )
        bumped = stmt.returning(column).cte("bumped")
        values = [
            bindparam(f"row_{name}", type_=target.c[name].type).label(name) for name in row_columns
        ]
        source = select(*values, (bumped.c[counter] - 1).label(position))
        return (
            insert(target)
            .from_select([*row_columns, position], source)
            .returning(target.c[position])
        )

    site = also_update.__code__
    stmt = cached((kind, "insert_at", counter_table.name, target.name, row_columns, site), build)
    params = {**key_values, **insert_values, "n": 1}
    params.update({f"row_{name}": value for name, value in row.items()})
    return int((await session.execute(stmt, params)).scalar_one())


async def _insert_one_at_counter_sqlite(
    session: Executor,
    counter_table: Table,
    key_values: Mapping[str, Any],
    *,
    counter: str,
    insert_values: Mapping[str, Any],
    also_update: UpdateFn,
    target: Table,
    position: str,
    row: Mapping[str, Any],
    last: bool,
) -> int:
    # SQLite holds the database's write lock from the bump to the commit, so the INSERT's
    # read of the counter sees this transaction's own bump and nobody else's.
    columns = (*key_values, *insert_values)
    row_columns = tuple(row)

    def build() -> tuple[Executable, Executable]:
        column = counter_table.c[counter]
        amount = bindparam("n", type_=column.type)
        bump = upsert(
            "sqlite",
            counter_table,
            {**params_for(counter_table, columns), counter: amount},
            key=list(key_values),
            update=lambda incoming: {**also_update(incoming), counter: column + amount},
        ).execution_options(**{sqlite_driver.DEFER: True})
        key = params_for(counter_table, key_values)
        bumped = (
            select(column)
            .where(*(counter_table.c[k] == key[k] for k in key_values))
            .scalar_subquery()
        )
        values = [
            bindparam(f"row_{name}", type_=target.c[name].type).label(name) for name in row_columns
        ]
        stmt = (
            insert(target)
            .from_select([*row_columns, position], select(*values, (bumped - 1).label(position)))
            .returning(target.c[position])
        )
        return bump, (_ends(stmt, _position_check(counter_table.name, counter)) if last else stmt)

    site = also_update.__code__
    key = ("sqlite", "insert_one", counter_table.name, target.name, row_columns, site, last)
    bump, stmt = cached(key, build)
    params = {**key_values, **insert_values, "n": 1}
    await session.execute(bump, params)
    params.update({f"row_{name}": value for name, value in row.items()})
    value = (await session.execute(stmt, params)).scalar_one()
    if type(value) is not int:
        # Checked on the driver's thread when the commit rides along; here otherwise.
        checked_counter(value, counter_table.name, counter)
    return int(value)


# Bound parameters per SQLite statement: SQLITE_MAX_VARIABLE_NUMBER is 32766 since 3.32,
# 999 before (the library Python's sqlite3, and so aiosqlite, is linked against).
_SQLITE_VARIABLES = 32_000 if sqlite3.sqlite_version_info >= (3, 32) else 999

RANK_SCALE = 10**12
"""Ranks are the backend's score times this, as integers: exact keyset cursors everywhere."""

# The SQLite search index of migration 0005, per message table.
_SQLITE_INDEX = {"context_messages": "context_search", "messages": "message_search"}
_SIMPLE: ColumnElement[Any] = literal_column("'simple'::regconfig")


def text_matches(
    kind: Family,
    target: Table,
    key: Sequence[str],
    terms: Sequence[tuple[str, bool]],
    scope: Mapping[str, Any],
) -> Select[Any]:
    """``SELECT key…, rank`` of the rows of ``target`` in ``scope`` whose words match.

    ``terms`` are ``(word, prefix)`` pairs as the index holds words (see
    :meth:`convostore.search.Query.indexed_terms`); every one must match. ``rank`` is an
    integer, higher for better matches. ``scope`` maps key columns to values, and every
    statement is filtered by it. The words hold letters, digits and ``_`` only, so they
    are safe inside each backend's query syntax (passed as a bound parameter all the same).
    """
    if kind == "sqlite":
        fts_name = _SQLITE_INDEX[target.name]
        fts = table(fts_name, column("rowid"))
        docs = table(
            f"{fts_name}_docs", column("doc_id"), column("words"), *(column(n) for n in key)
        )
        expression = " ".join(f'"{word}"' + ("*" if prefix else "") for word, prefix in terms)
        found = literal_column(fts_name).op("MATCH")(bindparam("search", expression))
        in_scope = [docs.c[name] == value for name, value in scope.items()]
        exact = [word.rstrip(PAD) for word, prefix in terms if not prefix]
        if len(scope) > 1 or len(exact) != 1:
            # The rank from each match's feed: for one session or thread (its few rows,
            # each looked up in the index, cost less than walking every match in the
            # table), and for several words or prefixes, whose matches (messages with all
            # of them) are fewer than the entries of their most common word.
            stmt = (
                select(
                    *(docs.c[name] for name in key),
                    _density_rank(kind, target.c.search_text, terms).label("rank"),
                )
                .select_from(
                    fts.join(docs, docs.c.doc_id == fts.c.rowid).join(
                        target, and_(*(target.c[n] == docs.c[n] for n in key))
                    )
                )
                .where(found, *in_scope)
            )
            if len(scope) > 1:
                mine = docs.alias("mine")
                stmt = stmt.where(
                    fts.c.rowid.in_(
                        select(mine.c.doc_id).where(
                            *(mine.c[name] == value for name, value in scope.items())
                        )
                    )
                )
            return stmt
        # One word over a whole project or agent, where it may match a large share of the
        # table: the same rank from the index itself, no message row read. Its occurrences
        # come from the fts5vocab view (one pass over the word's entries).
        vocab = table(f"{fts_name}_vocab", column("term"), column("doc"))
        occurrences = (
            select(vocab.c.doc, func.count().label("n"))
            .where(vocab.c.term.in_(exact))
            .group_by(vocab.c.doc)
            .subquery("occurrences")
        )
        prefixes = sum(1 for _, prefix in terms if prefix)
        score = (occurrences.c.n + prefixes) * RANK_SCALE / docs.c.words
        return (
            select(
                *(docs.c[name] for name in key),
                sql_cast(func.round(score), BigInteger).label("rank"),
            )
            .select_from(occurrences.join(docs, docs.c.doc_id == occurrences.c.doc))
            .where(occurrences.c.doc.in_(select(fts.c.rowid).where(found)), *in_scope)
        )
    words = target.c.search_text
    if kind == "postgresql":
        expression = " & ".join(word + (":*" if prefix else "") for word, prefix in terms)
        query = func.to_tsquery(_SIMPLE, bindparam("search", expression))
        # search_text is a tsvector there (convostore.sql.types.SearchVector), GIN-indexed.
        # ts_rank reads the message's own vector alone: a stable cursor.
        rank: ColumnElement[Any] = sql_cast(
            func.round(func.ts_rank(words, query) * RANK_SCALE), BigInteger
        )
        matched: ColumnElement[Any] = words.op("@@")(query)
    else:
        expression = " ".join(f"+{word}" + ("*" if prefix else "") for word, prefix in terms)
        matched = words.match(bindparam("search", expression))
        rank = _density_rank(kind, words, terms)
    return (
        select(*(target.c[name] for name in key), rank.label("rank"))
        .where(matched)
        .where(*(target.c[name] == value for name, value in scope.items()))
    )


def _density_rank(
    kind: Family, feed: ColumnElement[Any], terms: Sequence[tuple[str, bool]]
) -> ColumnElement[Any]:
    """How much of a message its matching words are, from its feed alone (SQLite, MySQL).

    FTS5's ``bm25`` and MySQL's relevance weigh words by the whole table, so a write
    anywhere (another tenant's included) would move every rank and break the keyset
    cursor between two pages. This counts each exact word's occurrences in the feed (the
    words are space-separated, so doubling the spaces makes every occurrence
    ``" word "``), adds one per prefix word, and divides by the message's word count.
    """
    text_ = Text()
    spaced = literal(" ") + func.replace(feed, " ", "  ", type_=text_) + literal(" ")
    total: Any = literal(0)
    for word, prefix in terms:
        if prefix:
            total = total + 1
            continue
        # LENGTH counts characters on SQLite and bytes on MySQL/MariaDB.
        width = (len(word.encode()) if kind == "mysql" else len(word)) + 2
        gone = func.replace(spaced, literal(f" {word} "), "", type_=text_)
        total = total + (func.length(spaced) - func.length(gone)) / width
    count = func.length(feed) - func.length(func.replace(feed, " ", "", type_=text_)) + 1
    return sql_cast(func.round(total * RANK_SCALE / count), BigInteger)


# Driver error codes meaning "the transaction was rolled back; run it again".
_PG_RETRY_STATES = frozenset({"40001", "40P01", "55P03"})
# MySQL/MariaDB: 1205 lock wait timeout, 1213 deadlock, 1020 "record has changed since last
# read" (MariaDB's innodb_snapshot_isolation, on by default from 11.8).
_MYSQL_RETRY_CODES = frozenset({1020, 1205, 1213})
_SQLITE_RETRY_MESSAGES = ("database is locked", "database table is locked")


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a transient conflict after which the transaction can be rerun."""
    if not isinstance(exc, sa_exc.DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _PG_RETRY_STATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRY_CODES:
        return True
    message = str(orig).lower()
    return any(text in message for text in _SQLITE_RETRY_MESSAGES)
