"""Many tasks, threads and processes opening one new database at once: all succeed, none lose.

Each test starts from a database that has never been migrated (a new SQLite file, or on
the servers an empty database of its own with ``migrate=True``), opens it from several
places at the same moment, writes through every one of them, and counts every row.
Before the fix, tasks of one process ran Alembic at the same time and broke its
process-wide state: 4 of 5 first appends failed with ``KeyError('script')``; threads
failed the same way. (Processes were already safe: each has its own Alembic, and the
migration lock orders them; they are here so the three kinds stay tested together.)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import threading
from pathlib import Path

import pytest
from sqlalchemy import URL

from convostore import ContextMessage, Database, SQLAlchemyContextStore, connect, migrate
from tests.backends.first_use_worker import MESSAGES as WORKER_MESSAGES
from tests.backends.first_use_worker import SESSIONS, write_sessions

WRITERS = 5
MESSAGES = 4
PROCESSES = 3
JOIN_TIMEOUT_S = 120


@pytest.fixture
def new_database(backend: str, fresh_server_database: URL | None, tmp_path: Path) -> URL:
    """A database nothing has migrated: a new SQLite file, or an empty server database."""
    if fresh_server_database is not None:
        return fresh_server_database
    return URL.create("sqlite+aiosqlite", database=str(tmp_path / "new.db"))


def migrate_flag(url: URL) -> bool | None:
    # SQLite migrates itself; a server database only when told to.
    return None if url.get_backend_name() == "sqlite" else True


def message(text: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text}])


async def count_context(url: URL, sessions: list[str]) -> dict[str, int]:
    engine = await connect(url)
    try:
        counts = {}
        for session_id in sessions:
            store = SQLAlchemyContextStore(engine, session_id=session_id, project="p")
            counts[session_id] = len(await store.get_history())
        return counts
    finally:
        await engine.dispose()


async def test_tasks_each_with_their_own_engine(new_database: URL) -> None:
    stores = [
        SQLAlchemyContextStore(
            url=new_database, session_id=f"s{i}", project="p", migrate=migrate_flag(new_database)
        )
        for i in range(WRITERS)
    ]
    try:
        await asyncio.gather(
            *(
                store.append_many([message(f"{i}.{n}") for n in range(MESSAGES)])
                for i, store in enumerate(stores)
            )
        )
    finally:
        for store in stores:
            await store.close()
    counts = await count_context(new_database, [f"s{i}" for i in range(WRITERS)])
    assert counts == {f"s{i}": MESSAGES for i in range(WRITERS)}


async def test_tasks_sharing_one_engine_and_databases(new_database: URL) -> None:
    flag = migrate_flag(new_database)
    url = new_database.render_as_string(hide_password=False)
    databases = [Database(url, agent_name="bot", migrate=flag) for _ in range(WRITERS)]
    try:

        async def one(i: int) -> None:
            for n in range(MESSAGES):
                await databases[i].add_message(f"t{i}", "u", "user", message=f"{i}.{n}")

        await asyncio.gather(*(one(i) for i in range(WRITERS)))
        for i in range(WRITERS):
            assert len(await databases[0].get_messages(f"t{i}", "u")) == MESSAGES
    finally:
        for db in databases:
            await db.close()


def test_threads_each_with_their_own_event_loop(new_database: URL) -> None:
    flag = migrate_flag(new_database)
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        async def write() -> None:
            store = SQLAlchemyContextStore(
                url=new_database, session_id=f"s{i}", project="p", migrate=flag
            )
            try:
                barrier.wait()
                for n in range(MESSAGES):
                    await store.append(message(f"{i}.{n}"))
            finally:
                await store.close()

        try:
            asyncio.run(write())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, [repr(e) for e in errors]
    counts = asyncio.run(count_context(new_database, [f"s{i}" for i in range(WRITERS)]))
    assert counts == {f"s{i}": MESSAGES for i in range(WRITERS)}


def test_threads_first_using_one_engine_each_with_their_own_loop(new_database: URL) -> None:
    """One store, so one engine, used for the first time from several threads at once, each
    with its own event loop (the OpenAI Agents SDK's cross-loop session test does this).
    Before the fix one thread hung: an engine's first connection is guarded by SQLAlchemy
    with an asyncio lock of the first loop's, which other loops cannot wait on."""
    store = SQLAlchemyContextStore(
        url=new_database, session_id="shared", project="p", migrate=migrate_flag(new_database)
    )
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        async def write() -> None:
            barrier.wait()
            # A guard, far above the deadline-free first use: a hang fails, not blocks.
            async with asyncio.timeout(JOIN_TIMEOUT_S / 2):
                await store.append(message(f"{i}"))

        try:
            asyncio.run(write())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, [repr(e) for e in errors]

    async def stored() -> list[int]:
        try:
            return [m.position for m in await store.get_messages()]
        finally:
            await store.close()

    assert asyncio.run(stored()) == list(range(WRITERS))


def test_threads_migrating_different_files_at_once(tmp_path: Path) -> None:
    """Alembic's process-wide state is shared even between unrelated databases."""
    urls = [URL.create("sqlite+aiosqlite", database=str(tmp_path / f"{i}.db")) for i in range(4)]
    barrier = threading.Barrier(len(urls))
    errors: list[BaseException] = []

    def run(url: URL) -> None:
        async def upgrade() -> None:
            barrier.wait()
            await migrate.upgrade(url)

        try:
            asyncio.run(upgrade())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not errors, [repr(e) for e in errors]
    for url in urls:
        assert asyncio.run(migrate.current(url)) == migrate.head()


@pytest.mark.slow
def test_processes_with_tasks_inside(new_database: URL) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results: multiprocessing.Queue[str] = ctx.Queue()
    url = new_database.render_as_string(hide_password=False)
    processes = [
        ctx.Process(
            target=write_sessions,
            args=(url, f"w{p}", migrate_flag(new_database), barrier, results),
        )
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=JOIN_TIMEOUT_S) for _ in processes]
    except queue.Empty:
        pytest.fail("a process neither finished nor reported within the time limit")
    finally:
        for process in processes:
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    assert outcomes == ["ok"] * PROCESSES, "\n".join(outcomes)
    sessions = [f"w{p}-{s}" for p in range(PROCESSES) for s in range(SESSIONS)]
    counts = asyncio.run(count_context(new_database, sessions))
    assert counts == dict.fromkeys(sessions, WORKER_MESSAGES)
