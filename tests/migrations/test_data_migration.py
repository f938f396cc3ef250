"""Revision 0002 on a database that already holds data: backfills and old rows intact."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import URL, LargeBinary, bindparam, text

from convostore import (
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    codec,
    create_engine,
    migrate,
)
from convostore.sql.types import UTCDateTime


async def test_upgrade_from_0001_keeps_data_and_fills_new_columns(empty_url: URL) -> None:
    await migrate.upgrade(empty_url, "0001")
    # Rows as 0001 stored them, written with plain SQL (the models describe head, not 0001).
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    empty = codec.encode({})
    statements: list[tuple[str, dict[str, object]]] = [
        (
            "INSERT INTO threads (agent_name, thread_id, next_idx, created_at, updated_at)"
            " VALUES ('a', 't', 2, :at, :at)",
            {},
        ),
        (
            "INSERT INTO messages (agent_name, thread_id, idx, user_id, role, kind, message,"
            " content, extra_inputs, extra_outputs, created_at) VALUES"
            " ('a', 't', :idx, :user, 'user', 'request', :text, :content, :empty, :empty, :at)",
            {"idx": 0, "user": "alice", "text": "hi", "content": codec.encode("hi")},
        ),
        (
            "INSERT INTO messages (agent_name, thread_id, idx, user_id, role, kind, message,"
            " content, extra_inputs, extra_outputs, created_at) VALUES"
            " ('a', 't', :idx, :user, 'agent', 'request', :text, :content, :empty, :empty, :at)",
            {"idx": 1, "user": "bob", "text": "yo", "content": codec.encode("yo")},
        ),
        (
            "INSERT INTO context_tokens (project, session_id, input_tokens, output_tokens,"
            " next_position, preview, created_at) VALUES ('p', 's', 3, 4, 1, 'hey', :at)",
            {},
        ),
        (
            "INSERT INTO context_messages (project, session_id, position, role, content,"
            " created_at) VALUES ('p', 's', 0, 'user', :content, :at)",
            {"content": codec.encode([{"type": "text", "text": "hey"}])},
        ),
    ]
    engine = create_engine(empty_url)
    try:
        async with engine.begin() as conn:
            for sql, params in statements:
                stmt = text(sql).bindparams(
                    bindparam("at", type_=UTCDateTime()),
                    *(
                        bindparam(name, type_=LargeBinary())
                        for name in ("content", "empty")
                        if f":{name}" in sql
                    ),
                )
                await conn.execute(stmt, {"at": at, "empty": empty, **params})
    finally:
        await engine.dispose()
    await migrate.upgrade(empty_url)

    engine = create_engine(empty_url)
    try:
        async with engine.connect() as conn:
            owner = (await conn.execute(text("SELECT user_id FROM threads"))).scalar_one()
            row = (
                await conn.execute(text("SELECT created_at, updated_at FROM context_tokens"))
            ).one()
        assert owner == "alice"
        assert row[0] == row[1]

        db = SQLAlchemyDatabase(engine=engine, agent_name="a")
        assert [m.message for m in await db.get_messages("t", "alice")] == ["hi"]
        assert [t.thread_id for t in await db.list_threads("alice")] == ["t"]
        assert (await db.add_message("t", "alice", "user", message="again")).idx == 2

        store = SQLAlchemyContextStore(engine, session_id="s", project="p")
        assert await store.get_history() == [
            ContextMessage(role="user", content=[{"type": "text", "text": "hey"}])
        ]
        (info,) = await store.list_sessions()
        assert (info.preview, info.message_count, info.input_tokens) == ("hey", 1, 3)
        assert info.updated_at == info.created_at
        assert (await store.append(ContextMessage(role="assistant"))).position == 1
    finally:
        await engine.dispose()

    await migrate.downgrade(empty_url, "0001")
    engine = create_engine(empty_url)
    try:
        async with engine.connect() as conn:
            counts = [
                (await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
                for table in ("threads", "messages", "context_tokens", "context_messages")
            ]
        assert counts == [1, 3, 1, 2]
    finally:
        await engine.dispose()
