"""The statements of the administrative edges: transfer, listings, retention, back-fill, rotation.

The modules of :mod:`convostore.transfer` (export, import, stats, prune, ``inspect``
listings, the search back-fill) and :mod:`convostore.sql.rotation` decide *what* to do and
in which batches; every statement they run is built and executed here. Like the other
repositories, everything here runs on an :data:`~convostore.sql.dml.Executor` and
never commits: each caller runs it inside
:meth:`convostore.sql.runner.TransactionRunner.run`, which owns the transaction, retries
transient conflicts and translates driver errors.

Nothing here imports the edges: a record type of the export format reaches these functions
as its table, fields and key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    LargeBinary,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    cast,
    delete,
    distinct,
    func,
    null,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)

from convostore import search
from convostore.sql.dml import Executor, family_of, insert_ignore
from convostore.sql.tables import (
    Base,
    ContextMessageRecord,
    ContextSessionRecord,
    LangGraphBlobRecord,
    LangGraphCheckpointRecord,
    LangGraphWriteRecord,
    MessageRecord,
    ThreadRecord,
    UserRecord,
    readable_columns,
)

__all__ = [
    "CONTEXT_MESSAGES",
    "LANGGRAPH_BLOBS",
    "LANGGRAPH_CHECKPOINTS",
    "LANGGRAPH_WRITES",
    "MESSAGES",
    "SESSIONS",
    "THREADS",
    "USERS",
    "Key",
    "TransferRepository",
    "clear_feeds",
    "count_unindexed",
    "count_unindexed_keys",
    "rewrite_if_unchanged",
    "rotation_rows",
    "session_projects",
    "sessions_across_projects",
    "set_feeds",
    "stale_langgraph_threads",
    "stale_sessions",
    "stale_threads",
    "thread_activity",
    "thread_rows",
    "unindexed_rows",
]

Key = tuple[Any, ...]

STREAM_BATCH: Final = 500
"""Rows fetched per round trip when a whole table is streamed."""


def table_of(record: type[Base]) -> Table:
    """The :class:`~sqlalchemy.Table` of a declarative record class, typed as one."""
    table = record.__table__
    assert isinstance(table, Table)
    return table


USERS: Final = table_of(UserRecord)
THREADS: Final = table_of(ThreadRecord)
MESSAGES: Final = table_of(MessageRecord)
SESSIONS: Final = table_of(ContextSessionRecord)
CONTEXT_MESSAGES: Final = table_of(ContextMessageRecord)
LANGGRAPH_CHECKPOINTS: Final = table_of(LangGraphCheckpointRecord)
LANGGRAPH_BLOBS: Final = table_of(LangGraphBlobRecord)
LANGGRAPH_WRITES: Final = table_of(LangGraphWriteRecord)


# --- transfer: export, import, stats, prune ------------------------------------------------


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

    async def count_distinct(self, table: Table, column: str) -> int:
        """The number of distinct values of ``column`` in ``table``."""
        result = await self.executor.execute(select(func.count(distinct(table.c[column]))))
        return int(result.scalar() or 0)

    async def stream_records(
        self, table: Table, fields: Sequence[str], key: Sequence[str]
    ) -> AsyncIterator[Sequence[Any]]:
        """Every row of ``table``'s ``fields``, in ``key`` order, a batch at a time."""
        stmt = (
            select(*(table.c[name] for name in fields))
            .order_by(*(table.c[name] for name in key))
            .execution_options(yield_per=STREAM_BATCH)
        )
        result = await self.executor.stream(stmt)
        async for rows in result.partitions():
            yield rows

    async def stream_payloads(
        self, table: Table, columns: Sequence[str]
    ) -> AsyncIterator[Sequence[Any]]:
        """The stored bytes of ``columns`` (header byte included, not decoded), by batch."""
        raw = [type_coerce(table.c[name], LargeBinary) for name in columns]
        result = await self.executor.stream(select(*raw).execution_options(yield_per=STREAM_BATCH))
        async for rows in result.partitions():
            yield rows

    async def insert_missing(
        self,
        table: Table,
        key: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        floors: Mapping[tuple[str, str], int],
    ) -> int:
        """Insert ``rows``, skipping keys already there; how many of their keys are missing.

        Messages whose thread or session row is absent get one, its counter at the floor
        in ``floors`` (so an import cut short leaves counters past every message written).
        """
        if table is MESSAGES:
            await self._insert_parents(THREADS, rows, ("agent_name", "thread_id"), floors)
            # Indexed for search in the same transaction as any other write (on SQLite,
            # the index catches up after: convostore.sql.search_index).
            if self.family != "sqlite":
                rows = [
                    {**row, "search_text": search.message_feed(row["message"], row["content"])}
                    for row in rows
                ]
        elif table is CONTEXT_MESSAGES:
            await self._insert_parents(SESSIONS, rows, ("project", "session_id"), floors)
            if self.family != "sqlite":
                rows = [{**row, "search_text": search.context_feed(row["content"])} for row in rows]
        stmt = insert_ignore(self.family, table, {}, key=list(key))
        await self.executor.execute(stmt, list(rows))
        keys = {tuple(row[name] for name in key) for row in rows}
        key_cols = tuple_(*(table.c[name] for name in key))
        found = await self.executor.execute(
            select(func.count()).select_from(table).where(key_cols.in_(list(keys)))
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
        stmt = insert_ignore(self.family, table, {}, key=list(key))
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

    async def still_stale(
        self, stale: Select[Any], parent: Table, columns: tuple[str, str], keys: list[Key]
    ) -> list[Key]:
        """Which of ``keys`` ``stale`` still selects, their rows locked until commit."""
        in_keys = tuple_(*(parent.c[name] for name in columns)).in_(keys)
        return await self.keys(stale.where(in_keys).with_for_update())

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


# --- listings (convostore inspect) ---------------------------------------------------------


async def sessions_across_projects(executor: Executor, limit: int | None) -> Sequence[Row[Any]]:
    """Sessions holding messages in every project, newest first (their summary columns)."""
    s = SESSIONS.c
    stmt: Select[Any] = select(
        s.project,
        s.session_id,
        s.next_position,
        s.preview,
        s.created_at,
        s.input_tokens,
        s.output_tokens,
    ).where(s.next_position > 0)
    stmt = stmt.order_by(s.created_at.desc(), s.project, s.session_id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    found: Sequence[Row[Any]] = (await executor.execute(stmt)).all()
    return found


async def session_projects(executor: Executor, session_id: str) -> list[str]:
    """The projects that hold a session with this id, by name."""
    s = SESSIONS.c
    stmt = select(s.project).where(s.session_id == session_id).order_by(s.project)
    return [row[0] for row in (await executor.execute(stmt)).all()]


async def thread_activity(
    executor: Executor, agent: str, user: str | None, limit: int | None
) -> Sequence[Row[Any]]:
    """Per thread and user of ``agent``: message count, first and last ``idx``, last time
    (``last_at`` as the aggregate returns it: not through the column's type)."""
    m = MESSAGES.c
    stmt = select(
        m.thread_id,
        m.user_id,
        func.count().label("n"),
        func.min(m.idx).label("first_idx"),
        func.max(m.idx).label("last_idx"),
        func.max(m.created_at).label("last_at"),
    ).where(m.agent_name == agent)
    if user is not None:
        stmt = stmt.where(m.user_id == user)
    stmt = stmt.group_by(m.thread_id, m.user_id).order_by(
        func.max(m.created_at).desc(), m.thread_id, m.user_id
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return (await executor.execute(stmt)).all()


async def thread_rows(executor: Executor, agent: str, thread_id: str) -> Sequence[Row[Any]]:
    """Every user's messages of one thread, in ``idx`` order, as the façades read them."""
    m = MESSAGES.c
    stmt = (
        select(*readable_columns(MESSAGES))
        .where(m.agent_name == agent, m.thread_id == thread_id)
        .order_by(m.idx)
    )
    return (await executor.execute(stmt)).all()


# --- the search back-fill (convostore reindex) ---------------------------------------------


async def count_unindexed(executor: Executor, table: Table) -> int:
    """Messages of ``table`` with no search feed yet (``search_text`` NULL)."""
    stmt = select(func.count()).select_from(table).where(table.c.search_text.is_(None))
    return int((await executor.execute(stmt)).scalar_one())


async def unindexed_rows(
    executor: Executor, table: Table, key: Sequence[Any], after: Key | None, limit: int
) -> Sequence[Row[Any]]:
    """The next ``limit`` unindexed rows after the key ``after``: their key, decoded
    ``content`` (and ``message`` for agent messages), and the stored bytes as ``raw``."""
    # The stored bytes too: set_feeds applies only if they are still the ones read.
    raw = type_coerce(table.c.content, LargeBinary)
    columns = [*key, table.c.content, raw.label("raw")]
    if table is MESSAGES:
        columns.append(table.c.message)
    stmt = select(*columns).where(table.c.search_text.is_(None))
    if after is not None:
        stmt = stmt.where(tuple_(*key) > after)
    return (await executor.execute(stmt.order_by(*key).limit(limit))).all()


async def set_feeds(
    executor: Executor, table: Table, names: Sequence[str], params: Sequence[Mapping[str, Any]]
) -> None:
    """Write each row's ``feed`` if it still has none and still holds what was read.

    ``params``: per row, ``k_<name>`` for each key column, ``read_raw`` (the stored bytes
    read) and, for agent messages, ``read_message``. Compare-and-set: a row replaced
    meanwhile (same key, new message, written by an engine that indexes nothing) keeps no
    words of the message that was read.
    """
    raw = type_coerce(table.c.content, LargeBinary)
    unchanged = [raw == bindparam("read_raw", type_=LargeBinary())]
    if table is MESSAGES:
        unchanged.append(table.c.message == bindparam("read_message", type_=table.c.message.type))
    change = (
        update(table)
        .where(
            and_(*(table.c[name] == bindparam(f"k_{name}") for name in names)),
            table.c.search_text.is_(None),
            *unchanged,
        )
        .values(search_text=bindparam("feed", type_=table.c.search_text.type))
    )
    await executor.execute(change, list(params))


async def count_unindexed_keys(
    executor: Executor, table: Table, key: Sequence[Any], keys: Sequence[Key]
) -> int:
    """How many of the rows at ``keys`` still have no search feed."""
    stmt = (
        select(func.count())
        .select_from(table)
        .where(tuple_(*key).in_(list(keys)), table.c.search_text.is_(None))
    )
    return int((await executor.execute(stmt)).scalar_one())


async def clear_feeds(executor: Executor, table: Table, limit: int) -> int:
    """Set ``search_text`` to NULL on up to ``limit`` rows that have one; how many."""
    key = list(table.primary_key.columns)
    rows = (
        await executor.execute(
            select(*key).where(table.c.search_text.is_not(None)).order_by(*key).limit(limit)
        )
    ).all()
    if rows:
        await executor.execute(
            update(table)
            .where(tuple_(*key).in_([tuple(r) for r in rows]))
            .values(search_text=null())
        )
    return len(rows)


# --- key rotation ----------------------------------------------------------------------


async def rotation_rows(
    executor: Executor,
    raw: Any,
    key: Sequence[str],
    values: Sequence[str],
    after: Key | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """The next ``limit`` rows of the lightweight table ``raw`` after the key ``after``, in
    key order: the key columns, then the ``values`` columns as stored."""
    columns = [raw.c[name] for name in key]
    stmt = select(*columns, *(raw.c[name] for name in values))
    if after is not None:
        stmt = stmt.where(tuple_(*columns) > tuple_(*after))
    return (await executor.execute(stmt.order_by(*columns).limit(limit))).all()


async def rewrite_if_unchanged(
    executor: Executor,
    raw: Any,
    key: Mapping[str, Any],
    name: str,
    old: Any,
    new: Any,
    *,
    as_bytes: bool,
) -> bool:
    """Compare-and-set one value: write ``new`` to column ``name`` of the row at ``key`` if
    it still holds ``old``; whether it did. ``as_bytes``: compare the text's bytes (MySQL
    and MariaDB compare text by a case- and pad-insensitive collation)."""
    current = cast(raw.c[name], LargeBinary) if as_bytes else raw.c[name]
    same = current == (old.encode("utf-8") if as_bytes else old)
    where = [raw.c[column] == value for column, value in key.items()]
    result = await executor.execute(update(raw).where(*where, same).values({name: new}))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
