"""The deadline from the first byte: opening, the start-up check and every call after it.

Two misbehaving servers (:mod:`tests.silent_server`) stand in for PostgreSQL and MariaDB:

* a server that accepts TCP and never answers. Before the fix, ``connect()``,
  ``Database.async_init()`` and a new store's first call waited for asyncpg's own 60 s
  connect timeout on PostgreSQL and forever on MariaDB, since the schema check at start-up
  ran outside the deadline;
* a proxy in front of the real server that stops forwarding after start-up.

Each call must end with :class:`~convostore.errors.DeadlineExceeded` within its deadline
plus :data:`SLACK_S`; an outer guard fails the test if it hangs instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from convostore import (
    ContextMessage,
    Database,
    DatabaseError,
    SQLAlchemyContextStore,
    connect,
    create_engine,
    migrate,
)
from convostore import (
    engine as engine_module,
)
from convostore.errors import DeadlineExceeded
from tests.conftest import require_backend, server_database
from tests.faultproxy import FaultProxy, Statement
from tests.silent_server import PausableProxy, SilentServer

DEADLINE_S = 1.0
# Beyond the deadline: closing the connection the deadline cut off (asyncpg gives a
# connection it cannot close cleanly 2 s before terminating it).
SLACK_S = 3.0
DOCUMENTED_SLACK_S = 1.5
"""docs/backends.md: how late after its deadline a call may end on a loaded machine."""
GUARD_S = 20.0


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> URL:
    """The URL of this session's migrated database on a server backend."""
    name: str = request.param
    require_backend(request.config, name)
    url = server_database(name).url
    assert url is not None
    return url


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    async with SilentServer() as listener:
        yield listener


async def ends_in_time(call: Awaitable[Any], expected: type[BaseException], limit: float) -> None:
    """``call`` raises ``expected`` within ``limit`` seconds."""
    started = time.monotonic()
    async with asyncio.timeout(GUARD_S):
        with pytest.raises(expected):
            await call
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"took {elapsed:.1f} s (limit {limit:g} s)"


def with_deadline(url: URL) -> URL:
    return url.update_query_dict({"deadline": str(DEADLINE_S)})


async def test_connect_to_a_silent_server_ends_by_the_deadline(
    server: URL, silent: SilentServer
) -> None:
    url = with_deadline(silent.url(server))
    await ends_in_time(connect(url), DeadlineExceeded, DEADLINE_S + SLACK_S)
    await ends_in_time(connect(url, migrate=True), DeadlineExceeded, DEADLINE_S + SLACK_S)
    assert silent.accepted >= 2


async def test_async_init_on_a_silent_server_ends_by_the_deadline(
    server: URL, silent: SilentServer
) -> None:
    db = Database(with_deadline(silent.url(server)).render_as_string(hide_password=False))
    try:
        await ends_in_time(db.async_init(), DeadlineExceeded, DEADLINE_S + SLACK_S)
        await ends_in_time(db.get_user("u"), DeadlineExceeded, DEADLINE_S + SLACK_S)
    finally:
        await db.close()


async def test_first_call_of_a_store_on_a_silent_server_ends_by_the_deadline(
    server: URL, silent: SilentServer
) -> None:
    store = SQLAlchemyContextStore(url=with_deadline(silent.url(server)))
    try:
        await ends_in_time(
            store.append(ContextMessage(role="user")), DeadlineExceeded, DEADLINE_S + SLACK_S
        )
    finally:
        await store.close()


async def test_without_a_deadline_connecting_still_gives_up(
    server: URL, silent: SilentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The driver's connect timeout (CONNECT_TIMEOUT_S, 30 s) bounds a connection attempt
    # that no deadline watches; shortened here to keep the test short.
    monkeypatch.setattr(engine_module, "CONNECT_TIMEOUT_S", DEADLINE_S)
    engine = create_engine(silent.url(server), deadline=0)
    try:
        store = SQLAlchemyContextStore(engine)
        await ends_in_time(store.get_history(), DatabaseError, DEADLINE_S + SLACK_S)
        # The engine used directly gives up too: the driver's TimeoutError, as SQLAlchemy
        # passes it on.
        await ends_in_time(opened(engine), TimeoutError, DEADLINE_S + SLACK_S)
    finally:
        await engine.dispose()


async def opened(engine: AsyncEngine) -> None:
    async with engine.connect():
        pass


async def test_a_server_that_stops_answering_after_start_up(server: URL) -> None:
    assert server.host is not None
    assert server.port is not None
    async with PausableProxy(server.host, server.port) as proxy:
        store = SQLAlchemyContextStore(url=with_deadline(proxy.url(server)), session_id="paused")
        try:
            await store.append(ContextMessage(role="user"))  # started up: schema checked
            proxy.pause()
            await ends_in_time(
                store.append(ContextMessage(role="user")), DeadlineExceeded, DEADLINE_S + SLACK_S
            )
            await ends_in_time(store.get_history(), DeadlineExceeded, DEADLINE_S + SLACK_S)
            other = SQLAlchemyContextStore(store.engine, session_id="other")
            await ends_in_time(other.get_history(), DeadlineExceeded, DEADLINE_S + SLACK_S)
        finally:
            proxy.resume()
            await store.close()


@pytest.fixture
def unmigrated(backend: str, fresh_server_database: URL | None, tmp_path: Path) -> URL:
    """An empty database of its own: a server database, or a new SQLite file."""
    if fresh_server_database is not None:
        return fresh_server_database
    return URL.create("sqlite+aiosqlite", database=str(tmp_path / "new.db"))


@asynccontextmanager
async def migration_lock_held(url: URL) -> AsyncIterator[None]:
    """Another connection holds the migration lock until the block ends."""
    holder = create_engine(url, poolclass=NullPool, deadline=0)
    try:
        async with holder.connect() as conn:
            lock = await conn.run_sync(held)
            try:
                yield
            finally:
                # Leaving with an error rolls back and releases the lock.
                error = RuntimeError("released")
                await conn.run_sync(lambda _: lock.__exit__(RuntimeError, error, None))
    finally:
        await holder.dispose()


def held(connection: Connection) -> AbstractContextManager[None]:
    lock = migrate.migration_lock(connection)
    lock.__enter__()
    return lock


async def test_waiting_for_the_migration_lock_ends_by_the_deadline(unmigrated: URL) -> None:
    # Before the fix: PostgreSQL waited for the advisory lock for as long as it was held,
    # MariaDB for GET_LOCK's 300 s.
    async with migration_lock_held(unmigrated):
        await ends_in_time(
            connect(with_deadline(unmigrated), migrate=True), DatabaseError, DEADLINE_S + SLACK_S
        )
    engine = await connect(with_deadline(unmigrated), migrate=True)  # lock released: it runs
    try:
        assert await migrate.current(engine) == migrate.head()
    finally:
        await engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb", "pgbouncer"])
def any_server(request: pytest.FixtureRequest) -> URL:
    """The URL of this session's migrated database on a server, or through PgBouncer."""
    name: str = request.param
    require_backend(request.config, name)
    url = server_database(name).url
    assert url is not None
    return url


ONE_BUDGET_DEADLINE_S = 3.0
"""Long enough beside the documented slack (1.5 s) that a second deadline shows."""
SLOW_START = 0.8
"""The share of the deadline the first call's start-up takes (connect and schema check)."""


def writes_the_store(statement: Statement) -> bool:
    """The append's own statements, not the start-up's (which read alembic_version)."""
    return "context_" in statement.sql


async def test_a_first_call_has_one_deadline_for_start_up_and_its_own_work(
    any_server: URL,
) -> None:
    """The first call's connect and schema check take most of the deadline (the server
    answers nothing until 0.8 of it), then its append gets no answer: the call ends by
    the deadline (plus slack) it started with. Before the fix the start-up and the call
    had a deadline each, and this call took 1.8 times the deadline."""
    assert any_server.host is not None
    assert any_server.port is not None
    mysql = any_server.get_backend_name() in ("mysql", "mariadb")
    proxy = FaultProxy(any_server.host, any_server.port, "mysql" if mysql else "postgresql")
    await proxy.start()
    url = proxy.url(any_server).update_query_dict({"deadline": str(ONE_BUDGET_DEADLINE_S)})
    store = SQLAlchemyContextStore(url=url, session_id="one-budget")
    try:
        proxy.stall()
        held = proxy.arm("hold", writes_the_store)
        # The server "answers" once most of the deadline has gone by: a late start-up,
        # not a test sleeping.
        asyncio.get_running_loop().call_later(SLOW_START * ONE_BUDGET_DEADLINE_S, proxy.resume)
        await ends_in_time(
            store.append(ContextMessage(role="user")),
            DeadlineExceeded,
            ONE_BUDGET_DEADLINE_S + DOCUMENTED_SLACK_S,
        )
        assert held.fired == 1  # the start-up succeeded; the append itself was cut off
    finally:
        proxy.resume()
        proxy.release()
        await store.close()
        await proxy.close()
