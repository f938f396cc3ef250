"""A TCP proxy that injects the network faults a database client must survive.

It sits on a free loopback port in front of a PostgreSQL, PgBouncer or MariaDB server,
forwards bytes both ways, and reads just enough of each wire protocol to know which
message carries a statement and which bytes answer it:

* PostgreSQL (and PgBouncer): simple query (``Q``) and extended query (``P``arse names a
  statement, ``B``ind runs it, ``S``ync ends the group) messages from the client;
  ``ReadyForQuery`` (``Z``) ends each answer and tells whether a transaction is open. It
  answers ``SSLRequest`` / ``GSSENCRequest`` itself with ``N``, so the stream stays
  readable.
* MySQL/MariaDB: ``COM_QUERY`` packets from the client; the first packet of the answer
  (an ``OK``/``ERR`` packet for the statements faults aim at) carries the server's status
  flags (in a transaction, autocommit).

Faults are armed by the test, fire on the statements they match and are deterministic:
the proxy, not a clock, decides when an answer is lost, held or cut.

* ``drop``: forward the statement, let the server answer in full (so a ``COMMIT`` is
  applied), drop the answer and cut the connection: "committed, ack lost".
* ``hold``: forward the statement and hold its answer until :meth:`FaultProxy.release`
  or until the client gives up and closes the connection (then the answer is dropped):
  an answer late past the client's deadline.
* ``reset``: forward half of the statement's message, then reset both sides: the server
  never runs it, and rolls back what the transaction did before.
* :meth:`FaultProxy.stall`: hold every answer of every connection until
  :meth:`FaultProxy.resume` (a server that stopped answering).

Matchers take a :class:`Statement`: its SQL and whether it commits (``COMMIT``, or a
write sent outside a transaction, which the server commits on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import URL

__all__ = ["COMMITS", "Fault", "FaultProxy", "Statement", "sql_starts"]

LOOPBACK = "127.0.0.1"
Protocol = Literal["postgresql", "mysql"]
Action = Literal["drop", "hold", "reset"]

_WRITES = ("INSERT", "UPDATE", "DELETE", "WITH", "MERGE", "REPLACE")
_PG_SSL_REQUEST = 80877103
_PG_GSSENC_REQUEST = 80877104
_PG_CANCEL_REQUEST = 80877102
_MYSQL_COM_QUERY = 0x03
# COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE: the server does not answer.
_MYSQL_NO_ANSWER = (b"\x01", b"\x18", b"\x19")
_MYSQL_IN_TRANS = 0x0001
_MYSQL_AUTOCOMMIT = 0x0002


@dataclass(frozen=True)
class Statement:
    """A statement the client sent."""

    sql: str
    commits: bool
    """It ends with a commit: ``COMMIT`` itself, or a write outside a transaction."""


Matcher = Callable[[Statement], bool]


def COMMITS(statement: Statement) -> bool:  # noqa: N802 - a constant-like matcher
    """Matches every statement whose success commits a transaction."""
    return statement.commits


def sql_starts(prefix: str) -> Matcher:
    """Matches statements whose SQL starts with ``prefix`` (case and spaces ignored)."""
    wanted = " ".join(prefix.split()).upper()
    return lambda statement: " ".join(statement.sql.split()).upper().startswith(wanted)


@dataclass(eq=False)
class Fault:
    """An armed fault: ``action`` on the next ``times`` statements ``match`` accepts."""

    action: Action
    match: Matcher
    times: int | None = 1
    """How many statements it fires on; ``None``: every one until disarmed."""
    fired: int = 0

    def take(self, statement: Statement) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if not self.match(statement):
            return False
        self.fired += 1
        return True


def _first_word_commits(sql: str) -> bool:
    words = sql.split(None, 1)
    return bool(words) and words[0].rstrip(";").upper() in ("COMMIT", "END")


def _is_write(sql: str) -> bool:
    words = sql.split(None, 1)
    return bool(words) and words[0].upper() in _WRITES


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    in_transaction: bool = False
    autocommit: bool = False
    # PostgreSQL: statement texts by name, answers ended so far, groups sent so far.
    statements: dict[bytes, str] = field(default_factory=dict)
    answers: int = 0
    groups: int = 0
    # The fault whose statement's answer is awaited, and the answer number it is.
    pending: Fault | None = None
    pending_answer: int = 0
    held: list[bytes] = field(default_factory=list)
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    # MySQL: the next server packet starts an answer (a command was sent).
    answer_starts: bool = False
    handshake: bool = True

    def cut(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()


class FaultProxy:
    """A fault-injecting TCP proxy in front of ``upstream``, speaking ``protocol``."""

    def __init__(self, upstream_host: str, upstream_port: int, protocol: Protocol) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.protocol = protocol
        self.port = 0
        self.faults: list[Fault] = []
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._released = asyncio.Event()

    # --- control ------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def url(self, url: URL) -> URL:
        """``url`` (a server's, or PgBouncer's), reached through this proxy."""
        return url.set(host=LOOPBACK, port=self.port)

    def arm(self, action: Action, match: Matcher = COMMITS, *, times: int | None = 1) -> Fault:
        """Arm a fault (see the module's docstring); it fires on statements sent from now."""
        fault = Fault(action, match, times)
        self.faults.append(fault)
        return fault

    def disarm(self) -> None:
        """Arm nothing more (faults in progress go on)."""
        self.faults.clear()

    def release(self) -> None:
        """Deliver every held answer whose client is still there."""
        self._released.set()

    def stall(self) -> None:
        """Hold every answer of every connection, from now until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def connections(self) -> int:
        """Client connections open right now."""
        return len(self._links)

    # --- plumbing -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        from_client = self._spawn(self._from_client(link, reader))
        from_server = self._spawn(self._from_server(link, up_reader))
        try:
            await asyncio.wait((from_client, from_server), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Either side gone, or a fault cut: the other goes too, at once.
            link.client_gone.set()
            link.cut()
            for task in (from_client, from_server):
                task.cancel()
            self._links.discard(link)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _fault_for(self, statement: Statement) -> Fault | None:
        for fault in self.faults:
            if fault.take(statement):
                return fault
        return None

    # --- client to server ---------------------------------------------------------------

    async def _from_client(self, link: _Link, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        startup = self.protocol == "postgresql"
        while data := await reader.read(65536):
            buffer += data
            while True:
                if self.protocol == "postgresql":
                    message, startup = self._pg_client_message(link, buffer, startup)
                else:
                    message = self._mysql_packet(buffer)
                if message is None:
                    break
                if message and not await self._forward_client_message(link, message):
                    return
        link.client_gone.set()

    async def _forward_client_message(self, link: _Link, message: bytes) -> bool:
        statement = (
            self._pg_statement(link, message)
            if self.protocol == "postgresql"
            else self._mysql_statement(link, message)
        )
        fault = None if statement is None else self._fault_for(statement)
        if fault is not None and fault.action == "reset":
            link.upstream.write(message[: len(message) // 2])
            with contextlib.suppress(OSError):
                await link.upstream.drain()
            link.cut()
            return False
        if fault is not None:
            link.pending = fault
            # The answer it gets: a simple query's, a command's, or the one that the Sync
            # after a Bind ends (groups counts the Q and S messages sent so far).
            bind = self.protocol == "postgresql" and message[:1] == b"B"
            link.pending_answer = link.groups + (1 if bind else 0)
        link.upstream.write(message)
        await link.upstream.drain()
        return True

    def _pg_client_message(
        self, link: _Link, buffer: bytearray, startup: bool
    ) -> tuple[bytes | None, bool]:
        if startup:
            if len(buffer) < 8:
                return None, True
            (length,) = struct.unpack("!I", buffer[:4])
            if len(buffer) < length:
                return None, True
            message = bytes(buffer[:length])
            del buffer[:length]
            (code,) = struct.unpack("!I", message[4:8])
            if code in (_PG_SSL_REQUEST, _PG_GSSENC_REQUEST):
                link.client.write(b"N")  # no TLS: the proxy must read the stream
                return b"", True
            if code != _PG_CANCEL_REQUEST:
                link.groups += 1  # the login ends with a ReadyForQuery too
            return message, False
        if len(buffer) < 5:
            return None, False
        (length,) = struct.unpack("!I", buffer[1:5])
        if len(buffer) < 1 + length:
            return None, False
        message = bytes(buffer[: 1 + length])
        del buffer[: 1 + length]
        if message[:1] in (b"Q", b"S"):
            link.groups += 1
        return message, False

    def _pg_statement(self, link: _Link, message: bytes) -> Statement | None:
        kind, body = message[:1], message[5:]
        if kind == b"Q":
            sql = body.split(b"\0", 1)[0].decode(errors="replace").strip()
        elif kind == b"P":
            name, query = body.split(b"\0", 2)[:2]
            link.statements[name] = query.decode(errors="replace").strip()
            return None
        elif kind == b"B":
            _portal, name = body.split(b"\0", 2)[:2]
            sql = link.statements.get(name, "")
        else:
            return None
        commits = _first_word_commits(sql) or (not link.in_transaction and _is_write(sql))
        return Statement(sql, commits)

    def _mysql_statement(self, link: _Link, packet: bytes) -> Statement | None:
        if link.handshake:
            return None
        payload = packet[4:]
        if payload[:1] not in _MYSQL_NO_ANSWER:
            link.answer_starts = True
            link.groups += 1
        if not payload or payload[0] != _MYSQL_COM_QUERY:
            return None
        sql = payload[1:].decode(errors="replace").strip()
        in_autocommit = link.autocommit and not link.in_transaction
        commits = _first_word_commits(sql) or (in_autocommit and _is_write(sql))
        return Statement(sql, commits)

    @staticmethod
    def _mysql_packet(buffer: bytearray) -> bytes | None:
        if len(buffer) < 4:
            return None
        length = int.from_bytes(buffer[:3], "little")
        if len(buffer) < 4 + length:
            return None
        packet = bytes(buffer[: 4 + length])
        del buffer[: 4 + length]
        return packet

    # --- server to client ---------------------------------------------------------------

    async def _from_server(self, link: _Link, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        while data := await reader.read(65536):
            buffer += data
            while True:
                if self.protocol == "postgresql":
                    message = self._pg_server_message(link, buffer)
                else:
                    message = self._mysql_server_packet(link, buffer)
                if message is None:
                    break
                if not await self._deliver(link, *message):
                    return

    async def _deliver(self, link: _Link, chunk: bytes, answer: int, ends_answer: bool) -> bool:
        """Pass ``chunk`` (part of answer number ``answer``) on, unless a fault takes it."""
        fault = link.pending
        if fault is not None and answer == link.pending_answer:
            link.held.append(chunk)
            if not ends_answer:
                return True
            link.pending = None
            if fault.action == "drop":
                link.cut()
                return False
            # hold: until released, or until the client gives up.
            released = asyncio.ensure_future(self._released.wait())
            gone = asyncio.ensure_future(link.client_gone.wait())
            try:
                await asyncio.wait((released, gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                released.cancel()
                gone.cancel()
            if link.client_gone.is_set():
                return False
            chunk, link.held = b"".join(link.held), []
        await self._flowing.wait()
        link.client.write(chunk)
        await link.client.drain()
        return True

    def _pg_server_message(self, link: _Link, buffer: bytearray) -> tuple[bytes, int, bool] | None:
        if len(buffer) < 5:
            return None
        (length,) = struct.unpack("!I", buffer[1:5])
        if len(buffer) < 1 + length:
            return None
        message = bytes(buffer[: 1 + length])
        del buffer[: 1 + length]
        if message[:1] != b"Z":
            return message, link.answers + 1, False
        link.in_transaction = message[5:6] in (b"T", b"E")
        link.answers += 1
        return message, link.answers, True

    def _mysql_server_packet(
        self, link: _Link, buffer: bytearray
    ) -> tuple[bytes, int, bool] | None:
        packet = self._mysql_packet(buffer)
        if packet is None:
            return None
        payload = packet[4:]
        if link.handshake:
            if payload[:1] == b"\x00":  # the login's OK: commands follow
                self._mysql_status(link, payload)
                link.handshake = False
            return packet, 0, False
        first, link.answer_starts = link.answer_starts, False
        if not first:  # more of a result set
            return packet, link.answers, False
        link.answers += 1
        if payload[:1] == b"\x00":
            self._mysql_status(link, payload)
        # The answers faults aim at are one OK or ERR packet.
        return packet, link.answers, payload[:1] in (b"\x00", b"\xff")

    @staticmethod
    def _mysql_status(link: _Link, ok_payload: bytes) -> None:
        status = _mysql_ok_status(ok_payload)
        if status is not None:
            link.in_transaction = bool(status & _MYSQL_IN_TRANS)
            link.autocommit = bool(status & _MYSQL_AUTOCOMMIT)


def _lenenc(payload: bytes, at: int) -> tuple[int, int]:
    first = payload[at]
    if first < 0xFB:
        return first, at + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(payload[at + 1 : at + 1 + size], "little"), at + 1 + size


def _mysql_ok_status(payload: bytes) -> int | None:
    try:
        _, at = _lenenc(payload, 1)  # affected rows
        _, at = _lenenc(payload, at)  # last insert id
    except (IndexError, KeyError):
        return None
    if len(payload) < at + 2:
        return None
    return int.from_bytes(payload[at : at + 2], "little")
