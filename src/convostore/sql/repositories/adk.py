"""The statements of the Google ADK session service (:mod:`convostore.integrations.adk`).

Tables of revision 0003: ``adk_sessions`` (one row per session: its own state, the event
counter, times), ``adk_events`` (each event at a gap-free position), ``adk_app_states`` and
``adk_user_states`` (the ``app:`` and ``user:`` scopes). The service checks arguments,
converts ADK's objects and decides what runs in one transaction; every statement is here.
Like every repository, these functions run on an :data:`~convostore.sql.dml.Executor`
and never commit. Nothing here imports ADK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

from sqlalchemy import Row, Select, Table, delete, insert, select, tuple_, update

from convostore.sql.dml import Executor, family_of, insert_ignore
from convostore.sql.repositories.admin import table_of
from convostore.sql.tables import (
    AdkAppStateRecord,
    AdkEventRecord,
    AdkSessionRecord,
    AdkUserStateRecord,
)

__all__ = [
    "SessionKey",
    "delete_session",
    "event_rows",
    "find_event",
    "insert_event",
    "insert_session",
    "merge_app_state",
    "merge_user_state",
    "scope_states",
    "session_row",
    "sessions_page",
    "set_session_state",
    "take_position",
]

SESSIONS: Final = table_of(AdkSessionRecord)
EVENTS: Final = table_of(AdkEventRecord)
APP_STATES: Final = table_of(AdkAppStateRecord)
USER_STATES: Final = table_of(AdkUserStateRecord)


class SessionKey(NamedTuple):
    """The key of an ADK session: it leads the key of its events too."""

    app_name: str
    user_id: str
    session_id: str

    def of(self, table: Table) -> tuple[Any, ...]:
        """The conditions that select this session's rows of ``table``."""
        return (
            table.c.app_name == self.app_name,
            table.c.user_id == self.user_id,
            table.c.session_id == self.session_id,
        )


async def _merge_state(
    executor: Executor,
    table: Table,
    key: Mapping[str, str],
    delta: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Create the state row at ``key`` if needed, apply ``delta`` under its lock, return it."""
    await executor.execute(
        insert_ignore(
            family_of(executor), table, {**key, "state": {}, "updated_at": now}, key=list(key)
        )
    )
    where = [table.c[name] == value for name, value in key.items()]
    locked = select(table.c.state).where(*where)
    if delta:
        locked = locked.with_for_update()
    state: dict[str, Any] = (await executor.execute(locked)).scalar_one()
    if delta:
        state = {**state, **delta}
        await executor.execute(update(table).where(*where).values(state=state, updated_at=now))
    return state


async def merge_app_state(
    executor: Executor, app_name: str, delta: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The app's state with ``delta`` applied (created empty if there is none)."""
    return await _merge_state(executor, APP_STATES, {"app_name": app_name}, delta, now)


async def merge_user_state(
    executor: Executor, app_name: str, user_id: str, delta: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The user's state with ``delta`` applied (created empty if there is none)."""
    key = {"app_name": app_name, "user_id": user_id}
    return await _merge_state(executor, USER_STATES, key, delta, now)


async def insert_session(
    executor: Executor, key: SessionKey, state: Mapping[str, Any], now: datetime
) -> None:
    """Store a new session with no events (a taken key is an ``IntegrityError``)."""
    await executor.execute(
        insert(SESSIONS).values(
            **key._asdict(),
            state=dict(state),
            next_position=0,
            created_at=now,
            updated_at=now,
        )
    )


async def session_row(executor: Executor, key: SessionKey) -> Row[Any] | None:
    """The session's ``state`` and ``updated_at``, or ``None`` if it is not stored."""
    stmt: Select[Any] = select(SESSIONS.c.state, SESSIONS.c.updated_at).where(*key.of(SESSIONS))
    found: Row[Any] | None = (await executor.execute(stmt)).one_or_none()
    return found


async def event_rows(
    executor: Executor,
    key: SessionKey,
    *,
    since: datetime | None = None,
    before: int | None = None,
    limit: int | None = None,
) -> list[Row[Any]]:
    """The session's events (``position``, ``event``), newest first: those whose own
    timestamp is at least ``since``, at a position below ``before``, at most ``limit``."""
    stmt: Select[Any] = (
        select(EVENTS.c.position, EVENTS.c.event)
        .where(*key.of(EVENTS))
        .order_by(EVENTS.c.position.desc())
    )
    if since is not None:
        stmt = stmt.where(EVENTS.c.timestamp >= since)
    if before is not None:
        stmt = stmt.where(EVENTS.c.position < before)
    return list((await executor.execute(stmt.limit(limit))).all())


async def scope_states(
    executor: Executor, app_name: str, user_ids: Sequence[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The app's state, and the state of each of ``user_ids`` that has one."""
    app = (
        await executor.execute(select(APP_STATES.c.state).where(APP_STATES.c.app_name == app_name))
    ).scalar_one_or_none()
    users: dict[str, dict[str, Any]] = {}
    if user_ids:
        rows = await executor.execute(
            select(USER_STATES.c.user_id, USER_STATES.c.state).where(
                USER_STATES.c.app_name == app_name, USER_STATES.c.user_id.in_(user_ids)
            )
        )
        users = {row.user_id: row.state for row in rows}
    return app or {}, users


async def sessions_page(
    executor: Executor,
    app_name: str,
    user_id: str | None,
    after: tuple[datetime, str, str] | None,
    limit: int | None,
) -> list[Row[Any]]:
    """The app's (or one user's) sessions (``user_id``, ``session_id``, ``state``,
    ``updated_at``) by last update, user id and session id, after the cursor ``after``."""
    c = SESSIONS.c
    stmt: Select[Any] = select(c.user_id, c.session_id, c.state, c.updated_at).where(
        c.app_name == app_name
    )
    if user_id is not None:
        stmt = stmt.where(c.user_id == user_id)
    stmt = stmt.order_by(c.updated_at, c.user_id, c.session_id)
    if after is not None:
        stmt = stmt.where(tuple_(c.updated_at, c.user_id, c.session_id) > tuple_(*after))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list((await executor.execute(stmt)).all())


async def delete_session(executor: Executor, key: SessionKey) -> None:
    """Delete the session and its events (nothing if there is none)."""
    await executor.execute(delete(EVENTS).where(*key.of(EVENTS)))
    await executor.execute(delete(SESSIONS).where(*key.of(SESSIONS)))


async def find_event(executor: Executor, key: SessionKey, event_id: str) -> int | None:
    """The position of the session's event ``event_id``, or ``None`` if it is not stored."""
    found = await executor.execute(
        select(EVENTS.c.position).where(*key.of(EVENTS), EVENTS.c.event_id == event_id)
    )
    position = found.scalar_one_or_none()
    return None if position is None else int(position)


async def take_position(
    executor: Executor, key: SessionKey, when: datetime
) -> tuple[int, dict[str, Any]] | None:
    """Take the session's next event position and lock its row until commit.

    Returns the position and the session's own state, or ``None`` if it is not stored.
    Bumping the counter first takes the row's write lock (on SQLite, the database's: its
    driver begins a transaction at the first write, not at a read), so the position read
    back is ours until commit.
    """
    where = key.of(SESSIONS)
    bumped = await executor.execute(
        update(SESSIONS)
        .where(*where)
        .values(next_position=SESSIONS.c.next_position + 1, updated_at=when)
    )
    if bumped.rowcount == 0:  # type: ignore[attr-defined]
        return None
    row = (
        await executor.execute(
            select(SESSIONS.c.next_position, SESSIONS.c.state).where(*where).with_for_update()
        )
    ).one()
    return int(row.next_position) - 1, dict(row.state)


async def set_session_state(executor: Executor, key: SessionKey, state: Mapping[str, Any]) -> None:
    """Replace the session's own state."""
    await executor.execute(update(SESSIONS).where(*key.of(SESSIONS)).values(state=dict(state)))


async def insert_event(
    executor: Executor,
    key: SessionKey,
    *,
    position: int,
    event_id: str,
    timestamp: datetime,
    event: Mapping[str, Any],
) -> None:
    """Store an event at ``position`` (a stored ``event_id`` is an ``IntegrityError``)."""
    await executor.execute(
        insert(EVENTS).values(
            **key._asdict(),
            position=position,
            event_id=event_id,
            timestamp=timestamp,
            event=dict(event),
        )
    )
