"""The per-call deadline of the façades (see :mod:`convostore.sql.options` to configure it).

:class:`Deadline` bounds everything one public call does on the client side: a first
call's connect, schema check and wait for the migration lock, waiting for a pooled
connection or in a group-commit queue, each statement (a lock wait included), the retries
of :class:`convostore.sql.runner.TransactionRunner` and their pauses. All of it shares
one budget counted from the call's start (:func:`one_budget`), not one per step. When it
strikes, the call's task is cancelled where it waits (asyncpg then cancels the statement
on the server) and the call raises :class:`~convostore.errors.DeadlineExceeded`. The server-side
lock-wait bounds that :func:`convostore.create_engine` derives from the same number make
the server give up too, where the client cannot cancel a statement.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar

from convostore.errors import ConvostoreError, DeadlineExceeded

__all__ = ["Deadline", "ends_at", "one_budget", "outside_calls", "resume_after"]

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])

# When the public call running in this task started (loop time), or None outside one. Every
# Deadline entered during the call counts from there, so the schema check of a first call,
# the wait in a group-commit queue and the call's own transaction share one budget.
_call_started: ContextVar[float | None] = ContextVar("convostore_call_started", default=None)


def one_budget(method: F) -> F:
    """Make each call of the decorated façade method one deadline budget, counted from
    its start: whatever it awaits (the first call's connect, schema check and migration
    lock, then its own transaction and retries) ends by the engine's deadline once.

    A call made from inside another (an adapter method calling a façade's) stays in the
    outer call's budget.
    """

    @functools.wraps(method)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        if _call_started.get() is not None:
            return await method(*args, **kwargs)
        token = _call_started.set(asyncio.get_running_loop().time())
        try:
            return await method(*args, **kwargs)
        finally:
            _call_started.reset(token)

    return bounded  # type: ignore[return-value]


def outside_calls() -> None:
    """Leave the current call's budget, in a task that serves several calls (a group
    committer's flusher, which inherits the context of the call that started it)."""
    _call_started.set(None)


def ends_at(seconds: float | None) -> float | None:
    """The loop time by which a deadline of ``seconds`` entered now must strike: now plus
    ``seconds``, or sooner if the call running in this task started earlier."""
    if seconds is None:
        return None
    now = asyncio.get_running_loop().time()
    started = _call_started.get()
    return now + seconds if started is None else min(now, started) + seconds


def resume_after(lifted: float | None) -> None:
    """Stop the current call's clock for what ran since loop time ``lifted`` (a migration
    that held its lock ran to its end under a lifted :class:`Deadline`: DDL time is not
    the caller's to budget). Nothing when ``lifted`` is ``None``."""
    started = _call_started.get()
    if lifted is None or started is None:
        return
    _call_started.set(started + max(0.0, asyncio.get_running_loop().time() - lifted))


class Deadline:
    """``async with Deadline(seconds):`` raises :class:`DeadlineExceeded` after ``seconds``.

    ``None`` means no deadline (the block runs as it is).
    """

    __slots__ = ("_seconds", "_timeout", "lifted_at")

    @property
    def seconds(self) -> float | None:
        """The deadline this object was made with (``None``: none)."""
        return self._seconds

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._timeout: asyncio.Timeout | None = None
        self.lifted_at: float | None = None
        """Loop time :meth:`lift` was called at (``None``: not lifted)."""

    async def __aenter__(self) -> None:
        when = ends_at(self._seconds)
        if when is not None:
            self._timeout = asyncio.timeout_at(when)
            await self._timeout.__aenter__()

    def remaining(self) -> float | None:
        """Seconds left inside the block (``None``: no deadline, or it was lifted)."""
        when = None if self._timeout is None else self._timeout.when()
        if when is None:
            return None
        return max(0.0, when - asyncio.get_running_loop().time())

    def lift(self) -> None:
        """Let the rest of the block run to its end: what has started must not be cut off
        (a migration holding its lock, whose DDL is not transactional on MySQL/MariaDB)."""
        if self._timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(None)
            self.lifted_at = asyncio.get_running_loop().time()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        timeout = self._timeout
        if timeout is None:
            return
        try:
            await timeout.__aexit__(exc_type, exc, traceback)
        except TimeoutError as expired:
            raise self._exceeded() from expired
        # A cancelled statement may surface as the driver's error (translated) rather than
        # as the cancellation itself; either way the deadline is what ended the call.
        if timeout.expired() and isinstance(exc, ConvostoreError | TimeoutError):
            if isinstance(exc, DeadlineExceeded):
                return
            raise self._exceeded() from exc

    def _exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the call did not finish within its deadline of {self._seconds:g} s "
            "(set with deadline= on the URL or create_engine)"
        )
