"""Stores for the framework adapter tests: the in-memory reference and every SQL backend.

``store_engine`` is ``None`` for ``memory`` and an engine at head otherwise (a new SQLite
file, or this session's emptied server database); ``make_store`` builds convostore context
stores on it that share one storage per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    ContextStore,
    InMemoryContextStore,
    MemoryStorage,
    SQLAlchemyContextStore,
    connect,
    create_engine,
)
from tests.conftest import _servers, empty_tables, require_backend

SQL_BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]

MakeStore = Callable[..., ContextStore]


async def open_engine(name: str, tmp_path: Path) -> AsyncEngine:
    """An engine on a clean database of backend ``name``, at head."""
    if name == "sqlite":
        return await connect(str(tmp_path / "integrations.db"))
    url = _servers[name].url
    assert url is not None
    await empty_tables(url)
    return create_engine(url)


# The backend is chosen in sync fixtures: require_backend may create the server database
# with asyncio.run(), which cannot run inside the test's event loop.
@pytest.fixture(params=SQL_BACKENDS)
def sql_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_backend(request.config, name)
    return name


@pytest.fixture(params=[pytest.param("memory"), *SQL_BACKENDS])
def store_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name != "memory":
        require_backend(request.config, name)
    return name


@pytest.fixture
async def sql_engine(sql_backend: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a clean database of each selected SQL backend."""
    engine = await open_engine(sql_backend, tmp_path)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store_engine(store_backend: str, tmp_path: Path) -> AsyncIterator[AsyncEngine | None]:
    """``None`` for the in-memory reference, else as :func:`sql_engine`."""
    if store_backend == "memory":
        yield None
        return
    engine = await open_engine(store_backend, tmp_path)
    yield engine
    await engine.dispose()


@pytest.fixture
def make_store(store_engine: AsyncEngine | None) -> MakeStore:
    """Build stores of one storage: ``make_store(session_id=..., project=...)``."""
    storage = MemoryStorage()

    def make(session_id: str | None = None, project: str = "/project") -> ContextStore:
        if store_engine is None:
            return InMemoryContextStore(storage, session_id=session_id, project=project)
        return SQLAlchemyContextStore(store_engine, session_id=session_id, project=project)

    return make


class SimulatedCrashError(Exception):
    """Raised by a statement hook to stop a transaction halfway through."""


def inserts_messages(statement: str) -> bool:
    """A statement that appends context messages (not a fork's copy of another session's).

    That is ``INSERT INTO context_messages ... VALUES`` or, on PostgreSQL, the one-statement
    append whose CTE bumps the counter first; a fork reads ``FROM context_messages``.
    """
    return "INSERT INTO context_messages" in statement and "FROM context_messages" not in statement


@contextmanager
def crash_on(engine: AsyncEngine, matches: Callable[[str], bool]) -> Iterator[None]:
    """Make every statement that ``matches`` fail, as a crash at that point would."""

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if matches(statement):
            raise SimulatedCrashError(statement.split("(")[0])

    event.listen(engine.sync_engine, "before_cursor_execute", hook)
    try:
        yield
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", hook)
