"""The per-call deadline of the façades (see :mod:`convostore.sql.options` to configure it).

:class:`Deadline` bounds everything one public call does on the client side: waiting for
a pooled connection, each statement (a lock wait included), the retries of
:class:`convostore.sql.runner.TransactionRunner` and their pauses. When it strikes, the
call's task is cancelled where it waits (asyncpg then cancels the statement on the
server) and the call raises :class:`~convostore.errors.DeadlineExceeded`. The server-side
lock-wait bounds that :func:`convostore.create_engine` derives from the same number make
the server give up too, where the client cannot cancel a statement.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from convostore.errors import ConvostoreError, DeadlineExceeded

__all__ = ["Deadline"]


class Deadline:
    """``async with Deadline(seconds):`` raises :class:`DeadlineExceeded` after ``seconds``.

    ``None`` means no deadline (the block runs as it is).
    """

    __slots__ = ("_seconds", "_timeout")

    @property
    def seconds(self) -> float | None:
        """The deadline this object was made with (``None``: none)."""
        return self._seconds

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        if self._seconds is not None:
            self._timeout = asyncio.timeout(self._seconds)
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
