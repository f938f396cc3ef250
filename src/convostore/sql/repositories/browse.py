"""The statements of the database viewer (:mod:`convostore.transfer.browse`, ``convostore ui``).

Every read is bounded by a key range of an index whose leading columns are the scope
(agent, project, session or thread), so a page costs the same on the first page as on the
thousandth (``tests/ui/test_query_plans.py`` checks the plans). Payload columns are read as
their stored bytes: the caller decodes them value by value, so one it cannot decrypt does
not fail the page. Like every repository, these functions run on an
:data:`~convostore.sql.dml.Executor` and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    Row,
    Select,
    Text,
    func,
    literal,
    select,
    tuple_,
    type_coerce,
)

from convostore.sql.dml import Executor
from convostore.sql.repositories.admin import (
    CONTEXT_MESSAGES,
    MESSAGES,
    SESSIONS,
    THREADS,
    USERS,
    table_of,
)
from convostore.sql.tables import (
    AdkAppStateRecord,
    AdkEventRecord,
    AdkSessionRecord,
    AdkUserStateRecord,
)

__all__ = [
    "adk_event_rows",
    "adk_session_row",
    "adk_sessions_page",
    "context_rows",
    "first_after",
    "latest_session_start",
    "session_row",
    "thread_row",
    "thread_rows_page",
    "users_page",
]

ADK_SESSIONS: Final = table_of(AdkSessionRecord)
ADK_EVENTS: Final = table_of(AdkEventRecord)
ADK_APP_STATES: Final = table_of(AdkAppStateRecord)
ADK_USER_STATES: Final = table_of(AdkUserStateRecord)

_COLUMNS: Final = {
    "project": SESSIONS.c.project,
    "agent": THREADS.c.agent_name,
    "user_agent": USERS.c.agent_name,
    "adk_app": ADK_SESSIONS.c.app_name,
}


async def first_after(executor: Executor, column: str, after: str | None) -> str | None:
    """The smallest value of ``column`` after ``after`` (one index seek), or ``None``.

    ``column``: ``"project"`` (sessions), ``"agent"`` (threads), ``"user_agent"`` (users)
    or ``"adk_app"`` (ADK sessions): each the first column of its table's primary key.
    """
    found = _COLUMNS[column]
    # The first seek from "" (the smallest key, and the default agent's name), so every
    # seek is an index range, as the query-plan tests check.
    bound = found >= "" if after is None else found > after
    value = (await executor.execute(select(func.min(found)).where(bound))).scalar()
    return None if value is None else str(value)


async def latest_session_start(executor: Executor, project: str) -> Any:
    """When the latest session of ``project`` started, as the aggregate returns it."""
    s = SESSIONS.c
    latest = select(func.max(s.created_at)).where(s.project == project)
    return (await executor.execute(latest)).scalar()


async def users_page(
    executor: Executor, agent: str, after: str | None, limit: int
) -> Sequence[Row[Any]]:
    """Users of ``agent`` by id (its primary key), after the id ``after``."""
    u = USERS.c
    stmt: Select[Any] = select(
        u.user_id, u.available_balance, u.current_thread_id, u.updated_at
    ).where(u.agent_name == agent)
    if after is not None:
        stmt = stmt.where(u.user_id > after)
    found: Sequence[Row[Any]] = (
        await executor.execute(stmt.order_by(u.user_id).limit(limit))
    ).all()
    return found


async def session_row(executor: Executor, project: str, session_id: str) -> Row[Any] | None:
    """A context session's row: counts, preview, tokens, times, fork parent."""
    s = SESSIONS.c
    stmt: Select[Any] = select(
        s.next_position,
        s.preview,
        s.input_tokens,
        s.output_tokens,
        s.created_at,
        s.updated_at,
        s.parent_session_id,
        s.forked_at,
    ).where(s.project == project, s.session_id == session_id)
    found: Row[Any] | None = (await executor.execute(stmt)).first()
    return found


async def thread_row(executor: Executor, agent: str, thread_id: str) -> Row[Any] | None:
    """A thread's row: message counter, first user, times."""
    t = THREADS.c
    stmt: Select[Any] = select(t.next_idx, t.user_id, t.created_at, t.updated_at).where(
        t.agent_name == agent, t.thread_id == thread_id
    )
    found: Row[Any] | None = (await executor.execute(stmt)).first()
    return found


async def _page(
    executor: Executor,
    stmt: Select[Any],
    position: ColumnElement[Any],
    after: int | None,
    before: int | None,
    limit: int,
) -> list[Row[Any]]:
    """One page of ``stmt`` in ``position`` order between the exclusive bounds; with only
    ``before``, the ``limit`` rows just before it (read backwards, returned in order)."""
    if after is not None:
        stmt = stmt.where(position > after)
    if before is not None:
        stmt = stmt.where(position < before)
    backwards = before is not None and after is None
    stmt = stmt.order_by(position.desc() if backwards else position)
    rows = list((await executor.execute(stmt.limit(limit))).all())
    if backwards:
        rows.reverse()
    return rows


async def context_rows(
    executor: Executor,
    project: str,
    session_id: str,
    after: int | None,
    before: int | None,
    limit: int,
) -> list[Row[Any]]:
    """A page of a session's messages (primary key: project, session_id, position), the
    content as stored bytes."""
    m = CONTEXT_MESSAGES.c
    stmt = select(
        m.position,
        m.role,
        type_coerce(m.content, LargeBinary).label("content"),
        m.created_at,
        m.client_id,
    ).where(m.project == project, m.session_id == session_id)
    return await _page(executor, stmt, m.position, after, before, limit)


async def thread_rows_page(
    executor: Executor,
    agent: str,
    thread_id: str,
    after: int | None,
    before: int | None,
    limit: int,
) -> list[Row[Any]]:
    """A page of a thread's messages, every user's (primary key: agent_name, thread_id,
    idx), texts and payloads as stored."""
    m = MESSAGES.c
    stmt = select(
        m.idx,
        m.user_id,
        m.role,
        m.kind,
        type_coerce(m.message, Text).label("message"),
        type_coerce(m.content, LargeBinary).label("content"),
        m.satoshis,
        type_coerce(m.extra_inputs, LargeBinary).label("extra_inputs"),
        type_coerce(m.extra_outputs, LargeBinary).label("extra_outputs"),
        m.created_at,
    ).where(m.agent_name == agent, m.thread_id == thread_id)
    return await _page(executor, stmt, m.idx, after, before, limit)


async def adk_sessions_page(
    executor: Executor,
    app: str,
    before: tuple[datetime, str, str] | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """An ADK app's sessions, latest activity first, before the (updated_at, user_id,
    session_id) ``before``; reads the (app_name, updated_at, user_id, session_id) index."""
    c = ADK_SESSIONS.c
    stmt: Select[Any] = select(
        c.user_id, c.session_id, c.next_position, c.created_at, c.updated_at
    ).where(c.app_name == app)
    if before is not None:
        at = literal(before[0], c.updated_at.type)
        # The redundant first bound lets every backend use it as the index range.
        stmt = stmt.where(
            c.updated_at <= at,
            tuple_(c.updated_at, c.user_id, c.session_id) < tuple_(at, before[1], before[2]),
        )
    stmt = stmt.order_by(c.updated_at.desc(), c.user_id.desc(), c.session_id.desc())
    found: Sequence[Row[Any]] = (await executor.execute(stmt.limit(limit))).all()
    return found


async def adk_session_row(
    executor: Executor, app: str, user: str, session_id: str
) -> tuple[Row[Any], bytes | None, bytes | None] | None:
    """An ADK session's row (state as stored bytes, event count, times) with the stored
    bytes of its user's and its app's state; ``None`` if there is no such session."""
    s, u, a = ADK_SESSIONS.c, ADK_USER_STATES.c, ADK_APP_STATES.c
    raw = LargeBinary
    row = (
        await executor.execute(
            select(
                type_coerce(s.state, raw).label("state"),
                s.next_position,
                s.created_at,
                s.updated_at,
            ).where(s.app_name == app, s.user_id == user, s.session_id == session_id)
        )
    ).first()
    if row is None:
        return None
    user_state = (
        await executor.execute(
            select(type_coerce(u.state, raw)).where(u.app_name == app, u.user_id == user)
        )
    ).scalar()
    app_state = (
        await executor.execute(select(type_coerce(a.state, raw)).where(a.app_name == app))
    ).scalar()
    return row, user_state, app_state


async def adk_event_rows(
    executor: Executor,
    app: str,
    user: str,
    session_id: str,
    after: int | None,
    before: int | None,
    limit: int,
) -> list[Row[Any]]:
    """A page of an ADK session's events in position order, each event as stored bytes."""
    e = ADK_EVENTS.c
    stmt = select(
        e.position, e.event_id, e.timestamp, type_coerce(e.event, LargeBinary).label("event")
    ).where(e.app_name == app, e.user_id == user, e.session_id == session_id)
    return await _page(executor, stmt, e.position, after, before, limit)
