"""The exception hierarchy of convostore.

Every error raised through the public API is a :class:`ConvostoreError`. Driver and SQLAlchemy
exceptions never escape: :func:`convostore.sql.retry.translate_errors` maps them onto this
hierarchy and keeps the original as ``__cause__``. Messages never contain a password. This
module knows no driver and imports nothing of SQLAlchemy.
"""

from __future__ import annotations

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
