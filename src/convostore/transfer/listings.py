"""Listings across projects or users (what ``convostore inspect`` shows), within one scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.context import SQLAlchemyContextStore
from convostore.database import DEFAULT_AGENT_KEY, SQLAlchemyDatabase
from convostore.errors import NotFoundError, ValidationError
from convostore.models import NO_PREVIEW, ContextMessage, Message, SessionInfo
from convostore.sql.dml import Executor
from convostore.sql.repositories import admin
from convostore.sql.repositories.rows import message_from_row
from convostore.sql.runner import TransactionRunner
from convostore.transfer._format import MESSAGES

T = TypeVar("T")


async def _fetch(engine: AsyncEngine, read: Callable[[Executor], Awaitable[T]]) -> T:
    """What ``read`` returns, run in one transaction of its own."""
    return await TransactionRunner(engine).run(read)


class SessionRow(SessionInfo):
    """A context-store session in a listing across projects: its summary and its project."""

    project: str


async def list_sessions(
    engine: AsyncEngine, *, project: str | None = None, limit: int | None = None
) -> list[SessionRow]:
    """Sessions holding messages, newest first, of one project or of all of them.

    Within one project this is :meth:`SQLAlchemyContextStore.list_sessions
    <convostore.SQLAlchemyContextStore.list_sessions>` (its order and its fields).
    """
    if project is not None:
        store = SQLAlchemyContextStore(engine, project=project, migrate=False)
        infos = await store.list_sessions(limit=limit)
        return [SessionRow(project=project, **info.model_dump()) for info in infos]
    rows = await _fetch(engine, lambda ex: admin.sessions_across_projects(ex, limit))
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
    return await _fetch(engine, lambda ex: admin.session_projects(ex, session_id))


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
    rows = await _fetch(engine, lambda ex: admin.thread_activity(ex, agent, user, limit))
    # Aggregates bypass the column type, so the timestamp is read back through it here.
    time_type = MESSAGES.c.created_at.type
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


async def thread_messages(
    engine: AsyncEngine, *, agent: str, thread_id: str, user: str | None = None
) -> list[Message]:
    """The messages of one thread of ``agent`` (``""``: the default agent), in ``idx`` order:
    every user's, or with ``user`` only that user's
    (:meth:`SQLAlchemyDatabase.get_messages <convostore.SQLAlchemyDatabase.get_messages>`)."""
    agent_name = None if agent == DEFAULT_AGENT_KEY else agent
    if user is not None:
        database = SQLAlchemyDatabase(engine=engine, agent_name=agent_name, migrate=False)
        return await database.get_messages(thread_id, user)
    rows = await _fetch(engine, lambda ex: admin.thread_rows(ex, agent, thread_id))
    return [message_from_row(row, agent_name) for row in rows]


@dataclass(frozen=True)
class SessionTranscript:
    """One context-store session: where it is, its messages and its token totals."""

    project: str
    session_id: str
    messages: list[ContextMessage]
    input_tokens: int
    output_tokens: int


async def session_transcript(
    engine: AsyncEngine, session_id: str, *, project: str | None = None
) -> SessionTranscript:
    """The session ``session_id`` of ``project``, or of the one project that holds it.

    Raises:
        NotFoundError: No such session (in ``project``, if given).
        ValidationError: Without ``project``, several projects hold a session with this id.
    """
    if project is None:
        projects = await find_session_projects(engine, session_id)
        if not projects:
            raise NotFoundError(f"no session {session_id!r}")
        if len(projects) > 1:
            raise ValidationError(
                f"session {session_id!r} exists in {len(projects)} projects; "
                f"pass --project (one of {projects})"
            )
        project = projects[0]
    store = SQLAlchemyContextStore(engine, project=project, session_id=session_id, migrate=False)
    history = await store.get_history()
    tokens = await store.get_context_tokens()
    # An empty session reads like a missing one; only its row tells them apart.
    if (
        not history
        and tokens == (0, 0)
        and project not in await find_session_projects(engine, session_id)
    ):
        raise NotFoundError(f"no session {session_id!r} in project {project!r}")
    return SessionTranscript(project, session_id, history, *tokens)
