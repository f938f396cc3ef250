"""Revision 0007 on a database that holds indexed and not-yet-indexed messages.

SQLite: the feed column goes, what the index held stays (no re-indexing), rows without a
feed are left to the catch-up; down again, the column is back with every row "not
indexed yet" and the index empty, as revision 0005's back-fill expects. PostgreSQL and
MySQL/MariaDB: nothing changes either way.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from sqlalchemy import URL, bindparam, text

from convostore import (
    ContextMessage,
    SQLAlchemyContextStore,
    codec,
    create_engine,
    migrate,
    search,
    transfer,
)
from convostore.sql.types import UTCDateTime


def user(words: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": words}]


async def write_at_0006(url: URL) -> None:
    """Two messages as revision 0006 stores them: one indexed, one without a feed yet."""
    backend = url.get_backend_name()
    feed = "to_tsvector('simple', :feed)" if backend == "postgresql" else ":feed"
    at = datetime(2026, 1, 2, tzinfo=UTC)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO context_tokens (project, session_id, input_tokens, "
                    "output_tokens, next_position, preview, created_at, updated_at) "
                    "VALUES ('/p', 's', 0, 0, 2, 'old', :at, :at)"
                ).bindparams(bindparam("at", type_=UTCDateTime())),
                {"at": at},
            )
            for position, words, indexed in (
                (0, "indexed lantern", True),
                (1, "pending lantern", False),
            ):
                content = user(words)
                await conn.execute(
                    text(
                        "INSERT INTO context_messages (project, session_id, position, role, "
                        f"content, created_at, search_text) VALUES ('/p', 's', :position, "
                        f"'user', :content, :at, {feed if indexed else 'NULL'})"
                    ).bindparams(bindparam("at", type_=UTCDateTime())),
                    {
                        "position": position,
                        "content": codec.encode(content),
                        "at": at,
                        **({"feed": search.context_feed(content)} if indexed else {}),
                    },
                )
    finally:
        await engine.dispose()


async def test_0007_keeps_the_index_and_leaves_rows_without_a_feed_to_the_catch_up(
    empty_url: URL,
) -> None:
    await migrate.upgrade(empty_url, "0006")
    await write_at_0006(empty_url)
    sqlite = empty_url.get_backend_name() == "sqlite"
    path = empty_url.database or ""
    await migrate.upgrade(empty_url, "0007")
    if sqlite:
        with sqlite3.connect(path) as conn:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(context_messages)")]
            assert "search_text" not in columns
            # The indexed row's words stayed; the watermark is just below the other one.
            assert conn.execute("SELECT count(*) FROM context_search_docs").fetchone() == (1,)
            assert conn.execute(
                "SELECT watermark FROM search_state WHERE name = 'context_messages'"
            ).fetchone() == (1,)
    engine = create_engine(empty_url)
    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        if not sqlite:
            # As before 0007 there: the back-fill indexes rows without a feed.
            assert [h.message.position for h in await store.search("lantern")] == [0]

            await transfer.backfill(engine)
        hits = await store.search("lantern")
        assert sorted(h.message.position for h in hits) == [0, 1]
        # A delete takes the words of the row indexed before 0007 out too.
        await store.replace_history([ContextMessage(role="user", content=user("fresh"))])
        assert await store.search("lantern") == []
        assert [h.message.position for h in await store.search("fresh")] == [0]
    finally:
        await engine.dispose()

    await migrate.downgrade(empty_url, "0006")
    if sqlite:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT search_text FROM context_messages").fetchall()
            assert rows == [(None,)]  # "not indexed yet", for 0005's back-fill
            assert conn.execute("SELECT count(*) FROM context_search_docs").fetchone() == (0,)
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            assert "search_state" not in names
            assert {"context_search_insert", "context_search_update"} <= names
    await migrate.upgrade(empty_url)
    engine = create_engine(empty_url)
    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        if not sqlite:
            await transfer.backfill(engine)
        assert [h.message.position for h in await store.search("fresh")] == [0]
    finally:
        await engine.dispose()
