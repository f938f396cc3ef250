"""The façade base: both façades own, view and close engines alike, and work with ``async with``."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import URL

from convostore import (
    ConfigurationError,
    ContextMessage,
    DeadlineExceeded,
    SchemaVersionError,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    create_engine,
    transfer,
)
from convostore.facade import Facade


def _pool_size(store: Facade) -> int:
    return store.engine.pool.checkedin()  # type: ignore[attr-defined, no-any-return]


async def test_async_with_opens_and_closes_what_the_store_created(db_url: URL) -> None:
    async with SQLAlchemyContextStore(url=db_url, project="/p", session_id="s") as store:
        await store.append(ContextMessage(role="user", content=[{"type": "text", "text": "a"}]))
        assert _pool_size(store) >= 1
    # Disposed on exit: the pool holds no connection any more.
    assert _pool_size(store) == 0
    async with SQLAlchemyDatabase(db_url.render_as_string(hide_password=False)) as db:
        assert db.conn is db.engine  # async_init ran on entry
        assert await db.credit("alice", 5) == 5
    assert db.conn is None
    assert _pool_size(db) == 0


async def test_a_closed_facade_says_so(db_url: URL) -> None:
    """Used after close(), a façade once reconnected quietly: to a new, empty database for
    ``:memory:`` ("no such table: threads"). Every call now says it is closed; only the
    agent database's async_init() reopens it, as agentstr's databases reconnect there."""
    url = db_url.render_as_string(hide_password=False)
    for where in (url, "sqlite://:memory:"):
        db = await SQLAlchemyDatabase(where, agent_name="a").async_init()
        await db.add_message("t", "u", "user", message="kept")
        await db.close()
        assert db.conn is None
        for call in (db.get_messages("t", "u"), db.credit("u", 1)):
            with pytest.raises(ConfigurationError, match=r"Database is closed.*async_init"):
                await call
        await db.close()  # closing again is fine
        assert await db.async_init() is db
        assert db.conn is db.engine
        kept = [m.message for m in await db.get_messages("t", "u")]
        # The same database again; ":memory:" is a new one, as agentstr's is.
        assert kept == ([] if "memory" in where else ["kept"])
        assert await db.credit("u", 1) == 1
        await db.close()
    store = SQLAlchemyContextStore(url=":memory:", project="/p", session_id="s")
    await store.append(ContextMessage(role="user"))
    await store.close()
    with pytest.raises(ConfigurationError, match="SQLAlchemyContextStore is closed"):
        await store.get_history()
    with pytest.raises(ConfigurationError, match="is closed"):
        async with store:
            pass


async def test_a_given_engine_and_views_are_never_closed(db_url: URL) -> None:
    engine = create_engine(db_url)
    try:
        async with SQLAlchemyDatabase(engine=engine) as db:
            async with db.transaction() as tx:
                await tx.credit("bob", 3)
                await tx.close()  # a view: closing it must not dispose the engine
            assert await db.get_user("bob") is not None
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        other = store.with_session("t")
        await other.close()
        async with store:
            assert await store.get_history() == []
        # The engine still works after both façades closed: neither owned it.
        assert (await SQLAlchemyDatabase(engine=engine).get_user("bob")).available_balance == 3
    finally:
        await engine.dispose()


async def test_a_failed_entry_closes_what_it_opened(fresh_server_database: URL | None) -> None:
    if fresh_server_database is None:
        pytest.skip("an SQLite database is migrated on entry, so entry cannot fail this way")
    store = SQLAlchemyContextStore(url=fresh_server_database, project="/p", migrate=False)
    with pytest.raises(SchemaVersionError):
        async with store:
            pytest.fail("entered a store whose schema is not at head")
    assert _pool_size(store) == 0


async def test_whole_database_reads_are_not_one_call_under_the_deadline(db_url: URL) -> None:
    """Export and stats read everything in one transaction; the per-call deadline (here far
    too short for any call) applies to the façades' calls, not to them."""
    engine = create_engine(db_url, deadline=1e-6)
    try:
        with pytest.raises(DeadlineExceeded):
            await SQLAlchemyDatabase(engine=engine, migrate=False).get_user("x")
        report = await transfer.export_jsonl(engine, io.BytesIO())
        assert report.verified
        assert (await transfer.stats(engine)).rows["messages"] == 0
    finally:
        await engine.dispose()
