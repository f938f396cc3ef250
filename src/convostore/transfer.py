"""Moving data in and out of a convostore database, and the read-only queries behind the CLI.

Everything here works on an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` whose schema is at
head, so it can be used from Python as well as through ``convostore`` on the command line:

* :func:`export_jsonl` / :func:`import_jsonl`: the versioned JSONL export format (specified in
  ``docs/cli.md``): one header line, then one record per row, payloads as decoded JSON and
  timestamps as ISO-8601 UTC. Export → import into an empty database → export gives the same
  records; importing the same file twice adds nothing.
* :func:`import_axio`: copy an axio-context-sqlite database (``axio_context_messages``,
  ``axio_context_tokens``) into the context store tables.
* :func:`import_agentstr`: copy an agentstr SQLite database (``user``, ``message``) into the
  agent database tables.
* :func:`prune` (retention) and :func:`stats` (rows, bytes, compression ratio).
* :func:`list_sessions`, :func:`find_session_projects`, :func:`list_threads`,
  :func:`thread_messages`: listings across projects or users, always within the scope given.

Imports write in batches, one transaction per batch, with ``INSERT`` that skips rows whose
key already exists (:func:`convostore.dialects.insert_ignore`); after each batch the keys
just written are read back, so a row that did not arrive is an error, not a silent loss.
An interrupted import can simply be run again.
"""

from __future__ import annotations

import re
import sqlite3
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, Protocol

import orjson
import zstandard
from sqlalchemy import (
    Table,
    bindparam,
    delete,
    distinct,
    func,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import LargeBinary

from convostore import codec, dialects
from convostore.database import DEFAULT_AGENT_KEY
from convostore.engine import family
from convostore.errors import (
    ConflictError,
    SerializationError,
    ValidationError,
    translate_errors,
)
from convostore.models import (
    CONTEXT_ROLES,
    KINDS,
    ROLES,
    ContextMessage,
    check_amount,
    check_choice,
    check_id,
    check_text,
)
from convostore.repositories import NO_PREVIEW
from convostore.settings import redact
from convostore.tables import (
    AGENT_NAME_LENGTH,
    PREVIEW_LENGTH,
    PROJECT_LENGTH,
    SESSION_ID_LENGTH,
    THREAD_ID_LENGTH,
    USER_ID_LENGTH,
    ContextMessageRecord,
    ContextTokensRecord,
    MessageRecord,
    ThreadRecord,
    UserRecord,
)

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "RECORD_TYPES",
    "Progress",
    "PruneReport",
    "SessionRow",
    "Stats",
    "ThreadRow",
    "TransferReport",
    "export_jsonl",
    "find_session_projects",
    "import_agentstr",
    "import_axio",
    "import_jsonl",
    "list_sessions",
    "list_threads",
    "parse_age",
    "prune",
    "stats",
    "thread_messages",
]

EXPORT_FORMAT: Final = "convostore-export"
EXPORT_VERSION: Final = 1
BATCH_SIZE: Final = 500

_users: Table = UserRecord.__table__  # type: ignore[assignment]
_threads: Table = ThreadRecord.__table__  # type: ignore[assignment]
_messages: Table = MessageRecord.__table__  # type: ignore[assignment]
_sessions: Table = ContextTokensRecord.__table__  # type: ignore[assignment]
_context_messages: Table = ContextMessageRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class _Kind:
    """How one record type of the export format maps onto its table."""

    name: str
    table: Table
    fields: tuple[str, ...]
    key: tuple[str, ...]
    timestamps: tuple[str, ...]
    # Fields added after version 1 was first written: absent means null (a missing
    # updated_at is the created_at).
    optional: tuple[str, ...] = ()


_KINDS: Final = (
    _Kind(
        "user",
        _users,
        (
            "agent_name",
            "user_id",
            "available_balance",
            "current_thread_id",
            "created_at",
            "updated_at",
        ),
        ("agent_name", "user_id"),
        ("created_at", "updated_at"),
    ),
    _Kind(
        "thread",
        _threads,
        ("agent_name", "thread_id", "next_idx", "created_at", "updated_at", "user_id"),
        ("agent_name", "thread_id"),
        ("created_at", "updated_at"),
        ("user_id",),
    ),
    _Kind(
        "message",
        _messages,
        (
            "agent_name",
            "thread_id",
            "idx",
            "user_id",
            "role",
            "kind",
            "message",
            "content",
            "satoshis",
            "extra_inputs",
            "extra_outputs",
            "created_at",
            "client_id",
        ),
        ("agent_name", "thread_id", "idx"),
        ("created_at",),
        ("client_id",),
    ),
    _Kind(
        "session",
        _sessions,
        (
            "project",
            "session_id",
            "input_tokens",
            "output_tokens",
            "next_position",
            "preview",
            "created_at",
            "updated_at",
            "parent_session_id",
            "forked_at",
        ),
        ("project", "session_id"),
        ("created_at", "updated_at"),
        ("updated_at", "parent_session_id", "forked_at"),
    ),
    _Kind(
        "context_message",
        _context_messages,
        ("project", "session_id", "position", "role", "content", "created_at", "client_id"),
        ("project", "session_id", "position"),
        ("created_at",),
        ("client_id",),
    ),
)
_BY_NAME: Final = {kind.name: kind for kind in _KINDS}
RECORD_TYPES: Final = tuple(kind.name for kind in _KINDS)
"""The record types of the export format, in the order an export writes them."""


class Progress(Protocol):
    """Receives progress of a long operation (the CLI draws a bar; the default ignores it)."""

    def start(self, label: str, total: int | None) -> None:
        """A new phase begins; ``total`` units of work, if known."""

    def advance(self, amount: int) -> None:
        """``amount`` more units are done."""


class _NoProgress:
    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


@dataclass
class TransferReport:
    """What an export or import did, per record type.

    ``source`` counts the records read; ``inserted`` the rows that are new in the
    destination (its row count after minus before); ``skipped`` the records whose key was
    already there. ``verified`` is set once every key read has been found in the destination.
    """

    operation: str
    source: str
    destination: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    verified: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json`` output)."""
        return {
            "operation": self.operation,
            "source": self.source,
            "destination": self.destination,
            "counts": self.counts,
            "verified": self.verified,
        }


# --- timestamps and payloads ------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ValidationError(f"{where}: timestamp must be an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{where}: invalid timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        raise ValidationError(f"{where}: timestamp {value!r} has no time zone")
    return parsed.astimezone(UTC)


def _source_time(value: object, where: str) -> datetime:
    """A timestamp from a foreign SQLite database; naive values are UTC (as both tools write)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{where}: missing or invalid timestamp {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{where}: invalid timestamp {value!r}") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# --- export -------------------------------------------------------------------------------


@asynccontextmanager
async def _snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose reads all see one consistent state of the database."""
    async with engine.connect() as conn:
        if family(engine) == "sqlite":
            # pysqlite only opens transactions before writes; an explicit BEGIN makes the
            # following SELECTs share one WAL snapshot.
            await conn.exec_driver_sql("BEGIN")
        else:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield conn
        finally:
            await conn.rollback()


async def export_jsonl(
    engine: AsyncEngine,
    out: IO[bytes],
    *,
    progress: Progress | None = None,
) -> TransferReport:
    """Write the whole database to ``out`` in the JSONL export format.

    All records come from one consistent snapshot, in a fixed order (by record type, then by
    key), so two exports of the same data are byte-identical apart from the header's
    ``exported_at``.
    """
    progress = progress or _NoProgress()
    report = TransferReport("export", redact(engine.url), "")
    with translate_errors():
        async with _snapshot(engine) as conn:
            counts = {}
            for kind in _KINDS:
                total = (await conn.execute(select(func.count()).select_from(kind.table))).scalar()
                counts[kind.name] = int(total or 0)
            header = {
                "format": EXPORT_FORMAT,
                "version": EXPORT_VERSION,
                "exported_at": _iso(datetime.now(UTC)),
                "counts": counts,
            }
            out.write(orjson.dumps(header) + b"\n")
            for kind in _KINDS:
                progress.start(f"exporting {kind.name} records", counts[kind.name])
                columns = [kind.table.c[name] for name in kind.fields]
                stmt = (
                    select(*columns)
                    .order_by(*(kind.table.c[name] for name in kind.key))
                    .execution_options(yield_per=BATCH_SIZE)
                )
                written = 0
                result = await conn.stream(stmt)
                async for rows in result.partitions():
                    chunk = bytearray()
                    for row in rows:
                        chunk += _dump_record(kind, row._mapping)
                    out.write(chunk)
                    written += len(rows)
                    progress.advance(len(rows))
                report.counts[kind.name] = {"source": written}
    report.verified = all(report.counts[k]["source"] == counts[k] for k in counts)
    return report


def _dump_record(kind: _Kind, row: Mapping[Any, Any]) -> bytes:
    record: dict[str, Any] = {"type": kind.name}
    for name in kind.fields:
        value = row[name]
        record[name] = _iso(value) if name in kind.timestamps else value
    return orjson.dumps(record) + b"\n"


# --- import of the export format -----------------------------------------------------------


class _Writer:
    """Batched, idempotent inserts into the destination, with read-back verification."""

    def __init__(self, engine: AsyncEngine, progress: Progress) -> None:
        self.engine = engine
        self.kind = family(engine)
        self.progress = progress
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.read: dict[str, int] = {}
        # Counter floors: (agent, thread) -> next_idx, (project, session) -> next_position.
        self.next_idx: dict[tuple[str, str], int] = {}
        self.next_position: dict[tuple[str, str], int] = {}
        self.before: dict[str, int] = {}

    async def count_rows(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            return {
                kind.name: int(
                    (await conn.execute(select(func.count()).select_from(kind.table))).scalar() or 0
                )
                for kind in _KINDS
            }

    async def begin(self) -> None:
        self.before = await self.count_rows()

    async def add(self, name: str, row: dict[str, Any]) -> None:
        self.read[name] = self.read.get(name, 0) + 1
        if name == "message":
            key = (row["agent_name"], row["thread_id"])
            self.next_idx[key] = max(self.next_idx.get(key, 0), row["idx"] + 1)
        elif name == "thread":
            key = (row["agent_name"], row["thread_id"])
            self.next_idx[key] = max(self.next_idx.get(key, 0), row["next_idx"])
        elif name == "context_message":
            key = (row["project"], row["session_id"])
            self.next_position[key] = max(self.next_position.get(key, 0), row["position"] + 1)
        elif name == "session":
            key = (row["project"], row["session_id"])
            self.next_position[key] = max(self.next_position.get(key, 0), row["next_position"])
        batch = self.pending.setdefault(name, [])
        batch.append(row)
        if len(batch) >= BATCH_SIZE:
            await self.flush(name)

    async def flush(self, name: str | None = None) -> None:
        # Parents before children, so foreign keys always find their row.
        for kind in _KINDS:
            if name is not None and kind.name != name:
                continue
            rows = self.pending.pop(kind.name, [])
            if rows:
                await self._write(kind, rows)

    async def _write(self, kind: _Kind, rows: list[dict[str, Any]]) -> None:
        if kind.name == "message":
            await self.flush("thread")
        elif kind.name == "context_message":
            await self.flush("session")
        key_cols = [kind.table.c[name] for name in kind.key]
        keys = {tuple(row[name] for name in kind.key) for row in rows}
        async with self.engine.begin() as conn:
            if kind.name == "message":
                await self._ensure_parents(conn, _threads, rows, ("agent_name", "thread_id"))
            elif kind.name == "context_message":
                await self._ensure_parents(conn, _sessions, rows, ("project", "session_id"))
            stmt = dialects.insert_ignore(self.kind, kind.table, {}, key=list(kind.key))
            await conn.execute(stmt, rows)
            found = (
                await conn.execute(
                    select(func.count())
                    .select_from(kind.table)
                    .where(tuple_(*key_cols).in_(list(keys)))
                )
            ).scalar()
        if found != len(keys):
            raise ConflictError(
                f"{len(keys) - int(found or 0)} {kind.name} records were not written"
            )
        self.progress.advance(len(rows))

    async def _ensure_parents(
        self, conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], key: tuple[str, str]
    ) -> None:
        """Create missing parent rows (a hand-made file may list messages without them)."""
        parents: dict[tuple[str, str], datetime] = {}
        for row in rows:
            parent = (row[key[0]], row[key[1]])
            parents[parent] = min(parents.get(parent, row["created_at"]), row["created_at"])
        if table is _threads:
            values = [
                {
                    "agent_name": a,
                    "thread_id": t,
                    "next_idx": self.next_idx[(a, t)],
                    "created_at": at,
                    "updated_at": at,
                }
                for (a, t), at in parents.items()
            ]
        else:
            values = [
                {
                    "project": p,
                    "session_id": s,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "next_position": self.next_position[(p, s)],
                    "preview": None,
                    "created_at": at,
                    "updated_at": at,
                }
                for (p, s), at in parents.items()
            ]
        await conn.execute(dialects.insert_ignore(self.kind, table, {}, key=list(key)), values)

    async def finish(self, report: TransferReport) -> None:
        """Flush everything, raise the counters to cover every row, and fill the report."""
        await self.flush()
        await _raise_counters(self.engine, _threads, "next_idx", self.next_idx)
        await _raise_counters(self.engine, _sessions, "next_position", self.next_position)
        after = await self.count_rows()
        for kind in _KINDS:
            read = self.read.get(kind.name, 0)
            inserted = after[kind.name] - self.before[kind.name]
            if read or inserted:
                report.counts[kind.name] = {
                    "source": read,
                    "inserted": inserted,
                    "skipped": max(read - inserted, 0),
                }
        report.verified = True


async def _raise_counters(
    engine: AsyncEngine, table: Table, counter: str, floors: Mapping[tuple[str, str], int]
) -> None:
    """Set each counter to at least its floor (the highest imported position + 1)."""
    if not floors:
        return
    a, b = [col.name for col in table.primary_key.columns][:2]
    column = table.c[counter]
    stmt = (
        update(table)
        .where(
            table.c[a] == bindparam("k0"),
            table.c[b] == bindparam("k1"),
            column < bindparam("floor"),
        )
        .values({counter: bindparam("floor")})
    )
    params = [{"k0": k0, "k1": k1, "floor": n} for (k0, k1), n in floors.items()]
    for start in range(0, len(params), BATCH_SIZE):
        async with engine.begin() as conn:
            await conn.execute(stmt, params[start : start + BATCH_SIZE])


async def import_jsonl(
    engine: AsyncEngine,
    lines: Iterable[bytes],
    *,
    source: str = "",
    progress: Progress | None = None,
) -> TransferReport:
    """Import a file in the JSONL export format; records already present are skipped.

    Args:
        engine: The destination, at head.
        lines: The file's lines (a binary file object works).
        source: How to name the file in the report.
        progress: Receives one unit per record written.

    Raises:
        ValidationError: The header or a record is not valid; the message names the line.
            Records before it have been imported (running the import again is safe).
    """
    progress = progress or _NoProgress()
    report = TransferReport("import", source, redact(engine.url))
    iterator = iter(lines)
    header = _read_header(next(iterator, b""))
    counts = header.get("counts") if isinstance(header.get("counts"), dict) else None
    total = sum(v for v in counts.values() if isinstance(v, int)) if counts else None
    writer = _Writer(engine, progress)
    with translate_errors():
        await writer.begin()
        progress.start("importing records", total)
        for number, line in enumerate(iterator, 2):
            if not line.strip():
                continue
            name, row = _parse_record(line, number)
            await writer.add(name, row)
        await writer.finish(report)
    if counts is not None:
        for name in RECORD_TYPES:
            expected = counts.get(name, 0)
            if expected != writer.read.get(name, 0):
                raise ValidationError(
                    f"the header announces {expected} {name} records but the file holds "
                    f"{writer.read.get(name, 0)}: is the file truncated?"
                )
    return report


def _read_header(line: bytes) -> dict[str, Any]:
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"line 1: not a convostore export (invalid JSON: {exc})") from exc
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ValidationError(f"line 1: not a convostore export (no {EXPORT_FORMAT!r} header)")
    version = header.get("version")
    if version != EXPORT_VERSION:
        raise ValidationError(
            f"line 1: export format version {version!r} is not supported "
            f"(this convostore reads version {EXPORT_VERSION})"
        )
    return header


def _parse_record(line: bytes, number: int) -> tuple[str, dict[str, Any]]:
    where = f"line {number}"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"{where}: invalid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ValidationError(f"{where}: a record must be a JSON object")
    kind = _BY_NAME.get(record.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise ValidationError(
            f"{where}: unknown record type {record.get('type')!r}; "
            f"expected one of {list(RECORD_TYPES)}"
        )
    where = f"{where} ({kind.name})"
    missing = [name for name in kind.fields if name not in record and name not in kind.optional]
    if missing:
        raise ValidationError(f"{where}: missing fields {missing}")
    row = {name: record.get(name) for name in kind.fields}
    if "updated_at" in kind.optional and row["updated_at"] is None:
        row["updated_at"] = row["created_at"]
    for name in kind.timestamps:
        row[name] = _parse_time(row[name], f"{where} {name}")
    _check_row(kind.name, row, where)
    return kind.name, row


def _check_agent(value: object, where: str) -> str:
    if value == DEFAULT_AGENT_KEY:
        return DEFAULT_AGENT_KEY
    return check_id(value, f"{where} agent_name", AGENT_NAME_LENGTH)


def _check_row(name: str, row: dict[str, Any], where: str) -> None:
    """Apply the checks the façades apply to what they write, so imported rows read back."""
    try:
        if name in ("user", "thread", "message"):
            _check_agent(row["agent_name"], where)
        if name in ("thread", "message"):
            check_id(row["thread_id"], "thread_id", THREAD_ID_LENGTH)
        if name in ("user", "message"):
            check_id(row["user_id"], "user_id", USER_ID_LENGTH)
        if name == "user":
            check_amount(row["available_balance"], "available_balance")
            if row["current_thread_id"] is not None:
                check_id(row["current_thread_id"], "current_thread_id", THREAD_ID_LENGTH)
        elif name == "thread":
            check_amount(row["next_idx"], "next_idx")
        elif name == "message":
            check_amount(row["idx"], "idx")
            check_choice(row["role"], "role", ROLES)
            check_choice(row["kind"], "kind", KINDS)
            check_text(row["message"], "message")
            if not isinstance(row["content"], str):
                raise ValidationError("content must be a string")
            if row["satoshis"] is not None:
                check_amount(row["satoshis"], "satoshis")
            for extra in ("extra_inputs", "extra_outputs"):
                if not isinstance(row[extra], dict):
                    raise ValidationError(f"{extra} must be a JSON object")
        elif name in ("session", "context_message"):
            check_id(row["project"], "project", PROJECT_LENGTH)
            check_id(row["session_id"], "session_id", SESSION_ID_LENGTH)
            if name == "session":
                for counter in ("input_tokens", "output_tokens", "next_position"):
                    check_amount(row[counter], counter)
                if row["preview"] is not None:
                    check_text(row["preview"], "preview")
                    if len(row["preview"]) > PREVIEW_LENGTH:
                        raise ValidationError(f"preview is longer than {PREVIEW_LENGTH}")
            else:
                check_amount(row["position"], "position")
                check_choice(row["role"], "role", CONTEXT_ROLES)
                content = row["content"]
                if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
                    raise ValidationError("content must be a list of JSON objects")
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from exc


# --- import-axio ----------------------------------------------------------------------------


def _open_source(path: str | Path, tables: Sequence[str], tool: str) -> sqlite3.Connection:
    source = Path(path)
    if not source.is_file():
        raise ValidationError(f"{source}: no such file")
    try:
        conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise ValidationError(f"{source}: not an SQLite database ({exc})") from exc
    missing = [t for t in tables if t not in names]
    if missing:
        conn.close()
        raise ValidationError(f"{source}: not an {tool} database (missing tables {missing})")
    return conn


async def import_axio(
    engine: AsyncEngine,
    path: str | Path,
    *,
    progress: Progress | None = None,
) -> TransferReport:
    """Copy an axio-context-sqlite database into the context store tables of ``engine``.

    Sessions keep their project and id, messages their order; positions are renumbered
    0, 1, 2, ... within each session (axio's are already, unless rows were deleted by
    hand). Payloads (``plain:``, ``gzip:`` + base64, or bare JSON) are decoded and stored in
    convostore's format; token totals come from ``axio_context_tokens``, the preview from
    the first user message, the creation time from the first message. Sessions and messages
    already in the destination are left as they are.

    Raises:
        ValidationError: The file is not an axio database, or a row cannot be stored.
    """
    progress = progress or _NoProgress()
    report = TransferReport("import-axio", str(path), redact(engine.url))
    writer = _Writer(engine, progress)
    with closing(_open_source(path, ["axio_context_messages"], "axio-context-sqlite")) as src:
        has_tokens = bool(
            src.execute("SELECT 1 FROM sqlite_master WHERE name = 'axio_context_tokens'").fetchone()
        )
        sessions = _axio_sessions(src, has_tokens)
        total = sum(1 + s["next_position"] for s in sessions.values())
        with translate_errors():
            await writer.begin()
            progress.start("importing axio sessions", total)
            for session in sessions.values():
                await writer.add("session", session)
            await writer.flush()
            cursor = src.execute(
                "SELECT project, session_id, role, content, created_at"
                " FROM axio_context_messages ORDER BY project, session_id, position, id"
            )
            current: tuple[str, str] | None = None
            position = 0
            for project, session_id, role, content, created_at in cursor:
                if (project, session_id) != current:
                    current, position = (project, session_id), 0
                where = f"axio session {session_id!r} of project {project!r}, message {position}"
                row = {
                    "project": project,
                    "session_id": session_id,
                    "position": position,
                    "role": role,
                    "content": _axio_content(content, where),
                    "created_at": _source_time(created_at, where),
                }
                _check_row("context_message", row, where)
                await writer.add("context_message", row)
                position += 1
            await writer.finish(report)
    return report


def _axio_content(text: object, where: str) -> Any:
    if not isinstance(text, str):
        raise ValidationError(f"{where}: content is not text")
    try:
        return codec.decode_axio_payload(text)
    except SerializationError as exc:
        raise ValidationError(f"{where}: {exc}") from exc


def _axio_sessions(src: sqlite3.Connection, has_tokens: bool) -> dict[tuple[str, str], Any]:
    """One session row per (project, session_id) found in messages or tokens."""
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    rows = src.execute(
        "SELECT project, session_id, COUNT(*), MIN(created_at), MAX(created_at)"
        " FROM axio_context_messages GROUP BY project, session_id ORDER BY project, session_id"
    )
    for project, session_id, count, first_at, last_at in rows:
        where = f"axio session {session_id!r} of project {project!r}"
        sessions[(project, session_id)] = {
            "project": project,
            "session_id": session_id,
            "input_tokens": 0,
            "output_tokens": 0,
            "next_position": int(count),
            "preview": None,
            "created_at": _source_time(first_at, where),
            "updated_at": _source_time(last_at, where),
        }
    if has_tokens:
        now = datetime.now(UTC)
        for project, session_id, input_tokens, output_tokens in src.execute(
            "SELECT project, session_id, input_tokens, output_tokens FROM axio_context_tokens"
            " ORDER BY project, session_id"
        ):
            session = sessions.setdefault(
                (project, session_id),
                {
                    "project": project,
                    "session_id": session_id,
                    "next_position": 0,
                    "preview": None,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            session["input_tokens"] = int(input_tokens)
            session["output_tokens"] = int(output_tokens)
    first_user = src.execute(
        "SELECT m.project, m.session_id, m.content FROM axio_context_messages m"
        " JOIN (SELECT project, session_id, MIN(position) AS p FROM axio_context_messages"
        "       WHERE role = 'user' GROUP BY project, session_id) f"
        " ON f.project = m.project AND f.session_id = m.session_id AND f.p = m.position"
        " WHERE m.role = 'user'"
    )
    for project, session_id, content in first_user:
        where = f"axio session {session_id!r} of project {project!r}"
        blocks = _axio_content(content, where)
        if isinstance(blocks, list) and all(isinstance(b, dict) for b in blocks):
            message = ContextMessage.model_construct(role="user", content=blocks)
            sessions[(project, session_id)]["preview"] = message.preview()
    for session in sessions.values():
        _check_row("session", session, f"axio session {session['session_id']!r}")
    return sessions


# --- import-agentstr --------------------------------------------------------------------------


async def import_agentstr(
    engine: AsyncEngine,
    path: str | Path,
    *,
    agents: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> TransferReport:
    """Copy an agentstr SQLite database (tables ``user`` and ``message``) into ``engine``.

    Users keep their balance and current thread, messages their ``idx``; each thread's
    ``next_idx`` becomes its highest ``idx`` + 1. A NULL ``agent_name`` becomes the default
    agent (``agent_name=None`` in :class:`~convostore.SQLAlchemyDatabase`). Users and
    messages already in the destination are left as they are (balances are not merged).

    Args:
        agents: Import only these agents (``""`` is the default agent); all by default.

    Raises:
        ConflictError: Two source messages share (agent, thread, idx) with different users
            (agentstr's key includes the user; convostore's does not). Nothing is written.
        ValidationError: The file is not an agentstr database, or a row cannot be stored.
    """
    progress = progress or _NoProgress()
    report = TransferReport("import-agentstr", str(path), redact(engine.url))
    writer = _Writer(engine, progress)
    agent_expr = f"COALESCE(agent_name, '{DEFAULT_AGENT_KEY}')"
    where_agents = ""
    params: tuple[str, ...] = ()
    if agents is not None:
        where_agents = f" WHERE {agent_expr} IN ({', '.join('?' for _ in agents)})"
        params = tuple(agents)
    with closing(_open_source(path, ["user", "message"], "agentstr")) as src:
        duplicates = src.execute(
            f"SELECT {agent_expr}, thread_id, idx FROM message{where_agents}"
            " GROUP BY 1, thread_id, idx HAVING COUNT(*) > 1 LIMIT 5",
            params,
        ).fetchall()
        if duplicates:
            raise ConflictError(
                f"{path}: several messages share one (agent, thread, idx), e.g. "
                f"{[tuple(d) for d in duplicates]}; convostore keeps one message per position"
            )
        (users_total,) = src.execute(f"SELECT COUNT(*) FROM user{where_agents}", params).fetchone()
        (messages_total,) = src.execute(
            f"SELECT COUNT(*) FROM message{where_agents}", params
        ).fetchone()
        threads = _agentstr_threads(src, agent_expr, where_agents, params)
        with translate_errors():
            await writer.begin()
            progress.start("importing agentstr data", users_total + len(threads) + messages_total)
            now = datetime.now(UTC)
            for agent, user_id, balance, current in src.execute(
                f"SELECT {agent_expr}, user_id, available_balance, current_thread_id FROM user"
                f"{where_agents} ORDER BY 1, user_id",
                params,
            ):
                row = {
                    "agent_name": agent,
                    "user_id": user_id,
                    "available_balance": balance,
                    "current_thread_id": current or None,
                    "created_at": now,
                    "updated_at": now,
                }
                _check_row("user", row, f"agentstr user {user_id!r} of agent {agent!r}")
                await writer.add("user", row)
            for thread in threads:
                await writer.add("thread", thread)
            await writer.flush()
            cursor = src.execute(
                f"SELECT {agent_expr}, thread_id, idx, user_id, role, message, content, kind,"
                " satoshis, extra_inputs, extra_outputs, created_at FROM message"
                f"{where_agents} ORDER BY 1, thread_id, idx",
                params,
            )
            for record in cursor:
                row = _agentstr_message(record)
                await writer.add("message", row)
            await writer.finish(report)
    return report


def _agentstr_threads(
    src: sqlite3.Connection, agent_expr: str, where: str, params: tuple[str, ...]
) -> list[dict[str, Any]]:
    threads = []
    for agent, thread_id, max_idx, first_at, last_at, owner in src.execute(
        f"SELECT {agent_expr}, thread_id, MAX(idx), MIN(created_at), MAX(created_at),"
        " (SELECT f.user_id FROM message f WHERE f.agent_name IS message.agent_name"
        "  AND f.thread_id = message.thread_id ORDER BY f.idx LIMIT 1)"
        f" FROM message{where} GROUP BY 1, thread_id ORDER BY 1, thread_id",
        params,
    ):
        at = f"agentstr thread {thread_id!r} of agent {agent!r}"
        row = {
            "agent_name": agent,
            "thread_id": thread_id,
            "next_idx": int(max_idx) + 1,
            "created_at": _source_time(first_at, at),
            "updated_at": _source_time(last_at, at),
            "user_id": owner,
        }
        _check_row("thread", row, at)
        threads.append(row)
    return threads


def _agentstr_extra(value: object, where: str) -> dict[str, Any]:
    # agentstr writes json.dumps(dict) or NULL, and reads NULL and "" as {}.
    if value is None or value == "":
        return {}
    try:
        parsed = orjson.loads(value) if isinstance(value, str | bytes) else value
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"{where}: invalid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ValidationError(f"{where}: must be a JSON object")
    return parsed


def _agentstr_message(record: Sequence[Any]) -> dict[str, Any]:
    (agent, thread_id, idx, user_id, role, message, content, kind, satoshis, ins, outs, at) = record
    where = f"agentstr message {idx} of thread {thread_id!r} (agent {agent!r})"
    row = {
        "agent_name": agent,
        "thread_id": thread_id,
        "idx": idx,
        "user_id": user_id,
        "role": role,
        "kind": kind or "request",
        "message": message or "",
        "content": content if content is not None else "",
        "satoshis": satoshis,
        "extra_inputs": _agentstr_extra(ins, f"{where} extra_inputs"),
        "extra_outputs": _agentstr_extra(outs, f"{where} extra_outputs"),
        "created_at": _source_time(at, where),
    }
    _check_row("message", row, where)
    return row


# --- listings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRow:
    """A context-store session in a listing across projects."""

    project: str
    session_id: str
    message_count: int
    preview: str
    created_at: datetime
    input_tokens: int
    output_tokens: int


async def list_sessions(
    engine: AsyncEngine, *, project: str | None = None, limit: int | None = None
) -> list[SessionRow]:
    """Sessions holding messages, newest first, of one project or of all of them."""
    s = _sessions.c
    stmt = select(
        s.project,
        s.session_id,
        s.next_position,
        s.preview,
        s.created_at,
        s.input_tokens,
        s.output_tokens,
    ).where(s.next_position > 0)
    if project is not None:
        stmt = stmt.where(s.project == project)
    stmt = stmt.order_by(s.created_at.desc(), s.project, s.session_id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    with translate_errors():
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
    return [
        SessionRow(
            project=r.project,
            session_id=r.session_id,
            message_count=r.next_position,
            preview=r.preview or NO_PREVIEW,
            created_at=r.created_at,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
        )
        for r in rows
    ]


async def find_session_projects(engine: AsyncEngine, session_id: str) -> list[str]:
    """The projects that hold a session with this id."""
    s = _sessions.c
    stmt = select(s.project).where(s.session_id == session_id).order_by(s.project)
    with translate_errors():
        async with engine.connect() as conn:
            return list((await conn.execute(stmt)).scalars())


@dataclass(frozen=True)
class ThreadRow:
    """One user's messages in one thread of an agent."""

    thread_id: str
    user_id: str
    message_count: int
    first_idx: int
    last_idx: int
    last_at: datetime


async def list_threads(
    engine: AsyncEngine, *, agent: str, user: str | None = None, limit: int | None = None
) -> list[ThreadRow]:
    """Threads of ``agent`` (``""``: the default agent) per user, most recent activity first."""
    m = _messages.c
    stmt = select(
        m.thread_id,
        m.user_id,
        func.count().label("n"),
        func.min(m.idx).label("first_idx"),
        func.max(m.idx).label("last_idx"),
        func.max(m.created_at).label("last_at"),
    ).where(m.agent_name == agent)
    if user is not None:
        stmt = stmt.where(m.user_id == user)
    stmt = stmt.group_by(m.thread_id, m.user_id).order_by(
        func.max(m.created_at).desc(), m.thread_id, m.user_id
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    with translate_errors():
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
    # Aggregates bypass the column type, so the timestamp is read back through it here.
    time_type = _messages.c.created_at.type
    processor = time_type.result_processor(engine.dialect, None)
    return [
        ThreadRow(
            thread_id=r.thread_id,
            user_id=r.user_id,
            message_count=int(r.n),
            first_idx=int(r.first_idx),
            last_idx=int(r.last_idx),
            last_at=_as_utc(processor(r.last_at) if processor else r.last_at),
        )
        for r in rows
    ]


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def thread_messages(engine: AsyncEngine, *, agent: str, thread_id: str) -> list[Any]:
    """Every message of one thread of ``agent``, all users, in ``idx`` order (raw rows)."""
    m = _messages.c
    stmt = select(_messages).where(m.agent_name == agent, m.thread_id == thread_id).order_by(m.idx)
    with translate_errors():
        async with engine.connect() as conn:
            return list((await conn.execute(stmt)).all())


# --- prune ------------------------------------------------------------------------------------

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` into a :class:`~datetime.timedelta`.

    Raises:
        ValidationError: The text is not a number followed by one of ``s m h d w``.
    """
    match = _AGE.match(text)
    if not match:
        raise ValidationError(f"invalid age {text!r}: use a number and a unit, e.g. 30d or 12h")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class PruneReport:
    """What :func:`prune` removed (or, with ``dry_run``, would remove)."""

    cutoff: datetime
    dry_run: bool
    sessions: int = 0
    context_messages: int = 0
    threads: int = 0
    messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json`` output)."""
        return {
            "cutoff": _iso(self.cutoff),
            "dry_run": self.dry_run,
            "sessions": self.sessions,
            "context_messages": self.context_messages,
            "threads": self.threads,
            "messages": self.messages,
        }


async def prune(
    engine: AsyncEngine,
    *,
    older_than: timedelta,
    project: str | None = None,
    agent: str | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> PruneReport:
    """Delete sessions and threads whose last activity is older than ``older_than``.

    A session's last activity is its newest message (or its creation, if it has none); a
    thread's is its ``updated_at``, which every new message moves. With ``project`` only
    that project's sessions are considered, with ``agent`` only that agent's threads
    (``""``: the default agent), with neither everything. Users are kept, with their
    balances. Each batch of ``batch_size`` sessions or threads is its own transaction.
    """
    progress = progress or _NoProgress()
    cutoff = (now or datetime.now(UTC)) - older_than
    report = PruneReport(cutoff=cutoff, dry_run=dry_run)
    with translate_errors():
        if agent is None:
            await _prune_sessions(engine, report, project, batch_size, progress)
        if project is None:
            await _prune_threads(engine, report, agent, batch_size, progress)
    return report


def _stale_sessions(cutoff: datetime, project: str | None) -> Any:
    s, c = _sessions.c, _context_messages.c
    last = (
        select(func.max(c.created_at))
        .where(c.project == s.project, c.session_id == s.session_id)
        .scalar_subquery()
    )
    stmt = select(s.project, s.session_id).where(
        func.coalesce(last, s.created_at) < type_coerce(cutoff, s.created_at.type)
    )
    if project is not None:
        stmt = stmt.where(s.project == project)
    return stmt


async def _prune_sessions(
    engine: AsyncEngine,
    report: PruneReport,
    project: str | None,
    batch_size: int,
    progress: Progress,
) -> None:
    stale = _stale_sessions(report.cutoff, project)
    c = _context_messages.c
    s = _sessions.c
    async with engine.connect() as conn:
        keys = [tuple(r) for r in (await conn.execute(stale)).all()]
    progress.start("pruning sessions", len(keys))
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        async with engine.begin() as conn:
            in_batch = tuple_(c.project, c.session_id).in_(batch)
            if report.dry_run:
                counted = await conn.execute(
                    select(func.count()).select_from(_context_messages).where(in_batch)
                )
                report.context_messages += int(counted.scalar() or 0)
                report.sessions += len(batch)
            else:
                # Re-check staleness under the delete: a session written to since the
                # listing is kept.
                still = await conn.execute(
                    stale.where(tuple_(s.project, s.session_id).in_(batch)).with_for_update()
                )
                batch = [tuple(r) for r in still.all()]
                if batch:
                    gone = await conn.execute(
                        delete(_context_messages).where(tuple_(c.project, c.session_id).in_(batch))
                    )
                    report.context_messages += int(gone.rowcount)
                    done = await conn.execute(
                        delete(_sessions).where(tuple_(s.project, s.session_id).in_(batch))
                    )
                    report.sessions += int(done.rowcount)
        progress.advance(len(keys[start : start + batch_size]))


async def _prune_threads(
    engine: AsyncEngine,
    report: PruneReport,
    agent: str | None,
    batch_size: int,
    progress: Progress,
) -> None:
    t, m = _threads.c, _messages.c
    stale = select(t.agent_name, t.thread_id).where(
        t.updated_at < type_coerce(report.cutoff, t.updated_at.type)
    )
    if agent is not None:
        stale = stale.where(t.agent_name == agent)
    async with engine.connect() as conn:
        keys = [tuple(r) for r in (await conn.execute(stale)).all()]
    progress.start("pruning threads", len(keys))
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        async with engine.begin() as conn:
            if report.dry_run:
                counted = await conn.execute(
                    select(func.count())
                    .select_from(_messages)
                    .where(tuple_(m.agent_name, m.thread_id).in_(batch))
                )
                report.messages += int(counted.scalar() or 0)
                report.threads += len(batch)
            else:
                still = await conn.execute(
                    stale.where(tuple_(t.agent_name, t.thread_id).in_(batch)).with_for_update()
                )
                batch = [tuple(r) for r in still.all()]
                if batch:
                    gone = await conn.execute(
                        delete(_messages).where(tuple_(m.agent_name, m.thread_id).in_(batch))
                    )
                    report.messages += int(gone.rowcount)
                    done = await conn.execute(
                        delete(_threads).where(tuple_(t.agent_name, t.thread_id).in_(batch))
                    )
                    report.threads += int(done.rowcount)
        progress.advance(len(keys[start : start + batch_size]))


# --- stats -------------------------------------------------------------------------------------


@dataclass
class Stats:
    """Size of a database: rows per table, payload bytes and how well they compress."""

    url: str
    rows: dict[str, int]
    projects: int
    agents: int
    stored_bytes: int
    json_bytes: int

    @property
    def compression_ratio(self) -> float:
        """Decoded JSON size / stored payload size (1.0 for an empty database)."""
        return self.json_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json`` output)."""
        return {
            "url": self.url,
            "rows": self.rows,
            "sessions": self.rows["context_tokens"],
            "threads": self.rows["threads"],
            "projects": self.projects,
            "agents": self.agents,
            "payload_stored_bytes": self.stored_bytes,
            "payload_json_bytes": self.json_bytes,
            "compression_ratio": round(self.compression_ratio, 3),
        }


_PAYLOADS: Final = (
    (_messages, ("content", "extra_inputs", "extra_outputs")),
    (_context_messages, ("content",)),
)


async def stats(engine: AsyncEngine, *, progress: Progress | None = None) -> Stats:
    """Count rows and measure payloads (reading every stored payload's header, not its JSON)."""
    progress = progress or _NoProgress()
    tables = (_users, _threads, _messages, _sessions, _context_messages)
    stored = decoded = 0
    with translate_errors():
        async with _snapshot(engine) as conn:
            rows = {}
            for table in tables:
                count = (await conn.execute(select(func.count()).select_from(table))).scalar()
                rows[str(table.name)] = int(count or 0)
            projects = (
                await conn.execute(select(func.count(distinct(_sessions.c.project))))
            ).scalar()
            agents = (
                await conn.execute(select(func.count(distinct(_threads.c.agent_name))))
            ).scalar()
            progress.start("measuring payloads", rows["messages"] + rows["context_messages"])
            for table, columns in _PAYLOADS:
                raw = [type_coerce(table.c[name], LargeBinary) for name in columns]
                result = await conn.stream(select(*raw).execution_options(yield_per=BATCH_SIZE))
                async for partition in result.partitions():
                    for row in partition:
                        for data in row:
                            if data is not None:
                                stored += len(data)
                                decoded += _json_size(bytes(data))
                    progress.advance(len(partition))
    return Stats(
        url=redact(engine.url),
        rows=rows,
        projects=int(projects or 0),
        agents=int(agents or 0),
        stored_bytes=stored,
        json_bytes=decoded,
    )


def _json_size(data: bytes) -> int:
    """Size of the JSON inside a stored payload, expanding it only when the size is unknown."""
    header = data[0] if data else 0
    if header == codec.PLAIN:
        return len(data) - 1
    if header == codec.ZSTD:
        declared = zstandard.frame_content_size(data[1:])
        if declared >= 0:
            return int(declared)
        expanded = zstandard.ZstdDecompressor().decompress(
            data[1:], max_output_size=codec.DEFAULT_MAX_SIZE
        )
        return len(expanded)
    if header == codec.ZLIB:
        return len(zlib.decompress(data[1:]))
    return len(data)
