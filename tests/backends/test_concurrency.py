"""Concurrent writers on every SQL backend: nothing lost, nothing duplicated, no error surfaced.

Positions and ``idx`` come from a counter row bumped in the same transaction as the insert
(:func:`convostore.sql.counters.bump_counter`); balances and token totals are single atomic
statements. These tests race real connections against each other — several engines in one
event loop, and several OS processes — and then count every row straight from the tables.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from sqlalchemy import URL, Table, Update, event, select, update
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from convostore import (
    ContextMessage,
    DatabaseError,
    InsufficientBalance,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    User,
    create_engine,
)
from convostore.sql.retry import is_retryable
from convostore.sql.runner import MAX_ATTEMPTS
from convostore.sql.tables import (
    ContextMessageRecord,
    ContextSessionRecord,
    MessageRecord,
    UserRecord,
)
from tests.backends import writers
from tests.backends.writers import AGENT, PROJECT, USER
from tests.conftest import WITH_PGBOUNCER, is_postgresql, selected_backend

# Through PgBouncer too (the fixture the server fixtures below depend on).
backend = pytest.fixture(params=WITH_PGBOUNCER)(selected_backend)

T = TypeVar("T")

WRITERS_SCRIPT = Path(writers.__file__).resolve()
REPO_ROOT = WRITERS_SCRIPT.parents[2]
# A writer process that has not finished after this long is stuck, not slow.
PROCESS_DEADLINE_S = 120


@asynccontextmanager
async def own_engines(url: URL, count: int, **options: Any) -> AsyncIterator[list[AsyncEngine]]:
    """``count`` independent engines (each with its own pool) on ``url``, disposed afterwards.

    Each pool may grow by 2 beyond its 5 connections (not SQLAlchemy's 10): five engines
    then stay far below PostgreSQL's 100 connections while the PgBouncer and replica
    fixtures hold theirs, and the writers still contend.
    """
    options.setdefault("max_overflow", 2)
    engines: list[AsyncEngine] = [create_engine(url, **options) for _ in range(count)]
    try:
        yield engines
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))


async def session_rows(url: URL, session_id: str) -> list[tuple[int, dict[str, int]]]:
    """``(position, marker)`` of every row of a context session, read from the table itself."""
    c = ContextMessageRecord.__table__.c
    stmt = (
        select(c.position, c.content)
        .where(c.project == PROJECT, c.session_id == session_id)
        .order_by(c.position)
    )
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
    finally:
        await engine.dispose()
    return [(int(position), content[0]) for position, content in rows]


async def thread_rows(url: URL, thread_id: str) -> list[tuple[int, dict[str, int]]]:
    """``(idx, marker)`` of every message of an agent thread, read from the table itself."""
    c = MessageRecord.__table__.c
    stmt = (
        select(c.idx, c.extra_inputs)
        .where(c.agent_name == AGENT, c.thread_id == thread_id)
        .order_by(c.idx)
    )
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
    finally:
        await engine.dispose()
    return [(int(idx), extra) for idx, extra in rows]


def assert_complete(rows: Sequence[tuple[int, dict[str, int]]], writers: int, each: int) -> None:
    """Exactly ``writers * each`` rows at positions ``0..n-1``, every writer's in its order."""
    positions = [position for position, _ in rows]
    assert len(rows) == writers * each
    assert positions == list(range(writers * each)), "positions have a gap or a duplicate"
    for writer in range(writers):
        seqs = [marker["seq"] for _, marker in rows if marker["writer"] == writer]
        assert seqs == list(range(each)), f"writer {writer}'s messages are out of order"
    # Writers that ran one after the other would leave ``writers - 1`` switches; more
    # prove that their appends really interleaved (the start barrier worked).
    order = [marker["writer"] for _, marker in rows]
    switches = sum(a != b for a, b in itertools.pairwise(order))
    assert switches > writers - 1, "the writers never overlapped"


async def gather_all(tasks: Sequence[Awaitable[T]]) -> list[T]:
    """Await every task; fail with the first error only after all have finished."""
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise AssertionError(f"{len(errors)} of {len(results)} writers failed") from errors[0]
    return results  # type: ignore[return-value]


Appender = Callable[[AsyncEngine, str, int, int], Awaitable[None]]
Reader = Callable[[URL, str], Awaitable[list[tuple[int, dict[str, int]]]]]
TARGETS: dict[str, tuple[Appender, Reader]] = {
    "session": (writers.append_to_session, session_rows),
    "thread": (writers.append_to_thread, thread_rows),
}


@pytest.mark.parametrize("target", list(TARGETS))
async def test_eight_engines_append_to_one_scope(db_url: URL, target: str) -> None:
    append, read = TARGETS[target]
    async with own_engines(db_url, 8) as engines:
        await gather_all([append(engine, "shared", w, 200) for w, engine in enumerate(engines)])
    assert_complete(await read(db_url, "shared"), writers=8, each=200)


async def test_thirty_two_connections_append_to_one_session(db_url: URL, backend: str) -> None:
    if not is_postgresql(backend):
        pytest.skip("the 32-connection run is the PostgreSQL requirement")
    async with own_engines(db_url, 1, pool_size=32, max_overflow=0) as (engine,):
        # With client ids every append runs its own transaction (plain appends are group
        # committed, and share a connection). Schema preparation no longer opens a
        # connection per writer, so the writes alone must make the pool grow.
        await gather_all([identified_appends(engine, "wide", w, 50) for w in range(32)])
        # The pool opens a connection only when every open one is checked out, so 32
        # pooled connections mean 32 writers really held a connection at the same time.
        assert engine.pool.checkedin() == 32  # type: ignore[attr-defined]
    assert_complete(await session_rows(db_url, "wide"), writers=32, each=50)


async def identified_appends(engine: AsyncEngine, session_id: str, writer: int, count: int) -> None:
    """:func:`writers.append_to_session`, each append with a client id of its own."""
    store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=session_id)
    for seq in range(count):
        message = ContextMessage(role="assistant", content=[writers.marker(writer, seq)])
        await store.append(message, client_id=f"{writer}:{seq}")


async def run_writer_processes(url: URL, kind: str, scope: str, processes: int, each: int) -> None:
    """Start ``processes`` writer processes, release them together, and require exit 0."""
    rendered = url.render_as_string(hide_password=False)
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WRITERS_SCRIPT),
            kind,
            rendered,
            scope,
            str(writer),
            str(each),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for writer in range(processes)
    ]
    try:
        async with asyncio.timeout(PROCESS_DEADLINE_S):
            for child in children:
                assert child.stdout is not None
                line = await child.stdout.readline()
                if line.strip() != b"ready":
                    assert child.stderr is not None
                    stderr = (await child.stderr.read()).decode(errors="replace")
                    raise AssertionError(f"writer did not start: {line!r}\n{stderr}")
            # Every writer is connected and blocked on stdin: release them all at once.
            for child in children:
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                await child.stdin.drain()
            outcomes = [await child.communicate() for child in children]
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    for child, (out, err) in zip(children, outcomes, strict=True):
        assert child.returncode == 0, err.decode(errors="replace")
        assert out.strip() == b"done"


@pytest.mark.slow
@pytest.mark.parametrize("target", list(TARGETS))
async def test_four_processes_append_to_one_scope(db_url: URL, target: str) -> None:
    _, read = TARGETS[target]
    await run_writer_processes(db_url, target, "processes", processes=4, each=400)
    assert_complete(await read(db_url, "processes"), writers=4, each=400)


# --- balances, tokens --------------------------------------------------------------------


@asynccontextmanager
async def agent_databases(url: URL, count: int) -> AsyncIterator[list[SQLAlchemyDatabase]]:
    """``count`` agent databases for the same agent, each on its own engine."""
    async with own_engines(url, count) as engines:
        yield [SQLAlchemyDatabase(engine=engine, agent_name=AGENT) for engine in engines]


def spread(items: Sequence[T], count: int) -> list[T]:
    """``count`` picks cycling through ``items``: tasks spread across engines."""
    return [items[i % len(items)] for i in range(count)]


async def test_concurrent_credits_all_count(db_url: URL) -> None:
    async with agent_databases(db_url, 5) as dbs:
        await dbs[0].upsert_user(User(user_id="alice", available_balance=7))
        balances = await gather_all([db.credit("alice", 1) for db in spread(dbs, 50)])
        assert (await dbs[0].get_user("alice")).available_balance == 57
    # Every credit saw its own increment applied on top of all earlier ones.
    assert sorted(balances) == list(range(8, 58))


async def test_concurrent_debits_never_overdraw(db_url: URL) -> None:
    async with agent_databases(db_url, 5) as dbs:
        await dbs[0].upsert_user(User(user_id="bob", available_balance=60))
        results = await asyncio.gather(
            *(db.debit("bob", 1) for db in spread(dbs, 100)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, InsufficientBalance)]
        succeeded = [r for r in results if isinstance(r, int)]
        assert len(succeeded) == 60, [r for r in results if isinstance(r, BaseException)][:3]
        assert len(refused) == 40
        assert sorted(succeeded) == list(range(60))
        assert (await dbs[0].get_user("bob")).available_balance == 0


async def test_upsert_user_overwrites_like_agentstr(db_url: URL) -> None:
    async with agent_databases(db_url, 1) as (db,):
        await db.credit("carol", 10)
        await db.upsert_user(User(user_id="carol", available_balance=3, current_thread_id="t9"))
        assert await db.get_user("carol") == User(
            user_id="carol", available_balance=3, current_thread_id="t9"
        )
        await db.upsert_user(User(user_id="carol", available_balance=5))
        assert await db.get_user("carol") == User(user_id="carol", available_balance=5)


async def test_concurrent_token_additions_all_count(db_url: URL) -> None:
    async with own_engines(db_url, 5) as engines:
        stores = [
            SQLAlchemyContextStore(engine, project=PROJECT, session_id="tokens")
            for engine in engines
        ]
        await gather_all([store.add_context_tokens(1, 1) for store in spread(stores, 50)])
        assert await stores[0].get_context_tokens() == (50, 50)


# --- first writes racing ---------------------------------------------------------------------

RACERS = 8


async def test_first_messages_of_a_new_thread_race(db_url: URL) -> None:
    async with agent_databases(db_url, RACERS) as dbs:
        added = await gather_all(
            [db.add_message("new-thread", USER, "user", message=str(w)) for w, db in enumerate(dbs)]
        )
        assert sorted(m.idx for m in added) == list(range(RACERS))
        stored = await dbs[0].get_messages("new-thread", USER)
        assert [m.idx for m in stored] == list(range(RACERS))


async def test_first_appends_to_a_new_session_race(db_url: URL) -> None:
    async with own_engines(db_url, RACERS) as engines:
        stores = [
            SQLAlchemyContextStore(engine, project=PROJECT, session_id="new-session")
            for engine in engines
        ]
        await gather_all(
            [
                store.append(ContextMessage(role="user", content=[{"type": "text", "text": "hi"}]))
                for store in stores
            ]
        )
        assert len(await stores[0].get_history()) == RACERS
        (info,) = await stores[0].list_sessions()
        assert (info.session_id, info.message_count, info.preview) == ("new-session", RACERS, "hi")


async def test_first_credits_of_a_new_user_race(db_url: URL) -> None:
    async with agent_databases(db_url, RACERS) as dbs:
        await gather_all([db.credit("newcomer", 2) for db in dbs])
        assert (await dbs[0].get_user("newcomer")).available_balance == 2 * RACERS


async def test_first_current_threads_of_a_new_user_race(db_url: URL) -> None:
    async with agent_databases(db_url, RACERS) as dbs:
        await gather_all([db.set_current_thread_id("fresh", f"t{w}") for w, db in enumerate(dbs)])
        user = await dbs[0].get_user("fresh")
        assert user.available_balance == 0
        assert user.current_thread_id in {f"t{w}" for w in range(RACERS)}


async def test_first_writes_of_every_kind_race_together(db_url: URL) -> None:
    """Credits, thread choices, messages and session appends for the same new names at once."""
    async with own_engines(db_url, RACERS) as engines:
        dbs = [SQLAlchemyDatabase(engine=e, agent_name=AGENT) for e in engines]
        stores = [SQLAlchemyContextStore(e, project=PROJECT, session_id="mixed") for e in engines]
        work: list[Awaitable[Any]] = []
        for w in range(RACERS):
            work.append(dbs[w].credit("mixed-user", 1))
            work.append(dbs[w].set_current_thread_id("mixed-user", "mixed-thread"))
            work.append(dbs[w].add_message("mixed-thread", "mixed-user", "user", message="m"))
            work.append(stores[w].append(ContextMessage(role="user", content=[])))
            work.append(stores[w].add_context_tokens(1, 2))
        await gather_all(work)
        user = await dbs[0].get_user("mixed-user")
        assert (user.available_balance, user.current_thread_id) == (RACERS, "mixed-thread")
        assert len(await dbs[0].get_messages("mixed-thread", "mixed-user")) == RACERS
        assert len(await stores[0].get_history()) == RACERS
        assert await stores[0].get_context_tokens() == (RACERS, 2 * RACERS)


# --- the retry policy ------------------------------------------------------------------------
#
# The façades retry transient conflicts (convostore.sql.runner). These tests make real
# ones — a deadlock, and a lock held past the lock timeout — check that each backend's error
# is recognized as retryable, that a retried call succeeds once the lock goes away, and that
# a conflict that never clears surfaces as a DatabaseError after exactly MAX_ATTEMPTS tries.

# Per backend, a connection setting that makes lock waits give up at once (or nearly).
SHORT_LOCK_WAIT = {
    "sqlite": "PRAGMA busy_timeout = 0",
    "mariadb": "SET SESSION innodb_lock_wait_timeout = 1",  # whole seconds, at least 1
}
# The longest a retry test may take before it counts as hung.
RETRY_DEADLINE_S = 60


class ErrorLog:
    """Every error an engine raised, and an event set by the first one."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.first = asyncio.Event()

    def __call__(self, context: ExceptionContext) -> None:
        self.errors.append(context.sqlalchemy_exception or context.original_exception)
        self.first.set()


def impatient_engine(url: URL, backend: str, log: ErrorLog) -> AsyncEngine:
    """An engine whose lock waits time out quickly, logging every error it raises."""
    if backend == "postgresql":
        # A server setting, not a SET on connect: the pool's reset would roll a SET back.
        engine = create_engine(url, connect_args={"server_settings": {"lock_timeout": "50ms"}})
    elif backend == "pgbouncer":
        # PgBouncer refuses startup parameters and loses session settings: a setting
        # local to each transaction, made as it begins.
        engine = create_engine(url)

        def impatient(conn: Any) -> None:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '50ms'")

        event.listen(engine.sync_engine, "begin", impatient)
    else:
        engine = create_engine(url)

        def configure(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(SHORT_LOCK_WAIT[backend])
            cursor.close()

        event.listen(engine.sync_engine, "connect", configure)
    event.listen(engine.sync_engine, "handle_error", log)
    return engine


@asynccontextmanager
async def session_row_locked(url: URL, session_id: str) -> AsyncIterator[AsyncConnection]:
    """Hold the write lock of a context session's state row (on SQLite: the database's)."""
    admin = create_engine(url, poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            sessions = cast(Table, ContextSessionRecord.__table__)
            c = sessions.c
            await conn.execute(
                update(sessions)
                .where(c.project == PROJECT, c.session_id == session_id)
                .values(input_tokens=c.input_tokens)
            )
            yield conn
            await conn.rollback()
    finally:
        await admin.dispose()


async def test_lock_conflicts_are_retried_until_they_clear(db_url: URL, backend: str) -> None:
    log = ErrorLog()
    engine = impatient_engine(db_url, backend, log)
    store = SQLAlchemyContextStore(engine, project=PROJECT, session_id="retried")
    try:
        await store.append(ContextMessage(role="user"))
        async with asyncio.timeout(RETRY_DEADLINE_S):
            async with session_row_locked(db_url, "retried") as lock:
                pending = asyncio.create_task(store.append(ContextMessage(role="assistant")))
                await log.first.wait()
                await lock.rollback()
            await pending
        assert [m.role for m in await store.get_history()] == ["user", "assistant"]
    finally:
        await engine.dispose()
    assert 1 <= len(log.errors) < MAX_ATTEMPTS
    assert all(is_retryable(error) for error in log.errors), log.errors


async def test_lock_conflicts_that_never_clear_surface_after_max_attempts(
    db_url: URL, backend: str
) -> None:
    if backend == "mariadb":
        pytest.skip("innodb_lock_wait_timeout is at least 1 s: 8 attempts would take 8 s")
    log = ErrorLog()
    engine = impatient_engine(db_url, backend, log)
    store = SQLAlchemyContextStore(engine, project=PROJECT, session_id="stuck")
    try:
        await store.append(ContextMessage(role="user"))
        async with asyncio.timeout(RETRY_DEADLINE_S), session_row_locked(db_url, "stuck"):
            with pytest.raises(DatabaseError) as caught:
                await store.append(ContextMessage(role="assistant"))
        assert len(await store.get_history()) == 1
    finally:
        await engine.dispose()
    assert len(log.errors) == MAX_ATTEMPTS
    assert all(is_retryable(error) for error in log.errors), log.errors
    assert isinstance(caught.value.__cause__, BaseException)
    assert is_retryable(caught.value.__cause__)


async def provoke_deadlock(url: URL) -> BaseException:
    """Make two transactions lock two rows in opposite orders; return the loser's error."""
    engine = create_engine(url, pool_size=2, max_overflow=0)
    db = SQLAlchemyDatabase(engine=engine, agent_name=AGENT)
    await db.upsert_user(User(user_id="left"))
    await db.upsert_user(User(user_id="right"))
    users = cast(Table, UserRecord.__table__)

    def bump(user_id: str) -> Update:
        return (
            update(users)
            .where(users.c.agent_name == AGENT, users.c.user_id == user_id)
            .values(available_balance=users.c.available_balance + 1)
        )

    async def transaction(
        mine: str, theirs: str, locked: asyncio.Event, other: asyncio.Event
    ) -> None:
        async with engine.begin() as conn:
            await conn.execute(bump(mine))
            locked.set()
            await other.wait()
            await conn.execute(bump(theirs))

    first, second = asyncio.Event(), asyncio.Event()
    try:
        results = await asyncio.gather(
            transaction("left", "right", first, second),
            transaction("right", "left", second, first),
            return_exceptions=True,
        )
    finally:
        await engine.dispose()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    return errors[0]


async def test_deadlocks_are_retryable(db_url: URL, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has one write lock per database: writers queue, they cannot deadlock")
    assert is_retryable(await provoke_deadlock(db_url))
