"""The exception hierarchy of convostore.

Every error raised through the public API is a :class:`ConvostoreError`. Driver and SQLAlchemy
exceptions never escape: :func:`translate_errors` maps them onto this hierarchy and keeps the
original as ``__cause__``. Messages never contain a password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import exc as sa_exc

__all__ = [
    "CommitOutcomeUnknown",
    "ConfigurationError",
    "ConflictError",
    "ConvostoreError",
    "CorruptEnvelopeError",
    "DatabaseError",
    "DeadlineExceeded",
    "DecryptionError",
    "EncryptionError",
    "InsufficientBalance",
    "KeyNotFoundError",
    "NotFoundError",
    "SchemaVersionError",
    "SerializationError",
    "ValidationError",
    "is_driver_error",
    "translate_errors",
]


class ConvostoreError(Exception):
    """Base class of every exception raised by convostore."""


class ConfigurationError(ConvostoreError):
    """The library was set up wrongly: a bad URL, a missing driver, conflicting arguments."""


class ValidationError(ConvostoreError, ValueError):
    """An argument is not acceptable (bad role or kind, over-long id, negative amount...)."""


class SerializationError(ConvostoreError, ValueError):
    """A value cannot be stored as JSON, or stored bytes cannot be decoded."""


class EncryptionError(ConvostoreError):
    """An encrypted payload cannot be read or written (see :mod:`convostore.encryption`).

    Never garbage instead: a row either reads back exactly as written or raises one of
    the two children below.
    """


class KeyNotFoundError(EncryptionError, LookupError):
    """The key a payload was encrypted with is not in the keyring (or there is no keyring)."""


class DecryptionError(EncryptionError):
    """A payload failed authentication: the key under its id is wrong, or the bytes changed."""


class CorruptEnvelopeError(DecryptionError, SerializationError):
    """Stored bytes start like an encrypted envelope but are truncated or malformed.

    Corrupt data whatever the keyring holds: a :class:`SerializationError` like any other
    undecodable payload, and a :class:`DecryptionError` for code that opens envelopes.
    """


class NotFoundError(ConvostoreError, LookupError):
    """The requested row does not exist."""


class ConflictError(ConvostoreError):
    """The write conflicts with the current state of the database."""


class InsufficientBalance(ConflictError):  # noqa: N818 - the name agents already catch
    """A debit would take a user's balance below zero; nothing was changed."""


class SchemaVersionError(ConvostoreError):
    """The database schema is not at the revision this version of convostore expects."""


class DatabaseError(ConvostoreError):
    """The database failed to run an operation (lost connection, lock timeout, server error).

    Usually nothing was applied; a connection lost during ``COMMIT`` raises the subclass
    :class:`CommitOutcomeUnknown` instead, and a :class:`DeadlineExceeded` that struck
    during ``COMMIT`` leaves the outcome unknown too: retry writes that carry a
    ``client_id`` (a repeat is stored once), and check before retrying those that do not.
    """


class DeadlineExceeded(DatabaseError, TimeoutError):  # noqa: N818 - named like asyncio's
    """A call did not finish within its deadline (see :mod:`convostore.sql.options`).

    The deadline covers everything the call does: waiting for a pooled connection, lock
    waits, retries and their pauses. As with any :class:`DatabaseError`, a write whose
    ``COMMIT`` was in flight when the deadline struck may have been applied. Also a
    ``TimeoutError``, so code that handles timeouts generically catches it.
    """


class CommitOutcomeUnknown(DatabaseError):  # noqa: N818 - says what the caller learns
    """A write's ``COMMIT`` was sent but its answer never came: it is applied once or not
    at all, and convostore cannot tell which.

    Raised when the connection is lost during a call's ``COMMIT`` (or during a statement
    that commits by itself), and to every caller of a group-committed write (concurrent
    ``append`` / ``add_message``, see :mod:`convostore.sql.group_commit`) whose batch lost its
    connection or hit its deadline during ``COMMIT``. convostore never runs such a write
    again (that could store it twice): read the state back, or retry with a ``client_id``
    so a repeat is stored once.
    """


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise SQLAlchemy and driver exceptions as convostore errors.

    A :class:`ConvostoreError` raised while binding a parameter (for example by
    :class:`~convostore.sql.types.CompressedJSON`) arrives wrapped in SQLAlchemy's
    ``StatementError``; it is unwrapped so the caller sees the original error.
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
    # Imported here, not at the top: the in-memory twin imports this module (for the
    # error classes) and must not load SQLAlchemy; only code that talks to a database
    # translates errors, and it has SQLAlchemy loaded already.
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.StatementError):
        if isinstance(exc.orig, ConvostoreError):
            return exc.orig
        if _out_of_range(exc.orig):
            return ValidationError(f"a value is out of range: {_short(exc)}")
        if _beyond_server_limit(exc.orig):
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


# Top-level packages of the database drivers convostore can run on.
_DRIVER_PACKAGES = frozenset(
    {"aiomysql", "aiosqlite", "asyncmy", "asyncpg", "psycopg", "pymysql", "sqlite3"}
)


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an exception class defined by a database driver package."""
    return any(cls.__module__.partition(".")[0] in _DRIVER_PACKAGES for cls in type(exc).__mro__)


# PostgreSQL's numeric_value_out_of_range, MySQL/MariaDB's ER_DATA_OUT_OF_RANGE.
_PG_OUT_OF_RANGE = "22003"
_MYSQL_OUT_OF_RANGE = 1690


def _out_of_range(orig: BaseException | None) -> bool:
    if orig is None:
        return False
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state == _PG_OUT_OF_RANGE:
        return True
    args: tuple[object, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] == _MYSQL_OUT_OF_RANGE


# PostgreSQL's class 54, program_limit_exceeded (an index row too large, too many columns
# or arguments); MySQL/MariaDB's ER_NET_PACKET_TOO_LARGE (over max_allowed_packet, when the
# server says so rather than closing the connection) and ER_TOO_LONG_KEY.
_PG_LIMIT_CLASS = "54"
_MYSQL_LIMIT_CODES = frozenset({1153, 1071})


def _beyond_server_limit(orig: BaseException | None) -> bool:
    if orig is None:
        return False
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and state.startswith(_PG_LIMIT_CLASS):
        return True
    args: tuple[object, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_LIMIT_CODES


def _short(exc: sa_exc.StatementError) -> str:
    """The driver's message, without the SQL text and parameters SQLAlchemy appends."""
    return str(exc.orig) if exc.orig is not None else str(exc).split("\n", 1)[0]
