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

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import search
from convostore.errors import ValidationError
from convostore.sql import search_index
from convostore.sql.dml import Executor
from convostore.sql.repositories import admin
from convostore.sql.runner import TransactionRunner
from convostore.sql.tables import ContextMessageRecord, MessageRecord, table_of
from convostore.sql.types import require_search_index
from convostore.transfer._format import NoProgress, Progress

__all__ = ["DEFAULT_BATCH_SIZE", "ReindexReport", "backfill", "drop_feeds", "rebuild_search_index"]

DEFAULT_BATCH_SIZE: Final = 1000

_CONTEXT = table_of(ContextMessageRecord)
_MESSAGES = table_of(MessageRecord)


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

        async def step(session: Executor, t: Table = table) -> int:
            return await admin.clear_feeds(session, t, batch_size)

        while count := await runner.run(step):
            dropped += count
    return dropped


async def _count_pending(session: Executor, table: Table) -> int:
    return await admin.count_unindexed(session, table)


async def _index_batch(
    session: Executor,
    table: Table,
    key: list[Any],
    after: tuple[Any, ...] | None,
    batch_size: int,
) -> tuple[tuple[Any, ...], int] | None:
    """Index the next batch after the key ``after``: its last key and how many rows got a
    feed, or ``None`` when no row is left."""
    rows = await admin.unindexed_rows(session, table, key, after, batch_size)
    if not rows:
        return None
    names = [column.name for column in key]
    # Compare-and-set: a row replaced meanwhile (same key, new message, written by an
    # engine that indexes nothing) keeps no words of the message that was read.
    await admin.set_feeds(
        session,
        table,
        names,
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
    skipped = await admin.count_unindexed_keys(session, table, key, keys)
    return keys[-1], len(rows) - skipped
