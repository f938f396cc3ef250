"""convostore.sql.sqlite_writer: SQLite's owned write transactions on one thread per file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from convostore import (
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    connect,
    create_engine,
)
from convostore.errors import ConflictError, DeadlineExceeded
from convostore.sql import sqlite_writer
from convostore.sql.dml import Executor
from convostore.sql.engine import Engine
from convostore.sql.profile import replace_profile
from convostore.sql.sqlite_writer import writer_for
from convostore.sql.tables import SEARCH_STATE_TABLE, SEARCH_TABLE_PREFIXES

_NOW = datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same timestamps on every engine, so rows compare byte for byte.
    for module in ("convostore.context", "convostore.database"):
        monkeypatch.setattr(f"{module}.utc_now", lambda: _NOW)
    monkeypatch.setattr("convostore.context.uuid4", lambda: uuid.UUID(int=7))


def _writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("convostore-writer")]


async def _workload(engine: Engine) -> None:
    store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
    db = SQLAlchemyDatabase(engine=engine, agent_name="agent")
    big = [{"type": "text", "text": "lorem ipsum dolor " * 80}]
    for i in range(4):
        short = [{"type": "text", "text": f"m {i}"}]
        await store.append(ContextMessage(role="user", content=short))
        await store.append(ContextMessage(role="assistant", content=big))
    await store.append(ContextMessage(role="user", content=big), client_id="c-1")
    await store.append_many(
        [ContextMessage(role="user", content=[{"type": "text", "text": "one"}])] * 3
    )
    await asyncio.gather(
        *(
            store.with_session(f"g{i}").append(
                ContextMessage(role="user", content=[{"type": "text", "text": f"g {i}"}])
            )
            for i in range(20)
        )
    )
    await store.add_context_tokens(3, 4)
    forked = await store.fork(at=5)
    await forked.pop()
    await store.with_session("g1").replace_history(
        [ContextMessage(role="user", content=[{"type": "text", "text": "new"}])]
    )
    await store.with_session("g2").clear()
    await db.credit("u", 10)
    await db.debit("u", 3)
    for i in range(3):
        await db.add_message("t", "u", "user", message=f"hello {i}", content="x" * 600)
    await db.add_message("t", "u", "user", message="keyed", client_id="k")
    await db.set_current_thread_id("u", "t")


def _dump(path: Path, *, rowids: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    # Every table's rows as stored (bytes included), the search index's tables too.
    connection = sqlite3.connect(path)
    try:
        names = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " AND name != 'alembic_version' ORDER BY name"
            )
        ]
        dump = {}
        for name in names:
            if name.startswith(SEARCH_TABLE_PREFIXES) or name == SEARCH_STATE_TABLE:
                # Not written by the appends since migration 0007: the index catches up
                # later, in batches that depend on timing (compared by its hits instead).
                continue
            columns = "rowid, *" if rowids and _has_rowid(connection, name) else "*"
            dump[name] = sorted(
                connection.execute(f'SELECT {columns} FROM "{name}"').fetchall(), key=repr
            )
        return dump
    finally:
        connection.close()


def _has_rowid(connection: sqlite3.Connection, name: str) -> bool:
    try:
        connection.execute(f'SELECT rowid FROM "{name}" LIMIT 0')
    except sqlite3.OperationalError:
        return False
    return True


async def test_precompiled_statements_write_what_core_writes(
    tmp_path: Path, fixed_now: None
) -> None:
    # Three engines, one workload: the writer with precompiled hot statements, the writer
    # with every statement through Core, and no writer at all (the async engine).
    paths = {name: tmp_path / f"{name}.db" for name in ("precompiled", "core", "async")}
    engines = {
        "precompiled": await connect(paths["precompiled"]),
        "core": await connect(paths["core"]),
        "async": await connect(f"sqlite+aiosqlite:///{paths['async']}?sqlite_writer=false"),
    }
    replace_profile(engines["core"], sqlite_precompile=False)
    try:
        for engine in engines.values():
            await _workload(engine)
        writer = writer_for(engines["precompiled"])
        assert writer is not None
        # The hot statements (append, add_message, credit) did run precompiled.
        assert sum(plan is not None for plan in writer._plans.values()) >= 3
        assert writer_for(engines["async"]) is None
        found = []
        for engine in engines.values():
            hits = await SQLAlchemyContextStore(engine, project="/p").search("g*", limit=100)
            found.append([(h.session_id, h.message.position, h.rank) for h in hits])
        assert found[0] == found[1] == found[2]
        assert found[0]
    finally:
        for engine in engines.values():
            await engine.dispose()
    # Without rowids: how many concurrent appends join one group commit (and so the order
    # in which rows get their rowids) depends on timing, on every path.
    dumps = {name: _dump(path, rowids=False) for name, path in paths.items()}
    assert dumps["precompiled"]["context_messages"], "the workload wrote nothing"
    for name in dumps["core"]:
        assert dumps["precompiled"][name] == dumps["core"][name] == dumps["async"][name], name


async def test_writes_run_on_the_writer_thread_and_dispose_stops_it(tmp_path: Path) -> None:
    engine = await connect(tmp_path / "w.db")
    other = create_engine(str(tmp_path / "w.db"))
    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        message = ContextMessage(role="user", content=[{"type": "text", "text": "hi"}])
        await store.append(message)
        # One thread per file: a second engine on the same file shares it.
        await SQLAlchemyContextStore(other, project="/p", session_id="s").append(message)
        assert len(_writer_threads()) == 1
        await engine.dispose()
        assert len(_writer_threads()) == 1  # still used by the other engine
        await other.dispose()
        assert _writer_threads() == []
        # Used again after dispose(), the engine opens a new writer.
        await store.append(message)
        assert len(await store.get_history()) == 3
        assert len(_writer_threads()) == 1
    finally:
        await engine.dispose()
        await other.dispose()
    assert _writer_threads() == []


async def test_execution_hooks_keep_the_writes_on_the_engine(tmp_path: Path) -> None:
    engine = await connect(tmp_path / "h.db")
    seen: list[str] = []

    def hook(*args: Any) -> None:
        seen.append(args[2])

    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        message = ContextMessage(role="user", content=[{"type": "text", "text": "hi"}])
        await store.append(message)
        assert seen == []
        writer = writer_for(engine)
        assert writer is not None
        assert not writer.observed()
        event.listen(engine.sync_engine, "before_cursor_execute", hook)
        assert writer.observed()
        # The hook sees every statement of a write while it is there.
        await store.append(message)
        assert any(sql.startswith("INSERT INTO context_messages") for sql in seen)
        event.remove(engine.sync_engine, "before_cursor_execute", hook)
        assert not writer.observed()
        seen.clear()
        await store.append(message)
        assert seen == []
        assert len(await store.get_history()) == 3
    finally:
        await engine.dispose()


async def test_memory_and_switched_off_engines_have_no_writer(tmp_path: Path) -> None:
    for engine in (
        create_engine("sqlite+aiosqlite:///:memory:"),
        create_engine(str(tmp_path / "off.db"), sqlite_writer=False),
        create_engine(f"sqlite+aiosqlite:///{tmp_path / 'off2.db'}?sqlite_writer=off"),
    ):
        assert writer_for(engine) is None
        await engine.dispose()
    engine = create_engine(str(tmp_path / "on.db"))
    assert writer_for(engine) is not None
    await engine.dispose()


async def test_errors_are_typed_and_the_writer_goes_on(tmp_path: Path) -> None:
    engine = await connect(tmp_path / "e.db")
    try:
        writer = writer_for(engine)
        assert writer is not None

        async def create(executor: Executor) -> None:
            await executor.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))

        async def duplicate(executor: Executor) -> None:
            await executor.execute(text("INSERT INTO t VALUES (1)"))
            await executor.execute(text("INSERT INTO t VALUES (1)"))

        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        await store._runner.run(create)
        with pytest.raises(ConflictError):
            await store._runner.run(duplicate)
        message = ContextMessage(role="user", content=[{"type": "text", "text": "hi"}])
        assert (await store.append(message)).position == 0
        connection = sqlite3.connect(tmp_path / "e.db")
        try:
            # Rolled back whole: the first insert too.
            assert connection.execute("SELECT count(*) FROM t").fetchone() == (0,)
        finally:
            connection.close()
    finally:
        await engine.dispose()


async def test_a_unit_of_precompiled_statements_commits_or_rolls_back_whole(
    tmp_path: Path,
) -> None:
    # Such a unit (an append) commits on the driver, without SQLAlchemy's transaction; a
    # unit that also runs a Core statement commits through SQLAlchemy. Either way a
    # failure after the statements leaves nothing.
    from convostore.sql.repositories.sessions import SessionRepository

    engine = await connect(tmp_path / "u.db")
    codec_message = ContextMessage(role="user", content=[{"type": "text", "text": "hi"}])
    from convostore.models import encoded_context_messages

    ((_checked, data),) = encoded_context_messages([codec_message], feed=False)

    def appending(then: str) -> Any:
        async def work(executor: Executor) -> int:
            repo = SessionRepository(executor, "/p", "s")
            position = await repo._append_ending([("user", data)], _NOW, None, [None])
            if then == "core":
                await executor.execute(text("SELECT 1"))
            if then == "fail":
                raise ValueError("after the statements")
            return position

        return work

    def count() -> int:
        connection = sqlite3.connect(tmp_path / "u.db")
        try:
            return int(connection.execute("SELECT count(*) FROM context_messages").fetchone()[0])
        finally:
            connection.close()

    try:
        writer = writer_for(engine)
        assert writer is not None
        assert await writer.run(appending("precompiled")) == 0
        assert count() == 1
        with pytest.raises(ValueError, match="after the statements"):
            await writer.run(appending("fail"))
        assert count() == 1
        assert await writer.run(appending("core")) == 1
        assert count() == 2
        # Precompiled it was (the plans hold the append's statements).
        assert sum(plan is not None for plan in writer._plans.values()) >= 2
    finally:
        await engine.dispose()


_FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"


async def test_a_deadline_interrupts_the_running_unit_and_drops_queued_ones(
    tmp_path: Path,
) -> None:
    await (await connect(tmp_path / "d.db")).dispose()  # migrated
    # Long enough for the steps below on a loaded machine; the test waits on events,
    # not on this clock, except for the deadline that ends the running unit.
    engine = create_engine(str(tmp_path / "d.db"), deadline=1.0)
    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        ran: list[str] = []

        async def forever(executor: Executor) -> None:
            ran.append("forever")
            await executor.execute(text(_FOREVER))

        async def queued(executor: Executor) -> None:
            ran.append("queued")

        writer = writer_for(engine)
        assert writer is not None
        running = asyncio.create_task(store._runner.run(forever))
        # Until the writer thread runs it (a sleep of 50 ms was not always enough on a
        # loaded machine: then "queued" ran first).
        for _ in range(100_000):
            if ran:
                break
            await asyncio.sleep(0.001)
        assert ran == ["forever"]
        waiting = asyncio.create_task(writer.run(queued))
        await asyncio.sleep(0)  # one step: it is on the writer's queue, behind "forever"
        waiting.cancel()
        with pytest.raises(DeadlineExceeded):
            await running
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # The interrupted unit rolled back and the thread is free at once.
        message = ContextMessage(role="user", content=[{"type": "text", "text": "hi"}])
        assert (await store.append(message)).position == 0
        assert ran == ["forever"]
    finally:
        await engine.dispose()


def test_drive_refuses_a_unit_that_suspends() -> None:
    async def suspends() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited"):
        sqlite_writer.drive(suspends())


async def test_lock_conflicts_on_the_writer_are_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.db"
    await (await connect(path)).dispose()
    engine = create_engine(str(path))

    def no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        # A connect hook: it runs on the writer's connection too.
        dbapi_connection.execute("PRAGMA busy_timeout = 0")

    event.listen(engine.sync_engine, "connect", no_busy_wait)
    retried = asyncio.Event()
    monkeypatch.setattr("convostore.sql.runner.note_retry", retried.set)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        store = SQLAlchemyContextStore(engine, project="/p", session_id="s")
        message = ContextMessage(role="user", content=[{"type": "text", "text": "hi"}])
        await store.append(message)
        blocker.execute("BEGIN IMMEDIATE")
        pending = asyncio.create_task(store.append(message))
        async with asyncio.timeout(10):
            await retried.wait()
        blocker.execute("ROLLBACK")
        assert (await pending).position == 1
        writer = writer_for(engine)
        assert writer is not None
        assert not writer.observed()
    finally:
        blocker.close()
        await engine.dispose()


def test_only_statements_with_fixed_sql_and_plain_results_are_precompiled() -> None:
    from sqlalchemy import bindparam, column, literal, select, table
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    from convostore.sql.precompiled import compile_hot
    from convostore.sql.tables import ContextMessageRecord

    dialect = SQLiteDialect_pysqlite()
    messages: Any = ContextMessageRecord.__table__
    counters = table("t", column("k"), column("n"))
    plain = select(counters.c.n - literal(1)).where(counters.c.k == bindparam("k"))
    compiled = compile_hot(plain, dialect)
    assert compiled is not None
    # The literal is bound once; the named parameter per call.
    assert compiled.parameters({"k": "a"}) == (1, "a")
    # Rows that need result processing (datetimes, payloads), expanding IN: through Core.
    assert compile_hot(select(messages.c.created_at), dialect) is None
    assert compile_hot(select(messages.c.content), dialect) is None
    expanding = select(counters.c.n).where(counters.c.k.in_(bindparam("ks", expanding=True)))
    assert compile_hot(expanding, dialect) is None


def test_a_unit_converts_a_bound_datetime_once_and_binds_what_core_binds() -> None:
    from sqlalchemy import bindparam, insert
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    from convostore.sql.precompiled import Memo, compile_hot
    from convostore.sql.tables import ContextMessageRecord

    dialect = SQLiteDialect_pysqlite()
    messages: Any = ContextMessageRecord.__table__
    names = ("project", "session_id", "position", "role", "content", "created_at")
    stmt = insert(messages).values(
        {name: bindparam(name, type_=messages.c[name].type) for name in names}
    )
    plan = compile_hot(stmt, dialect)
    assert plan is not None
    calls: list[datetime] = []
    binds: list[Any] = []
    for name, process, fixed, constant in plan.binds:
        if name == "created_at":
            assert process is not None

            def counting(value: Any, process: Any = process) -> Any:
                calls.append(value)
                return process(value)

            binds.append((name, counting, fixed, constant))
        else:
            binds.append((name, process, fixed, constant))
    plan.binds = tuple(binds)
    from convostore.codec import encoded

    values = {
        "project": "/p",
        "session_id": "s",
        "position": 0,
        "role": "user",
        "content": encoded([{"type": "text", "text": "hi"}]),
        "created_at": _NOW,
    }
    memo: Memo = {}
    first = plan.parameters(values, memo)
    # Bound again in the same unit (another statement, an equal but distinct datetime).
    again = plan.parameters({**values, "position": 1}, memo)
    other = plan.parameters({**values, "created_at": _NOW.replace()}, memo)
    assert calls == [_NOW, _NOW]
    assert calls[0] is not calls[1]
    # What Core binds for the same values.
    compiled = stmt.compile(dialect=dialect)
    core = compiled.construct_params(values)
    expected = tuple(
        messages.c[name].type._cached_bind_processor(dialect)(core[name])
        if messages.c[name].type._cached_bind_processor(dialect)
        else core[name]
        for name in compiled.positiontup or ()
    )
    assert first == expected == plan.parameters(values) == other
    assert again[names.index("position")] == 1


def test_columns_of_the_same_type_share_one_processor_so_the_memo_finds_them() -> None:
    from sqlalchemy import bindparam, update
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    from convostore.sql.precompiled import Memo, compile_hot
    from convostore.sql.tables import ContextSessionRecord

    dialect = SQLiteDialect_pysqlite()
    sessions: Any = ContextSessionRecord.__table__
    names = ("created_at", "updated_at")
    stmt = (
        update(sessions)
        .where(sessions.c.project == bindparam("project"))
        .where(sessions.c.session_id == bindparam("session_id"))
        .values({name: bindparam(name, type_=sessions.c[name].type) for name in names})
    )
    plan = compile_hot(stmt, dialect)
    assert plan is not None
    processors = {name: process for name, process, _fixed, _constant in plan.binds}
    assert sessions.c.created_at.type is not sessions.c.updated_at.type
    assert processors["created_at"] is processors["updated_at"] is not None
    memo: Memo = {}
    values = {"project": "/p", "session_id": "s", "created_at": _NOW, "updated_at": _NOW}
    assert plan.parameters(values, memo) == plan.parameters(values)
    assert len(memo) == 1
    # Another dialect gets its own processors (they read its profile: keyring, switches).
    other = compile_hot(stmt, SQLiteDialect_pysqlite())
    assert other is not None
    assert {b[0]: b[1] for b in other.binds}["created_at"] is not processors["created_at"]
