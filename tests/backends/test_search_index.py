"""The search index on each backend: migration 0005 over existing rows, and the back-fill.

Rows written before revision 0005 have no ``search_text``; ``transfer.backfill`` (the CLI's
``convostore reindex``) indexes them in batches, one transaction each, and a
back-fill that stops part-way resumes where it left off.
"""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    ConfigurationError,
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    codec,
    create_engine,
    migrate,
    transfer,
)


def user(words: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": words}])


class BackfillInterruptedError(Exception):
    pass


class StopAfter:
    """A progress receiver that stops the back-fill after ``batches`` batches."""

    def __init__(self, batches: int | None = None) -> None:
        self.batches = batches
        self.labels: list[tuple[str, int | None]] = []
        self.advanced = 0

    def start(self, label: str, total: int | None) -> None:
        self.labels.append((label, total))

    def advance(self, amount: int) -> None:
        self.advanced += amount
        if self.batches is not None:
            self.batches -= 1
            if self.batches == 0:
                raise BackfillInterruptedError


async def test_backfill_indexes_old_rows_in_batches_and_resumes(engine: AsyncEngine) -> None:
    store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
    await store.append_many([user(f"archived note {n}") for n in range(25)])
    db = SQLAlchemyDatabase(engine=engine, agent_name="agent")
    await db.add_message("t", "alice", "user", message="archived invoice")
    async with engine.begin() as conn:
        # What a database migrated from revision 0004 holds: rows without a feed.
        await conn.execute(text("UPDATE context_messages SET search_text = NULL"))
        await conn.execute(text("UPDATE messages SET search_text = NULL"))
    assert await store.search("archived") == []

    stopped = StopAfter(batches=2)
    with pytest.raises(BackfillInterruptedError):
        await transfer.backfill(engine, batch_size=10, progress=stopped)
    # The two finished batches were committed and are found already.
    assert len(await store.search("archived", limit=100)) == 20
    assert stopped.labels == [("indexing context_messages", 25)]

    resumed = StopAfter()
    report = await transfer.backfill(engine, batch_size=10, progress=resumed)
    assert report.indexed == {"context_messages": 5, "messages": 1}
    assert resumed.labels == [("indexing context_messages", 5), ("indexing messages", 1)]
    assert len(await store.search("archived", limit=100)) == 25
    (hit,) = await db.search("archived")
    assert hit.message.message == "archived invoice"

    again = await transfer.backfill(engine)
    assert again.indexed == {"context_messages": 0, "messages": 0}
    assert len(await store.search("archived", limit=100)) == 25


async def test_a_database_with_history_migrates_to_0005_and_is_searchable_after_backfill(
    backend: str, tmp_path: Path, fresh_server_database: URL | None
) -> None:
    url = fresh_server_database or URL.create("sqlite+aiosqlite", database=str(tmp_path / "old.db"))
    await migrate.upgrade(url, "0004")
    engine = create_engine(url)
    try:
        now = datetime.now(UTC).replace(tzinfo=None)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO context_tokens (project, session_id, input_tokens, "
                    "output_tokens, next_position, preview, created_at, updated_at) "
                    "VALUES ('/p', 's', 0, 0, 2, 'old', :now, :now)"
                ),
                {"now": now},
            )
            await conn.execute(
                text(
                    "INSERT INTO context_messages (project, session_id, position, role, "
                    "content, created_at) VALUES ('/p', 's', :position, 'user', :content, :now)"
                ),
                [
                    {
                        "position": n,
                        "content": codec.encode([{"type": "text", "text": words}]),
                        "now": now,
                    }
                    for n, words in enumerate(["written long ago", "before search existed"])
                ],
            )
        await migrate.upgrade(engine)
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        assert await store.search("search") == []
        report = await transfer.backfill(engine)
        assert report.indexed["context_messages"] == 2
        (hit,) = await store.search("search existed")
        assert (hit.session_id, hit.message.position) == ("s", 1)
        # New writes are indexed as they are written.
        await store.append(user("a new message about search"))
        assert len(await store.search("search")) == 2
    finally:
        await engine.dispose()


async def test_prune_takes_its_messages_out_of_the_index(engine: AsyncEngine) -> None:
    store = SQLAlchemyContextStore(engine, project="/p", session_id="old")
    await store.append_many([user("forgotten plan"), user("forgotten idea")])
    db = SQLAlchemyDatabase(engine=engine, agent_name="agent")
    await db.add_message("t", "alice", "user", message="forgotten invoice")
    assert len(await store.search("forgotten")) == 2
    later = datetime.now(UTC) + timedelta(days=30)
    report = await transfer.prune(engine, older_than=timedelta(days=1), now=later)
    assert (report.context_messages, report.messages) == (2, 1)
    assert await store.search("forgotten") == []
    assert await db.search("forgotten") == []
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            for index in ("context_search", "message_search"):
                docs = await conn.execute(text(f"SELECT count(*) FROM {index}_docs"))
                assert docs.scalar_one() == 0
                words = await conn.execute(
                    text(f"SELECT count(*) FROM {index} WHERE {index} MATCH 'forgotten'")
                )
                assert words.scalar_one() == 0


async def test_imported_messages_are_indexed_as_they_are_written(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    source = create_engine(URL.create("sqlite+aiosqlite", database=str(tmp_path / "src.db")))
    try:
        await migrate.upgrade(source)
        store = SQLAlchemyContextStore(source, project="/p", session_id="s")
        await store.append_many([user("exported conversation"), user("second exported")])
        db = SQLAlchemyDatabase(engine=source, agent_name="agent")
        await db.add_message("t", "alice", "user", message="exported invoice")
        dump = io.BytesIO()
        await transfer.export_jsonl(source, dump)
    finally:
        await source.dispose()
    await transfer.import_jsonl(engine, dump.getvalue().splitlines(keepends=True))
    imported = SQLAlchemyContextStore(engine, project="/p", session_id="s")
    assert len(await imported.search("exported")) == 2
    (hit,) = await SQLAlchemyDatabase(engine=engine, agent_name="agent").search("exported")
    assert hit.message.message == "exported invoice"
    assert (await transfer.backfill(engine)).indexed == {"context_messages": 0, "messages": 0}


async def test_an_engine_without_the_index_writes_no_feed_and_refuses_search(
    db_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = create_engine(db_url, search_index=False)

    def no_feed(*_args: Any) -> str:
        raise AssertionError("a feed was computed for an engine that stores none")

    # Not even computed (and thrown away): ~88 µs of a 2 KB message.
    monkeypatch.setattr("convostore.search.context_feed", no_feed)
    monkeypatch.setattr("convostore.search.message_feed", no_feed)
    try:
        store = SQLAlchemyContextStore(plain, project="/p", session_id="s")
        await store.append(user("unindexed words"))
        await store.append_many([user("more unindexed words")])
        db = SQLAlchemyDatabase(engine=plain, agent_name="agent")
        await db.add_message("t", "alice", "user", message="unindexed invoice")
        async with plain.connect() as conn:
            for table in ("context_messages", "messages"):
                query = f"SELECT count(*) FROM {table} WHERE search_text IS NOT NULL"
                assert (await conn.execute(text(query))).scalar_one() == 0
        with pytest.raises(ConfigurationError, match="search_index=False"):
            await store.search("unindexed")
        with pytest.raises(ConfigurationError, match="search_index=False"):
            await db.search("unindexed")
        with pytest.raises(ConfigurationError, match="search_index=False"):
            await transfer.backfill(plain)
    finally:
        await plain.dispose()
    monkeypatch.undo()
    indexing = create_engine(db_url)
    try:
        assert (await transfer.backfill(indexing)).indexed == {"context_messages": 2, "messages": 1}
        store = SQLAlchemyContextStore(indexing, project="/p", session_id="s")
        assert len(await store.search("unindexed")) == 2
    finally:
        await indexing.dispose()


async def test_backfill_leaves_a_row_replaced_meanwhile_for_the_next_run(
    sqlite_file: Path,
) -> None:
    # Between the back-fill's read of a batch and its update, another writer (one that
    # indexes nothing) replaces the history: the words read must not land on the new row.
    url = URL.create("sqlite+aiosqlite", database=str(sqlite_file))
    plain = create_engine(url, search_index=False)
    indexing = create_engine(url)
    try:
        await SQLAlchemyContextStore(plain, project="/p", session_id="s").append(user("apple"))
        replaced: list[bool] = []

        def replace_meanwhile(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            if statement.startswith("UPDATE context_messages SET search_text") and not replaced:
                replaced.append(True)
                with sqlite3.connect(sqlite_file) as other:
                    other.execute(
                        "UPDATE context_messages SET content = ? WHERE project = '/p'",
                        (codec.encode([{"type": "text", "text": "brand new banana"}]),),
                    )

        event.listen(indexing.sync_engine, "before_cursor_execute", replace_meanwhile)
        first = await transfer.backfill(indexing)
        event.remove(indexing.sync_engine, "before_cursor_execute", replace_meanwhile)
        assert replaced
        store = SQLAlchemyContextStore(indexing, project="/p", session_id="s")
        assert await store.search("apple") == []
        # The row kept no feed and was not counted; the next run indexes what is there now.
        assert first.indexed["context_messages"] == 0
        second = await transfer.backfill(indexing)
        assert second.indexed["context_messages"] == 1
        (hit,) = await store.search("banana")
        assert hit.snippet == "brand new banana"
    finally:
        await plain.dispose()
        await indexing.dispose()
