"""A pytest plugin that runs a peer's own test suite against convostore's drop-ins.

Loaded with ``-p peer_swap`` (this folder on ``PYTHONPATH``: a peer's own ``tests`` package
keeps its name) into a pytest run over the tests shipped in axio-context-sqlite's,
agentstr-sdk's or openai-agents' sdist (downloaded by ``make peers``, never copied
into this repository). It changes only what a user changes, the import:

* ``axio_context_sqlite.SQLiteContextStore`` / ``connect`` become convostore's
  :class:`~convostore.integrations.axio.AxioContextStore` / ``connect`` (the package's own
  payload helpers in ``axio_context_sqlite.store`` are left as they are);
* ``agentstr.database`` / ``agentstr.models`` become convostore's agentstr integration;
* the OpenAI Agents SDK's ``SQLAlchemySession`` becomes a shim over convostore's
  :class:`~convostore.integrations.openai_agents.ConvostoreSession` (its constructors only).

With ``CONVOSTORE_PEER_URL`` set to a PostgreSQL or MariaDB admin URL, the same tests run on
that server: each SQLite path a test opens (or each ``Database("sqlite://:memory:")``) gets
a fresh database of its own, migrated to head and dropped when the run ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import sys
import threading
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, make_url, text
from sqlalchemy.pool import NullPool

from convostore import create_engine, migrate
from convostore.integrations import agentstr as convostore_agentstr

_SERVER = os.environ.get("CONVOSTORE_PEER_URL") or None
_created: dict[str, URL] = {}


async def _server_database(key: str) -> URL:
    """The server database standing in for the SQLite file (or in-memory database) ``key``."""
    if key in _created:
        return _created[key]
    assert _SERVER is not None
    admin = make_url(_SERVER)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    name = f"convostore_peer_{os.getpid()}_{digest}"
    engine = create_engine(admin, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        await engine.dispose()
    url = admin.set(database=name)
    await migrate.upgrade(url)
    _created[key] = url
    return url


async def _drop_all() -> None:
    assert _SERVER is not None
    engine = create_engine(make_url(_SERVER), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            force = " WITH (FORCE)" if conn.dialect.name == "postgresql" else ""
            for url in _created.values():
                await conn.execute(text(f"DROP DATABASE IF EXISTS {url.database}{force}"))
    finally:
        await engine.dispose()


def _swap_axio() -> None:
    try:
        import axio_context_sqlite
    except ImportError:  # the agentstr run: axio is not needed there
        return
    from convostore.integrations import axio as convostore_axio

    async def connect(db_path: str | Path) -> Any:
        if _SERVER is None:
            return await convostore_axio.connect(db_path)
        url = await _server_database(str(db_path))  # a new tmp path per test: unique as it is
        return await convostore_axio.connect(url)

    axio_context_sqlite.SQLiteContextStore = convostore_axio.AxioContextStore
    axio_context_sqlite.connect = connect


def _swap_agentstr() -> None:
    def database(conn_str: str | None = None, *, agent_name: str | None = None) -> Any:
        if _SERVER is None:
            return convostore_agentstr.Database(conn_str, agent_name=agent_name)
        # Every in-memory database is a new one: so is each server database standing in.
        # Called from the peer's async fixture: the setup gets an event loop of its own.
        key = f"{conn_str}#{uuid.uuid4().hex}"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            url = pool.submit(asyncio.run, _server_database(key)).result()
        return convostore_agentstr.Database(
            url.render_as_string(hide_password=False), agent_name=agent_name
        )

    package = types.ModuleType("agentstr")
    package.__path__ = []
    database_module = types.ModuleType("agentstr.database")
    models = types.ModuleType("agentstr.models")
    database_module.Database = database  # type: ignore[attr-defined]
    for name in ("BaseDatabase", "SQLiteDatabase", "PostgresDatabase"):
        setattr(database_module, name, getattr(convostore_agentstr, name))
    models.User = convostore_agentstr.User  # type: ignore[attr-defined]
    models.Message = convostore_agentstr.Message  # type: ignore[attr-defined]
    package.database = database_module  # type: ignore[attr-defined]
    package.models = models  # type: ignore[attr-defined]
    sys.modules.update(
        {"agentstr": package, "agentstr.database": database_module, "agentstr.models": models}
    )


_mapping = threading.Lock()


def _server_url_for(sqlite_url: str) -> str:
    """The server database standing in for ``sqlite_url``, from any thread and loop (the
    SDK's cross-loop tests open one file from two threads at once: one database)."""
    with _mapping, concurrent.futures.ThreadPoolExecutor(1) as pool:
        url = pool.submit(asyncio.run, _server_database(sqlite_url)).result()
    return url.render_as_string(hide_password=False)


def _swap_openai_agents() -> None:
    """The SDK's ``SQLAlchemySession`` becomes a thin shim over convostore's session: its
    two constructors (an engine, or ``from_url``) and its ``engine`` attribute, nothing
    more. ``create_tables`` and the table names are accepted and ignored: convostore's
    schema comes from its migrations (run on first use of a new SQLite file)."""
    try:
        from agents.extensions.memory import sqlalchemy_session
    except ImportError:  # another peer's run
        return
    from sqlalchemy.ext.asyncio import AsyncEngine

    from convostore.integrations.openai_agents import ConvostoreSession

    class SQLAlchemySession(ConvostoreSession):
        def __init__(
            self,
            session_id: str,
            *,
            engine: AsyncEngine,
            create_tables: bool = False,
            sessions_table: str = "agent_sessions",
            messages_table: str = "agent_messages",
            session_settings: Any = None,
        ) -> None:
            if _SERVER is not None and engine.dialect.name == "sqlite":
                # The test's own SQLite engine: the same test on the server's database.
                engine = create_engine(_server_url_for(str(engine.url)))
            super().__init__(session_id, engine, session_settings=session_settings)

        @classmethod
        def from_url(
            cls,
            session_id: str,
            *,
            url: str,
            engine_kwargs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> ConvostoreSession:
            if _SERVER is not None:
                url = _server_url_for(url)
            return _Owning(session_id, url=url, session_settings=kwargs.get("session_settings"))

        @property
        def engine(self) -> AsyncEngine:
            return self._store.engine  # type: ignore[attr-defined, no-any-return]

    class _Owning(SQLAlchemySession):
        def __init__(self, session_id: str, *, url: str, session_settings: Any) -> None:
            ConvostoreSession.__init__(self, session_id, url=url, session_settings=session_settings)

    sqlalchemy_session.SQLAlchemySession = SQLAlchemySession


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: the peer's test modules import the names at module level.
    _swap_axio()
    _swap_agentstr()
    _swap_openai_agents()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SERVER is not None and _created:
        asyncio.run(_drop_all())
