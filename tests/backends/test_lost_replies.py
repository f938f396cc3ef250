"""Lost, late and cut answers between convostore and its server, through a fault proxy.

Every test puts :class:`tests.faultproxy.FaultProxy` between the engine under test and
PostgreSQL, MariaDB or PgBouncer, makes the proxy lose, hold or cut what the server says
at a chosen statement (the proxy decides, not a clock), then audits the database on a
direct connection:

* every acknowledged message is stored exactly once, at the position its call returned;
* no message is ever stored twice;
* a call that raised stored its message once or not at all, and raised a typed
  ``DatabaseError`` (``CommitOutcomeUnknown`` when a batch's ``COMMIT`` lost its answer);
* positions stay gap-free;
* every call ended by its deadline (plus :data:`SLACK_S`, measured by the test's clock
  only where the deadline is what ends the call).
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from convostore import (
    CommitOutcomeUnknown,
    ContextMessage,
    DatabaseError,
    DeadlineExceeded,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    create_engine,
    migrate,
    transfer,
)
from convostore.sql.group_commit import queued
from convostore.sql.rotation import rotate
from tests.backends.encrypted import ring
from tests.conftest import direct_url, is_postgresql, selected_backend
from tests.faultproxy import Fault, FaultProxy, Matcher, Statement, sql_starts

backend = pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
        pytest.param("pgbouncer", marks=pytest.mark.pgbouncer),
    ]
)(selected_backend)

DEADLINE_S = 1.0
SLACK_S = 1.5
"""How late after its deadline a call may end here: scheduling on a loaded machine. A dead
connection closed gracefully (asyncpg's 2 s) would not fit."""
CALLERS = 12  # the first writes alone; the other eleven form one batch behind it
PROJECT = "/faults"


def message(text_: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text_}])


@pytest.fixture
async def proxy(db_url: URL, backend: str) -> AsyncIterator[FaultProxy]:
    assert db_url.host is not None
    assert db_url.port is not None
    fault_proxy = FaultProxy(
        db_url.host, db_url.port, "postgresql" if is_postgresql(backend) else "mysql"
    )
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.close()


@pytest.fixture
async def engine(db_url: URL, proxy: FaultProxy) -> AsyncIterator[AsyncEngine]:
    """An engine reaching the test database through the proxy, with a short deadline."""
    eng = create_engine(proxy.url(db_url), deadline=DEADLINE_S)
    await migrate.prepare(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
async def direct(db_url: URL) -> AsyncIterator[AsyncEngine]:
    """The same database, straight to the server: what the audit reads."""
    eng = create_engine(direct_url(db_url), poolclass=NullPool)
    yield eng
    await eng.dispose()


@dataclass
class Call:
    """What one call did, as its caller saw it."""

    text: str
    result: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0


async def timed(text_: str, call: Awaitable[Any]) -> Call:
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = Call(text_)
    try:
        outcome.result = await call
    except Exception as exc:
        outcome.error = exc
    outcome.elapsed = loop.time() - started
    return outcome


async def stored_texts(direct: AsyncEngine, session_id: str) -> list[tuple[int, str]]:
    store = SQLAlchemyContextStore(direct, session_id=session_id, project=PROJECT)
    return [(m.position, m.content[0]["text"]) for m in await store.get_messages()]


async def thread_texts(direct: AsyncEngine, thread_id: str) -> list[tuple[int, str]]:
    db = SQLAlchemyDatabase(engine=direct, agent_name="faults")
    return [(m.idx, m.message) for m in await db.get_messages(thread_id, "u")]


@dataclass
class Writes:
    """One group-committed write: the ``i``-th caller writes ``m{i}`` to scope ``i % 4``."""

    write: Callable[[AsyncEngine, int, str], Awaitable[Any]]
    position: Callable[[Any], int]
    stored: Callable[[AsyncEngine, str], Awaitable[list[tuple[int, str]]]]
    table: str

    def scope(self, i: int) -> str:
        return f"s{i % SCOPES}"


async def _append(engine: AsyncEngine, i: int, text_: str) -> Any:
    store = SQLAlchemyContextStore(engine, session_id=f"s{i % SCOPES}", project=PROJECT)
    return await store.append(message(text_))


async def _add_message(engine: AsyncEngine, i: int, text_: str) -> Any:
    db = SQLAlchemyDatabase(engine=engine, agent_name="faults")
    return await db.add_message(f"s{i % SCOPES}", "u", "user", message=text_)


SCOPES = 4
WRITES = {
    "append": Writes(_append, lambda r: r.position, stored_texts, "context_messages"),
    "add_message": Writes(_add_message, lambda r: r.idx, thread_texts, "messages"),
}


@pytest.fixture(params=list(WRITES))
def writes(request: pytest.FixtureRequest) -> Writes:
    return WRITES[request.param]


async def audit(direct: AsyncEngine, writes: Writes, calls: list[Call]) -> None:
    """Each message stored at most once, acknowledged ones exactly once where they were
    told; positions gap-free; every failure typed."""
    rows = []
    for scope in sorted({writes.scope(i) for i in range(len(calls))}):
        mine = await writes.stored(direct, scope)
        assert [p for p, _ in mine] == list(range(len(mine))), f"gap in {scope}"
        rows.extend(mine)
    copies = Counter(text_ for _, text_ in rows)
    assert [t for t, n in copies.items() if n > 1] == [], "stored twice"
    where = {text_: position for position, text_ in rows}
    for call in calls:
        if call.error is None:
            assert where.get(call.text) == writes.position(call.result), call.text
        else:
            assert isinstance(call.error, DatabaseError), repr(call.error)


async def wait_queued(engine: AsyncEngine, count: int) -> None:
    """Let the event loop run until ``count`` writes wait in the engine's committers."""
    for _ in range(100_000):
        if queued(engine) >= count:
            return
        await asyncio.sleep(0)
    pytest.fail(f"{count} writes never queued up")


async def batch_under(
    engine: AsyncEngine, proxy: FaultProxy, writes: Writes, arm: Callable[[], Fault]
) -> tuple[list[Call], Fault]:
    """``CALLERS`` concurrent writes: the first alone, the others in one batch, whose
    statements meet the fault ``arm`` sets up (armed once the lone write is done)."""
    await writes.write(engine, 0, "warm-up")  # the store is ready; a connection is pooled
    proxy.stall()
    tasks = [
        asyncio.create_task(timed(f"m{i}", writes.write(engine, i, f"m{i}")))
        for i in range(CALLERS)
    ]
    await wait_queued(engine, CALLERS - 1)
    proxy.resume()
    await asyncio.wait(tasks[:1])  # the lone write, untouched by the fault
    fault = arm()
    return [await task for task in tasks], fault


async def test_a_batch_whose_commit_answer_is_lost_is_stored_once(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine, writes: Writes
) -> None:
    calls, fault = await batch_under(
        engine, proxy, writes, lambda: proxy.arm("drop", sql_starts("COMMIT"))
    )
    assert fault.fired == 1
    assert calls[0].error is None
    for call in calls[1:]:
        assert isinstance(call.error, CommitOutcomeUnknown), repr(call.error)
    await audit(direct, writes, calls)
    # It was applied: the eleven are there, once each.
    stored = {t for i in range(SCOPES) for _, t in await writes.stored(direct, writes.scope(i))}
    assert {c.text for c in calls} <= stored


async def test_a_batch_whose_commit_answer_comes_too_late_is_stored_once(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine, writes: Writes
) -> None:
    calls, fault = await batch_under(
        engine, proxy, writes, lambda: proxy.arm("hold", sql_starts("COMMIT"))
    )
    assert fault.fired == 1
    for call in calls[1:]:
        assert isinstance(call.error, CommitOutcomeUnknown | DeadlineExceeded), repr(call.error)
        assert call.elapsed <= DEADLINE_S + SLACK_S
    await audit(direct, writes, calls)
    proxy.release()


async def test_a_batch_cut_before_its_commit_is_written_again_alone(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine, writes: Writes
) -> None:
    calls, fault = await batch_under(
        engine, proxy, writes, lambda: proxy.arm("reset", sql_starts(f"INSERT INTO {writes.table}"))
    )
    assert fault.fired == 1
    # Surely rolled back: every message was written again on its own, and stored once.
    assert [c.error for c in calls] == [None] * CALLERS
    await audit(direct, writes, calls)


async def test_a_stalled_server_ends_every_caller_by_its_deadline(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine, writes: Writes
) -> None:
    await writes.write(engine, 0, "warm-up")
    proxy.stall()
    calls = await asyncio.gather(
        *(timed(f"m{i}", writes.write(engine, i, f"m{i}")) for i in range(CALLERS))
    )
    proxy.resume()
    for call in calls:
        assert isinstance(call.error, DeadlineExceeded | CommitOutcomeUnknown), repr(call.error)
        assert call.elapsed <= DEADLINE_S + SLACK_S
    await audit(direct, writes, calls)
    # The engine recovers: the next call gets a fresh connection.
    after = await writes.write(engine, 1, "after")
    assert writes.position(after) == len(await writes.stored(direct, writes.scope(1))) - 1


# --- every other write, alone, through the runner -------------------------------------


@dataclass
class Scene:
    """A write whose answer the proxy loses, and how to check it was applied at most once."""

    setup: Callable[[AsyncEngine], Awaitable[None]]
    call: Callable[[AsyncEngine], Awaitable[Any]]
    audit: Callable[[AsyncEngine], Awaitable[None]]


def _store(engine: AsyncEngine, session_id: str = "s") -> SQLAlchemyContextStore:
    return SQLAlchemyContextStore(engine, session_id=session_id, project=PROJECT)


def _db(engine: AsyncEngine) -> SQLAlchemyDatabase:
    return SQLAlchemyDatabase(engine=engine, agent_name="faults")


async def _two_messages(engine: AsyncEngine) -> None:
    await _store(engine).append_many([message("a"), message("b")])


async def _append_audit(direct: AsyncEngine) -> None:
    rows = await stored_texts(direct, "s")
    assert [t for t, n in Counter(t for _, t in rows).items() if n > 1] == []
    assert [p for p, _ in rows] == list(range(len(rows)))


async def _thread_audit(direct: AsyncEngine) -> None:
    stored = await _db(direct).get_messages("t", "u")
    assert [m.message for m in stored] in (["x"], ["x", "y"])
    assert [m.idx for m in stored] == list(range(len(stored)))


async def _balance(direct: AsyncEngine) -> int:
    return (await _db(direct).get_user("u")).available_balance


async def _credited_once(direct: AsyncEngine) -> None:
    assert await _balance(direct) in (10, 15)


async def _debited_once(direct: AsyncEngine) -> None:
    assert await _balance(direct) in (10, 7)


async def _fund(engine: AsyncEngine) -> None:
    await _db(engine).credit("u", 10)


async def _forked_whole(direct: AsyncEngine) -> None:
    sessions = {info.session_id: info for info in await _store(direct).list_sessions()}
    assert sessions["s"].message_count == 2
    forks = [info for sid, info in sessions.items() if sid != "s"]
    assert len(forks) <= 1
    for info in forks:
        assert await stored_texts(direct, info.session_id) == [(0, "a"), (1, "b")]


async def _replaced_whole(direct: AsyncEngine) -> None:
    assert await stored_texts(direct, "s") in ([(0, "a"), (1, "b")], [(0, "c")])


async def _first_message(engine: AsyncEngine) -> None:
    await _db(engine).add_message("t", "u", "user", message="x")


async def _import_once(direct: AsyncEngine) -> None:
    rows = await stored_texts(direct, "imported")
    assert rows in ([], [(i, f"i{i}") for i in range(30)])


async def _rotated(direct: AsyncEngine) -> None:
    # Each value reads back, under whichever key it is now, exactly once.
    reader = create_engine(direct.url, poolclass=NullPool, encryption=ring("k1", "k2"))
    try:
        assert [t for _, t in await stored_texts(reader, "s")] == ["a", "b"]
    finally:
        await reader.dispose()


SCENES: dict[str, Scene] = {
    "append": Scene(_two_messages, lambda e: _store(e).append(message("c")), _append_audit),
    "append_many": Scene(
        _two_messages,
        lambda e: _store(e).append_many([message("c"), message("d")]),
        _append_audit,
    ),
    "add_message": Scene(
        _first_message,
        lambda e: _db(e).add_message("t", "u", "user", message="y"),
        _thread_audit,
    ),
    "credit": Scene(_fund, lambda e: _db(e).credit("u", 5), _credited_once),
    "debit": Scene(_fund, lambda e: _db(e).debit("u", 3), _debited_once),
    "fork": Scene(_two_messages, lambda e: _store(e).fork(), _forked_whole),
    "replace_history": Scene(
        _two_messages, lambda e: _store(e).replace_history([message("c")]), _replaced_whole
    ),
}


@pytest.mark.parametrize("action", ["drop", "hold"])
@pytest.mark.parametrize("scene", list(SCENES))
async def test_a_write_whose_commit_answer_is_lost_or_late_is_applied_at_most_once(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine, scene: str, action: str
) -> None:
    the = SCENES[scene]
    await the.setup(engine)
    fault = proxy.arm("drop" if action == "drop" else "hold")  # whatever commits next
    call = await timed(scene, the.call(engine))
    assert fault.fired == 1
    if action == "drop":
        assert isinstance(call.error, CommitOutcomeUnknown), repr(call.error)
    if action == "hold":
        assert isinstance(call.error, DeadlineExceeded), repr(call.error)
        assert call.elapsed <= DEADLINE_S + SLACK_S
    await the.audit(direct)
    proxy.disarm()
    proxy.release()
    await the.call(engine)  # the engine recovers on a fresh connection


async def _source_dump(tmp: AsyncEngine) -> bytes:
    store = SQLAlchemyContextStore(tmp, session_id="imported", project=PROJECT)
    await store.append_many([message(f"i{i}") for i in range(30)])
    out = io.BytesIO()
    await transfer.export_jsonl(tmp, out)
    return out.getvalue()


@pytest.mark.parametrize("action", ["drop", "reset"])
async def test_an_import_cut_off_stores_each_record_once_when_run_again(
    engine: AsyncEngine,
    proxy: FaultProxy,
    direct: AsyncEngine,
    action: str,
    tmp_path: Any,
) -> None:
    source = create_engine(f"sqlite+aiosqlite:///{tmp_path}/source.db")
    try:
        await migrate.upgrade(source.url)
        dump = await _source_dump(source)
    finally:
        await source.dispose()
    target = "INSERT INTO context_messages" if action == "reset" else "COMMIT"
    fault = proxy.arm("drop" if action == "drop" else "reset", sql_starts(target))
    with pytest.raises(CommitOutcomeUnknown if action == "drop" else DatabaseError):
        await transfer.import_jsonl(engine, dump.splitlines(keepends=True))
    assert fault.fired == 1
    await _import_once(direct)
    proxy.disarm()
    await transfer.import_jsonl(engine, dump.splitlines(keepends=True))
    assert await stored_texts(direct, "imported") == [(i, f"i{i}") for i in range(30)]


async def test_a_rotation_cut_off_leaves_every_value_readable_and_completes_when_run_again(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    await _two_messages(engine)
    fault = proxy.arm("drop", sql_starts("COMMIT"))
    with pytest.raises(CommitOutcomeUnknown):
        await rotate(engine, ring("k1", "k2", current="k2"), batch_size=1)
    assert fault.fired == 1
    await _rotated(direct)
    proxy.disarm()
    await rotate(engine, ring("k1", "k2", current="k2"), batch_size=1)
    await _rotated(direct)
    async with direct.connect() as conn:
        count = (await conn.execute(text("SELECT COUNT(*) FROM context_messages"))).scalar()
    assert count == 2


# --- the caller's unit of work, the back-fill and prune --------------------------------


async def _pay_and_ask(engine: AsyncEngine) -> None:
    async with _db(engine).transaction() as tx:
        await tx.debit("u", 3)
        await tx.add_message("t", "u", "user", message="paid question")


async def _paid_once_or_not(direct: AsyncEngine) -> None:
    # All of the unit of work or none of it.
    stored = [m.message for m in await _db(direct).get_messages("t", "u")]
    assert (await _balance(direct), stored) in ((7, ["paid question"]), (10, []))


async def _append_two_together(engine: AsyncEngine) -> None:
    async with _store(engine).transaction() as tx:
        await tx.append(message("c"))
        await tx.append(message("d"))


@pytest.mark.parametrize("store", ["database", "context_store"])
async def test_a_unit_of_work_whose_commit_answer_is_lost_says_the_outcome_is_unknown(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine, store: str
) -> None:
    await _fund(engine)
    await _two_messages(engine)
    fault = proxy.arm("drop", sql_starts("COMMIT"))
    if store == "database":
        with pytest.raises(CommitOutcomeUnknown):
            await _pay_and_ask(engine)
        assert fault.fired == 1
        await _paid_once_or_not(direct)
    else:
        with pytest.raises(CommitOutcomeUnknown):
            await _append_two_together(engine)
        assert fault.fired == 1
        assert await stored_texts(direct, "s") in (
            [(0, "a"), (1, "b")],
            [(0, "a"), (1, "b"), (2, "c"), (3, "d")],
        )
    proxy.disarm()
    await _pay_and_ask(engine)  # the engine recovers on a fresh connection


def commit_after(prefix: str) -> Matcher:
    """Matches the first ``COMMIT`` sent after a statement starting with ``prefix`` (the
    commit of a batch that wrote, not of the read that listed the work)."""
    wrote = sql_starts(prefix)
    commit = sql_starts("COMMIT")
    seen = False

    def match(statement: Statement) -> bool:
        nonlocal seen
        seen = seen or wrote(statement)
        return seen and commit(statement)

    return match


async def test_a_backfill_cut_off_indexes_each_row_once_when_run_again(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    await _store(engine).append_many([message(f"archived {n}") for n in range(5)])
    async with direct.begin() as conn:
        await conn.execute(text("UPDATE context_messages SET search_text = NULL"))
    fault = proxy.arm("drop", commit_after("UPDATE context_messages"))
    with pytest.raises(CommitOutcomeUnknown):
        await transfer.backfill(engine, batch_size=2)
    assert fault.fired == 1
    proxy.disarm()
    report = await transfer.backfill(engine, batch_size=2)
    # The batch cut off was applied (3 left) or not (5 left); nothing is indexed twice.
    assert report.indexed["context_messages"] in (3, 5)
    assert len(await _store(direct).search("archived", limit=100)) == 5
    await _append_audit(direct)


async def test_a_prune_cut_off_removes_each_session_whole_and_completes_when_run_again(
    engine: AsyncEngine, proxy: FaultProxy, direct: AsyncEngine
) -> None:
    for n in range(3):
        await _store(engine, f"old{n}").append_many([message("a"), message("b")])
    later = datetime.now(UTC) + timedelta(days=2)
    fault = proxy.arm("drop", commit_after("DELETE FROM context_messages"))
    with pytest.raises(CommitOutcomeUnknown):
        await transfer.prune(engine, older_than=timedelta(days=1), batch_size=1, now=later)
    assert fault.fired == 1

    async def left() -> dict[str, int]:
        return {i.session_id: i.message_count for i in await _store(direct).list_sessions()}

    # Each session is there whole, or gone whole.
    assert set((await left()).values()) <= {2}
    assert len(await left()) in (2, 3)
    for sid in await left():
        assert await stored_texts(direct, sid) == [(0, "a"), (1, "b")]
    proxy.disarm()
    await transfer.prune(engine, older_than=timedelta(days=1), batch_size=1, now=later)
    assert await left() == {}
