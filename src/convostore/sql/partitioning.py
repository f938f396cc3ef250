"""Large tables on PostgreSQL: hash-partition the message tables by their scope key.

A recipe, not a migration (the schema keeps one Alembic head): run
:func:`partition_by_scope` once on a database at head, in a maintenance window. It turns
``context_messages`` (scope: ``project, session_id``) and ``messages`` (scope:
``agent_name, thread_id``) into tables ``PARTITION BY HASH`` of that scope, with
``partitions`` partitions each, and copies their rows over, all in one transaction:

* the primary keys, unique indexes (client ids), other indexes, check and foreign-key
  constraints are recreated under their own names on the partitioned tables, so every
  query convostore sends reads the same index, now on the one partition its scope hashes
  to (every hot query names the whole scope, so the planner prunes to one partition);
* nothing else changes: counters stay in ``context_tokens`` and ``threads``, positions stay
  gap-free, and later migrations that add columns or indexes apply to partitioned tables
  as they do to plain ones.

Retention with hash partitions stays per session (``convostore prune`` or ``clear()``),
since a hash partition holds a slice of every age. :func:`drop_partition` empties one
partition at once (``DETACH`` + ``DROP``): the bulk removal for a tenant split or a
rebuild, never an age cut-off. Age-based partitions (``RANGE`` on ``created_at``) would
need ``created_at`` in every unique key, which would stop the client-id index from
catching a retried message, so the recipe does not offer them.

``alembic check`` sees the partitions as tables the models do not declare; run it on an
unpartitioned copy of the schema.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convostore.errors import ConfigurationError
from convostore.sql.engine import family
from convostore.sql.runner import TransactionRunner

__all__ = ["SCOPES", "drop_partition", "partition_by_scope", "partition_names"]

SCOPES = {
    "context_messages": ("project", "session_id"),
    "messages": ("agent_name", "thread_id"),
}
"""The tables the recipe partitions, and the scope columns each is hashed by."""

_MAX_PARTITIONS = 1024


def partition_names(table: str, partitions: int) -> list[str]:
    """The names :func:`partition_by_scope` gives ``table``'s partitions."""
    return [f"{table}_p{i:04d}" for i in range(partitions)]


async def partition_by_scope(
    engine: AsyncEngine,
    *,
    partitions: int = 16,
    tables: Sequence[str] = tuple(SCOPES),
) -> None:
    """Hash-partition the message tables by scope, keeping their rows and indexes.

    Args:
        engine: A PostgreSQL engine on a database at head (directly, not through
            PgBouncer's statement pooling).
        partitions: Partitions per table (2 to 1024). More partitions keep each one's
            indexes small; 16 to 64 suit tens of millions of messages.
        tables: Which of ``context_messages`` and ``messages`` to partition.

    Raises:
        ConfigurationError: Not PostgreSQL, a bad count, an unknown table, or a table that
            is already partitioned.
    """
    if family(engine) != "postgresql":
        raise ConfigurationError("partition_by_scope is for PostgreSQL databases")
    if type(partitions) is not int or not 2 <= partitions <= _MAX_PARTITIONS:
        raise ConfigurationError(f"partitions must be an integer from 2 to {_MAX_PARTITIONS}")
    unknown = sorted(set(tables) - set(SCOPES))
    if unknown:
        raise ConfigurationError(f"cannot partition {unknown}: only {sorted(SCOPES)}")

    async def work(conn: AsyncConnection) -> None:
        # DDL only; the copy below is the slow part. No call's deadline applies here.
        await conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
        await conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        for table in tables:
            await _partition(conn, table, SCOPES[table], partitions)

    await _runner(engine).run(work)  # type: ignore[arg-type]


async def drop_partition(engine: AsyncEngine, table: str, partition: str) -> None:
    """Remove one partition of ``table`` and all its rows at once (``DETACH`` + ``DROP``).

    The counters in ``context_tokens`` / ``threads`` are left as they are (positions are
    never reused), so the sessions or threads that lived there keep their next positions.

    Raises:
        ConfigurationError: ``partition`` is not a partition of ``table``.
    """

    async def work(conn: AsyncConnection) -> None:
        parent = await _parent_of(conn, partition)
        if parent != table or table not in SCOPES:
            raise ConfigurationError(f"{partition!r} is not a partition of {table!r}")
        await conn.exec_driver_sql(f'ALTER TABLE "{table}" DETACH PARTITION "{partition}"')
        await conn.exec_driver_sql(f'DROP TABLE "{partition}"')

    await _runner(engine).run(work)  # type: ignore[arg-type]


def _runner(engine: AsyncEngine) -> TransactionRunner:
    # The one transaction boundary, its retries and typed errors; an administrator's DDL
    # on a large table may take longer than any call's deadline, so that is off here.
    runner = TransactionRunner(engine)
    runner.deadline = None
    return runner


async def _parent_of(conn: AsyncConnection, relation: str) -> str | None:
    row = await conn.execute(
        text(
            "SELECT p.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
        ),
        {"name": relation},
    )
    found: str | None = row.scalar()
    return found


async def _partition(
    conn: AsyncConnection, table: str, scope: tuple[str, ...], partitions: int
) -> None:
    kind = (
        await conn.execute(
            text(
                "SELECT relkind::text FROM pg_class WHERE relname = :t "
                "AND relnamespace = current_schema()::regnamespace"
            ),
            {"t": table},
        )
    ).scalar()
    if kind is None:
        raise ConfigurationError(f"table {table!r} does not exist: migrate to head first")
    if kind == "p":
        raise ConfigurationError(f"table {table!r} is already partitioned")
    old = f"{table}__unpartitioned"
    # Everything to recreate, as PostgreSQL itself renders it, before the names move.
    constraints = (
        await conn.execute(
            text(
                "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(CAST(:t AS TEXT) AS regclass) AND contype IN ('p', 'f') "
                "ORDER BY contype DESC, conname"
            ),
            {"t": table},
        )
    ).all()
    indexes = (
        await conn.execute(
            text(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = CAST(CAST(:t AS TEXT) AS regclass) AND NOT i.indisprimary "
                "ORDER BY c.relname"
            ),
            {"t": table},
        )
    ).all()
    await conn.exec_driver_sql(f'ALTER TABLE "{table}" RENAME TO "{old}"')
    for name, _, _ in constraints:
        await conn.exec_driver_sql(
            f'ALTER TABLE "{old}" RENAME CONSTRAINT "{name}" TO "{name}__unpartitioned"'
        )
    for name, _ in indexes:
        await conn.exec_driver_sql(f'ALTER INDEX "{name}" RENAME TO "{name}__unpartitioned"')
    columns = ", ".join(f'"{c}"' for c in scope)
    await conn.exec_driver_sql(
        f'CREATE TABLE "{table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        f"INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY HASH ({columns})"
    )
    for remainder, name in enumerate(partition_names(table, partitions)):
        await conn.exec_driver_sql(
            f'CREATE TABLE "{name}" PARTITION OF "{table}" '
            f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
        )
    await conn.exec_driver_sql(f'INSERT INTO "{table}" SELECT * FROM "{old}"')
    await conn.exec_driver_sql(f'DROP TABLE "{old}"')
    # Indexes and constraints after the copy: one sorted build each instead of row by row.
    for name, definition in indexes:
        on_old = definition.split(" ON ", 1)[1].split(" USING ", 1)[1]
        unique = "UNIQUE " if definition.startswith("CREATE UNIQUE") else ""
        await conn.exec_driver_sql(f'CREATE {unique}INDEX "{name}" ON "{table}" USING {on_old}')
    for name, _, definition in constraints:
        await conn.exec_driver_sql(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
    await conn.exec_driver_sql(f'ANALYZE "{table}"')
