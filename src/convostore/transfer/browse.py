"""Keyset-paged reads for browsing a database (what ``convostore ui`` shows).

Every function reads one page in one transaction, bounded by a key range of an index whose
leading columns are the scope (agent, project, session or thread), so a page costs the same
on the first page as on the thousandth. Message payloads are decoded value by value: one
encrypted under a key the engine does not have comes back as :class:`Unreadable` instead
of failing the page, so a viewer can show the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import codec, encryption
from convostore.errors import DecryptionError, EncryptionError, SerializationError
from convostore.models import NO_PREVIEW
from convostore.sql import search_index
from convostore.sql.dml import Executor
from convostore.sql.repositories import admin
from convostore.sql.repositories import browse as repo
from convostore.sql.runner import TransactionRunner
from convostore.transfer._format import CONTEXT_MESSAGES, MESSAGES

__all__ = [
    "AdkSessionRow",
    "AgentRow",
    "BrowsedAdkEvent",
    "BrowsedContextMessage",
    "BrowsedMessage",
    "ProjectRow",
    "Unreadable",
    "UserRow",
    "adk_events_page",
    "adk_session",
    "context_page",
    "decode_payload",
    "decode_text",
    "list_adk_apps",
    "list_adk_sessions",
    "list_agents",
    "list_projects",
    "list_users",
    "search_pending",
    "session_summary",
    "thread_page",
    "thread_summary",
]

T = TypeVar("T")

MAX_PAGE: Final = 1000
"""The largest page any function here reads."""


@dataclass(frozen=True)
class Unreadable:
    """A stored value that cannot be shown: encrypted under a key the engine does not have,
    failing authentication, or corrupt."""

    key_id: str | None
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class ProjectRow:
    """A project of the context store and when its latest session started."""

    project: str
    last_started: datetime | None


@dataclass(frozen=True)
class AgentRow:
    """An agent of the agent database (``""``: the default agent)."""

    agent: str


@dataclass(frozen=True)
class UserRow:
    """A user of one agent: balance and current thread."""

    user_id: str
    available_balance: int
    current_thread_id: str | None
    updated_at: datetime


@dataclass(frozen=True)
class BrowsedContextMessage:
    """A context-store message as stored, its content possibly :class:`Unreadable`."""

    position: int
    role: str
    content: list[dict[str, Any]] | Unreadable
    created_at: datetime
    client_id: str | None


@dataclass(frozen=True)
class BrowsedMessage:
    """An agent-database message as stored; text and payloads possibly :class:`Unreadable`."""

    idx: int
    user_id: str
    role: str
    kind: str
    message: str | Unreadable
    content: Any
    satoshis: int | None
    extra_inputs: Any
    extra_outputs: Any
    created_at: datetime


def decode_payload(data: bytes | None, keyring: encryption.Keyring | None) -> Any:
    """A stored payload's JSON value, or :class:`Unreadable` (never raises)."""
    if data is None:
        return None
    raw = bytes(data)
    try:
        return codec.decode(encryption.open_payload(raw, keyring))
    except EncryptionError as exc:
        return _unreadable(raw, exc)
    except SerializationError:
        return Unreadable(None, "corrupt stored value")


def decode_text(value: str | None, keyring: encryption.Keyring | None) -> str | Unreadable:
    """A sealable text column's text (``""`` for ``NULL``), or :class:`Unreadable`."""
    if value is None:
        return ""
    try:
        return encryption.open_text(value, keyring)
    except EncryptionError as exc:
        sealed = encryption.sealed_text_bytes(value)
        return _unreadable(sealed or b"", exc)


def _unreadable(data: bytes, exc: EncryptionError) -> Unreadable:
    try:
        key_id = encryption.key_id_of(data)
    except SerializationError:
        key_id = None
    if isinstance(exc, DecryptionError) or key_id is None:
        return Unreadable(key_id, "encrypted (failed authentication)")
    return Unreadable(key_id, f"encrypted (key {key_id} not available)")


def _check_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


async def _read(engine: AsyncEngine, read: Callable[[Executor], Awaitable[T]]) -> T:
    """What ``read`` returns, run in one read transaction of its own."""
    return await TransactionRunner(engine).run(read, read=True)


async def _distinct(executor: Executor, column: str, after: str | None, limit: int) -> list[str]:
    # A loose index scan: each value is one seek for the smallest key after the last one,
    # so a page costs `limit` seeks however many rows each value has (a GROUP BY or
    # DISTINCT would read them all).
    found: list[str] = []
    while len(found) < limit:
        after = await repo.first_after(executor, column, after)
        if after is None:
            break
        found.append(after)
    return found


async def list_projects(
    engine: AsyncEngine, *, after: str | None = None, limit: int = 50
) -> list[ProjectRow]:
    """Projects of the context store by name; ``after``: the last of the previous page.

    One seek of the session table's primary key per project, and one of the
    (project, created_at) index for when its latest session started.
    """

    async def work(executor: Executor) -> list[ProjectRow]:
        rows = []
        for project in await _distinct(executor, "project", after, _check_limit(limit)):
            latest = await repo.latest_session_start(executor, project)
            rows.append(ProjectRow(project, _as_datetime(latest)))
        return rows

    return await _read(engine, work)


def _as_datetime(value: Any) -> datetime | None:
    # An aggregate bypasses the column's type: read the value back through it.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def list_agents(
    engine: AsyncEngine, *, after: str | None = None, limit: int = 50
) -> list[AgentRow]:
    """Agents with threads or users, by name (``""``: the default agent), as
    :func:`list_projects` pages (seeks of the threads' and users' primary keys)."""

    async def work(executor: Executor) -> list[AgentRow]:
        limit_ = _check_limit(limit)
        names = set(await _distinct(executor, "agent", after, limit_))
        names |= set(await _distinct(executor, "user_agent", after, limit_))
        return [AgentRow(name) for name in sorted(names)[:limit_]]

    return await _read(engine, work)


async def list_users(
    engine: AsyncEngine, *, agent: str, after: str | None = None, limit: int = 50
) -> list[UserRow]:
    """Users of ``agent`` by id (its primary key); ``after``: the last id of a page."""
    rows = await _read(engine, lambda ex: repo.users_page(ex, agent, after, _check_limit(limit)))
    return [
        UserRow(r.user_id, r.available_balance, r.current_thread_id, r.updated_at) for r in rows
    ]


async def session_summary(
    engine: AsyncEngine, *, project: str, session_id: str
) -> dict[str, Any] | None:
    """A session's row (counts, tokens, times, fork parent), or ``None`` if there is none."""
    row = await _read(engine, lambda ex: repo.session_row(ex, project, session_id))
    if row is None:
        return None
    return {
        "message_count": row.next_position,
        "preview": NO_PREVIEW if row.preview is None else row.preview,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "parent_session_id": row.parent_session_id,
        "forked_at": row.forked_at,
    }


async def thread_summary(
    engine: AsyncEngine, *, agent: str, thread_id: str
) -> dict[str, Any] | None:
    """A thread's row (message count, first user, times), or ``None`` if there is none."""
    row = await _read(engine, lambda ex: repo.thread_row(ex, agent, thread_id))
    if row is None:
        return None
    return {
        "message_count": row.next_idx,
        "user_id": row.user_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


async def context_page(
    engine: AsyncEngine,
    *,
    project: str,
    session_id: str,
    after: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[BrowsedContextMessage]:
    """One page of a session's messages in position order.

    ``after`` / ``before`` are exclusive position bounds; with ``before`` (and no
    ``after``) the page is the ``limit`` messages just before it, so paging back costs what
    paging forward does. Reads the primary key (project, session_id, position).
    """
    rows = await _read(
        engine,
        lambda ex: repo.context_rows(ex, project, session_id, after, before, _check_limit(limit)),
    )
    keyring = encryption.keyring_of(engine)
    return [
        BrowsedContextMessage(
            position=r.position,
            role=r.role,
            content=_blocks(decode_payload(r.content, keyring)),
            created_at=r.created_at,
            client_id=r.client_id,
        )
        for r in rows
    ]


def _blocks(value: Any) -> list[dict[str, Any]] | Unreadable:
    if isinstance(value, Unreadable):
        return value
    if not isinstance(value, list):
        return []
    return [b if isinstance(b, dict) else {"type": "json", "value": b} for b in value]


async def thread_page(
    engine: AsyncEngine,
    *,
    agent: str,
    thread_id: str,
    after: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[BrowsedMessage]:
    """One page of a thread's messages (every user's) in ``idx`` order, as
    :func:`context_page` pages (primary key: agent_name, thread_id, idx)."""
    rows = await _read(
        engine,
        lambda ex: repo.thread_rows_page(ex, agent, thread_id, after, before, _check_limit(limit)),
    )
    keyring = encryption.keyring_of(engine)
    return [
        BrowsedMessage(
            idx=r.idx,
            user_id=r.user_id,
            role=r.role,
            kind=r.kind,
            message=decode_text(r.message, keyring),
            content=decode_payload(r.content, keyring),
            satoshis=r.satoshis,
            extra_inputs=decode_payload(r.extra_inputs, keyring),
            extra_outputs=decode_payload(r.extra_outputs, keyring),
            created_at=r.created_at,
        )
        for r in rows
    ]


async def search_pending(engine: AsyncEngine) -> dict[str, int]:
    """Messages not in the search index yet (``search_text`` NULL), per table: what
    ``convostore reindex`` would index."""
    pending: dict[str, int] = {}
    for table in (CONTEXT_MESSAGES, MESSAGES):
        if engine.dialect.name == "sqlite":
            # Since migration 0007: the rows the index's catch-up has not reached.

            async def count(executor: Executor, t: Table = table) -> int:
                return await search_index.pending_count(executor, t)

        else:

            async def count(executor: Executor, t: Table = table) -> int:
                return await admin.count_unindexed(executor, t)

        pending[str(table.name)] = await _read(engine, count)
    return pending


# --- Google ADK sessions (convostore.integrations.adk) -------------------------------------


@dataclass(frozen=True)
class AdkSessionRow:
    """An ADK session in a listing: its key, event count and times."""

    user_id: str
    session_id: str
    events: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class BrowsedAdkEvent:
    """An ADK event as stored (the JSON ADK dumped), possibly :class:`Unreadable`."""

    position: int
    event_id: str
    timestamp: datetime
    event: Any


async def list_adk_apps(
    engine: AsyncEngine, *, after: str | None = None, limit: int = 50
) -> list[str]:
    """ADK app names with sessions, by name (one primary-key seek each)."""

    async def work(executor: Executor) -> list[str]:
        return await _distinct(executor, "adk_app", after, _check_limit(limit))

    return await _read(engine, work)


async def list_adk_sessions(
    engine: AsyncEngine,
    *,
    app: str,
    before: tuple[datetime, str, str] | None = None,
    limit: int = 50,
) -> list[AdkSessionRow]:
    """An app's sessions, latest activity first; ``before``: the (updated_at, user_id,
    session_id) of the last session of the previous page. Reads the
    (app_name, updated_at, user_id, session_id) index."""
    rows = await _read(
        engine, lambda ex: repo.adk_sessions_page(ex, app, before, _check_limit(limit))
    )
    return [
        AdkSessionRow(r.user_id, r.session_id, r.next_position, r.created_at, r.updated_at)
        for r in rows
    ]


async def adk_session(
    engine: AsyncEngine, *, app: str, user: str, session_id: str
) -> dict[str, Any] | None:
    """An ADK session's row and the three state scopes (session, ``user:``, ``app:``),
    each possibly :class:`Unreadable`; ``None`` if there is no such session."""

    async def work(executor: Executor) -> dict[str, Any] | None:
        found = await repo.adk_session_row(executor, app, user, session_id)
        if found is None:
            return None
        row, user_state, app_state = found
        keyring = encryption.keyring_of(engine)
        return {
            "state": decode_payload(row.state, keyring),
            "user_state": decode_payload(user_state, keyring),
            "app_state": decode_payload(app_state, keyring),
            "events": row.next_position,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }

    return await _read(engine, work)


async def adk_events_page(
    engine: AsyncEngine,
    *,
    app: str,
    user: str,
    session_id: str,
    after: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[BrowsedAdkEvent]:
    """One page of an ADK session's events in position order, as :func:`context_page`."""
    rows = await _read(
        engine,
        lambda ex: repo.adk_event_rows(
            ex, app, user, session_id, after, before, _check_limit(limit)
        ),
    )
    keyring = encryption.keyring_of(engine)
    return [
        BrowsedAdkEvent(r.position, r.event_id, r.timestamp, decode_payload(r.event, keyring))
        for r in rows
    ]
