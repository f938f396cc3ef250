"""Back-filling the search index: messages written before migration 0005.

On SQLite (since migration 0007) this is the index's own catch-up
(:mod:`convostore.sql.search_index`), run to the end in batches of ``batch_size``, one
transaction each. Elsewhere such rows have ``search_text`` ``NULL``. :func:`backfill`
reads them in primary-key order, ``batch_size`` at a time, builds each one's feed
(:mod:`convostore.search`) from its decoded payload, and writes it in one short
transaction per batch (the database's index follows the column: see migration 0005).
The update only touches rows still ``NULL``, so a back-fill running beside live writers
never overwrites anything, and one that is stopped resumes where it left off when run
again: every finished batch is committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import (
    LargeBinary,
    Table,
    and_,
    bindparam,
    func,
    null,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import search
from convostore.errors import ValidationError
from convostore.sql import search_index
from convostore.sql.dialects import Executor
from convostore.sql.runner import TransactionRunner
from convostore.sql.tables import ContextMessageRecord, MessageRecord
from convostore.sql.types import require_search_index
from convostore.transfer._format import NoProgress, Progress

__all__ = ["DEFAULT_BATCH_SIZE", "ReindexReport", "backfill", "drop_feeds", "rebuild_search_index"]

DEFAULT_BATCH_SIZE: Final = 1000

_CONTEXT: Table = ContextMessageRecord.__table__  # type: ignore[assignment]
_MESSAGES: Table = MessageRecord.__table__  # type: ignore[assignment]


@dataclass
class ReindexReport:
    """How many messages of each table :func:`backfill` indexed."""

    indexed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {"indexed": dict(self.indexed)}


def _feed(table: Table, row: Any) -> str:
    if table is _CONTEXT:
        return search.context_feed(row.content)
    return search.message_feed(row.message, row.content)


async def backfill(
    engine: AsyncEngine,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> ReindexReport:
    """Index every message that has no ``search_text`` yet, in batches; resumable.

    Raises:
        ValidationError: ``batch_size`` is not a positive int.
        ConfigurationError: The engine writes no search feed (``search_index=False``, or a
            keyring that stores nothing in clear), so there is no index to fill.
    """
    if type(batch_size) is not int or batch_size < 1:
        raise ValidationError("batch_size must be a positive int")
    require_search_index(engine, "backfill")
    progress = progress or NoProgress()
    runner = TransactionRunner(engine)
    report = ReindexReport()
    for table in (_CONTEXT, _MESSAGES):
        if engine.dialect.name == "sqlite":
            done = await _catch_up_table(runner, table, batch_size, progress)
        else:
            done = await _backfill_table(runner, table, batch_size, progress)
        report.indexed[str(table.name)] = done
    return report


async def _catch_up_table(
    runner: TransactionRunner, table: Table, batch_size: int, progress: Progress
) -> int:
    async def count(session: Executor) -> int:
        return await search_index.pending_count(session, table)

    progress.start(f"indexing {table.name}", await runner.run(count, read=True))
    done = 0
    while True:

        async def step(session: Executor) -> tuple[int, int] | None:
            dialect = search_index.dialect_of(session)
            return await search_index.catch_up(session, dialect, table, limit=batch_size)

        counts = await runner.run(step)
        if counts is None:
            return done
        # As on the other backends: every message looked at, with words or none.
        read, _indexed = counts
        done += read
        progress.advance(read)
        if read < batch_size:
            return done


async def _backfill_table(
    runner: TransactionRunner, table: Table, batch_size: int, progress: Progress
) -> int:
    key = list(table.primary_key.columns)

    async def count(session: Executor) -> int:
        return await _count_pending(session, table)

    progress.start(f"indexing {table.name}", await runner.run(count, read=True))
    done = 0
    after: tuple[Any, ...] | None = None
    while True:

        async def step(
            session: Executor, start: tuple[Any, ...] | None = after
        ) -> tuple[tuple[Any, ...], int] | None:
            return await _index_batch(session, table, key, start, batch_size)

        batch = await runner.run(step)
        if batch is None:
            return done
        after, count_done = batch
        done += count_done
        progress.advance(count_done)


async def rebuild_search_index(
    engine: AsyncEngine,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> ReindexReport:
    """SQLite: empty the search index and index every message again, in batches.

    What a delete refused with :data:`~convostore.sql.search_feed.MISMATCH` asks for (a
    message changed outside convostore, or words indexed by rules that have changed
    since). Searches meanwhile find what has been indexed again so far, and the
    rest as soon as the catch-up reaches it. Elsewhere: :func:`backfill`.

    Raises:
        ValidationError, ConfigurationError: As :func:`backfill`.
    """
    if type(batch_size) is not int or batch_size < 1:
        raise ValidationError("batch_size must be a positive int")
    require_search_index(engine, "rebuild_search_index")
    if engine.dialect.name == "sqlite":
        runner = TransactionRunner(engine)
        for table in (_CONTEXT, _MESSAGES):

            async def reset(session: Executor, t: Table = table) -> None:
                await search_index.reset(session, t)

            await runner.run(reset)
    return await backfill(engine, batch_size=batch_size, progress=progress)


async def drop_feeds(engine: AsyncEngine, *, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Remove every message's words from the search index, in batches; how many went.

    What turning clear text off (``Keyring(clear_text=False)``) asks of rows written before:
    :func:`convostore.sql.rotation.rotate` calls it then. Resumable like :func:`backfill`.
    """
    runner = TransactionRunner(engine)
    dropped = 0
    for table in (_CONTEXT, _MESSAGES):
        if engine.dialect.name == "sqlite":

            async def empty(session: Executor, t: Table = table) -> int:
                return await search_index.drop(session, t)

            dropped += await runner.run(empty)
            continue
        key = list(table.primary_key.columns)

        async def step(session: Executor, t: Table = table, k: list[Any] = key) -> int:
            rows = (
                await session.execute(
                    select(*k).where(t.c.search_text.is_not(None)).order_by(*k).limit(batch_size)
                )
            ).all()
            if rows:
                await session.execute(
                    update(t)
                    .where(tuple_(*k).in_([tuple(r) for r in rows]))
                    .values(search_text=null())
                )
            return len(rows)

        while count := await runner.run(step):
            dropped += count
    return dropped


async def _count_pending(session: Executor, table: Table) -> int:
    stmt = select(func.count()).select_from(table).where(table.c.search_text.is_(None))
    return int((await session.execute(stmt)).scalar_one())


async def _index_batch(
    session: Executor,
    table: Table,
    key: list[Any],
    after: tuple[Any, ...] | None,
    batch_size: int,
) -> tuple[tuple[Any, ...], int] | None:
    """Index the next batch after the key ``after``: its last key and how many rows got a
    feed, or ``None`` when no row is left."""
    # The stored bytes too: the update below applies only if they are still the ones read.
    raw = type_coerce(table.c.content, LargeBinary)
    columns = [*key, table.c.content, raw.label("raw")]
    if table is _MESSAGES:
        columns.append(table.c.message)
    stmt = select(*columns).where(table.c.search_text.is_(None))
    if after is not None:
        stmt = stmt.where(tuple_(*key) > after)
    rows = (await session.execute(stmt.order_by(*key).limit(batch_size))).all()
    if not rows:
        return None
    names = [column.name for column in key]
    # Compare-and-set: a row replaced meanwhile (same key, new message, written by an
    # engine that indexes nothing) keeps no words of the message that was read.
    unchanged = [raw == bindparam("read_raw", type_=LargeBinary())]
    if table is _MESSAGES:
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
    await session.execute(
        change,
        [
            {
                **{f"k_{name}": row._mapping[name] for name in names},
                "read_raw": bytes(row.raw),
                **({"read_message": row.message} if table is _MESSAGES else {}),
                "feed": _feed(table, row),
            }
            for row in rows
        ],
    )
    # Rows changed meanwhile kept no feed: they are left for the next run, and not counted.
    keys = [tuple(row._mapping[name] for name in names) for row in rows]
    skipped = await session.execute(
        select(func.count())
        .select_from(table)
        .where(tuple_(*key).in_(keys), table.c.search_text.is_(None))
    )
    return keys[-1], len(rows) - int(skipped.scalar_one())
