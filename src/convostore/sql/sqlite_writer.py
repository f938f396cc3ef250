"""SQLite's write transactions on one thread per database file, in one hop each.

On the embedded default, SQLAlchemy's asyncio layer costs more than SQLite itself: a
transaction on the async engine spends ~464 µs of CPU on checkout, begin, commit and
greenlet switches, against ~60 µs on a sync engine (measured: docs/performance.md). So the
transactions a façade owns and that write run here instead, whole, on a dedicated thread:

* one thread per database file (every engine on the file in this process shares it, so
  their writes queue in the thread instead of in SQLite's busy handler), and on it one
  pinned pysqlite connection per engine, with convostore's pragmas;
* one hop per transaction: the event loop hands the unit of work over and awaits a future;
  the unit (the repositories' own code, whose ``await executor.execute(...)`` never
  suspends here) runs to its commit on the thread;
* statements that :func:`convostore.sql.dml.cached` built once run precompiled on the
  DB-API cursor (:mod:`convostore.sql.precompiled`); every other statement runs through
  the sync engine's Core ``execute``.

What stays as it was: retries and error translation (the runner's loop around each hop;
the sync engine raises the same ``sqlalchemy.exc`` classes), deadlines (on expiry a queued
unit is dropped unrun and a running one is stopped with ``sqlite3.Connection.interrupt()``,
its transaction rolled back), group commit (its batches are units like any other), reads
(on the async engine's pooled connections, concurrent with the writer under WAL), a
caller's unit of work (``transaction()`` / ``bind()`` run on its ``AsyncSession``) and
``:memory:`` databases (which live in the async engine's single connection).

Event hooks. The async engine's ``connect`` hooks run on the writer's connection too. Its
execution hooks cannot see what runs here (precompiled statements reach no SQLAlchemy
event at all), so while the engine has any (``echo``, or a listener for one of
:data:`EXECUTION_EVENTS` or ``handle_error``: an OpenTelemetry instrumentation, say) its
writes stay on it, and the hooks see every statement, as before.
``create_engine(..., sqlite_writer=False)`` or ``?sqlite_writer=false`` on the URL turns
the writer off for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from convostore.sql import search_index
from convostore.sql.dml import Executor, is_cached
from convostore.sql.engine import sqlite_configurer
from convostore.sql.precompiled import Memo, Precompiled, compile_hot
from convostore.sql.profile import profile_of, store_profile, stored_profile
from convostore.sql.sqlite_driver import hand_over
from convostore.sql.types import writes_search_index

__all__ = ["EXECUTION_EVENTS", "SQLiteWriter", "SyncExecutor", "writer_for"]

EXECUTION_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
    "begin",
    "commit",
    "rollback",
    "savepoint",
    "release_savepoint",
    "rollback_savepoint",
)
"""``ConnectionEvents`` whose listeners on an engine keep its writes off the writer (as do
``handle_error`` listeners and ``echo``)."""

T = TypeVar("T")

_MISSING: Any = object()

IDLE_AFTER = 0.05
"""Seconds without a unit of work after which the writer thread does its idle work: the
search index's catch-up, :data:`~convostore.sql.search_index.IDLE_BATCH` rows at a time."""


class Interrupted(sa_exc.OperationalError):
    """The unit of work was stopped from the event loop (its deadline, a cancellation)."""


class _Job:
    __slots__ = ("cancelled", "dbapi", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[_Job], Any],
        future: asyncio.Future[Any] | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.cancelled = False
        self.dbapi: Any = None  # the connection the unit runs on, once it has started


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _FileThread:
    """The writer thread of one database file: a queue in, the loop's future out."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.users = 0
        # Work for idle moments, per writer on this file (SQLite's search catch-up): each
        # does one bounded batch and says whether more is left.
        self.idle: dict[int, Callable[[], bool]] = {}
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._current: _Job | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"convostore-writer:{os.path.basename(path)}", daemon=True
        )
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    def cancel(self, job: _Job) -> None:
        """Drop ``job`` if it has not started; interrupt its statement if it is running."""
        with self._lock:
            job.cancelled = True
            if self._current is job and job.dbapi is not None:
                # Stops the running statement (SQLITE_INTERRUPT); between statements the
                # flag above stops the next one. The unit's transaction then rolls back.
                job.dbapi.interrupt()

    def started(self, job: _Job, dbapi: Any) -> None:
        """Called by a unit on the thread before its first statement."""
        with self._lock:
            job.dbapi = dbapi
            if job.cancelled:
                raise _interrupted()

    def stop(self) -> None:
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _main(self) -> None:
        get = self._queue.get
        behind = False  # a unit ran since the idle work last found nothing to do
        while True:
            if behind and self.idle:
                try:
                    job = get(timeout=IDLE_AFTER)
                except queue.Empty:
                    behind = self._run_idle()
                    continue
            else:
                job = get()
            if job is None:
                break
            behind = True
            self._serve(job)
            # Nothing of a finished job (its loop, its future, its result) stays referenced
            # by the idle thread: a loop closed after its last write must be collectable.
            del job

    def _serve(self, job: _Job) -> None:
        with self._lock:
            if job.cancelled:
                return
            self._current = job
        try:
            value, ok = job.fn(job), True
        except BaseException as exc:  # handed to the awaiting caller
            value, ok = exc, False
        with self._lock:
            self._current = None
        if job.loop is None or job.future is None:  # nobody awaits it (closing)
            return
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed
            job.loop.call_soon_threadsafe(_settle, job.future, ok, value)

    def _run_idle(self) -> bool:
        # One batch per writer, then back to the queue (a unit waits at most one batch).
        more = False
        for work in list(self.idle.values()):
            more = work() or more
        return more


def _interrupted() -> Interrupted:
    return Interrupted("(unit of work)", None, Exception("interrupted"))


_threads: dict[str, _FileThread] = {}
_threads_lock = threading.Lock()


def _acquire(path: str) -> _FileThread:
    with _threads_lock:
        thread = _threads.get(path)
        if thread is None:
            thread = _threads[path] = _FileThread(path)
        thread.users += 1
        return thread


def _release(thread: _FileThread) -> None:
    with _threads_lock:
        thread.users -= 1
        if thread.users > 0:
            return
        del _threads[thread.path]
    thread.stop()


class SyncExecutor:
    """What repositories run statements on inside the writer: a sync ``Connection``.

    Its coroutines never suspend, so a unit of work written for an ``AsyncConnection``
    runs to its end on the writer thread (:func:`drive`).
    """

    __slots__ = ("_dbapi", "_job", "_memo", "_plans", "_thread", "conn", "dialect")

    def __init__(
        self,
        conn: Connection,
        plans: dict[int, Precompiled | None] | None,
        thread: _FileThread,
        job: _Job,
    ) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self._dbapi = conn.connection.driver_connection
        self._plans = plans
        self._thread = thread
        self._job = job
        # Bind values converted in this unit (its timestamp, bound several times).
        self._memo: Memo = {}

    async def execute(
        self,
        statement: Any,
        parameters: Any = None,
        *,
        execution_options: Any = None,
    ) -> Any:
        if self._job.cancelled:
            raise _interrupted()
        plans = self._plans
        if plans is not None and (parameters is None or type(parameters) is dict):
            plan = plans.get(id(statement), _MISSING)
            if plan is _MISSING and is_cached(statement):
                plan = plans[id(statement)] = compile_hot(statement, self.dialect)
            if plan is not None and plan is not _MISSING:
                return plan.run(self._dbapi, parameters or {}, self._memo)
        if execution_options:
            return self.conn.execute(statement, parameters, execution_options=execution_options)
        return self.conn.execute(statement, parameters)

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None, execution_options: Any = None
    ) -> Any:
        if self._job.cancelled:
            raise _interrupted()
        return self.conn.exec_driver_sql(statement, parameters, execution_options)

    async def connection(self) -> SyncExecutor:
        # What convostore.sql.dml asks an executor that is not an AsyncConnection for.
        return self


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (repository code on a :class:`SyncExecutor`)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a unit of work on the SQLite writer awaited something else than SQL")


class SQLiteWriter:
    """The writer of one engine: its pinned connection on its file's thread."""

    def __init__(self, engine: AsyncEngine, path: str) -> None:
        self._source = engine.sync_engine
        self._async_dialect = engine.sync_engine.dialect
        self._path = path
        self._sync = _sync_engine(engine)
        self._thread: _FileThread | None = None
        self._conn: Connection | None = None
        self._plans: dict[int, Precompiled | None] = {}
        self._lock = threading.Lock()

    def observed(self) -> bool:
        """Whether the engine has execution hooks (then its writes stay on it)."""
        source = self._source
        if source.echo:
            return True
        dispatch = source.dispatch
        for name in EXECUTION_EVENTS:
            for hook in getattr(dispatch, name):
                if not _is_hand_over(hook):
                    return True
        return bool(source.dialect.dispatch.handle_error)

    async def run(self, work: Callable[[Executor], Awaitable[T]]) -> T:
        """Run ``work`` in a transaction on the writer thread and commit; one hop.

        Raises what ``work`` or the database raised (SQLAlchemy's classes, as on the async
        engine). Cancelled while waiting (a deadline), the unit is dropped if it has not
        started and interrupted if it has.
        """
        thread = self._thread_for_use()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(lambda job: self._unit(thread, job, work), future, loop)
        thread.submit(job)
        try:
            return await future
        except asyncio.CancelledError:
            thread.cancel(job)
            raise

    def close(self) -> None:
        """Close the pinned connection and leave the file's thread (stopped when unused)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.idle.pop(id(self), None)
        done = threading.Event()

        def close_connection(_job: _Job) -> None:
            try:
                if self._conn is not None:
                    self._conn.close()
            finally:
                self._conn = None
                done.set()

        thread.submit(_Job(close_connection, None, None))
        done.wait()
        _release(thread)
        self._sync.dispose()

    def _thread_for_use(self) -> _FileThread:
        thread = self._thread
        if thread is None:
            with self._lock:
                if self._thread is None:
                    acquired = self._thread = _acquire(self._path)
                    acquired.idle[id(self)] = lambda: self._idle(acquired)
                thread = self._thread
        return thread

    def _idle(self, thread: _FileThread) -> bool:
        """On the thread, when it has had nothing to do: one batch of the search index's
        catch-up; whether more is left. Failures (the file locked by another process, a
        closed engine) are left for the next search, which catches up itself."""
        profile = profile_of(self._async_dialect)
        if not writes_search_index(self._async_dialect) or profile.read_only:
            return False
        try:
            return self._unit(thread, _Job(_nothing, None, None), _idle_catch_up)
        except Exception:
            return False

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                with contextlib.suppress(sa_exc.SQLAlchemyError):
                    conn.close()
            conn = self._conn = self._sync.connect()
        return conn

    def _unit(self, thread: _FileThread, job: _Job, work: Callable[[Executor], Awaitable[T]]) -> T:
        # On the writer thread: the profile of the async engine (the column types read its
        # keyring and search switch; a keyring may be installed after this engine was
        # made, which replaces the profile), then the whole transaction.
        profile = profile_of(self._async_dialect)
        if stored_profile(self._sync.dialect) is not profile:
            store_profile(self._sync.dialect, profile)
        conn = self._connection()
        plans = self._plans if profile.sqlite_precompile else None
        executor = SyncExecutor(conn, plans, thread, job)
        dbapi = cast(sqlite3.Connection, executor._dbapi)
        thread.started(job, dbapi)
        try:
            # No SQLAlchemy transaction is begun up front: pysqlite opens the database's
            # own before the first write either way. A statement through Core begins
            # SQLAlchemy's (autobegin), and then it commits or rolls back through it; a
            # unit of precompiled statements alone (an append, add_message, credit)
            # commits on the driver, which saves SQLAlchemy's transaction bookkeeping.
            try:
                result: T = drive(work(executor))  # type: ignore[arg-type]
                if conn.in_transaction():
                    conn.commit()
                else:
                    _on_driver(dbapi.commit)
            except BaseException:
                if conn.in_transaction():
                    conn.rollback()
                else:
                    _on_driver(dbapi.rollback)
                raise
            return result
        except sa_exc.DBAPIError as exc:
            if job.cancelled and "interrupted" in str(exc.orig):
                raise _interrupted() from exc
            raise


def _on_driver(call: Callable[[], None]) -> None:
    # A commit or rollback on the DB-API connection, its failure wrapped as Core wraps it
    # (the retry policy and error translation read SQLAlchemy's classes).
    try:
        call()
    except sqlite3.Error as exc:
        raise sa_exc.DBAPIError.instance(None, None, exc, sqlite3.Error) from exc


def _nothing(_job: _Job) -> None:
    return None


async def _idle_catch_up(executor: Executor) -> bool:
    more = False
    for table in search_index.TABLES:
        if not await search_index.behind(executor, table):
            continue
        dialect = search_index.dialect_of(executor)
        counts = await search_index.catch_up(
            executor, dialect, table, limit=search_index.IDLE_BATCH
        )
        more = more or (counts is not None and counts[0] == search_index.IDLE_BATCH)
    return more


def _is_hand_over(hook: Any) -> bool:
    # convostore's own hook for its thin driver, as registered (SQLAlchemy wraps it).
    cells = getattr(hook, "__closure__", None) or ()
    return hook is hand_over or any(
        getattr(cell, "cell_contents", None) is hand_over for cell in cells
    )


def _sync_engine(engine: AsyncEngine) -> Engine:
    """A pysqlite engine on the async engine's file, with its ``connect`` hooks.

    The async engine's ``connect`` listeners (convostore's pragmas, and any a user added:
    more pragmas, functions, extensions) run on the writer's connection too.
    """
    source = engine.sync_engine
    url = engine.url.set(drivername="sqlite+pysqlite")
    sync = create_sync_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False})

    configure = sqlite_configurer(profile_of(engine).deadline)

    def connect(dbapi_connection: Any, record: Any) -> None:
        configure(dbapi_connection, record)
        for hook in source.pool.dispatch.connect:
            # SQLAlchemy's own (the aiosqlite dialect's set-up) are not for this driver.
            if not getattr(hook, "__module__", "").startswith("sqlalchemy"):
                hook(dbapi_connection, record)

    event.listen(sync, "connect", connect)
    return sync


_WRITER = "_convostore_sqlite_writer"
_writers_lock = threading.Lock()


def writer_for(engine: AsyncEngine) -> SQLiteWriter | None:
    """The writer of ``engine``, created on first use; ``None`` where it does not apply.

    It applies to SQLite file engines made by :func:`convostore.create_engine` with the
    writer on (the default); engines made elsewhere keep every statement on themselves.
    """
    sync_engine = engine.sync_engine
    path = profile_of(engine).sqlite_writer
    if path is None:
        return None
    with _writers_lock:
        # Held by the engine itself (its writer holds it too, a cycle the collector
        # frees): a registry outside it would keep every engine ever used alive.
        owner = vars(sync_engine)
        writer = owner.get(_WRITER)
        if writer is None:
            writer = owner[_WRITER] = SQLiteWriter(engine, path)
            # dispose() closes the pinned connection (and the thread, when it was the
            # file's last engine); the writer reopens it if the engine is used again.
            event.listen(sync_engine, "engine_disposed", lambda _engine: writer.close())
    return writer
