"""The statements of :mod:`convostore.transfer`, over whatever the transaction runner passes.

Like :mod:`convostore.sql.repositories`, :class:`TransferRepository` runs statements on an
:data:`~convostore.sql.dialects.Executor` and never commits: each caller runs it inside
:meth:`convostore.sql.runner.TransactionRunner.run`, which owns the transaction, retries
transient conflicts and translates driver errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Select,
    Table,
    bindparam,
    delete,
    distinct,
    func,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import LargeBinary

from convostore import search
from convostore.sql import dialects
from convostore.sql.dialects import Executor, family_of
from convostore.sql.runner import TransactionRunner
from convostore.transfer._format import (
    BATCH_SIZE,
    CONTEXT_MESSAGES,
    KINDS_IN_ORDER,
    LANGGRAPH_BLOBS,
    LANGGRAPH_CHECKPOINTS,
    LANGGRAPH_WRITES,
    MESSAGES,
    SESSIONS,
    THREADS,
    Kind,
)

Key = tuple[Any, ...]


def snapshot_runner(engine: AsyncEngine) -> TransactionRunner:
    """A runner for one transaction that reads a whole database (export, stats).

    Without the engine's per-call deadline: that bounds single calls of the façades, and
    reading every row of a large database is one transaction that may take minutes. What
    writes in batches (imports, prune) keeps the deadline for each batch.
    """
    runner = TransactionRunner(engine)
    runner.deadline = None
    return runner


class TransferRepository:
    """Bulk reads and writes of whole tables, keyed by each record type's primary key."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.family = family_of(executor)

    async def begin_snapshot(self) -> None:
        """Make every following read of this transaction see one state of the database.

        Must come first in the transaction. SQLite's driver opens transactions only before
        writes, so an explicit ``BEGIN`` makes the reads share one WAL snapshot;
        PostgreSQL needs REPEATABLE READ for that (MySQL/MariaDB's default already is).
        """
        if self.family == "sqlite":
            await self.executor.execute(text("BEGIN"))
        elif self.family == "postgresql":
            await self.executor.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))

    async def count(self, table: Table) -> int:
        """The number of rows in ``table``."""
        result = await self.executor.execute(select(func.count()).select_from(table))
        return int(result.scalar() or 0)

    async def count_all(self) -> dict[str, int]:
        """Rows per record type of the export format."""
        return {kind.name: await self.count(kind.table) for kind in KINDS_IN_ORDER}

    async def count_distinct(self, table: Table, column: str) -> int:
        """The number of distinct values of ``column`` in ``table``."""
        result = await self.executor.execute(select(func.count(distinct(table.c[column]))))
        return int(result.scalar() or 0)

    async def stream_records(self, kind: Kind) -> AsyncIterator[Sequence[Any]]:
        """Every row of ``kind``'s fields, in key order, a batch at a time."""
        stmt = (
            select(*(kind.table.c[name] for name in kind.fields))
            .order_by(*(kind.table.c[name] for name in kind.key))
            .execution_options(yield_per=BATCH_SIZE)
        )
        result = await self.executor.stream(stmt)
        async for rows in result.partitions():
            yield rows

    async def stream_payloads(
        self, table: Table, columns: Sequence[str]
    ) -> AsyncIterator[Sequence[Any]]:
        """The stored bytes of ``columns`` (header byte included, not decoded), by batch."""
        raw = [type_coerce(table.c[name], LargeBinary) for name in columns]
        result = await self.executor.stream(select(*raw).execution_options(yield_per=BATCH_SIZE))
        async for rows in result.partitions():
            yield rows

    async def insert_missing(
        self,
        kind: Kind,
        rows: Sequence[Mapping[str, Any]],
        floors: Mapping[tuple[str, str], int],
    ) -> int:
        """Insert ``rows``, skipping keys already there; how many of their keys are missing.

        Messages whose thread or session row is absent get one, its counter at the floor
        in ``floors`` (so an import cut short leaves counters past every message written).
        """
        if kind.table is MESSAGES:
            await self._insert_parents(THREADS, rows, ("agent_name", "thread_id"), floors)
            # Indexed for search in the same transaction as any other write (on SQLite,
            # the index catches up after: convostore.sql.search_index).
            if self.family != "sqlite":
                rows = [
                    {**row, "search_text": search.message_feed(row["message"], row["content"])}
                    for row in rows
                ]
        elif kind.table is CONTEXT_MESSAGES:
            await self._insert_parents(SESSIONS, rows, ("project", "session_id"), floors)
            if self.family != "sqlite":
                rows = [{**row, "search_text": search.context_feed(row["content"])} for row in rows]
        stmt = dialects.insert_ignore(self.family, kind.table, {}, key=list(kind.key))
        await self.executor.execute(stmt, list(rows))
        keys = {tuple(row[name] for name in kind.key) for row in rows}
        key_cols = tuple_(*(kind.table.c[name] for name in kind.key))
        found = await self.executor.execute(
            select(func.count()).select_from(kind.table).where(key_cols.in_(list(keys)))
        )
        return len(keys) - int(found.scalar() or 0)

    async def _insert_parents(
        self,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        key: tuple[str, str],
        floors: Mapping[tuple[str, str], int],
    ) -> None:
        """Create missing parent rows (a hand-made file may list messages without them)."""
        parents: dict[tuple[str, str], datetime] = {}
        for row in rows:
            parent = (row[key[0]], row[key[1]])
            parents[parent] = min(parents.get(parent, row["created_at"]), row["created_at"])
        if table is THREADS:
            values = [
                {
                    "agent_name": a,
                    "thread_id": t,
                    "next_idx": floors[(a, t)],
                    "created_at": at,
                    "updated_at": at,
                }
                for (a, t), at in parents.items()
            ]
        else:
            values = [
                {
                    "project": p,
                    "session_id": s,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "next_position": floors[(p, s)],
                    "preview": None,
                    "created_at": at,
                    "updated_at": at,
                }
                for (p, s), at in parents.items()
            ]
        stmt = dialects.insert_ignore(self.family, table, {}, key=list(key))
        await self.executor.execute(stmt, values)

    async def raise_counters(
        self, table: Table, counter: str, floors: Sequence[tuple[Key, int]]
    ) -> None:
        """Set each row's ``counter`` to at least its floor (highest imported position + 1)."""
        a, b = [col.name for col in table.primary_key.columns][:2]
        column = table.c[counter]
        stmt = (
            update(table)
            .where(
                table.c[a] == bindparam("k0"),
                table.c[b] == bindparam("k1"),
                column < bindparam("floor"),
            )
            .values({counter: bindparam("floor")})
        )
        params = [{"k0": k0, "k1": k1, "floor": n} for (k0, k1), n in floors]
        await self.executor.execute(stmt, params)

    async def keys(self, stmt: Select[Any]) -> list[Key]:
        """The key tuples ``stmt`` selects."""
        return [tuple(row) for row in (await self.executor.execute(stmt)).all()]

    async def count_children(self, table: Table, columns: tuple[str, str], keys: list[Key]) -> int:
        """Rows of ``table`` whose ``columns`` are one of ``keys``."""
        in_keys = tuple_(*(table.c[name] for name in columns)).in_(keys)
        result = await self.executor.execute(select(func.count()).select_from(table).where(in_keys))
        return int(result.scalar() or 0)

    async def count_langgraph_checkpoints(self, threads: Sequence[str]) -> int:
        """Checkpoints of the LangGraph ``threads``."""
        c = LANGGRAPH_CHECKPOINTS.c
        stmt = select(func.count()).where(c.thread_id.in_(threads))
        return int((await self.executor.execute(stmt)).scalar() or 0)

    async def delete_stale_langgraph(self, threads: Sequence[str], cutoff: datetime) -> int:
        """Delete the checkpoints of ``threads`` stored before ``cutoff``, and the writes and
        channel values of each thread left with none; how many checkpoints went.

        A checkpoint stored since the listing (the thread came back to life) is kept with
        what it reads; the writes of its deleted ancestors stay until the thread goes.
        """
        c = LANGGRAPH_CHECKPOINTS.c
        before = type_coerce(cutoff, c.created_at.type)
        result = await self.executor.execute(
            delete(LANGGRAPH_CHECKPOINTS).where(c.thread_id.in_(threads), c.created_at < before)
        )
        alive = set(
            (
                await self.executor.execute(
                    select(c.thread_id).where(c.thread_id.in_(threads)).distinct()
                )
            ).scalars()
        )
        gone = [thread for thread in threads if thread not in alive]
        if gone:
            for table in (LANGGRAPH_WRITES, LANGGRAPH_BLOBS):
                await self.executor.execute(delete(table).where(table.c.thread_id.in_(gone)))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def delete_keys(self, table: Table, columns: tuple[str, str], keys: list[Key]) -> int:
        """Delete the rows of ``table`` whose ``columns`` are one of ``keys``; how many went."""
        in_keys = tuple_(*(table.c[name] for name in columns)).in_(keys)
        result = await self.executor.execute(delete(table).where(in_keys))
        return int(result.rowcount)  # type: ignore[attr-defined]


def stale_sessions(cutoff: datetime, project: str | None) -> Select[Any]:
    """Keys of the sessions whose newest message (or creation, if none) is before ``cutoff``."""
    s, c = SESSIONS.c, CONTEXT_MESSAGES.c
    last = (
        select(func.max(c.created_at))
        .where(c.project == s.project, c.session_id == s.session_id)
        .scalar_subquery()
    )
    stmt = select(s.project, s.session_id).where(
        func.coalesce(last, s.created_at) < type_coerce(cutoff, s.created_at.type)
    )
    if project is not None:
        stmt = stmt.where(s.project == project)
    return stmt


def stale_langgraph_threads(cutoff: datetime) -> Select[Any]:
    """LangGraph threads whose newest checkpoint was stored before ``cutoff``.

    No index serves it (every index starts with the thread): retention reads every thread.
    """
    c = LANGGRAPH_CHECKPOINTS.c
    return (
        select(c.thread_id)
        .group_by(c.thread_id)
        .having(func.max(c.created_at) < type_coerce(cutoff, c.created_at.type))
    )


def stale_threads(cutoff: datetime, agent: str | None) -> Select[Any]:
    """Keys of the threads last updated before ``cutoff``."""
    t = THREADS.c
    stmt = select(t.agent_name, t.thread_id).where(
        t.updated_at < type_coerce(cutoff, t.updated_at.type)
    )
    if agent is not None:
        stmt = stmt.where(t.agent_name == agent)
    return stmt
