"""convostore.sql.asyncpg_direct: PostgreSQL's single-statement writes straight on asyncpg.

On PostgreSQL itself and through PgBouncer in transaction pooling mode: the direct path
writes the same rows as Core, raises the same errors, retries what Core retries, and
steps aside while the engine has execution hooks. Deadlines and lost answers on this path
are covered by tests/backends/test_deadlines.py and test_lost_replies.py (a single append
takes it by default).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import URL, Table, event, literal, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from convostore import (
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    ValidationError,
    create_engine,
)
from convostore.sql.asyncpg_direct import DIRECT_ATTRIBUTE, AsyncpgDirect, direct_for
from convostore.sql.dml import Executor
from convostore.sql.runner import TransactionRunner
from convostore.sql.tables import Base
from tests.conftest import direct_url, selected_backend

backend = pytest.fixture(
    params=[
        pytest.param("postgresql", marks=pytest.mark.postgresql),
        pytest.param("pgbouncer", marks=pytest.mark.pgbouncer),
    ]
)(selected_backend)

_NOW = datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=UTC)
# The columns that tell one workload's rows from the other's (each runs in its own scope).
_SCOPE_COLUMNS = frozenset({"project", "agent_name"})


@pytest.fixture
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same timestamps on both paths, so rows compare byte for byte.
    for module in ("convostore.context", "convostore.database"):
        monkeypatch.setattr(f"{module}.utc_now", lambda: _NOW)


@pytest.fixture
async def audit(db_url: URL) -> AsyncIterator[AsyncEngine]:
    """The test database, straight to PostgreSQL (not through PgBouncer)."""
    eng = create_engine(direct_url(db_url), poolclass=NullPool)
    yield eng
    await eng.dispose()


def _message(text_: str, role: str = "user") -> ContextMessage:
    return ContextMessage(role=role, content=[{"type": "text", "text": text_}])


def _direct(engine: AsyncEngine) -> AsyncpgDirect:
    direct = direct_for(engine)
    assert direct is not None
    return direct


def _ran_direct(engine: AsyncEngine) -> int:
    """How many statements the engine's direct path has precompiled (0: it never ran)."""
    return sum(plan is not None for plan in _direct(engine)._plans.values())


async def _workload(engine: AsyncEngine, scope: str) -> None:
    store = SQLAlchemyContextStore(engine, project=f"/{scope}", session_id="s")
    db = SQLAlchemyDatabase(engine=engine, agent_name=scope)
    big = "lorem ipsum dolor " * 80
    for i in range(3):
        await store.append(_message(f"m {i}"))
        await store.append(_message(big, "assistant"))
    await store.append_many([_message("one of one")])  # one message: one statement too
    await store.append(_message("keyed"), client_id="c-1")  # a lookup first: Core
    await asyncio.gather(
        *(store.with_session(f"g{i}").append(_message(f"g {i}")) for i in range(8))
    )
    for i in range(3):
        await db.add_message("t", "u", "user", message=f"hello {i}", content="x" * 600)
    await db.add_message("t", "u", "user", message="keyed", client_id="k")


async def _rows(audit: AsyncEngine) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Each scope's rows of the tables appends write, without their scope column."""
    dump: dict[str, dict[str, list[tuple[Any, ...]]]] = {"direct": {}, "core": {}}
    async with audit.connect() as conn:
        for name in ("context_tokens", "context_messages", "threads", "messages", "users"):
            table: Table = Base.metadata.tables[name]
            scope = next(c for c in table.c if c.name in _SCOPE_COLUMNS)
            others = [c for c in table.c if c.name not in _SCOPE_COLUMNS]
            # The search column as PostgreSQL stores it (a tsvector), as text.
            columns = [c if c.name != "search_text" else text("search_text::text") for c in others]
            for which in dump:
                result = await conn.execute(select(*columns).where(scope.in_([f"/{which}", which])))
                dump[which][name] = sorted((tuple(row) for row in result), key=repr)
    return dump


async def test_the_direct_path_writes_what_core_writes(
    db_url: URL, audit: AsyncEngine, fixed_now: None
) -> None:
    engines = {"direct": create_engine(db_url), "core": create_engine(db_url)}
    setattr(engines["core"].sync_engine.dialect, DIRECT_ATTRIBUTE, False)
    try:
        for scope, engine in engines.items():
            await _workload(engine, scope)
        # The single appends and add_message went direct on one engine and only there.
        assert _ran_direct(engines["direct"]) >= 2
        assert _ran_direct(engines["core"]) == 0
    finally:
        for engine in engines.values():
            await engine.dispose()
    dump = await _rows(audit)
    assert len(dump["direct"]["context_messages"]) == 6 + 1 + 1 + 8
    assert len(dump["direct"]["messages"]) == 4
    for name, rows in dump["core"].items():
        assert dump["direct"][name] == rows, name


async def test_a_hook_on_the_engine_sees_every_statement(db_url: URL) -> None:
    engine = create_engine(db_url)
    store = SQLAlchemyContextStore(engine, project="/hooked", session_id="s")
    seen: list[str] = []

    def before_cursor_execute(*args: Any) -> None:
        seen.append(args[2])

    try:
        await store.append(_message("warm up"))  # migrations checked, the path warm
        event.listen(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
        assert not _direct(engine).usable()
        for i in range(3):
            await store.append(_message(f"seen {i}"))
        assert sum("INSERT INTO context_messages" in sql for sql in seen) == 3
        event.remove(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
        assert _direct(engine).usable()
        seen.clear()
        await store.append(_message("not seen"))
        assert seen == []
        assert [m.position for m in await store.get_messages()] == [0, 1, 2, 3, 4]
    finally:
        await engine.dispose()


async def test_echo_keeps_writes_on_core(db_url: URL) -> None:
    engine = create_engine(db_url, echo=True)
    try:
        assert not _direct(engine).usable()
        store = SQLAlchemyContextStore(engine, project="/echo", session_id="s")
        await store.append(_message("echoed"))
        assert _ran_direct(engine) == 0
    finally:
        await engine.dispose()


async def test_a_refused_statement_raises_what_core_raises(db_url: URL, audit: AsyncEngine) -> None:
    # The session's counter at its limit: the append's bump overflows (SQLSTATE 22003).
    errors: dict[str, ValidationError] = {}
    for which in ("direct", "core"):
        engine = create_engine(db_url)
        if which == "core":
            setattr(engine.sync_engine.dialect, DIRECT_ATTRIBUTE, False)
        store = SQLAlchemyContextStore(engine, project=f"/full-{which}", session_id="s")
        try:
            await store.append(_message("first"))
            async with audit.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE context_tokens SET next_position = 9223372036854775807 "
                        "WHERE project = :p"
                    ),
                    {"p": f"/full-{which}"},
                )
            with pytest.raises(ValidationError) as caught:
                await store.append(_message("one too many"))
            errors[which] = caught.value
            assert (_ran_direct(engine) > 0) == (which == "direct")
            # The connection went back to the pool usable: the next call works.
            assert len(await store.get_messages()) == 1
        finally:
            await engine.dispose()
    assert str(errors["direct"]) == str(errors["core"])
    assert type(errors["direct"].__cause__) is type(errors["core"].__cause__)


async def test_a_serialization_failure_is_retried(db_url: URL, audit: AsyncEngine) -> None:
    # A trigger refuses the first two inserts of this test's project with SQLSTATE 40001
    # (a sequence counts them: nextval is not rolled back with the failed statement).
    name = f"convostore_fail_{uuid.uuid4().hex[:8]}"
    project = f"/{name}"
    async with audit.begin() as conn:
        await conn.execute(text(f"CREATE SEQUENCE {name}"))
        await conn.execute(
            text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.project = '{project}' AND nextval('{name}') <= 2 THEN "
                "RAISE EXCEPTION 'refused for the test' USING ERRCODE = '40001'; "
                "END IF; RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                f"CREATE TRIGGER {name} BEFORE INSERT ON context_messages "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        )
    engine = create_engine(db_url)
    try:
        store = SQLAlchemyContextStore(engine, project=project, session_id="s")
        stored = await store.append(_message("third time lucky"))
        assert stored.position == 0
        assert _ran_direct(engine) > 0
        async with audit.connect() as conn:
            # Two refusals, then the write that went through: three attempts.
            assert (await conn.execute(text(f"SELECT last_value FROM {name}"))).scalar() == 3
        assert [m.position for m in await store.get_messages()] == [0]
    finally:
        await engine.dispose()
        async with audit.begin() as conn:
            await conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON context_messages"))
            await conn.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))
            await conn.execute(text(f"DROP SEQUENCE IF EXISTS {name}"))


async def test_engines_on_other_drivers_have_no_direct_path(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        assert direct_for(engine) is None
    finally:
        await engine.dispose()


async def test_a_statement_only_core_can_run_falls_back_to_core(db_url: URL) -> None:
    # A single-statement unit whose statement was not built once (dialects.cached): the
    # direct path sends nothing and the runner runs the unit through Core.
    engine = create_engine(db_url)
    runner = TransactionRunner(engine, writer=True)
    try:

        async def work(executor: Executor) -> int:
            result = await executor.execute(select(literal(41) + 1))
            return int(result.scalar_one())

        assert await runner.run(work, autocommit=True) == 42
        assert _ran_direct(engine) == 0
    finally:
        await engine.dispose()
