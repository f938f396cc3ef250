"""Group commit: concurrent single-message writes of one engine share one transaction.

An agent server writes on every turn of many conversations at once. Run one transaction
per message and they queue, one at a time, for SQLite's single writer (and for the pool on
a server), each paying a whole transaction's overhead. A :class:`GroupCommitter` instead
collects the messages that arrive while a write is in flight and stores them together:
one counter bump for all their sessions and one ``INSERT`` for all their rows
(:func:`convostore.sql.repositories.sessions.append_context_batch`), in one transaction.

What each caller sees does not change:

* its call returns once its message is committed, with its own position;
* a caller alone (nothing in flight) writes at once, in its own task, as without batching;
* its call ends by its deadline (the engine's ``deadline``, counted from the call), time
  spent queued behind another batch included: a caller whose deadline strikes while its
  message is still queued takes it out (nothing is stored) and raises
  :class:`~convostore.errors.DeadlineExceeded`; once its batch is being written, the
  write goes on and the caller raises ``DeadlineExceeded`` at its deadline (the message may
  then be stored, exactly once);
* a caller cancelled while its message waits in the queue takes it out (nothing is
  stored); cancelled once its batch is being written, the write goes on (as with a
  cancellation that lands during ``COMMIT``) and the caller sees ``CancelledError``.

When a batch fails, what happens depends on whether it can have been committed:

* it certainly was not: it failed before its ``COMMIT`` was sent, because a statement
  was refused (a value out of range, a constraint), or, on the servers, because the
  connection was lost or the deadline struck mid-statement (the open transaction dies
  with the connection). Every message in it is written again on its own, so each caller
  gets its own result or its own typed error, and a bad message never takes another one
  down. Each of these writes is bounded by its caller's deadline;
* nobody can tell: anything went wrong once ``COMMIT`` was sent (on SQLite, once the last
  statement, which carries the ``COMMIT``, was under way; an error answer to ``COMMIT``
  counts too, since PgBouncer answers a lost server connection with an error of its own).
  The batch is never written again, since that could store its messages twice. Every
  caller raises :class:`~convostore.errors.CommitOutcomeUnknown`: each message is stored
  once or not at all, all of the batch alike.

A committer belongs to one event loop (:func:`committer_for` keeps one per engine, loop
and kind), so one engine serves any number of loops at once (threads with a loop each, a
sync wrapper's background loop); the loops share the engine's pool.

One batch is in flight per engine and loop at a time: on SQLite that is the single writer
anyway, and on the servers it makes the batches large, which is where the throughput comes
from (measured here with 64 writers and a pool of 16 on PostgreSQL: 4,900 msgs/s with one
batch in flight, 3,600 with two, 1,500 with sixteen). Batches lock session rows in key
order, so they never deadlock with each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.deadlines import Deadline, ends_at, outside_calls
from convostore.errors import (
    CommitOutcomeUnknown,
    ConfigurationError,
    ConvostoreError,
    DatabaseError,
    DeadlineExceeded,
)
from convostore.sql.dml import Executor
from convostore.sql.engine import family
from convostore.sql.profile import committers_of
from convostore.sql.runner import TransactionRunner

__all__ = ["MAX_BATCH", "GroupCommitter", "committer_for", "committer_loops", "queued"]

P = TypeVar("P")

MAX_BATCH = 512
"""At most this many messages go in one transaction (bounded statement size and latency)."""

WriteBatch = Callable[[Executor, Sequence[Any]], Awaitable[list[int]]]
WriteOne = Callable[[Executor, Any], Awaitable[int]]


@dataclass(eq=False, slots=True)
class _Entry(Generic[P]):
    item: P
    future: asyncio.Future[int]
    # When its caller's deadline strikes (loop time), or None for no deadline.
    until: float | None


@dataclass(slots=True)
class _Progress:
    # The batch's statements all ran: what fails from here on may be the COMMIT.
    statements_done: bool = False


class GroupCommitter(Generic[P]):
    """Coalesces concurrent writes of single items of one kind on one engine and loop.

    Args:
        runner: Runs each write in a transaction of its own (retries included).
        write_batch: Stores several items in the given transaction; returns their
            positions, in order.
        write_one: Stores one item in the given transaction (a call with nothing to join,
            and each item of a batch that certainly did not commit, run in a transaction
            of its own).
        one_autocommit: ``write_one`` is a single statement that may run without
            ``BEGIN``/``COMMIT`` (see :meth:`TransactionRunner.run`).
        concurrency: How many writes may be in flight at once.
    """

    def __init__(
        self,
        runner: TransactionRunner,
        write_batch: WriteBatch,
        write_one: WriteOne,
        *,
        one_autocommit: bool = False,
        concurrency: int = 1,
    ) -> None:
        self._runner = runner
        self._write_batch = write_batch
        self._write_one_in = write_one
        self._one_autocommit = one_autocommit
        self._concurrency = concurrency
        # On SQLite the last statement of a transaction carries its COMMIT
        # (convostore.sql.sqlite_driver): a batch cut off there may have committed.
        self._commit_rides_last = family(runner.engine) == "sqlite"
        self._queue: deque[_Entry[P]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # The loop it serves, held weakly (committer_for's registry forgets closed loops).
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    async def submit(self, item: P) -> int:
        """Store ``item`` (alone, or with whatever else is waiting) and return its position.

        Raises:
            DeadlineExceeded: The engine's deadline struck first (queue time included).
            CommitOutcomeUnknown: The batch holding ``item`` lost its ``COMMIT``'s answer.
            ConvostoreError: The item's own error (it was written alone after its batch
                failed before committing).
        """
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = weakref.ref(loop)
        elif self._loop() is not loop:
            raise ConfigurationError(
                "a group committer serves one event loop; get it with committer_for()"
            )
        if not self._queue and self._in_flight < self._concurrency:
            # Nothing to join: write it now, in this task, as an ungrouped call would (the
            # runner bounds it by the deadline).
            self._in_flight += 1
            try:
                return await self._write_one(item)
            finally:
                self._in_flight -= 1
                self._start_flushers()
        seconds = self._runner.deadline
        # The caller's budget: counted from its call's start (a first call's schema check
        # included), see convostore.deadlines.
        entry = _Entry(item, loop.create_future(), ends_at(seconds or None))
        self._queue.append(entry)
        self._start_flushers()
        try:
            # The deadline covers the wait in the queue and the batch's write. When it
            # strikes, awaiting the future is cancelled, which cancels the future too: the
            # flusher then skips it (still queued) or leaves its result unread.
            async with Deadline(seconds):
                return await entry.future
        except (asyncio.CancelledError, DeadlineExceeded):
            # Still waiting: take it out, so nothing of it is stored. Not found: it is in a
            # batch being written, and that write goes on.
            with contextlib.suppress(ValueError):
                self._queue.remove(entry)
            raise

    async def _write_one(self, item: P) -> int:
        return await self._runner.run(
            lambda s: self._write_one_in(s, item), autocommit=self._one_autocommit
        )

    @property
    def queued(self) -> int:
        """Items waiting for a batch (not yet being written)."""
        return len(self._queue)

    def _start_flushers(self) -> None:
        while self._queue and self._in_flight < self._concurrency:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush())
            # Keep a reference until it ends (the loop holds tasks only weakly).
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        # This task serves every queued caller, each by its own deadline (entry.until), not
        # by the budget of the call that happened to start it.
        outside_calls()
        try:
            while self._queue:
                batch: list[_Entry[P]] = []
                while self._queue and len(batch) < MAX_BATCH:
                    entry = self._queue.popleft()
                    if not entry.future.done():
                        batch.append(entry)
                if batch:
                    await self._write(batch)
        finally:
            self._in_flight -= 1
            if self._queue:
                self._start_flushers()

    async def _write(self, batch: list[_Entry[P]]) -> None:
        try:
            if len(batch) == 1:
                await self._write_alone(batch[0])
                return
            progress = _Progress()
            items = [entry.item for entry in batch]

            async def work(session: Executor) -> list[int]:
                progress.statements_done = False  # a retry starts over
                positions = await self._write_batch(session, items)
                progress.statements_done = True
                return positions

            # No caller waits past its own deadline, so neither does the batch.
            try:
                async with _until(_latest(batch)):
                    positions = await self._runner.run(work)
            except Exception as exc:
                if not self._certainly_not_committed(exc, progress):
                    for entry in batch:
                        _settle(entry.future, exc=_unknown(exc))
                    return
                # It rolled back whole: each message gets its own answer, alone.
                for entry in batch:
                    if not entry.future.done():
                        await self._write_alone(entry)
                return
            for entry, position in zip(batch, positions, strict=True):
                _settle(entry.future, result=position)
        except asyncio.CancelledError:
            # The flusher itself is being cancelled (the loop is shutting down).
            for entry in batch:
                entry.future.cancel()
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            for entry in batch:
                _settle(entry.future, exc=exc)
            raise

    async def _write_alone(self, entry: _Entry[P]) -> None:
        """Write one queued item in a transaction of its own, by its caller's deadline."""
        try:
            async with _until(entry.until):
                position = await self._write_one(entry.item)
        except TimeoutError as exc:
            # Its caller has given up by now (same deadline); nobody reads this.
            _settle(entry.future, exc=DeadlineExceeded(str(exc)))
        except Exception as exc:
            _settle(entry.future, exc=exc)
        else:
            _settle(entry.future, result=position)

    def _certainly_not_committed(self, exc: Exception, progress: _Progress) -> bool:
        """Whether a batch that raised ``exc`` was surely rolled back (it may be rewritten)."""
        if isinstance(exc, ConvostoreError) and not isinstance(exc, DatabaseError):
            # Refused (a value, a constraint, a check before the commit): nothing applied.
            return True
        if progress.statements_done:
            # The COMMIT was sent, or was about to be: its fate is unknown.
            return False
        # Cut off (deadline, lost connection) or failed in a statement before COMMIT. On the
        # servers the open transaction dies with it; on SQLite the last statement may have
        # committed already on the writer thread unless SQLite itself refused it.
        return not self._commit_rides_last or _refused_by_database(exc)


def _refused_by_database(exc: BaseException) -> bool:
    """The database answered with an error (the statement and its transaction failed)."""
    cause = exc.__cause__ if isinstance(exc, DatabaseError) else exc
    return isinstance(cause, sa_exc.DBAPIError) and not cause.connection_invalidated


def _unknown(exc: Exception) -> CommitOutcomeUnknown:
    error = CommitOutcomeUnknown(
        "the batch holding this message lost its COMMIT's answer "
        f"({type(exc).__name__}: {exc}); it is stored once or not at all"
    )
    error.__cause__ = exc
    return error


def _latest(batch: Sequence[_Entry[Any]]) -> float | None:
    untils = [entry.until for entry in batch]
    return None if None in untils else max(u for u in untils if u is not None)


def _until(when: float | None) -> asyncio.Timeout:
    return asyncio.timeout_at(when)


def _settle(
    future: asyncio.Future[int], *, result: int | None = None, exc: BaseException | None = None
) -> None:
    if future.done():  # its caller was cancelled (or gave up) meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


def committer_for(
    engine: AsyncEngine,
    kind: str,
    write_batch: WriteBatch,
    write_one: WriteOne,
    *,
    one_autocommit: bool = False,
) -> GroupCommitter[Any]:
    """The group committer of ``engine`` for items of ``kind`` on the running event loop,
    created on first use.

    Every store on one engine and loop shares it, so their concurrent writes can join;
    the write functions must be the same for every call with the same ``kind``. The
    committers live on the engine (:func:`~convostore.sql.profile.committers_of`), so they
    go with the engine.
    """
    committer: GroupCommitter[Any] = committers_of(engine).get(
        asyncio.get_running_loop(),
        kind,
        lambda: GroupCommitter(
            TransactionRunner(engine, writer=True),
            write_batch,
            write_one,
            one_autocommit=one_autocommit,
        ),
    )
    return committer


def committer_loops(engine: AsyncEngine) -> int:
    """How many open event loops have committers of ``engine``."""
    return committers_of(engine).loops()


def queued(engine: AsyncEngine) -> int:
    """Items waiting for a batch in ``engine``'s committers on the running loop."""
    committers = committers_of(engine).on(asyncio.get_running_loop())
    return sum(committer.queued for committer in committers)
