"""Backends for the test suite, chosen by name: ``pytest --db sqlite,postgresql,mariadb``.

Names: ``memory`` (the in-memory reference implementations, contract suites only),
``sqlite`` (a file per test, plus ``:memory:`` for the contract suites), ``postgresql``,
``mariadb``, ``pgbouncer`` (the local PostgreSQL through a PgBouncer in transaction pooling
mode that the suite starts; the contract, concurrency and fault suites only, see
:data:`WITH_PGBOUNCER`) and ``replica`` (a streaming standby of the local PostgreSQL that
the suite makes, for ``tests/scale``). Default: all of them. A server that cannot be
reached is skipped with the reason, except with ``CI=true``, where every named backend is
required and an unreachable one fails the run.

Server URLs come from ``CONVOSTORE_TEST_POSTGRESQL_URL`` and ``CONVOSTORE_TEST_MARIADB_URL``
(defaults: the machine's ``postgres@127.0.0.1:5432`` and ``root@127.0.0.1:3306``). Each test
session creates its own database on each server, migrated once through Alembic, empties
its tables before every test and drops it at the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from convostore import migrate
from convostore.sql.engine import create_engine
from tests.servers import PgBouncer

T = TypeVar("T")

# Property tests draw the same examples on every run, so a red suite always means a change
# (CI and a newcomer's `make test` alike); `HYPOTHESIS_PROFILE=explore` searches afresh
# each run and prints the seed and blob needed to replay a failure.
hypothesis_settings.register_profile("deterministic", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

ALL_BACKENDS = ("memory", "sqlite", "postgresql", "mariadb", "pgbouncer", "replica")
SERVER_BACKENDS = ("postgresql", "mariadb", "pgbouncer")
# Backends reached through the PostgreSQL dialect.
POSTGRESQL_BACKENDS = frozenset({"postgresql", "pgbouncer"})
DEFAULT_URLS = {
    "postgresql": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+asyncmy://root@127.0.0.1:3306/test",
}
# Children first, so deletes never trip a foreign key.
TABLES = (
    "messages",
    "threads",
    "users",
    "context_messages",
    "context_tokens",
    "adk_events",
    "adk_sessions",
    "adk_app_states",
    "adk_user_states",
    "langgraph_checkpoint_writes",
    "langgraph_checkpoint_blobs",
    "langgraph_checkpoints",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default=",".join(ALL_BACKENDS),
        help=f"comma-separated backends to test: {', '.join(ALL_BACKENDS)} (default: all)",
    )


def in_ci() -> bool:
    """Whether this run must have every backend (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def selected_backends(config: pytest.Config) -> list[str]:
    names = [n.strip() for n in str(config.getoption("--db")).split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_BACKENDS))
    if unknown:
        raise pytest.UsageError(f"unknown --db backend(s) {unknown}; choose from {ALL_BACKENDS}")
    return names


def is_postgresql(backend: str) -> bool:
    """Whether ``backend`` is PostgreSQL, directly or through PgBouncer."""
    return backend in POSTGRESQL_BACKENDS


def server_admin_url(name: str) -> URL:
    """The URL of server ``name``'s maintenance database (PgBouncer's: its PostgreSQL's)."""
    if name == "pgbouncer":
        name = "postgresql"
    env = f"CONVOSTORE_TEST_{name.upper()}_URL"
    return make_url(os.environ.get(env) or DEFAULT_URLS[name])


_pgbouncer: PgBouncer | None = None


def pgbouncer() -> PgBouncer:
    """This session's PgBouncer (started on first use, stopped when the session ends)."""
    global _pgbouncer
    if _pgbouncer is None:
        upstream = server_admin_url("postgresql")
        bouncer = PgBouncer(upstream.host or "127.0.0.1", upstream.port or 5432)
        bouncer.start()
        _pgbouncer = bouncer
    return _pgbouncer


def through_pgbouncer(url: URL) -> URL:
    """The same PostgreSQL database, reached through this session's PgBouncer."""
    assert url.database is not None
    return pgbouncer().url(url.database, user=url.username or "postgres")


@dataclass
class ServerDatabase:
    """A database this test session created on a server."""

    name: str
    url: URL | None = None
    error: str | None = None


_servers: dict[str, ServerDatabase] = {}


def direct_url(url: URL) -> URL:
    """``url`` itself, or for a URL through this session's PgBouncer, PostgreSQL's own."""
    if _pgbouncer is None or url.port != _pgbouncer.port:
        return url
    admin = server_admin_url("postgresql")
    return admin.set(database=url.database)


async def _create_database(name: str) -> URL:
    admin = server_admin_url(name)
    engine = create_engine(admin, poolclass=NullPool, connect_args=_timeout_args(name))
    if name == "pgbouncer":
        pgbouncer()
    database = f"convostore_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"CREATE DATABASE {database}"))
    finally:
        await engine.dispose()
    if name == "pgbouncer":
        return through_pgbouncer(admin.set(database=database))
    return admin.set(database=database)


async def drop_database(url: URL) -> None:
    """Drop a test database created by :func:`create_server_database`."""
    name = "postgresql" if url.get_backend_name() == "postgresql" else "mariadb"
    admin = server_admin_url(name)
    # Through PgBouncer or not, the database lives on the PostgreSQL server; WITH (FORCE)
    # also ends PgBouncer's server connections to it.
    engine = create_engine(admin, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if name == "postgresql":
                await conn.execute(text(f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)"))
            else:
                await conn.execute(text(f"DROP DATABASE IF EXISTS {url.database}"))
    finally:
        await engine.dispose()


async def create_server_database(name: str, *, migrated: bool = True) -> URL:
    """Create a fresh database on server ``name``, migrated to head unless told otherwise."""
    url = await _create_database(name)
    if migrated:
        await migrate.upgrade(url)
    return url


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from sync code, even inside a running event loop.

    Session-level setup may be first requested from an async fixture; ``asyncio.run`` would
    refuse there, so the coroutine gets a loop on a thread of its own.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _timeout_args(name: str) -> dict[str, object]:
    return {"timeout": 5} if is_postgresql(name) else {"connect_timeout": 5}


def server_database(name: str) -> ServerDatabase:
    """This session's migrated database on server ``name`` (created on first use)."""
    if name not in _servers:
        server = ServerDatabase(name)
        try:
            server.url = run_sync(create_server_database(name))
        except Exception as exc:
            server.error = f"{type(exc).__name__}: {exc}"
        _servers[name] = server
    return _servers[name]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _pgbouncer
    for server in _servers.values():
        if server.url is not None:
            run_sync(drop_database(server.url))
    if _pgbouncer is not None:
        _pgbouncer.stop()
        _pgbouncer = None


def require_backend(config: pytest.Config, name: str) -> None:
    """Skip (or, in CI, fail) unless backend ``name`` was selected and is reachable."""
    if name not in selected_backends(config):
        pytest.skip(f"backend {name!r} not selected with --db")
    if name in SERVER_BACKENDS:
        server = server_database(name)
        if server.url is None:
            reason = (
                f"{name} unreachable at {server_admin_url(name).render_as_string()}: {server.error}"
            )
            if in_ci():
                pytest.fail(f"CI=true requires every backend: {reason}", pytrace=False)
            pytest.skip(reason)


async def empty_tables(url: URL) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for table in TABLES:
                await conn.execute(text(f"DELETE FROM {table}"))
    finally:
        await engine.dispose()


SQL_BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]
WITH_PGBOUNCER = [*SQL_BACKENDS, pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)]
"""The ``backend`` fixture's params for suites that must also hold behind a transaction
pooler (contract, concurrency, faults), which override the fixture with
``backend = pytest.fixture(params=WITH_PGBOUNCER)(selected_backend)``. The other suites
would only test PostgreSQL twice."""


def selected_backend(request: pytest.FixtureRequest) -> str:
    """The name of a SQL backend; tests using it run once per selected backend."""
    name: str = request.param
    require_backend(request.config, name)
    return name


backend = pytest.fixture(params=SQL_BACKENDS)(selected_backend)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head once per session; tests get copies of it."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    run_sync(migrate.upgrade(URL.create("sqlite+aiosqlite", database=str(path))))
    return path


@pytest.fixture
def sqlite_file(sqlite_template: Path, tmp_path: Path) -> Path:
    """A fresh SQLite file at head (a copy of the migrated template)."""
    path = tmp_path / "test.db"
    shutil.copyfile(sqlite_template, path)
    return path


@pytest.fixture
async def db_url(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[URL]:
    """A clean database at head: a new SQLite file, or this session's emptied server database."""
    if backend == "sqlite":
        path: Path = request.getfixturevalue("sqlite_file")
        yield URL.create("sqlite+aiosqlite", database=str(path))
        return
    server = _servers[backend]
    assert server.url is not None
    await empty_tables(server.url)
    yield server.url


@pytest.fixture
async def engine(db_url: URL) -> AsyncIterator[AsyncEngine]:
    """An engine on :func:`db_url`, disposed after the test."""
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def fresh_server_database(backend: str) -> Iterator[URL | None]:
    """An empty, unmigrated database of its own on a server backend (None on SQLite)."""
    if backend == "sqlite":
        yield None
        return
    url = run_sync(create_server_database(backend, migrated=False))
    try:
        yield url
    finally:
        run_sync(drop_database(url))
