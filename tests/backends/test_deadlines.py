"""The per-call deadline: a call blocked by another connection's lock ends on time.

Another connection holds the write lock of a session's state row (on SQLite: the
database's write lock) for the whole test. A call that needs it must end by its deadline
with :class:`convostore.DeadlineExceeded` (also a ``TimeoutError`` and a
``DatabaseError``), leave nothing behind and leave its connection usable. Without the
deadline the call would wait for the lock for as long as it is held (PostgreSQL), or
retry lock timeouts for tens of seconds (SQLite, MariaDB): the outer guard would fail
the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
from sqlalchemy import URL, Table, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from convostore import (
    ContextMessage,
    DatabaseError,
    SQLAlchemyContextStore,
    create_engine,
)
from convostore.errors import DeadlineExceeded
from convostore.sql.tables import ContextTokensRecord
from tests.conftest import WITH_PGBOUNCER, direct_url, is_postgresql, selected_backend

backend = pytest.fixture(params=WITH_PGBOUNCER)(selected_backend)

DEADLINE_S = 0.5
# What a call may take beyond its deadline: handing the connection back (on SQLite the
# worker thread finishes its busy wait, at most the deadline; on MariaDB the server's
# lock wait, rounded up to a second, ends).
SLACK_S = 2.5
# A test that has not finished after this long is hung: the deadline did not work.
GUARD_S = 20


@asynccontextmanager
async def session_locked(url: URL, session_id: str) -> AsyncIterator[AsyncConnection]:
    """Hold the write lock of a context session's state row until the block ends."""
    admin = create_engine(direct_url(url), poolclass=NullPool, deadline=0)
    try:
        async with admin.connect() as conn:
            sessions = cast(Table, ContextTokensRecord.__table__)
            c = sessions.c
            await conn.execute(
                update(sessions)
                .where(c.project == "p", c.session_id == session_id)
                .values(input_tokens=c.input_tokens)
            )
            yield conn
            await conn.rollback()
    finally:
        await admin.dispose()


async def no_lock_waiters(conn: AsyncConnection) -> None:
    """Return once no backend of the database waits for a lock (the guard bounds it)."""
    query = (
        "SELECT COUNT(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(1000):
        if not (await conn.execute(text(query))).scalar_one():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("a cancelled statement still waits for its lock on the server")


def message(text_: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text_}])


async def test_a_call_blocked_by_a_lock_ends_by_its_deadline(db_url: URL, backend: str) -> None:
    engine = create_engine(db_url, deadline=DEADLINE_S)
    store = SQLAlchemyContextStore(engine, project="p", session_id="locked")
    try:
        await store.append(message("before"))
        async with asyncio.timeout(GUARD_S):
            async with session_locked(db_url, "locked") as holder:
                started = time.monotonic()
                with pytest.raises(DeadlineExceeded) as caught:
                    await store.append(message("blocked"))
                elapsed = time.monotonic() - started
                if is_postgresql(backend):
                    # asyncpg cancelled the statement on the server: nobody waits any more.
                    await no_lock_waiters(holder)
        assert DEADLINE_S <= elapsed < DEADLINE_S + SLACK_S, elapsed
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, DatabaseError)
        assert f"{DEADLINE_S:g} s" in str(caught.value)
        # Nothing of the blocked call was stored, and the store works again at once.
        await store.append(message("after"))
        history = await store.get_messages()
        assert [m.content[0]["text"] for m in history] == ["before", "after"]
        assert [m.position for m in history] == [0, 1]
    finally:
        await engine.dispose()


async def test_the_deadline_comes_from_the_url(db_url: URL, backend: str) -> None:
    engine = create_engine(db_url.update_query_dict({"deadline": str(DEADLINE_S)}))
    store = SQLAlchemyContextStore(engine, project="p", session_id="from-url")
    try:
        await store.add_context_tokens(1, 1)
        async with asyncio.timeout(GUARD_S), session_locked(db_url, "from-url"):
            with pytest.raises(DeadlineExceeded):
                await store.add_context_tokens(1, 1)
        assert await store.get_context_tokens() == (1, 1)
    finally:
        await engine.dispose()


async def test_a_call_inside_a_transaction_block_has_a_deadline(db_url: URL, backend: str) -> None:
    engine = create_engine(db_url, deadline=DEADLINE_S)
    store = SQLAlchemyContextStore(engine, project="p", session_id="in-block")
    try:
        await store.append(message("before"))
        async with asyncio.timeout(GUARD_S), session_locked(db_url, "in-block"):
            with pytest.raises(DeadlineExceeded):
                async with store.transaction() as tx:
                    await tx.append(message("blocked"))
        assert [m.content[0]["text"] for m in await store.get_messages()] == ["before"]
    finally:
        await engine.dispose()


async def test_server_lock_waits_are_bounded_by_the_deadline(db_url: URL, backend: str) -> None:
    """The server gives up a lock wait too where the client cannot cancel it."""
    engine = create_engine(db_url, deadline=2.5)
    try:
        async with engine.connect() as conn:
            if backend == "sqlite":
                query = "PRAGMA busy_timeout"
                expected = 2500
            elif backend == "mariadb":
                query = "SELECT @@innodb_lock_wait_timeout"
                expected = 3  # whole seconds, rounded up
            else:
                pytest.skip("PostgreSQL statements are cancelled on the server by asyncpg")
            assert (await conn.execute(text(query))).scalar_one() == expected
    finally:
        await engine.dispose()
