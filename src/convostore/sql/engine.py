"""Engine creation with the defaults each backend needs.

This is one of the two places where backends differ (the other is
:mod:`convostore.sql.dml` and its neighbours): connection settings here, SQL variants there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import URL, event
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, QueuePool

from convostore.errors import ConfigurationError
from convostore.settings import is_memory_sqlite, redact, resolve_url
from convostore.sql import driver_logs, pgbouncer, search_feed, sqlite_driver
from convostore.sql.options import QUERY_KEYS, UrlOptions, parse_deadline, url_options
from convostore.sql.packet_limit import PacketLimit
from convostore.sql.profile import (
    EngineProfile,
    Family,
    SQLiteDriver,
    family_from_name,
    profile_of,
    store_profile,
)
from convostore.sql.replicas import ReadReplicas, ReplicaSet, ReplicaUrls

if TYPE_CHECKING:
    from convostore.encryption import Keyring

__all__ = [
    "Engine",
    "Family",
    "create_engine",
    "family",
    "family_from_name",
    "is_read_only",
    "replica_set",
    "sqlite_path",
    "twin_engine",
]

SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 30.0
"""How long opening a server connection (TCP, TLS, the server's greeting, authentication)
may take where no deadline ends it first (or the deadline, when longer). asyncpg's own
default is 60 s, and asyncmy bounds only the TCP handshake, so a server that accepts and
never answers would hold a MySQL/MariaDB connection attempt forever."""
SQLITE_PRAGMAS = (
    # The busy timeout first: switching a new file to WAL takes its write lock, which
    # another connection opening the same new file at the same moment may hold.
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


class Engine(AsyncEngine):
    """An :class:`~sqlalchemy.ext.asyncio.AsyncEngine` that also closes like a connection.

    What :func:`create_engine` and :func:`convostore.connect` return. It *is* an
    ``AsyncEngine`` (pass it wherever one is accepted; ``dispose()`` works as before), and
    it adds what code written for axio-context-sqlite's ``aiosqlite.Connection`` or for a
    plain DB-API connection expects: ``await engine.close()`` and ``async with``. Both
    dispose of the pool; the engine opens new connections if it is used again.
    """

    __slots__ = ()

    async def close(self) -> None:
        """Close every pooled connection: the same as ``dispose()``."""
        await self.dispose()

    async def dispose(self, close: bool = True) -> None:
        """Close every pooled connection, and those of the read replicas it was given."""
        await super().dispose(close)
        replicas = profile_of(self).replicas
        if replicas is not None:
            await replicas.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.dispose()


_FROM_URL: Any = object()


def create_engine(
    url: str | URL | None = None,
    *,
    fast_sqlite: bool | None = None,
    deadline: float | None = _FROM_URL,
    encryption: Keyring | None = None,
    search_index: bool | None = None,
    read_only: bool = False,
    sqlite_writer: bool | None = None,
    read_url: ReplicaUrls | None = None,
    **kwargs: Any,
) -> Engine:
    """Create an :class:`Engine` (an ``AsyncEngine``) with convostore's defaults.

    No connection is opened until the engine is first used. What it decides about the
    engine (the settings below, from the URL and the arguments) is the engine's
    :class:`~convostore.sql.profile.EngineProfile`: read it with
    :func:`~convostore.sql.profile.profile_of`.

    * SQLite file: WAL journal, 5 s busy timeout, ``synchronous=NORMAL``, foreign keys on;
      its directory must exist (none is created).
    * SQLite ``:memory:``: one connection kept for the engine's lifetime, so the database
      survives across calls; concurrent callers queue for it.
    * PostgreSQL (asyncpg): a connection the server closed is replaced at checkout, from
      the driver's own state (no round trip).
    * MySQL/MariaDB and other drivers: ``pool_pre_ping`` so a dropped connection is
      replaced.

    SQLite connections use :mod:`convostore.sql.sqlite_driver` (aiosqlite with one thread round
    trip per statement) unless ``fast_sqlite=False`` or the environment sets
    ``CONVOSTORE_SQLITE_DRIVER=aiosqlite``.

    The URL's query string may carry convostore's own options (see
    :mod:`convostore.sql.options`): ``deadline``, ``pgbouncer``, ``pool_size``,
    ``max_overflow``, ``pool_timeout``, ``pool_recycle``, ``pool_pre_ping`` and
    ``search_index``. The
    per-call deadline also bounds each lock wait on the server: SQLite's busy timeout is
    at most the deadline, MySQL/MariaDB's ``innodb_lock_wait_timeout`` is set to it
    (rounded up to whole seconds) when a connection opens, and on PostgreSQL asyncpg
    cancels the running statement on the server when the deadline strikes (no startup
    parameter, which PgBouncer would refuse).

    Args:
        url: Anything :func:`convostore.settings.resolve_url` accepts.
        fast_sqlite: Use the thin SQLite adapter (default: yes, see above).
        deadline: Seconds one public call of a façade on this engine may take, retries
            and lock waits included; ``0`` or ``None``: no deadline. Default: the URL's
            ``deadline``, else :data:`convostore.sql.options.DEFAULT_DEADLINE_S`.
        encryption: Encrypt payloads at rest with this keyring (see
            :mod:`convostore.encryption`).
        read_only: Open an SQLite file read-only (as ``?mode=ro`` in the URL does): no
            write, no migration, no journal change, so a database on read-only storage, or
            one to inspect without touching it, can be read. Writes fail with a
            ``DatabaseError``. SQLite only.
        search_index: ``False``: write no search feed, for write paths that never search
            (what it saves: docs/performance.md); ``search()`` then refuses on this engine,
            and ``convostore search --backfill`` indexes the messages later. Default: the
            URL's ``search_index``, else ``True``.
        sqlite_writer: SQLite file: run the façades' write transactions on one writer
            thread per file, on a pinned sync connection, with hot statements precompiled
            (:mod:`convostore.sql.sqlite_writer`). ``False`` keeps every statement on this
            engine, where its event listeners (``before_cursor_execute``, ``echo``) see it.
            Default: the URL's ``sqlite_writer``, else ``CONVOSTORE_SQLITE_WRITER``
            (``off`` turns it off), else ``True``.
        read_url: PostgreSQL read replicas (one URL, a list, or
            :class:`~convostore.sql.replicas.ReadReplicas`) the engine's stores read from,
            each created by this function with the same keyring; disposed with the engine.
        **kwargs: Passed to :func:`sqlalchemy.ext.asyncio.create_async_engine`, overriding
            the defaults and the URL's pool options.

    Raises:
        ConfigurationError: The URL is invalid, its driver is not installed, or an SQLite
            file's directory does not exist.
    """
    resolved = resolve_url(url)
    from_url = url_options(resolved)
    deadline = from_url.deadline if deadline is _FROM_URL else parse_deadline(deadline)
    options: dict[str, Any] = {}
    thin_driver = None
    writer_path = None
    kind = family_from_name(resolved.get_backend_name())
    read_only = read_only or resolved.query.get("mode") == "ro"
    if read_only and kind != "sqlite":
        raise ConfigurationError(
            "read_only applies to SQLite files; on a server, connect as a read-only role"
        )
    if read_only and not is_memory_sqlite(resolved):
        resolved = _read_only_sqlite(resolved)
    if kind == "sqlite":
        if is_memory_sqlite(resolved) and "poolclass" not in kwargs:
            options.update(poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
        else:
            path = sqlite_path(resolved)
            if path is not None and not path.parent.is_dir():
                # Never made here: a typo in a path would quietly start a new database
                # in a new directory (the default, ./convostore.db, needs none).
                raise ConfigurationError(
                    f"no directory {str(path.parent)!r} for the SQLite database "
                    f"{str(path)!r}: create it first"
                )
            if path is not None and not read_only:
                if sqlite_writer is None:
                    sqlite_writer = from_url.sqlite_writer
                if sqlite_writer is None:
                    sqlite_writer = os.environ.get("CONVOSTORE_SQLITE_WRITER", "on") != "off"
                if sqlite_writer:
                    writer_path = os.path.realpath(path)
        if fast_sqlite is None:
            fast_sqlite = os.environ.get("CONVOSTORE_SQLITE_DRIVER", "fast") != "aiosqlite"
        if fast_sqlite and resolved.drivername == "sqlite+aiosqlite":
            cargs, cparams = SQLiteDialect_aiosqlite().create_connect_args(
                resolved.difference_update_query(QUERY_KEYS)
            )
            cparams.update(kwargs.pop("connect_args", {}))
            options["async_creator"] = thin_driver = sqlite_driver.creator(*cargs, **cparams)
    elif resolved.drivername == "postgresql+asyncpg":
        # asyncpg reads its socket all the time, so a connection the server closed is
        # already marked closed: checking that on checkout (_drop_closed_asyncpg) replaces
        # it without the round trip pool_pre_ping would spend on every call.
        options["pool_pre_ping"] = False
        driver_logs.quiet_asyncpg_handshakes()
    else:
        options["pool_pre_ping"] = True
        if kind == "mysql":
            resolved = resolved.update_query_dict({"charset": "utf8mb4"})
    pool = dict(from_url.pool)
    poolclass = kwargs.get("poolclass")
    if poolclass is not None and not issubclass(poolclass, QueuePool):
        # NullPool, StaticPool...: they have no size, overflow or checkout wait.
        for name in ("pool_size", "max_overflow", "pool_timeout"):
            pool.pop(name, None)
    options.update(pool)
    options.update(kwargs)
    if kind == "sqlite":
        # SQLite's dialects would warn about query arguments they do not know.
        resolved = resolved.difference_update_query(QUERY_KEYS)
    try:
        engine = Engine(create_async_engine(resolved, **options).sync_engine)
    except ImportError as exc:
        raise ConfigurationError(
            f"the driver for {redact(resolved)!r} is not installed ({exc.name}); "
            "install convostore[postgresql] or convostore[mysql]"
        ) from exc
    event.listen(engine.sync_engine, "do_connect", _connect_arguments(from_url, deadline))
    if kind == "sqlite":
        event.listen(engine.sync_engine, "connect", sqlite_configurer(deadline, read_only))
        if thin_driver is not None and options["async_creator"] is thin_driver:
            event.listen(engine.sync_engine, "before_cursor_execute", sqlite_driver.hand_over)
    elif kind == "mysql":
        if deadline is not None:
            event.listen(engine.sync_engine, "connect", _mysql_lock_wait(deadline))
        packets = PacketLimit()
        event.listen(engine.sync_engine, "connect", packets.read)
        event.listen(engine.sync_engine, "before_cursor_execute", packets.check)
    if kind != "sqlite":
        # SQLAlchemy first tries a graceful close of a connection it invalidates, shielded
        # from cancellation (2 s on asyncpg, unbounded on asyncmy): a call whose connection
        # died, or whose deadline cut a statement off, would wait that long to end.
        setattr(engine.sync_engine.dialect, "do_terminate", _terminate_at_once)  # noqa: B010
        # An asyncio driver's connection belongs to the loop that opened it: one engine used
        # from several loops (threads, a sync wrapper's background loop) must not hand it
        # to another. The pre-ping (when on) runs before checkout handlers, so it checks too.
        dialect = engine.sync_engine.dialect
        setattr(dialect, "do_ping", _ping_on_own_loop(dialect.do_ping))  # noqa: B010
        event.listen(engine.sync_engine, "checkout", _drop_other_loops)
    if not engine.sync_engine.pool._pre_ping and resolved.drivername == "postgresql+asyncpg":
        event.listen(engine.sync_engine, "checkout", _drop_closed_asyncpg)
    driver: SQLiteDriver | None = None
    if kind == "sqlite":
        # A caller's own async_creator replaces the thin driver.
        thin = thin_driver is not None and options["async_creator"] is thin_driver
        driver = "thin" if thin else "aiosqlite"
    replicas = replica_set(read_url, encryption=encryption)
    store_profile(
        engine,
        EngineProfile(
            family=kind,
            deadline=deadline,
            pgbouncer=from_url.pgbouncer,
            replicas=replicas,
            keyring=encryption,
            search_index=from_url.search_index if search_index is None else search_index,
            read_only=read_only,
            sqlite_driver=driver,
            # Read by convostore.sql.sqlite_writer.writer_for: this engine's writes may go
            # to the file's writer thread.
            sqlite_writer=writer_path,
        ),
    )
    if kind == "sqlite":
        # The delete trigger's SQL function (before any connection opens).
        search_feed.install(engine)
    return engine


def replica_set(read_url: ReplicaUrls | None, **engine_options: Any) -> ReplicaSet | None:
    """Engines for ``read_url`` (each created by :func:`create_engine` with
    ``engine_options``), and how reads use them (:mod:`convostore.sql.replicas`)."""
    if read_url is None:
        return None
    options = read_url if isinstance(read_url, ReadReplicas) else ReadReplicas(read_url)
    urls = options.urls
    listed = [urls] if isinstance(urls, str | URL) else list(urls)
    engines = [create_engine(resolve_url(url), **engine_options) for url in listed]
    return ReplicaSet(engines, options)


def twin_engine(source: AsyncEngine) -> Engine:
    """A new engine on ``source``'s database with a copy of its profile.

    The same settings (deadline, PgBouncer mode, keyring, search switch, read-only, SQLite
    driver and writer), its own pool and group committers, and its own engines for the
    same read replicas: what an adapter's sync methods use on their background event
    loop, where ``source``'s connections cannot go. ``create_engine`` arguments that are
    not settings of the profile (``poolclass``, ``connect_args``...) are not copied.
    """
    profile = profile_of(source)
    twin = create_engine(
        source.url,
        fast_sqlite=None if profile.sqlite_driver is None else profile.sqlite_driver == "thin",
        deadline=profile.deadline,
        encryption=profile.keyring,
        search_index=profile.search_index,
        read_only=profile.read_only,
        sqlite_writer=profile.sqlite_writer is not None,
        read_url=None if profile.replicas is None else profile.replicas.options,
    )
    # What create_engine takes no argument for.
    store_profile(
        twin, dataclasses.replace(profile_of(twin), sqlite_precompile=profile.sqlite_precompile)
    )
    return twin


def _connect_arguments(from_url: UrlOptions, deadline: float | None) -> Any:
    """A ``do_connect`` hook: drop convostore's query parameters, add what the driver needs."""
    # Where a deadline watches, it ends the attempt first; calls that deliberately run
    # without one (an export reading the whole database) still get the full timeout.
    connect_timeout = max(deadline or 0.0, CONNECT_TIMEOUT_S)

    def hook(dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        for key in QUERY_KEYS:
            cparams.pop(key, None)
        if from_url.pgbouncer == "transaction":
            for key, value in pgbouncer.DRIVER_ARGUMENTS.items():
                cparams.setdefault(key, value)
        # A connection attempt ends by itself even where no deadline is watching (a
        # transaction() block, an engine used directly, deadline=0). The caller's own
        # setting wins.
        if dialect.driver == "asyncpg":
            cparams.setdefault("timeout", connect_timeout)
        elif dialect.driver == "asyncmy" and "async_creator_fn" not in cparams:
            seconds = float(cparams.get("connect_timeout") or connect_timeout)
            cparams["async_creator_fn"] = _bounded_connect(
                dialect.loaded_dbapi.asyncmy.connect, seconds
            )

    return hook


def _bounded_connect(
    connect: Callable[..., Awaitable[Any]], seconds: float
) -> Callable[..., Awaitable[Any]]:
    """``connect`` that gives up after ``seconds``, the server's greeting included."""

    async def bounded(*args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(seconds):
                return await connect(*args, **kwargs)
        except TimeoutError as exc:
            raise TimeoutError(
                f"the server did not complete the connection within {seconds:g} s"
            ) from exc

    return bounded


def family(engine: AsyncEngine) -> Family:
    """The backend family of an engine; MySQL and MariaDB are one family."""
    return profile_of(engine).family


def sqlite_path(url: URL) -> Path | None:
    """The file behind an SQLite URL, or ``None`` for an in-memory database."""
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return None
    database = url.database or ""
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def _drop_closed_asyncpg(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry, _proxy: Any
) -> None:
    # SQLAlchemy's documented "pessimistic" pattern: raising DisconnectionError in a
    # checkout handler makes the pool discard this connection and hand out another.
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def _terminate_at_once(dbapi_connection: DBAPIConnection) -> None:
    # The caller never waits for a dead connection. asyncpg's is closed gracefully in the
    # background on its own loop (which may be another thread's): its close lets the
    # CancelRequest asyncpg sent for a statement cut off by a deadline reach the server,
    # where terminate() would drop it and leave the statement waiting on its lock; it
    # gives up after _GRACEFUL_CLOSE_S, as SQLAlchemy's does. asyncmy's synchronous close()
    # just drops the socket (the server's lock-wait timeout is the deadline there).
    driver = dbapi_connection.driver_connection
    owner = _loop_of(dbapi_connection)
    if owner is None or owner.is_closed():
        with contextlib.suppress(Exception):
            (getattr(driver, "terminate", None) or driver.close)()
        return
    if getattr(driver, "terminate", None) is None:
        if owner is _running_loop():
            driver.close()
        else:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                owner.call_soon_threadsafe(driver.close)
        return

    async def close() -> None:
        # On failure (or cancellation at loop shutdown) asyncpg aborts the connection.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await driver.close(timeout=_GRACEFUL_CLOSE_S)

    if owner is _running_loop():
        task = owner.create_task(close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    else:
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), owner)


_GRACEFUL_CLOSE_S = 2
# Background closes in progress (the loop holds tasks only weakly).
_closing: set[asyncio.Task[None]] = set()


def _loop_of(dbapi_connection: DBAPIConnection) -> asyncio.AbstractEventLoop | None:
    loop: asyncio.AbstractEventLoop | None = getattr(
        dbapi_connection.driver_connection, "_loop", None
    )
    return loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _on_other_loop(dbapi_connection: DBAPIConnection) -> bool:
    owner = _loop_of(dbapi_connection)
    return owner is not None and owner is not _running_loop()


def _ping_on_own_loop(ping: Callable[[DBAPIConnection], bool]) -> Callable[[DBAPIConnection], bool]:
    def do_ping(dbapi_connection: DBAPIConnection) -> bool:
        # False: the pool drops the connection and opens another, on this loop.
        return not _on_other_loop(dbapi_connection) and ping(dbapi_connection)

    return do_ping


def _drop_other_loops(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry, _proxy: Any
) -> None:
    if _on_other_loop(dbapi_connection):
        raise DisconnectionError("this connection belongs to another event loop")


def is_read_only(engine: AsyncEngine) -> bool:
    """Whether ``engine`` opens its SQLite file read-only (``read_only=True``, ``?mode=ro``)."""
    return profile_of(engine).read_only


def _read_only_sqlite(url: URL) -> URL:
    """An SQLite URL opened read-only: a ``file:`` URI with ``mode=ro``.

    In a directory this process cannot write, SQLite cannot create the WAL index (``-shm``)
    it needs to read a WAL database; a database without one was closed cleanly (nothing
    is left in a WAL), so it is opened ``immutable``, which needs no index.
    """
    query = {"mode": "ro", "uri": "true"}
    path = sqlite_path(url)
    if (
        path is not None
        and not os.access(path.parent, os.W_OK)
        and not Path(f"{path}-shm").exists()
    ):
        query["immutable"] = "1"
    database = url.database or ""
    if not database.startswith("file:"):
        if database.startswith("//"):
            database = "/" + database.lstrip("/")  # "file://x" would name a host x
        database = f"file:{database}"  # SQLite reads URI parameters only in a file: URI
    return url.set(database=database).update_query_dict(query)


def sqlite_configurer(deadline: float | None, read_only: bool = False) -> Any:
    """A ``connect`` hook setting convostore's SQLite pragmas (busy timeout <= deadline)."""
    pragmas: tuple[str, ...] = SQLITE_PRAGMAS
    if read_only:
        # Switching the journal writes the database; a read-only open keeps what it finds.
        pragmas = tuple(p for p in pragmas if "journal_mode" not in p)
    if deadline is not None and deadline * 1000 < SQLITE_BUSY_TIMEOUT_MS:
        # A lock wait may not outlast the call's deadline.
        busy = f"PRAGMA busy_timeout={math.ceil(deadline * 1000)}"
        pragmas = tuple(busy if "busy_timeout" in p else p for p in pragmas)

    def configure(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    return configure


def _mysql_lock_wait(deadline: float) -> Any:
    # Whole seconds, at least 1. A session setting: the pool's reset (a rollback) keeps it.
    statement = f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(deadline))}"

    def configure(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()

    return configure
