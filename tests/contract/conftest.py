"""Implementations under contract: the in-memory reference and every selected SQL backend.

PostgreSQL runs twice: directly and through PgBouncer in transaction pooling mode.
SQLite runs three ways: a file and ``:memory:`` through convostore's thin driver
(:mod:`convostore.sql.sqlite_driver`), and a file through SQLAlchemy's stock aiosqlite adapter.

``make_database(agent_name=...)`` and ``make_store(session_id=..., project=...)`` build
objects that share one storage per test, so two of them can see (or must not see) each
other's rows. Everything they open is closed after the test.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    AgentDatabase,
    ContextStore,
    InMemoryContextStore,
    InMemoryDatabase,
    MemoryStorage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    connect,
    create_engine,
)
from tests.conftest import _servers, empty_tables, require_backend

IMPLEMENTATIONS = [
    pytest.param("memory"),
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("sqlite-memory", marks=pytest.mark.sqlite),
    pytest.param("sqlite-stock", marks=pytest.mark.sqlite),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
    pytest.param("pgbouncer", marks=pytest.mark.pgbouncer),
]

MakeDatabase = Callable[..., Awaitable[AgentDatabase]]
MakeStore = Callable[..., Awaitable[ContextStore]]


_NO_ENGINE = (
    "the in-memory twin has no engine: nothing is stored as bytes, and nothing outlives it",
    AttributeError,
)
_NO_TRANSACTION = (
    "the in-memory twin has no transaction(): each call is atomic on its own",
    AttributeError,
)
_GONE_WITH_ITS_ENGINE = (
    "an SQLite :memory: database ends with its engine: a new engine opens an empty one",
    AssertionError,
)

DIVERGENCES: dict[str, dict[str, tuple[str, type[BaseException]]]] = {
    "memory": {
        "test_agent_database::test_data_survives_close_and_reopen": _NO_ENGINE,
        "test_agent_database::test_large_content_is_compressed_on_disk": _NO_ENGINE,
        "test_agent_database::test_transaction_commits_every_call_together": _NO_TRANSACTION,
        "test_agent_database::test_transaction_sees_its_own_writes": _NO_TRANSACTION,
        "test_agent_database::test_exception_in_transaction_rolls_everything_back": (
            _NO_TRANSACTION
        ),
        "test_agent_database::test_refused_debit_in_transaction_rolls_back_earlier_calls": (
            _NO_TRANSACTION
        ),
        "test_context_store::test_content_is_compressed_on_disk": _NO_ENGINE,
        "test_context_store::test_sessions_survive_close_and_reopen": _NO_ENGINE,
        "test_context_store::test_transaction_commits_together": _NO_TRANSACTION,
        "test_context_store::test_exception_in_transaction_rolls_everything_back": (
            _NO_TRANSACTION
        ),
        "test_paging_and_retries::test_a_view_ends_with_its_transaction": _NO_TRANSACTION,
        "test_paging_and_retries::test_the_blocks_own_exceptions_pass_through": _NO_TRANSACTION,
    },
    "sqlite-memory": {
        "test_agent_database::test_data_survives_close_and_reopen": _GONE_WITH_ITS_ENGINE,
        "test_context_store::test_sessions_survive_close_and_reopen": _GONE_WITH_ITS_ENGINE,
    },
}
"""What an implementation is known not to do, by test (``module::function``): each one runs
as a strict xfail with its reason and the error it must fail with, so a gap that closes
(or fails differently) turns the suite red until this registry says so."""


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_backend(request.config, "sqlite" if name.startswith("sqlite") else name)
    test = f"{request.module.__name__.rpartition('.')[2]}::{request.function.__name__}"
    gap = DIVERGENCES.get(name, {}).get(test)
    if gap is not None:
        reason, error = gap
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason, raises=error))
    return name


@pytest.fixture
async def shared_engine(
    implementation: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncEngine | None]:
    """One engine per test for the SQL implementations (None for memory)."""
    if implementation == "memory":
        yield None
        return
    if implementation == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "contract.db")
        engine = await connect(str(tmp_path / "contract.db"))
    elif implementation == "sqlite-memory":
        engine = await connect(":memory:")
    elif implementation == "sqlite-stock":
        # SQLAlchemy's own aiosqlite adapter instead of convostore.sql.sqlite_driver.
        template = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "contract.db")
        engine = create_engine(str(tmp_path / "contract.db"), fast_sqlite=False)
    else:
        url: URL | None = _servers[implementation].url
        assert url is not None
        await empty_tables(url)
        engine = create_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def make_database(
    implementation: str, shared_engine: AsyncEngine | None
) -> AsyncIterator[MakeDatabase]:
    storage = MemoryStorage()
    opened: list[AgentDatabase] = []

    async def make(agent_name: str | None = "agent", **kwargs: Any) -> AgentDatabase:
        db: AgentDatabase
        if shared_engine is None:
            db = InMemoryDatabase(storage, agent_name=agent_name)
        else:
            db = SQLAlchemyDatabase(engine=shared_engine, agent_name=agent_name, **kwargs)
        opened.append(db)
        return await db.async_init()

    yield make
    for db in opened:
        await db.close()


@pytest.fixture
async def make_store(
    implementation: str, shared_engine: AsyncEngine | None
) -> AsyncIterator[MakeStore]:
    storage = MemoryStorage()
    opened: list[ContextStore] = []

    async def make(
        session_id: str | None = None, project: str = "/project", namespace: str | None = None
    ) -> ContextStore:
        store: ContextStore
        if shared_engine is None:
            store = InMemoryContextStore(
                storage, session_id=session_id, project=project, namespace=namespace
            )
        else:
            store = SQLAlchemyContextStore(
                shared_engine, session_id=session_id, project=project, namespace=namespace
            )
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
