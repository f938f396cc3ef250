"""PostgreSQL's single-statement writes run straight on asyncpg, compiled once.

A single append on PostgreSQL is one statement (a data-modifying CTE, see
:func:`convostore.sql.counters.insert_at_counter`) run in autocommit: one round trip, as for
raw asyncpg. What made it 0.43x raw asyncpg was the client's CPU around that round trip:
~540 µs for SQLAlchemy's ``connect()`` + ``begin`` + ``execute`` + ``commit`` + ``close``
on the asyncio engine (greenlet switches, the execution context, parameter processing,
the result) against ~160 µs for asyncpg's own ``fetch`` of the same statement
(docs/performance.md, "PostgreSQL"). Here such a write runs:

* on a connection checked out of the engine's own pool (its size, timeout, checkout
  handlers, recycling and invalidation all apply), in one greenlet for checkout, statement
  and check-in;
* with the statement compiled once from Core for the dialect and its parameters converted
  by the columns' own bind processors (:mod:`convostore.sql.precompiled`: the same SQL
  text and the same values a Core execution sends), executed by asyncpg, which prepares it
  once per connection and keeps it in its statement cache;
* errors wrapped exactly as SQLAlchemy wraps them (the dialect's translation of asyncpg's
  exceptions, ``DBAPIError.instance``, the dialect's disconnect test, the connection and
  the pool invalidated as a Core execution would), so retries, error translation and
  :class:`~convostore.errors.CommitOutcomeUnknown` see the same exceptions on both paths;
  a deadline cancels the statement as before (asyncpg sends the server a cancel request)
  and the connection is discarded, as SQLAlchemy does on a cancellation.

Behind PgBouncer in transaction pooling mode (:mod:`convostore.sql.pgbouncer`) the statement
runs inside ``BEGIN``/``COMMIT`` on asyncpg (asyncpg's statement cache is off there, so it
is an unnamed statement, valid in that transaction only).

Only the units of work a façade marks as a single statement (``autocommit``) come here,
and only statements built by :func:`convostore.sql.dml.cached` that
:func:`~convostore.sql.precompiled.compile_hot` accepts; anything else raises
:class:`NeedsCore` before a byte is sent, and the unit runs through Core. While the
engine has execution hooks (``echo``, or listeners for ``handle_error`` or for
:data:`~convostore.sql.sqlite_writer.EXECUTION_EVENTS`, as for SQLite's writer), every
write stays on Core, so the hooks see every statement.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only, greenlet_spawn

from convostore.sql.dml import is_cached
from convostore.sql.precompiled import Precompiled, Rows, compile_hot
from convostore.sql.sqlite_writer import EXECUTION_EVENTS

__all__ = ["DIRECT_ATTRIBUTE", "AsyncpgDirect", "DirectConnection", "NeedsCore", "direct_for"]

T = TypeVar("T")

DIRECT_ATTRIBUTE = "convostore_asyncpg_direct"
"""Set to ``False`` on an engine's dialect to run every statement through Core (tests)."""

_MISSING: Any = object()


class NeedsCore(Exception):  # noqa: N818 - a signal, not an error a caller sees
    """The unit of work ran a statement the direct path cannot run; nothing was sent."""


class DirectConnection:
    """What a unit of work runs its statement on: a pooled connection's asyncpg driver.

    ``begin()`` / ``commit()`` open and commit a transaction (behind PgBouncer's
    transaction pooling); without ``begin()`` each statement commits by itself.
    """

    __slots__ = ("_adapter", "_direct", "_driver", "_fairy", "_sent", "_transaction", "dialect")

    def __init__(self, direct: AsyncpgDirect, fairy: Any) -> None:
        self._direct = direct
        self._fairy = fairy
        self._adapter = fairy.dbapi_connection
        self._driver = fairy.driver_connection
        self._transaction: Any = None
        self._sent = False
        self.dialect = direct.dialect

    async def begin(self) -> None:
        adapter = self._adapter
        if adapter.isolation_level == "autocommit":
            return  # an engine made with isolation_level="AUTOCOMMIT": no BEGIN, as on Core
        transaction = self._driver.transaction(
            isolation=adapter.isolation_level,
            readonly=adapter.readonly,
            deferrable=adapter.deferrable,
        )
        try:
            await transaction.start()
        except Exception as exc:
            raise self._direct.wrapped(exc, "BEGIN", None, self._fairy) from exc
        self._transaction = transaction

    async def commit(self) -> None:
        transaction, self._transaction = self._transaction, None
        if transaction is None:
            return
        try:
            await transaction.commit()
        except Exception as exc:
            raise self._direct.wrapped(exc, "COMMIT", None, self._fairy) from exc

    async def execute(
        self,
        statement: Any,
        parameters: Mapping[str, Any] | None = None,
        *,
        execution_options: Any = None,
    ) -> Rows:
        if self._sent and self._transaction is None:
            # The first statement committed by itself: a unit of work marked as a single
            # statement ran two.
            raise RuntimeError("a single-statement unit of work ran a second statement")
        plan = self._direct.plan(statement, parameters)
        if plan is None:
            raise NeedsCore()  # nothing of this unit is committed: it reruns on Core
        direct = self._direct
        try:
            values = plan.parameters(parameters or {})
        except Exception as exc:
            # A processor's error, wrapped as Core wraps it (a ConvostoreError inside
            # StatementError, which translate_errors unwraps).
            raise direct.wrapped(exc, plan.sql, None, None) from exc
        self._sent = True
        try:
            if plan.returns_rows:
                rows = await self._driver.fetch(plan.sql, *values)
                return Rows(rows, len(rows), None)
            status = await self._driver.execute(plan.sql, *values)
        except Exception as exc:
            raise direct.wrapped(exc, plan.sql, values, self._fairy) from exc
        return Rows([], _rowcount(status), None)

    def abandon(self, exc: BaseException) -> None:
        """After ``exc`` ended the unit (in the greenlet): roll back or discard the connection.

        A cancellation (a deadline) leaves a statement cut off: the connection is
        invalidated, as SQLAlchemy invalidates one on a cancelled execution; asyncpg's
        cancel request still reaches the server (the engine closes it gracefully).
        """
        fairy = self._fairy
        if not fairy.is_valid:
            return
        if not isinstance(exc, Exception) or self._driver.is_closed():
            fairy.invalidate(exc if isinstance(exc, Exception) else None)
            return
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            try:
                await_only(transaction.rollback())
            except Exception:
                # A rollback that fails leaves the connection in an unknown state.
                fairy.invalidate()


class AsyncpgDirect:
    """The direct path of one asyncpg engine: its precompiled statements and its pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine: Engine = engine.sync_engine
        self.dialect = self._engine.dialect
        self._plans: dict[int, Precompiled | None] = {}

    def usable(self) -> bool:
        """Whether writes may go direct now (no execution hooks, not switched off)."""
        return getattr(self.dialect, DIRECT_ATTRIBUTE, True) and not _observed(self._engine)

    def plan(self, statement: Any, parameters: Any) -> Precompiled | None:
        """``statement`` precompiled, or ``None`` if it must run through Core."""
        if parameters is not None and type(parameters) is not dict:
            return None
        plan = self._plans.get(id(statement), _MISSING)
        if plan is _MISSING:
            if not is_cached(statement):
                return None  # its id may be reused: never remembered
            plan = self._plans[id(statement)] = compile_hot(statement, self.dialect)
        return plan  # type: ignore[no-any-return]

    async def run(self, unit: Callable[[DirectConnection], Awaitable[T]]) -> T:
        """Run ``unit`` on a connection checked out of the engine's pool, then check it in.

        Raises what ``unit`` raised, SQLAlchemy's exceptions for the database's errors, or
        :class:`NeedsCore` (nothing was sent) for a statement only Core can run.
        """
        return await greenlet_spawn(self._in_greenlet, unit)

    def _in_greenlet(self, unit: Callable[[DirectConnection], Awaitable[T]]) -> T:
        engine = self._engine
        try:
            fairy = engine.raw_connection()
        except self.dialect.loaded_dbapi.Error as exc:
            # As Engine.connect() reports a failed checkout.
            Connection._handle_dbapi_exception_noconnection(exc, self.dialect, engine)
        try:
            connection = DirectConnection(self, fairy)
            try:
                return await_only(unit(connection))
            except BaseException as exc:
                connection.abandon(exc)
                raise
        finally:
            fairy.close()

    def wrapped(self, exc: Exception, statement: str, parameters: Any, fairy: Any) -> BaseException:
        """``exc`` (asyncpg's, a processor's) as a Core execution would have raised it.

        The dialect translates asyncpg's exception into its DB-API class, which
        ``DBAPIError.instance`` wraps; a lost connection is invalidated, with the pool (so
        its other connections are checked before reuse), as Core does.
        """
        dialect = self.dialect
        dbapi = dialect.loaded_dbapi
        error: BaseException = exc
        if fairy is not None and not isinstance(exc, dbapi.Error):
            try:
                fairy.dbapi_connection._handle_exception(exc)
            except Exception as translated:
                error = translated
        if not isinstance(error, dbapi.Error):
            if fairy is not None:
                # Not the driver's error (an OSError, say): Core raises it as it is.
                return error
            return sa_exc.DBAPIError.instance(
                statement,
                parameters,
                exc,
                dbapi.Error,
                hide_parameters=self._engine.hide_parameters,
                dialect=dialect,
            )
        lost = fairy is not None and dialect.is_disconnect(error, fairy.dbapi_connection, None)
        wrapped = sa_exc.DBAPIError.instance(
            statement,
            parameters,
            error,
            dbapi.Error,
            hide_parameters=self._engine.hide_parameters,
            connection_invalidated=lost,
            dialect=dialect,
        )
        if lost and fairy.is_valid:
            # As Core: the pool's older connections are checked before reuse, this one goes.
            self._engine.pool._invalidate(fairy, error)
            if fairy.is_valid:
                fairy.invalidate(error)
        return wrapped


def _observed(engine: Engine) -> bool:
    # echo, or a listener that must see every statement (convostore adds none on asyncpg).
    if engine.echo:
        return True
    dispatch = engine.dispatch
    return any(getattr(dispatch, name) for name in EXECUTION_EVENTS) or bool(
        engine.dialect.dispatch.handle_error
    )


def _rowcount(status: str | None) -> int:
    # asyncpg's status tag: "INSERT 0 3", "UPDATE 2", "DELETE 1"...
    last = (status or "").rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


# Held by the engine itself (its direct path holds the engine too, a cycle the collector
# frees): a WeakKeyDictionary keyed by the engine, whose value holds the engine, kept every
# engine ever used alive.
_DIRECT = "_convostore_asyncpg_direct"


def direct_for(engine: AsyncEngine) -> AsyncpgDirect | None:
    """The direct path of ``engine``, or ``None`` if it is not PostgreSQL on asyncpg."""
    sync_engine = engine.sync_engine
    if sync_engine.dialect.name != "postgresql" or sync_engine.dialect.driver != "asyncpg":
        return None
    owner = vars(sync_engine)
    direct: AsyncpgDirect | None = owner.get(_DIRECT)
    if direct is None:
        direct = owner[_DIRECT] = AsyncpgDirect(engine)
    return direct
