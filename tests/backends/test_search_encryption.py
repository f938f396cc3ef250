"""Search on encrypted engines: it works on sealed payloads, and stores nothing when clear
text is off (rotation to such a keyring removes what the index held)."""

from __future__ import annotations

import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import ConfigurationError, SQLAlchemyContextStore, SQLAlchemyDatabase, transfer
from convostore.sql.engine import create_engine
from convostore.sql.rotation import rotate
from tests.backends.encrypted import AGENT, PROJECT, ring, write

WORD = "zqxj"  # MARKER's first word, as the index holds it (case-folded)


async def feeds(engine: AsyncEngine) -> int:
    """Messages in the search index."""
    async with engine.connect() as conn:
        total = 0
        for table, index in (
            ("context_messages", "context_search"),
            ("messages", "message_search"),
        ):
            if engine.dialect.name == "sqlite":
                query = f"SELECT count(*) FROM {index}_docs"
            else:
                query = f"SELECT count(*) FROM {table} WHERE search_text IS NOT NULL"
            total += (await conn.execute(text(query))).scalar_one()
    return total


async def test_search_reads_sealed_payloads(db_url: URL) -> None:
    engine = create_engine(db_url, encryption=ring("k1", current="k1"))
    try:
        await write(engine, "s", 0, 4)
        store = SQLAlchemyContextStore(engine, project=PROJECT, session_id="s")
        hits = await store.search(WORD, limit=100)
        assert len(hits) == 4
        assert all(WORD in hit.snippet.casefold() for hit in hits)
        db = SQLAlchemyDatabase(engine=engine, agent_name=AGENT)
        assert await db.search(WORD)
    finally:
        await engine.dispose()


async def test_clear_text_off_indexes_nothing_and_rotation_drops_the_index(db_url: URL) -> None:
    clear = create_engine(db_url, encryption=ring("k1", current="k1"))
    try:
        await write(clear, "s", 0, 6)
        await transfer.backfill(clear)  # SQLite's index catches up (elsewhere: nothing to do)
        indexed = await feeds(clear)
        assert indexed > 0
    finally:
        await clear.dispose()

    closed = ring("k1", current="k1", clear_text=False)
    report = await rotate(create_engine(db_url), closed, batch_size=4)
    assert report.rewritten["search_text"] == indexed
    engine = create_engine(db_url, encryption=closed)
    try:
        assert await feeds(engine) == 0
        await write(engine, "t", 0, 3)
        assert await feeds(engine) == 0
        if db_url.get_backend_name() == "sqlite":
            async with engine.connect() as conn:
                for index in ("context_search", "message_search"):
                    rows = await conn.execute(text(f"SELECT count(*) FROM {index}_docs"))
                    assert rows.scalar_one() == 0
        store = SQLAlchemyContextStore(engine, project=PROJECT, session_id="s")
        with pytest.raises(ConfigurationError, match="clear_text=False"):
            await store.search(WORD)
        with pytest.raises(ConfigurationError, match="clear_text=False"):
            await SQLAlchemyDatabase(engine=engine, agent_name=AGENT).search(WORD)
        with pytest.raises(ConfigurationError, match="clear_text=False"):
            await transfer.backfill(engine)
    finally:
        await engine.dispose()
