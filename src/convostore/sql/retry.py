"""Retry classification of driver errors.

:func:`is_retryable` says which failures roll back a whole transaction that can simply be
run again (deadlocks, serialization failures, lock timeouts, SQLite's busy database).
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

__all__ = ["is_retryable"]

# Driver error codes meaning "the transaction was rolled back; run it again".
_PG_RETRY_STATES = frozenset({"40001", "40P01", "55P03"})
# MySQL/MariaDB: 1205 lock wait timeout, 1213 deadlock, 1020 "record has changed since last
# read" (MariaDB's innodb_snapshot_isolation, on by default from 11.8).
_MYSQL_RETRY_CODES = frozenset({1020, 1205, 1213})
_SQLITE_RETRY_MESSAGES = ("database is locked", "database table is locked")


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a transient conflict after which the transaction can be rerun."""
    if not isinstance(exc, sa_exc.DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _PG_RETRY_STATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRY_CODES:
        return True
    message = str(orig).lower()
    return any(text in message for text in _SQLITE_RETRY_MESSAGES)
