"""Group commit, on every backend: concurrent appends of one engine share transactions.

Each test proves what a caller of ``append`` / ``add_message`` must still be able to count
on when its message was written together with others': its own position, its own error,
nothing of it stored when it was cancelled before its batch was taken, and every other
caller's message stored whatever happened to one of them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    ContextMessage,
    DeadlineExceeded,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    ValidationError,
    create_engine,
    migrate,
)
from convostore.rules import INT64_MAX
from convostore.sql.group_commit import committer_loops
from tests.conftest import WITH_PGBOUNCER, require_backend, selected_backend

# Through PgBouncer too: batches are transactions like any other there.
backend = pytest.fixture(params=WITH_PGBOUNCER)(selected_backend)

# The first caller writes at once; the others wait in the queue, the last of them surely.
CALLERS = 12
POISONED = LAST = CALLERS - 1


def message(text_: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text_}])


@contextmanager
def batch_inserts(engine: AsyncEngine, table: str) -> Iterator[list[int]]:
    """The row counts of the INSERTs into ``table`` issued meanwhile (executemany, or one
    multi-row VALUES statement)."""
    sizes: list[int] = []

    def hook(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not statement.startswith(f"INSERT INTO {table} "):
            return
        if many:
            sizes.append(len(parameters))
        elif ") VALUES (" in statement:
            # SQLite: one multi-row INSERT ... VALUES (...), (...) (dml.insert_rows).
            sizes.append(statement.count("), (") + 1)

    event.listen(engine.sync_engine, "before_cursor_execute", hook)
    try:
        yield sizes
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", hook)


async def prepared(engine: AsyncEngine) -> AsyncEngine:
    await migrate.prepare(engine)
    return engine


async def test_concurrent_appends_share_transactions_and_keep_every_order(
    engine: AsyncEngine,
) -> None:
    await prepared(engine)
    sessions, rounds = 32, 15
    stores = [
        SQLAlchemyContextStore(engine, session_id=f"s{i}", project="/gc") for i in range(sessions)
    ]

    async def writer(store: SQLAlchemyContextStore) -> list[int]:
        return [
            (await store.append(message(f"{store.session_id}-{r}"))).position for r in range(rounds)
        ]

    with batch_inserts(engine, "context_messages") as sizes:
        returned = await asyncio.gather(*(writer(s) for s in stores))
    assert max(sizes, default=0) > 1, "no two appends were ever committed together"
    for store, positions in zip(stores, returned, strict=True):
        assert positions == list(range(rounds))
        history = await store.get_messages()
        assert [m.position for m in history] == list(range(rounds))
        assert [m.content[0]["text"] for m in history] == [
            f"{store.session_id}-{r}" for r in range(rounds)
        ]
    listed = await stores[0].list_sessions()
    assert sorted(info.message_count for info in listed) == [rounds] * sessions
    assert {info.preview for info in listed} == {f"s{i}-0" for i in range(sessions)}


async def test_many_writers_to_one_session_stay_gap_free(engine: AsyncEngine) -> None:
    await prepared(engine)
    stores = [SQLAlchemyContextStore(engine, session_id="one", project="/gc") for _ in range(16)]

    async def writer(index: int, store: SQLAlchemyContextStore) -> list[int]:
        return [(await store.append(message(f"{index}-{r}"))).position for r in range(10)]

    returned = await asyncio.gather(*(writer(i, s) for i, s in enumerate(stores)))
    positions = sorted(p for ps in returned for p in ps)
    assert positions == list(range(160))
    history = await stores[0].get_messages()
    by_position = {m.position: m.content[0]["text"] for m in history}
    for index, mine in enumerate(returned):
        # Each writer's messages sit where it was told, in the order it wrote them.
        assert [by_position[p] for p in mine] == [f"{index}-{r}" for r in range(10)]


async def test_a_failing_message_gets_its_error_and_the_others_are_stored(
    engine: AsyncEngine,
) -> None:
    await prepared(engine)
    stores = [SQLAlchemyContextStore(engine, session_id=f"s{i}", project="/gc") for i in range(12)]
    for store in stores:
        await store.append(message("first"))
    # One session's counter is at the end of BIGINT: its next append cannot be stored.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE context_tokens SET next_position = :top "
                f"WHERE project = '/gc' AND session_id = 's{POISONED}'"
            ),
            {"top": INT64_MAX},
        )
    with batch_inserts(engine, "context_tokens") as sizes:
        results = await asyncio.gather(
            *(s.append(message("second")) for s in stores), return_exceptions=True
        )
    assert max(sizes, default=0) > 1, "the appends were never batched"
    for index, (store, result) in enumerate(zip(stores, results, strict=True)):
        if index == POISONED:
            assert isinstance(result, ValidationError), result
            assert [m.content for m in await store.get_history()] == [message("first").content]
        else:
            assert not isinstance(result, BaseException), result
            assert result.position == 1
            assert len(await store.get_history()) == 2


async def test_a_caller_cancelled_while_queued_stores_nothing(engine: AsyncEngine) -> None:
    await prepared(engine)
    stores = [
        SQLAlchemyContextStore(engine, session_id=f"s{i}", project="/gc") for i in range(CALLERS)
    ]
    tasks = [asyncio.create_task(s.append(message("hi"))) for s in stores]
    await asyncio.sleep(0)  # the first is being written; the others wait in the queue
    tasks[4].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[4], asyncio.CancelledError)
    assert await stores[4].get_history() == []
    for index, store in enumerate(stores):
        if index != 4:
            assert len(await store.get_history()) == 1


async def test_a_caller_cancelled_mid_batch_leaves_the_batch_whole(engine: AsyncEngine) -> None:
    await prepared(engine)
    stores = [
        SQLAlchemyContextStore(engine, session_id=f"s{i}", project="/gc") for i in range(CALLERS)
    ]
    tasks: list[asyncio.Task[Any]] = []

    def cancel_one(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        # The batch is being written: its INSERT is on its way to the database.
        # An executemany, or SQLite's one multi-row INSERT ... VALUES.
        batch = many or "), (" in statement
        if statement.startswith("INSERT INTO context_messages ") and batch and tasks:
            tasks[LAST].cancel()

    event.listen(engine.sync_engine, "before_cursor_execute", cancel_one)
    try:
        tasks.extend(asyncio.create_task(s.append(message("hi"))) for s in stores)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", cancel_one)
    # The cancelled caller sees CancelledError; its message, already in the batch, was
    # committed with the others (as when a cancellation lands during COMMIT).
    assert isinstance(results[LAST], asyncio.CancelledError)
    for index, store in enumerate(stores):
        assert len(await store.get_history()) == 1, index
        if index != LAST:
            assert not isinstance(results[index], BaseException)


async def test_concurrent_add_message_shares_transactions(engine: AsyncEngine) -> None:
    await prepared(engine)
    dbs = [SQLAlchemyDatabase(engine=engine, agent_name=f"agent-{i % 3}") for i in range(24)]

    async def writer(index: int, db: SQLAlchemyDatabase) -> list[int]:
        return [
            (await db.add_message(f"t{index}", f"u{index}", "user", message=f"{index}-{r}")).idx
            for r in range(8)
        ]

    with batch_inserts(engine, "messages") as sizes:
        returned = await asyncio.gather(*(writer(i, db) for i, db in enumerate(dbs)))
    assert max(sizes, default=0) > 1, "no two messages were ever committed together"
    for index, (db, idxs) in enumerate(zip(dbs, returned, strict=True)):
        assert idxs == list(range(8))
        stored = await db.get_messages(f"t{index}", f"u{index}")
        assert [m.message for m in stored] == [f"{index}-{r}" for r in range(8)]
        [thread] = await db.list_threads(f"u{index}")
        assert thread.message_count == 8


def test_one_engine_serves_several_event_loops_at_once(db_url: Any, backend: str) -> None:
    """Threads, each with its own event loop, append concurrently through one engine: each
    loop gets its own committer, every append is stored once, and every thread ends."""
    threads_n, sessions, rounds = 3, 4, 6
    engine = create_engine(db_url)
    asyncio.run(prepared(engine))
    start = threading.Barrier(threads_n)

    async def one_loop(index: int) -> list[list[int]]:
        stores = [
            SQLAlchemyContextStore(engine, session_id=f"t{index}-s{i}", project="/loops")
            for i in range(sessions)
        ]
        db = SQLAlchemyDatabase(engine=engine, agent_name=f"loop-{index}")

        async def writer(store: SQLAlchemyContextStore) -> list[int]:
            positions = []
            for r in range(rounds):
                positions.append((await store.append(message(f"{r}"))).position)
                await db.add_message(store.session_id, "u", "user", message=f"{r}")
            return positions

        start.wait()
        return await asyncio.gather(*(writer(s) for s in stores))

    with concurrent.futures.ThreadPoolExecutor(threads_n) as pool:
        futures = [pool.submit(asyncio.run, one_loop(i)) for i in range(threads_n)]
        results = [f.result(timeout=120) for f in futures]

    async def audit() -> None:
        for index, per_store in enumerate(results):
            assert per_store == [list(range(rounds))] * sessions
            for i in range(sessions):
                store = SQLAlchemyContextStore(
                    engine, session_id=f"t{index}-s{i}", project="/loops"
                )
                assert [m.position for m in await store.get_messages()] == list(range(rounds))
                db = SQLAlchemyDatabase(engine=engine, agent_name=f"loop-{index}")
                stored = await db.get_messages(f"t{index}-s{i}", "u")
                assert [m.idx for m in stored] == list(range(rounds))
        await engine.dispose()

    asyncio.run(audit())


@pytest.mark.sqlite
async def test_queued_callers_end_by_their_deadline_behind_a_blocked_writer(
    request: pytest.FixtureRequest, sqlite_file: Path
) -> None:
    """SQLite's single writer is taken by another process's transaction: the caller
    writing alone and the eleven queued behind it all end by their deadline (the queue
    wait counts), and nothing is stored."""
    require_backend(request.config, "sqlite")
    deadline, slack = 1.0, 1.5  # slack: scheduling on a loaded machine, see test_lost_replies
    engine = create_engine(f"sqlite+aiosqlite:///{sqlite_file}", deadline=deadline)
    stores = [
        SQLAlchemyContextStore(engine, session_id=f"s{i}", project="/gc") for i in range(CALLERS)
    ]
    await prepared(engine)
    await stores[0].append(message("before"))
    blocker = sqlite3.connect(sqlite_file, isolation_level=None)
    loop = asyncio.get_running_loop()

    async def timed(store: SQLAlchemyContextStore) -> tuple[Exception | None, float]:
        started = loop.time()
        try:
            await store.append(message("blocked"))
        except Exception as exc:
            return exc, loop.time() - started
        return None, loop.time() - started

    try:
        blocker.execute("BEGIN IMMEDIATE")
        outcomes = await asyncio.gather(*(timed(s) for s in stores))
        blocker.execute("ROLLBACK")
        for error, elapsed in outcomes:
            assert isinstance(error, DeadlineExceeded), repr(error)
            assert elapsed <= deadline + slack, elapsed
        assert [len(await s.get_history()) for s in stores] == [1] + [0] * (CALLERS - 1)
    finally:
        blocker.close()
        await engine.dispose()


async def _write_together(engine: AsyncEngine) -> None:
    """Concurrent appends and add_messages, so that committers (and on SQLite the
    writer) exist for ``engine`` on the running loop."""
    stores = [SQLAlchemyContextStore(engine, session_id=f"s{i}", project="/gc") for i in range(4)]
    db = SQLAlchemyDatabase(engine=engine, agent_name="gc")
    await asyncio.gather(
        *(store.append(message(f"{r}")) for store in stores for r in range(3)),
        *(db.add_message(f"t{i}", "u", "user", message=f"{i}") for i in range(8)),
    )
    assert committer_loops(engine) == 1


async def test_a_disposed_engine_that_is_dropped_is_collected(db_url: Any, backend: str) -> None:
    """Nothing of convostore's keeps an engine alive: its committers and its SQLite writer
    belong to it, so once disposed and dropped it is garbage like any other object, while
    the loop that used it runs on (an app making an engine per tenant or per job)."""

    async def use() -> weakref.ref[AsyncEngine]:
        engine = await prepared(create_engine(db_url))
        await _write_together(engine)
        await engine.dispose()
        return weakref.ref(engine)

    engine = await use()
    gc.collect()
    assert engine() is None, [type(r) for r in gc.get_referrers(engine())]


def test_the_committers_of_a_closed_loop_go_with_it(db_url: Any, backend: str) -> None:
    """An engine that outlives several loops (asyncio.run per request, a sync wrapper's
    loop restarted) keeps no committer of a closed loop, nor the loop itself."""
    engine = create_engine(db_url)
    asyncio.run(prepared(engine))
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one_request() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await _write_together(engine)

    for _ in range(3):
        asyncio.run(one_request())
    gc.collect()
    if backend == "sqlite":
        # Nothing holds a closed loop, the writer thread included. (On a server, the
        # pool's idle driver connections hold the loop they were opened on until they
        # are recycled: that is the pool's, not the committers'.)
        assert [loop() for loop in loops] == [None] * 3

    async def after() -> int:
        served = committer_loops(engine)
        await engine.dispose()
        return served

    assert asyncio.run(after()) == 0
