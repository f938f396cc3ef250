"""Transaction boundaries for the façades.

A façade runs each public call as one short transaction on a connection from the pool, or,
when it is bound to a caller's session (a unit of work), inside that session's transaction
without committing. Calls in a caller's unit of work are never retried: the caller owns
that transaction.

Retry policy. Transient conflicts (:func:`convostore.sql.retry.is_retryable`: deadlocks,
serialization failures, lock-wait timeouts, SQLite's "database is locked") roll the whole
transaction back, so :class:`TransactionRunner` runs it again. The retry is bounded:

* at most :data:`MAX_ATTEMPTS` (8) attempts in all;
* before attempt ``n + 1`` a random pause drawn uniformly from
  ``[0, min(0.2 s, 5 ms * 2**n))`` ("full jitter", so writers that collided do not collide
  again in lockstep); the pauses of one call add up to at most 0.71 s;
* each attempt may itself wait for locks: up to SQLite's 5 s ``busy_timeout``, or the
  server's lock-wait timeout (``lock_timeout`` on PostgreSQL, ``innodb_lock_wait_timeout``
  on MySQL/MariaDB), which are the server's to configure.

After the last attempt the error surfaces as :class:`~convostore.errors.DatabaseError`.
A lost connection is never retried, since a ``COMMIT`` that was cut off may have been
applied; it surfaces at once as :class:`~convostore.errors.DatabaseError` (as
:class:`~convostore.errors.CommitOutcomeUnknown` when it was lost during the ``COMMIT``,
or during a statement that commits itself), and the next call gets a fresh connection
from the pool. Hot counters do not need these retries on any
backend (writers queue on the counter row's lock); they are there for the rare deadlock,
such as two first inserts of the same key on MySQL/MariaDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from convostore.deadlines import Deadline
from convostore.errors import (
    CommitOutcomeUnknown,
    ConfigurationError,
    ConflictError,
)
from convostore.sql.asyncpg_direct import AsyncpgDirect, DirectConnection, NeedsCore, direct_for
from convostore.sql.dml import Executor
from convostore.sql.profile import profile_of
from convostore.sql.replicas import ReadYourWrites, ReplicaSet
from convostore.sql.retry import is_retryable, translate_errors
from convostore.sql.sqlite_driver import OWNED
from convostore.sql.sqlite_writer import SQLiteWriter, writer_for
from convostore.telemetry import note_retry

__all__ = ["MAX_ATTEMPTS", "TransactionRunner"]

T = TypeVar("T")

MAX_ATTEMPTS = 8
_BASE_DELAY = 0.005
_MAX_DELAY = 0.2


class TransactionRunner:
    """Runs repository work in a transaction it owns, or in the caller's session."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        bound: AsyncSession | None = None,
        replicas: ReplicaSet | None = None,
        writer: bool = False,
    ) -> None:
        self.engine = engine
        self.bound = bound
        # writer: the works run() gets write through the repositories alone (nothing but
        # executor calls is awaited), so on a SQLite file they may run whole on its writer
        # thread (convostore.sql.sqlite_writer). Reads stay on the pool, beside the writer.
        self._writer: SQLiteWriter | None = writer_for(engine) if writer else None
        # The same works' single statements (autocommit) may run straight on asyncpg
        # (convostore.sql.asyncpg_direct) on PostgreSQL.
        self._direct: AsyncpgDirect | None = direct_for(engine) if writer else None
        # transaction() hands a session to the caller's block, which decides when it ends.
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        # run() owns its transactions: it runs them on a plain AsyncConnection (an ORM
        # session costs ~30% of a small write and the repositories need only execute()),
        # and says so to the driver, so that a statement marked as the last of its
        # transaction may carry the commit (see convostore.sql.sqlite_driver).
        self._owned = engine.execution_options(**{OWNED: True})
        # The same pool; the connection is switched to autocommit for the checkout only.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        profile = profile_of(engine)
        # Behind PgBouncer's transaction pooling nothing may run outside a transaction.
        self._transactions_only = profile.runs_in_transactions
        self.deadline = profile.deadline
        # Where reads may go (convostore.sql.replicas), and what this runner's owner wrote:
        # shared by every view and copy made from the owner, as read-your-writes requires.
        self.replicas: ReplicaSet | None = replicas or profile.replicas
        self.consistency = ReadYourWrites()
        # Set when the transaction() block a bound view came from is over: the view (and
        # any fork or with_session made from it) must not start a new, uncommitted one.
        self.ended = False

    def bind(self, session: AsyncSession) -> TransactionRunner:
        """A runner that works inside ``session`` and leaves committing to its owner."""
        runner = copy.copy(self)
        runner.bound = session
        return runner

    async def noting_write(self, write: Awaitable[T]) -> T:
        """Await a write made outside :meth:`run` (a group commit) and note it was made,
        for read-your-writes (see :mod:`convostore.sql.replicas`)."""
        try:
            return await write
        finally:
            if self.replicas is not None:
                self.consistency.wrote()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TransactionRunner]:
        """A runner bound to a new transaction: committed if the block ends normally, else
        rolled back.

        Failures of the begin or the commit (a connection killed while the caller's block
        ran, say) come out as convostore errors like those of any call, and a connection
        lost during the ``COMMIT`` as :class:`~convostore.errors.CommitOutcomeUnknown`
        (the block's writes are applied all or none, which one unknown); what the block
        itself raises passes through untouched. The block is not retried: only its owner
        knows whether it can run again. Once the block is over, the bound runner (and any
        view holding it) refuses to run.
        """
        session = self.sessionmaker()
        try:
            with translate_errors():
                await session.begin()
            bound = self.bind(session)
            try:
                yield bound
            except BaseException:
                # The block's own exception is the one to report; a failed rollback (a dead
                # connection) changes nothing the database has not already dropped.
                with contextlib.suppress(sa_exc.SQLAlchemyError, OSError):
                    await session.rollback()
                raise
            finally:
                bound.ended = True
            # A COMMIT cut off may have been applied, as in run(): say so, never a plain
            # DatabaseError that reads as "nothing happened".
            with translate_errors(), _unknown_if_cut(True):
                await session.commit()
            if self.replicas is not None:
                self.consistency.wrote()
        finally:
            with contextlib.suppress(sa_exc.SQLAlchemyError, OSError):
                await session.close()

    async def run(
        self,
        work: Callable[[Executor], Awaitable[T]],
        *,
        autocommit: bool = False,
        rerun_on_conflict: bool = False,
        read: bool = False,
    ) -> T:
        """Run ``work`` in a transaction and commit, retrying transient conflicts.

        ``work`` gets what the repositories run their statements on: the caller's session
        inside a unit of work, else a connection of this runner's own transaction.

        Args:
            work: The repository calls to run.
            autocommit: ``work`` writes with a single statement (atomic by itself) and may
                run without ``BEGIN``/``COMMIT``; ignored inside a caller's unit of work.
            rerun_on_conflict: ``work`` first looks for what an earlier run stored (a
                client message id); if it loses a race on that unique key, run it once
                more so it finds the winner's row.
            read: ``work`` only reads: it may run on a read replica (see
                :mod:`convostore.sql.replicas`).

        Raises:
            DeadlineExceeded: The call took longer than the engine's deadline.
            ConvostoreError: Whatever ``work`` raised, or the translated database error.
        """
        async with Deadline(self.deadline):
            if read and self.replicas is not None and self.bound is None:
                return await self.replicas.read(
                    self.engine,
                    self.consistency,
                    lambda replica: self._run(work, False, replica),
                    lambda: self._run(work, False, read=True),
                )
            try:
                return await self._run(work, autocommit, read=read)
            except ConflictError:
                if not rerun_on_conflict or self.bound is not None:
                    raise
                return await self._run(work, autocommit, read=read)
            finally:
                if self.replicas is not None:
                    self.consistency.wrote()

    async def _run(
        self,
        work: Callable[[Executor], Awaitable[T]],
        autocommit: bool,
        on: AsyncEngine | None = None,
        *,
        read: bool = False,
    ) -> T:
        with translate_errors():
            if self.bound is not None:
                if self.ended:
                    raise ConfigurationError(
                        "the transaction this view belongs to has ended; "
                        "use the store or database it came from"
                    )
                return await work(self.bound)
            if on is not None:
                engine = on
            elif autocommit and not self._transactions_only:
                engine = self._autocommit
            else:
                engine = self._owned
            # Without BEGIN, work's one statement commits itself.
            commits_alone = engine is self._autocommit
            writer = self._writer
            if read or on is not None or (writer is not None and writer.observed()):
                writer = None
            direct = self._direct
            if (
                not autocommit
                or read
                or on is not None
                or (direct is not None and not direct.usable())
            ):
                direct = None
            attempt = 1
            while True:
                try:
                    if writer is not None:
                        return await writer.run(work)
                    if direct is not None:
                        try:
                            return await direct.run(
                                lambda connection: _direct_unit(connection, work, commits_alone)
                            )
                        except NeedsCore:
                            direct = None
                            continue
                    # Leaving the block without the commit (work raised) rolls back.
                    async with engine.connect() as connection:
                        await connection.begin()
                        with _unknown_if_cut(commits_alone):
                            result = await work(connection)
                        with _unknown_if_cut(True):
                            await connection.commit()
                        return result
                except sa_exc.DBAPIError as exc:
                    if attempt >= MAX_ATTEMPTS or not is_retryable(exc):
                        raise
                note_retry()
                delay = min(_MAX_DELAY, _BASE_DELAY * 2**attempt)
                await asyncio.sleep(random.uniform(0, delay))
                attempt += 1


async def _direct_unit(
    connection: DirectConnection, work: Callable[[Executor], Awaitable[T]], commits_alone: bool
) -> T:
    # The direct path's transaction, as the Core path runs it: the statement commits by
    # itself, or (behind PgBouncer's transaction pooling) inside BEGIN/COMMIT.
    if not commits_alone:
        await connection.begin()
    with _unknown_if_cut(commits_alone):
        result = await work(connection)  # type: ignore[arg-type]
    with _unknown_if_cut(True):
        await connection.commit()
    return result


@contextlib.contextmanager
def _unknown_if_cut(committing: bool) -> Iterator[None]:
    """Raise :class:`CommitOutcomeUnknown` if the connection is lost while ``committing``
    (a ``COMMIT``, or a statement that commits itself): it may have been applied."""
    try:
        yield
    except (sa_exc.DBAPIError, OSError) as exc:
        lost = isinstance(exc, OSError) or exc.connection_invalidated
        if not (committing and lost):
            raise
        raise CommitOutcomeUnknown(
            f"the connection was lost before the database confirmed the commit "
            f"({type(exc).__name__}); the write is applied once or not at all"
        ) from exc
