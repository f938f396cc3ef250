"""Connection faults on the server backends, and what errors may reveal.

A server connection is killed from another connection (``pg_terminate_backend`` on
PostgreSQL, ``KILL`` on MariaDB) while it sits idle in the façade's pool, while a call waits
on a row lock, and inside a caller's transaction. The caller must see either success (the
pool's pre-ping replaced a dead idle connection) or a :class:`convostore.DatabaseError` —
never a raw driver or SQLAlchemy exception — the next call must succeed on a fresh
connection, and every write that was acknowledged must be in the database.

Victims are found without guessing: the façade's engine has a pool of exactly one
connection, whose server-side id the test reads through that same engine. Through
PgBouncer that id is the server connection PgBouncer lent for the read; with the admin
connection going straight to PostgreSQL, the façade is PgBouncer's only client of the
database, and PgBouncer lends the server connection it used last (LIFO) next time.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from convostore import (
    ContextMessage,
    ConvostoreError,
    DatabaseError,
    SchemaVersionError,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    connect,
    create_engine,
)
from convostore.sql.retry import translate_errors
from tests.conftest import WITH_PGBOUNCER, direct_url, is_postgresql, selected_backend

# Through PgBouncer too (the fixture the server fixtures below depend on).
backend = pytest.fixture(params=WITH_PGBOUNCER)(selected_backend)

PASSWORD = "pw-Sekrit-4711"
# How long the test waits for the server to show a connection blocked or gone.
SERVER_DEADLINE_S = 20


def require_server(backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite is embedded: there is no server connection to kill")


def assert_typed(exc: BaseException) -> None:
    """``exc`` is convostore's DatabaseError, raised from the driver's error."""
    assert isinstance(exc, DatabaseError), f"raw {type(exc).__module__}.{type(exc).__name__}"
    assert exc.__cause__ is not None


# --- killing connections -----------------------------------------------------------------


class Server:
    """Admin operations on the server holding the test database."""

    def __init__(self, url: URL, backend: str) -> None:
        self.backend = "postgresql" if is_postgresql(backend) else backend
        self.admin = create_engine(direct_url(url), poolclass=NullPool)

    async def close(self) -> None:
        await self.admin.dispose()

    async def connection_id(self, engine: AsyncEngine) -> int:
        """The server-side id of the (single) pooled connection of ``engine``."""
        query = (
            "SELECT pg_backend_pid()" if self.backend == "postgresql" else "SELECT CONNECTION_ID()"
        )
        async with engine.connect() as conn:
            return int((await conn.execute(text(query))).scalar_one())

    async def _poll(self, query: str, connection_id: int, *, want: bool) -> None:
        async with asyncio.timeout(SERVER_DEADLINE_S):
            while True:
                async with self.admin.connect() as conn:
                    found = (await conn.execute(text(query), {"id": connection_id})).scalar()
                if bool(found) == want:
                    return
                await asyncio.sleep(0.02)

    async def wait_until_blocked(self, connection_id: int) -> None:
        """Return once connection ``connection_id`` is waiting for a row lock."""
        if self.backend == "postgresql":
            query = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :id"
        else:
            # The victim's only statement that can stay running is the write stuck on the
            # lock. (information_schema.innodb_trx would say so directly, but MariaDB serves
            # it from a cache that was seen to lag by many seconds.)
            query = (
                "SELECT COUNT(*) FROM information_schema.processlist "
                "WHERE id = :id AND command = 'Query' AND info LIKE 'INSERT%'"
            )
        await self._poll(query, connection_id, want=True)

    async def kill(self, connection_id: int) -> None:
        """Terminate connection ``connection_id`` and return once the server has dropped it."""
        async with self.admin.connect() as conn:
            if self.backend == "postgresql":
                await conn.execute(text("SELECT pg_terminate_backend(:id)"), {"id": connection_id})
            else:
                await conn.execute(text(f"KILL CONNECTION {int(connection_id)}"))
        if self.backend == "postgresql":
            gone = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = :id"
        else:
            gone = "SELECT COUNT(*) FROM information_schema.processlist WHERE id = :id"
        await self._poll(gone, connection_id, want=False)

    @asynccontextmanager
    async def row_locked(self, table: str, where: str) -> AsyncIterator[AsyncConnection]:
        """Hold a write lock on the rows of ``table`` matching ``where`` until the block ends."""
        async with self.admin.connect() as conn, conn.begin():
            await conn.execute(text(f"SELECT * FROM {table} WHERE {where} FOR UPDATE"))
            yield conn


@pytest.fixture
async def server(db_url: URL, backend: str) -> AsyncIterator[Server]:
    require_server(backend)
    admin = Server(db_url, backend)
    yield admin
    await admin.close()


# --- the two façades, seen the same way -------------------------------------------------------


@dataclass
class Target:
    """How the fault tests write to, read from and lock one façade's scope."""

    make: Callable[[AsyncEngine], Any]
    write: Callable[[Any, int], Coroutine[Any, Any, None]]
    stored: Callable[[Any], Awaitable[list[int]]]
    table: str
    where: str


async def _add_message(db: Any, n: int) -> None:
    await db.add_message("t", "u", "user", message=str(n))


async def _thread_messages(db: Any) -> list[int]:
    return [int(m.message) for m in await db.get_messages("t", "u")]


async def _append(store: Any, n: int) -> None:
    await store.append(ContextMessage(role="user", content=[{"type": "text", "text": str(n)}]))


async def _history(store: Any) -> list[int]:
    return [int(m.content[0]["text"]) for m in await store.get_history()]


TARGETS = {
    "thread": Target(
        make=lambda engine: SQLAlchemyDatabase(engine=engine, agent_name="a"),
        write=_add_message,
        stored=_thread_messages,
        table="threads",
        where="agent_name = 'a' AND thread_id = 't'",
    ),
    "session": Target(
        make=lambda engine: SQLAlchemyContextStore(engine, project="p", session_id="s"),
        write=_append,
        stored=_history,
        table="context_tokens",
        where="project = 'p' AND session_id = 's'",
    ),
}


@pytest.fixture(params=list(TARGETS))
def target(request: pytest.FixtureRequest) -> Target:
    return TARGETS[request.param]


@pytest.fixture
async def victim(db_url: URL, server: Server) -> AsyncIterator[AsyncEngine]:
    """An engine with a pool of exactly one connection: the one the tests kill."""
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


async def test_idle_connection_killed_next_call_succeeds(
    server: Server, victim: AsyncEngine, target: Target
) -> None:
    facade = target.make(victim)
    for n in range(3):
        await target.write(facade, n)
    await server.kill(await server.connection_id(victim))

    # The pool's pre-ping finds the dead connection and opens a new one: no error at all.
    await target.write(facade, 3)
    assert await target.stored(facade) == [0, 1, 2, 3]


async def test_connection_killed_while_waiting_on_a_lock(
    server: Server, victim: AsyncEngine, target: Target
) -> None:
    facade = target.make(victim)
    for n in range(3):
        await target.write(facade, n)
    victim_id = await server.connection_id(victim)

    async with server.row_locked(target.table, target.where):
        pending = asyncio.create_task(target.write(facade, 99))
        await server.wait_until_blocked(victim_id)
        await server.kill(victim_id)
        with pytest.raises(ConvostoreError) as caught:
            await pending
    assert_typed(caught.value)

    # A fresh connection takes over; the failed write left nothing, not even a gap.
    await target.write(facade, 3)
    assert await target.stored(facade) == [0, 1, 2, 3]
    assert await server.connection_id(victim) != victim_id


async def test_connection_killed_inside_a_transaction(
    server: Server, victim: AsyncEngine, target: Target
) -> None:
    facade = target.make(victim)
    await target.write(facade, 0)
    victim_id = await server.connection_id(victim)

    async def killed_between_writes() -> None:
        async with facade.transaction() as tx:
            await target.write(tx, 50)
            await server.kill(victim_id)
            await target.write(tx, 51)

    with pytest.raises(ConvostoreError) as caught:
        await killed_between_writes()
    assert_typed(caught.value)

    await target.write(facade, 1)
    assert await target.stored(facade) == [0, 1]


async def test_connection_killed_before_commit(
    server: Server, victim: AsyncEngine, target: Target
) -> None:
    facade = target.make(victim)
    await target.write(facade, 0)
    victim_id = await server.connection_id(victim)

    async def killed_before_commit() -> None:
        async with facade.transaction() as tx:
            await target.write(tx, 50)
            await target.write(tx, 51)
            await server.kill(victim_id)

    with pytest.raises(ConvostoreError) as caught:
        await killed_before_commit()
    # The commit itself failed: the transaction was not acknowledged and is not there.
    assert_typed(caught.value)

    await target.write(facade, 1)
    assert await target.stored(facade) == [0, 1]


async def test_killed_connections_lose_no_acknowledged_write(
    db_url: URL, server: Server, target: Target
) -> None:
    """Writers keep going while their connections are killed again and again."""
    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    facade = target.make(engine)
    acknowledged: list[int] = []
    failures: list[BaseException] = []

    async def writer() -> None:
        for n in range(150):
            try:
                await target.write(facade, n)
            except ConvostoreError as exc:
                failures.append(exc)
            else:
                acknowledged.append(n)

    async def killer() -> None:
        for _ in range(5):
            query = (
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
                if server.backend == "postgresql"
                else "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
            async with server.admin.connect() as conn:
                ids = (await conn.execute(text(query))).scalars().all()
            for connection_id in ids:
                await server.kill(int(connection_id))
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(writer(), killer())
        for exc in failures:
            assert_typed(exc)
        stored = await target.stored(facade)
    finally:
        await engine.dispose()
    # Every acknowledged write is there; a write that failed may or may not have committed
    # (the connection can die after COMMIT reached the server), but nothing else appears.
    assert set(acknowledged) <= set(stored) <= set(range(150))
    # One writer, one call at a time: positions follow the order of the calls, no repeats.
    assert stored == sorted(set(stored))


# --- passwords --------------------------------------------------------------------------


def assert_no_password(*texts: str) -> None:
    for shown in texts:
        assert PASSWORD not in shown, shown


def failing_url(db_url: URL, backend: str, fault: str) -> str:
    """A URL with a password that fails: refused login / missing database, or a closed port."""
    url = db_url.set(password=PASSWORD)
    if fault == "closed_port":
        url = url.set(host="127.0.0.1", port=1)
    elif backend == "pgbouncer":
        # A user PgBouncer does not know is refused at once; a missing database would make
        # it retry its server login for seconds on every call.
        url = url.set(username="convostore_no_such_user")
    elif is_postgresql(backend):
        url = url.set(database="convostore_no_such_database")
    # else: root has no password on this MariaDB, so any password is refused.
    rendered = url.render_as_string(hide_password=False)
    assert PASSWORD in rendered
    return rendered


@pytest.mark.parametrize("fault", ["refused", "closed_port"])
async def test_no_password_in_errors_reprs_or_logs(
    db_url: URL, backend: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    require_server(backend)
    caplog.set_level(logging.DEBUG)
    url = failing_url(db_url, backend, fault)
    db = SQLAlchemyDatabase(url, agent_name="a")
    store = SQLAlchemyContextStore(url=url, session_id="s", project="p")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: db.get_user("u"),
        lambda: db.add_message("t", "u", "user", message="x"),
        store.get_history,
        lambda: store.append(ContextMessage(role="user")),
        lambda: connect(url),
    ]
    try:
        assert_no_password(repr(db), str(db), repr(store), str(store))
        for call in calls:
            with pytest.raises(ConvostoreError) as caught:
                await call()
            assert_typed(caught.value)
            chain = "".join(traceback.format_exception(caught.value))
            assert_no_password(str(caught.value), repr(caught.value), chain)
    finally:
        await db.close()
        await store.close()
    assert_no_password(caplog.text)


async def test_no_password_in_schema_version_errors(
    fresh_server_database: URL | None, backend: str
) -> None:
    if not is_postgresql(backend):
        pytest.skip("needs a server that accepts any password (PostgreSQL trust auth)")
    assert fresh_server_database is not None
    rendered = fresh_server_database.set(password=PASSWORD).render_as_string(hide_password=False)
    db = SQLAlchemyDatabase(rendered)
    try:
        with pytest.raises(SchemaVersionError) as caught:
            await db.async_init()
    finally:
        await db.close()
    assert "upgrade" in str(caught.value)
    assert_no_password(str(caught.value), repr(caught.value))


# --- translating what drivers raise --------------------------------------------------------


def driver_errors() -> list[BaseException]:
    """Exceptions drivers raise on their own, outside SQLAlchemy's wrappers."""
    errors: list[BaseException] = [
        ConnectionResetError(104, "Connection reset by peer"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError("timed out"),
    ]
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the postgresql extra is not installed
        pass
    else:
        errors += [
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
            asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
            asyncpg.exceptions.InterfaceError("cannot perform operation: another is in progress"),
        ]
    try:
        from asyncmy import errors as asyncmy_errors
    except ImportError:  # pragma: no cover - the mysql extra is not installed
        pass
    else:
        errors += [
            asyncmy_errors.OperationalError(2013, "Lost connection to server during query"),
            asyncmy_errors.InternalError(1927, "Connection was killed"),
        ]
    return errors


@pytest.mark.parametrize("error", driver_errors(), ids=lambda e: type(e).__name__)
def test_driver_exceptions_become_database_errors(error: BaseException) -> None:
    with pytest.raises(DatabaseError) as caught, translate_errors():
        raise error
    assert caught.value.__cause__ is error
    assert type(error).__name__ in str(caught.value)


def test_sqlalchemy_disconnects_become_database_errors() -> None:
    wrapped = sa_exc.OperationalError("SELECT 1", {}, ConnectionResetError("reset"))
    with pytest.raises(DatabaseError), translate_errors():
        raise wrapped
    with pytest.raises(DatabaseError), translate_errors():
        raise sa_exc.InterfaceError("SELECT 1", {}, Exception("connection is closed"))


def test_programming_errors_and_cancellation_pass_through() -> None:
    with pytest.raises(KeyError), translate_errors():
        raise KeyError("not a database problem")
    with pytest.raises(asyncio.CancelledError), translate_errors():
        raise asyncio.CancelledError
