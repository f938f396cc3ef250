"""Log records of database drivers that say nothing a user can act on, filtered out.

asyncpg's connect opens the socket with a protocol object (``TLSUpgradeProto``) whose
future it awaits only after ``loop.create_connection`` returns. A call cancelled inside
that window (a deadline, a task cancelled while the pool opens a connection) abandons
the socket; when it closes, asyncpg sets ``ConnectionError('unexpected connection_lost()
call')`` on the orphaned future, and asyncio reports it when the future is collected:
"Future exception was never retrieved" with a traceback, on stderr of any program that
has not configured logging. The cancelled call already raised; there is nothing to
retrieve. Only that exact record is dropped: any other unretrieved exception still shows.
"""

from __future__ import annotations

import logging

__all__ = ["AbandonedAsyncpgHandshake", "quiet_asyncpg_handshakes"]


class AbandonedAsyncpgHandshake(logging.Filter):
    """Drops asyncio's report of the future an abandoned asyncpg connect left behind."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Future exception was never retrieved"):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            type(exc) is ConnectionError
            and exc.args == ("unexpected connection_lost() call",)
            and (exc.__traceback__ is None or _raised_in_asyncpg(exc))
        )


def _raised_in_asyncpg(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("asyncpg"):
            return True
        tb = tb.tb_next
    return False


def quiet_asyncpg_handshakes() -> None:
    """Install :class:`AbandonedAsyncpgHandshake` on asyncio's logger (once per process)."""
    log = logging.getLogger("asyncio")
    if not any(isinstance(f, AbandonedAsyncpgHandshake) for f in log.filters):
        log.addFilter(AbandonedAsyncpgHandshake())
