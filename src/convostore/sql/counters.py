"""Counters: positions allocated under a row's write lock, and rows inserted at them.

* :func:`bump_counter`: add ``n`` to a counter column of a row, creating the row if needed,
  and return the new value, all under the row's write lock. This is how positions are
  allocated: SQLite and PostgreSQL do it in one ``INSERT … ON CONFLICT … RETURNING``;
  MySQL/MariaDB, which has no ``RETURNING`` on upserts, sets the new value with
  ``LAST_INSERT_ID(expr)``, which its OK packet hands back (the cursor's ``lastrowid``);
* :func:`bump_counters`: the same for several rows at once (a group commit's batch);
* :func:`insert_at_counter`: allocate positions and insert rows at them; on PostgreSQL a
  single row is one statement (a data-modifying CTE), see :func:`appends_in_one_statement`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import CodeType
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Executable,
    Table,
    bindparam,
    func,
    insert,
    select,
    tuple_,
)

from convostore.rules import checked_counter
from convostore.sql import sqlite_driver
from convostore.sql.dml import (
    Executor,
    UpdateFn,
    _ends,
    cached,
    family_of,
    insert_rows,
    params_for,
    upsert,
)
from convostore.sql.engine import Family

__all__ = [
    "appends_in_one_statement",
    "bump_counter",
    "bump_counters",
    "insert_at_counter",
    "update_site",
]


def update_site(also_update: UpdateFn | None) -> CodeType | None:
    """What of ``also_update`` shapes the statement it takes part in: its code.

    The counter statements are built once per key (:func:`~convostore.sql.dml.cached`),
    and that key holds everything that decides the SQL: the tables, the counter, which
    columns are the key and which are only inserted, and ``also_update``. A function is
    identified by its code, which stands for the expressions it builds only if it captures
    nothing: a closure (or a default argument) could build other expressions from other
    values on the next call, and would silently get the statement of the first. So it
    must be a plain function (a ``def`` or a ``lambda`` that reads only its argument and
    module globals).

    Raises:
        TypeError: ``also_update`` captures values, or is not a plain function.
    """
    if also_update is None:
        return None
    code = getattr(also_update, "__code__", None)
    if (
        not isinstance(code, CodeType)
        or getattr(also_update, "__closure__", None)
        or getattr(also_update, "__defaults__", None)
        or getattr(also_update, "__kwdefaults__", None)
    ):
        raise TypeError(
            f"also_update must be a plain function that captures nothing, not {also_update!r}:"
            " its statement is built once and reused"
        )
    return code


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
    row (for example keeping a preview): a plain function that builds the same expressions
    on every call, since the statement is built once per function (see :func:`update_site`).
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

    site = update_site(also_update)
    shape = (tuple(key_values), tuple(insert_values))
    stmt = cached((kind, "bump", table, counter, shape, site, last), build)
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

    site = update_site(also_update)
    stmt, locked = cached((kind, "bump_many", table, counter, tuple(key), columns, site), build)
    if locked is None:
        result = (await session.execute(stmt, list(rows))).all()
    else:
        await session.execute(stmt, list(rows))
        wanted = [tuple(row[k] for k in key) for row in rows]
        result = (await session.execute(locked, {"keys": wanted})).all()
    return {tuple(found[:-1]): checked_counter(found[-1], table.name, counter) for found in result}


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

    site = update_site(also_update)
    shape = (counter, tuple(key_values), tuple(insert_values), position, row_columns)
    stmt = cached((kind, "insert_at", counter_table, target, shape, site), build)
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

    site = update_site(also_update)
    shape = (counter, tuple(key_values), tuple(insert_values), position, row_columns)
    key = ("sqlite", "insert_one", counter_table, target, shape, site, last)
    bump, stmt = cached(key, build)
    params = {**key_values, **insert_values, "n": 1}
    await session.execute(bump, params)
    params.update({f"row_{name}": value for name, value in row.items()})
    value = (await session.execute(stmt, params)).scalar_one()
    if type(value) is not int:
        # Checked on the driver's thread when the commit rides along; here otherwise.
        checked_counter(value, counter_table.name, counter)
    return int(value)
