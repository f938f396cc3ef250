"""Driver errors, classified: the one module that reads drivers' error codes.

Drivers report the same failure differently (PostgreSQL's SQLSTATE, MySQL/MariaDB's error
numbers, SQLite's messages); everything convostore decides from a driver error is decided
here, from :func:`classify`:

* :data:`RETRYABLE`: the transaction was rolled back whole and can simply run again
  (deadlocks, serialization failures, lock timeouts, SQLite's busy database), what
  :class:`~convostore.sql.runner.TransactionRunner` retries (:func:`is_retryable`);
* :data:`OUT_OF_RANGE`: a value the column cannot hold;
* :data:`BEYOND_LIMIT`: over a limit of the server (an index row too large, a packet over
  ``max_allowed_packet``): the same statement would fail again.

:func:`translate_errors` maps SQLAlchemy and driver exceptions onto
:mod:`convostore.errors`, which knows no driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from sqlalchemy import exc as sa_exc

from convostore.errors import (
    ConflictError,
    ConvostoreError,
    DatabaseError,
    ValidationError,
)

__all__ = [
    "BEYOND_LIMIT",
    "OUT_OF_RANGE",
    "RETRYABLE",
    "Class",
    "classify",
    "is_driver_error",
    "is_retryable",
    "translate_errors",
]

Class = Literal["retryable", "out_of_range", "beyond_limit"]
RETRYABLE: Class = "retryable"
OUT_OF_RANGE: Class = "out_of_range"
BEYOND_LIMIT: Class = "beyond_limit"

# Driver error codes meaning "the transaction was rolled back; run it again".
_PG_RETRY_STATES = frozenset({"40001", "40P01", "55P03"})
# MySQL/MariaDB: 1205 lock wait timeout, 1213 deadlock, 1020 "record has changed since last
# read" (MariaDB's innodb_snapshot_isolation, on by default from 11.8).
_MYSQL_RETRY_CODES = frozenset({1020, 1205, 1213})
_SQLITE_RETRY_MESSAGES = ("database is locked", "database table is locked")

# PostgreSQL's numeric_value_out_of_range, MySQL/MariaDB's ER_DATA_OUT_OF_RANGE.
_PG_OUT_OF_RANGE = "22003"
_MYSQL_OUT_OF_RANGE = 1690

# PostgreSQL's class 54, program_limit_exceeded (an index row too large, too many columns
# or arguments); MySQL/MariaDB's ER_NET_PACKET_TOO_LARGE (over max_allowed_packet, when the
# server says so rather than closing the connection) and ER_TOO_LONG_KEY.
_PG_LIMIT_CLASS = "54"
_MYSQL_LIMIT_CODES = frozenset({1153, 1071})

# Top-level packages of the database drivers convostore can run on.
_DRIVER_PACKAGES = frozenset(
    {"aiomysql", "aiosqlite", "asyncmy", "asyncpg", "psycopg", "pymysql", "sqlite3"}
)


def classify(orig: BaseException | None) -> Class | None:
    """What a driver's exception (a ``DBAPIError``'s ``orig``) means, or ``None``."""
    if orig is None:
        return None
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    args: tuple[object, ...] = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    if state in _PG_RETRY_STATES or code in _MYSQL_RETRY_CODES:
        return RETRYABLE
    if state == _PG_OUT_OF_RANGE or code == _MYSQL_OUT_OF_RANGE:
        return OUT_OF_RANGE
    if (isinstance(state, str) and state.startswith(_PG_LIMIT_CLASS)) or (
        code in _MYSQL_LIMIT_CODES
    ):
        return BEYOND_LIMIT
    message = str(orig).lower()
    if any(text in message for text in _SQLITE_RETRY_MESSAGES):
        return RETRYABLE
    return None


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a transient conflict after which the transaction can be rerun."""
    if not isinstance(exc, sa_exc.DBAPIError) or exc.connection_invalidated:
        return False
    return classify(exc.orig) == RETRYABLE


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an exception class defined by a database driver package."""
    return any(cls.__module__.partition(".")[0] in _DRIVER_PACKAGES for cls in type(exc).__mro__)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise SQLAlchemy and driver exceptions as convostore errors.

    A :class:`~convostore.errors.ConvostoreError` raised while binding a parameter (for
    example by :class:`~convostore.sql.types.CompressedJSON`) arrives wrapped in
    SQLAlchemy's ``StatementError``; it is unwrapped so the caller sees the original error.
    Messages are built from the exception class and the driver's own message, which never
    includes the connection URL.
    """
    try:
        yield
    except ConvostoreError:
        raise
    except Exception as exc:
        translated = _translated(exc)
        if translated is None:
            raise
        raise translated from exc


def _translated(exc: Exception) -> ConvostoreError | None:
    """The convostore error for ``exc``, or ``None`` if it is not a database error."""
    if isinstance(exc, sa_exc.StatementError):
        if isinstance(exc.orig, ConvostoreError):
            return exc.orig
        found = classify(exc.orig)
        if found == OUT_OF_RANGE:
            return ValidationError(f"a value is out of range: {_short(exc)}")
        if found == BEYOND_LIMIT:
            # Sent again, the same statement fails the same way: not a DatabaseError, which
            # transient failures raise too.
            return ValidationError(f"beyond a limit of the database server: {_short(exc)}")
        if isinstance(exc, sa_exc.IntegrityError):
            return ConflictError(f"integrity constraint violated: {_short(exc)}")
        return DatabaseError(f"{type(exc).__name__}: {_short(exc)}")
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return DatabaseError(f"{type(exc).__name__}: {exc}")
    # Drivers also raise their own exceptions, and plain OSError / TimeoutError, outside
    # SQLAlchemy's wrappers: when a connection drops before or between statements, or
    # while a pooled connection is being reset.
    if isinstance(exc, (OSError, TimeoutError)) or is_driver_error(exc):
        return DatabaseError(f"{type(exc).__name__}: {exc}")
    return None


def _short(exc: sa_exc.StatementError) -> str:
    """The driver's message, without the SQL text and parameters SQLAlchemy appends."""
    return str(exc.orig) if exc.orig is not None else str(exc).split("\n", 1)[0]
