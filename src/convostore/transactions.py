"""Transaction boundaries for the façades.

A façade runs each public call as one short transaction on a fresh ``AsyncSession``, or,
when it is bound to a caller's session (a unit of work), inside that session's transaction
without committing. Transient conflicts (deadlocks, serialization failures, lock timeouts,
SQLite's busy database) roll the whole transaction back, and :class:`TransactionRunner`
runs it again, up to :data:`MAX_ATTEMPTS` times with a short jittered backoff. Calls in a
caller's unit of work are never retried: the caller owns that transaction.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from convostore.dialects import is_retryable
from convostore.errors import translate_errors

__all__ = ["MAX_ATTEMPTS", "TransactionRunner"]

T = TypeVar("T")

MAX_ATTEMPTS = 8
_BASE_DELAY = 0.005
_MAX_DELAY = 0.2


class TransactionRunner:
    """Runs repository work in a transaction it owns, or in the caller's session."""

    def __init__(self, engine: AsyncEngine, *, bound: AsyncSession | None = None) -> None:
        self.engine = engine
        self.bound = bound
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)

    def bind(self, session: AsyncSession) -> TransactionRunner:
        """A runner that works inside ``session`` and leaves committing to its owner."""
        runner = TransactionRunner.__new__(TransactionRunner)
        runner.engine, runner.bound, runner.sessionmaker = self.engine, session, self.sessionmaker
        return runner

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work(session)`` in a transaction and commit, retrying transient conflicts.

        Raises:
            ConvostoreError: Whatever ``work`` raised, or the translated database error.
        """
        with translate_errors():
            if self.bound is not None:
                return await work(self.bound)
            attempt = 1
            while True:
                try:
                    async with self.sessionmaker() as session, session.begin():
                        return await work(session)
                except sa_exc.DBAPIError as exc:
                    if attempt >= MAX_ATTEMPTS or not is_retryable(exc):
                        raise
                delay = min(_MAX_DELAY, _BASE_DELAY * 2**attempt)
                await asyncio.sleep(random.uniform(0, delay))
                attempt += 1
