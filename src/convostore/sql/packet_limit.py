"""MySQL/MariaDB's ``max_allowed_packet``, checked before a statement is sent.

The server refuses any packet larger than its ``max_allowed_packet`` (16 MiB by default on
MariaDB) by closing the connection: the client sees "(2006) MySQL server has gone away",
which looks like any lost connection. asyncmy sends parameters inlined in the statement
text, so a payload under convostore's 64 MiB maximum can still be too large for the server.
:class:`PacketLimit` reads the setting once per engine, when the first connection opens,
and measures every statement (parameters escaped as asyncmy escapes them) before it
leaves, raising :class:`~convostore.errors.ValidationError` naming the setting instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from convostore.errors import ValidationError

__all__ = ["PacketLimit", "statement_bytes"]

# The characters asyncmy's escaping doubles (NUL, newline, CR, ^Z, quotes, backslash).
_ESCAPED = (b"\0", b"\n", b"\r", b"\x1a", b'"', b"'", b"\\")
# Parameters below this size are counted at their worst case (every byte escaped), which
# is cheaper than counting and cannot matter against a limit of a megabyte or more.
_EXACT_FROM = 64 * 1024
# A packet's own header, and a margin for the command byte and rounding.
_OVERHEAD = 64


def _parameter_bytes(value: object) -> int:
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        prefix = len("_binary''")
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        prefix = len("''")
    else:
        return 32  # numbers, dates, NULL: short literals
    if len(data) < _EXACT_FROM:
        return 2 * len(data) + prefix
    return len(data) + sum(data.count(c) for c in _ESCAPED) + prefix


def statement_bytes(statement: str, parameters: Sequence[Any] | Mapping[str, Any] | None) -> int:
    """The size of ``statement`` with ``parameters`` inlined as asyncmy sends it (an upper
    bound for small parameters, exact for large ones)."""
    values = parameters.values() if isinstance(parameters, Mapping) else parameters or ()
    return len(statement.encode()) + sum(_parameter_bytes(v) for v in values) + _OVERHEAD


class PacketLimit:
    """The ``connect`` and ``before_cursor_execute`` hooks of one MySQL/MariaDB engine."""

    def __init__(self) -> None:
        self.limit: int | None = None
        """The server's ``max_allowed_packet`` in bytes, once a connection has read it."""

    def read(self, dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # A global setting (read-only per session): one read per engine is enough; a new
        # value set on the server reaches engines created after it.
        if self.limit is not None:
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT @@max_allowed_packet")
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is not None and row[0] is not None:
            self.limit = int(row[0])

    def check(
        self,
        _conn: Any,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        limit = self.limit
        if limit is None:
            return
        # executemany sends one statement per row (or several rows per statement, split to
        # fit): each row must fit on its own.
        rows = parameters if executemany else [parameters]
        for row in rows:
            size = statement_bytes(statement, row)
            if size > limit:
                raise ValidationError(
                    f"this statement would take {size} bytes, over the server's "
                    f"max_allowed_packet of {limit} bytes; store less at once, or raise the "
                    "server setting (SET GLOBAL max_allowed_packet, or max_allowed_packet in "
                    "the server's configuration)"
                )
