"""The search index on each backend: migration 0005 over existing rows, and the back-fill.

Rows written before revision 0005 have no ``search_text``; ``transfer.backfill`` (the CLI's
``convostore reindex``) indexes them in batches, one transaction each, and a
back-fill that stops part-way resumes where it left off. On SQLite (revision 0007) rows
carry no feed and the index catches up by itself (tests/backends/test_search_catch_up.py);
the back-fill runs that catch-up to the end.
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
from convostore.transfer import browse


def user(words: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": words}])


class BackfillInterruptedError(Exception):
    pass


async def forget_the_index(engine: AsyncEngine) -> None:
    """What a database migrated from revision 0004 holds: rows that are not indexed."""
    async with engine.begin() as conn:
        if engine.dialect.name != "sqlite":
            await conn.execute(text("UPDATE context_messages SET search_text = NULL"))
            await conn.execute(text("UPDATE messages SET search_text = NULL"))
            return
        for index in ("context_search", "message_search"):
            await conn.execute(text(f"INSERT INTO {index} ({index}) VALUES ('delete-all')"))
            await conn.execute(text(f"DELETE FROM {index}_docs"))
        await conn.execute(text("UPDATE search_state SET watermark = 0"))


async def pending(engine: AsyncEngine) -> dict[str, int]:
    return await browse.search_pending(engine)


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
    await forget_the_index(engine)
    assert await pending(engine) == {"context_messages": 25, "messages": 1}

    stopped = StopAfter(batches=2)
    with pytest.raises(BackfillInterruptedError):
        await transfer.backfill(engine, batch_size=10, progress=stopped)
    # The two finished batches were committed.
    assert await pending(engine) == {"context_messages": 5, "messages": 1}
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
        assert await pending(engine) == {"context_messages": 2, "messages": 0}
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
        assert await pending(plain) == {"context_messages": 2, "messages": 1}
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


async def test_no_other_process_writes_between_the_catch_ups_read_and_its_writes(
    sqlite_file: Path,
) -> None:
    # The driver begins a transaction only at its first write: the catch-up writes first,
    # so it holds SQLite's write lock before it reads. Another process that replaced the
    # message between the read and the writes would get its old words in the index, or
    # append a row the watermark then passes.
    url = URL.create("sqlite+aiosqlite", database=str(sqlite_file))
    plain = create_engine(url, search_index=False)
    indexing = create_engine(url)
    try:
        await SQLAlchemyContextStore(plain, project="/p", session_id="s").append(user("apple"))
        refused: list[str] = []

        def replace_meanwhile(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            if statement.startswith("INSERT INTO context_search_docs") and not refused:
                with sqlite3.connect(sqlite_file, timeout=0) as other:
                    try:
                        other.execute(
                            "UPDATE context_messages SET content = ? WHERE project = '/p'",
                            (codec.encode([{"type": "text", "text": "brand new banana"}]),),
                        )
                    except sqlite3.OperationalError as exc:
                        refused.append(str(exc))

        event.listen(indexing.sync_engine, "before_cursor_execute", replace_meanwhile)
        first = await transfer.backfill(indexing)
        event.remove(indexing.sync_engine, "before_cursor_execute", replace_meanwhile)
        assert refused == ["database is locked"]
        assert first.indexed["context_messages"] == 1
        store = SQLAlchemyContextStore(indexing, project="/p", session_id="s")
        (hit,) = await store.search("apple")
        assert hit.snippet == "apple"
        assert await store.search("banana") == []
    finally:
        await plain.dispose()
        await indexing.dispose()


async def test_what_the_rows_hold_of_the_words_on_each_backend(engine: AsyncEngine) -> None:
    # SQLite: nothing (migration 0007). PostgreSQL: the tsvector only, never the feed's
    # text. MySQL/MariaDB: the feed in clear, which FULLTEXT needs (docs/encryption.md).
    phrase = "zebra quantum marmalade"
    filler = " ".join(f"filler{i}" for i in range(300))  # ~2 KB: the payload is compressed
    store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
    await store.append(user(f"{filler} {phrase} {filler}"))
    (hit,) = await store.search("quantum marmalade")
    assert phrase in hit.snippet
    name = engine.dialect.name
    async with engine.connect() as conn:
        content = (await conn.execute(text("SELECT content FROM context_messages"))).scalar_one()
        assert phrase.encode() not in bytes(content)
        if name == "sqlite":
            columns = await conn.execute(text("PRAGMA table_info(context_messages)"))
            assert "search_text" not in {row[1] for row in columns}
            return
        stored = (
            await conn.execute(
                text(
                    "SELECT CAST(search_text AS TEXT) FROM context_messages"
                    if name == "postgresql"
                    else "SELECT search_text FROM context_messages"
                )
            )
        ).scalar_one()
    if name == "postgresql":
        kind = await _column_type(engine, "context_messages", "search_text")
        assert kind == "tsvector"
        assert "zebra_" not in stored
        assert phrase not in stored
        assert "'zebra':" in stored  # lexemes with their positions
    else:
        assert "zebra_ quantum_ marmalade_" in stored


async def _column_type(engine: AsyncEngine, table: str, column: str) -> str:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = :t AND column_name = :c"
            ),
            {"t": table, "c": column},
        )
        return str(found.scalar_one())
