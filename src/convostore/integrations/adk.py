"""Google ADK: a ``BaseSessionService`` on convostore's schema, on any backend.

::

    from google.adk.runners import Runner
    from convostore.integrations.adk import ConvostoreSessionService

    service = ConvostoreSessionService(url="postgresql://localhost/app")
    runner = Runner(app_name="app", agent=agent, session_service=service)

What ADK's ``DatabaseSessionService`` does (the same behaviour tests run against both), with
Alembic migrations instead of ``create_all`` at run time, and:

* concurrent appends to one session never fail: each event gets the next gap-free position
  under the session row's lock, and state deltas merge key by key (the last writer wins a
  key), where ADK's service raises ``StaleSessionError`` for every writer but the first;
* events are ordered by that position, never by timestamp;
* ``list_sessions`` pages (``page_size`` / ``page_token``) instead of reading every session;
* appending an event whose id is already stored in the session (a retry) stores nothing
  and applies no state twice.

Tables: ``adk_sessions``, ``adk_events``, ``adk_app_states``, ``adk_user_states`` (revision
0003). Each event is stored as ADK dumps it to JSON (``model_dump(mode="json",
exclude_none=True)``) and read back with ``Event.model_validate``; state values go through
pydantic's ``to_jsonable_python`` first, as in ADK (datetimes become strings), and a value
it cannot convert raises :class:`~convostore.errors.SerializationError` where ADK would store
its ``repr``.

Requires ``google-adk`` (``pip install convostore[adk]``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pydantic
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from google.adk.sessions.state import State
from pydantic_core import PydanticSerializationError, to_jsonable_python
from sqlalchemy import URL, Table, delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import migrate as migrations
from convostore.errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    SerializationError,
    ValidationError,
)
from convostore.models import check_id, check_optional_int
from convostore.pairs import Pairing, check_exact, widened_start
from convostore.settings import redact
from convostore.sql.dialects import Executor, family_of, insert_ignore
from convostore.sql.engine import create_engine
from convostore.sql.runner import TransactionRunner
from convostore.sql.tables import (
    ADK_KEY_LENGTH,
    AdkAppStateRecord,
    AdkEventRecord,
    AdkSessionRecord,
    AdkUserStateRecord,
)

__all__ = [
    "ConvostoreSessionService",
    "SessionAlreadyExistsError",
    "SessionMissingError",
    "SessionPage",
]

_sessions: Table = AdkSessionRecord.__table__  # type: ignore[assignment]
_events: Table = AdkEventRecord.__table__  # type: ignore[assignment]
_app_states: Table = AdkAppStateRecord.__table__  # type: ignore[assignment]
_user_states: Table = AdkUserStateRecord.__table__  # type: ignore[assignment]


class SessionAlreadyExistsError(ConflictError, AlreadyExistsError):
    """``create_session`` was given the id of an existing session (ADK's
    ``AlreadyExistsError`` and convostore's ``ConflictError`` both catch it)."""


class SessionMissingError(NotFoundError, SessionNotFoundError):
    """``append_event`` was given a session that is not stored (ADK's
    ``SessionNotFoundError`` and convostore's ``NotFoundError`` both catch it)."""


class SessionPage(ListSessionsResponse):
    """One page of ``list_sessions``: ADK's response, plus the token of the next page."""

    next_page_token: str | None = None
    """Pass as ``page_token`` for the next page; ``None`` on the last page."""


class ConvostoreSessionService(BaseSessionService):
    """ADK's session service, stored by convostore (see the module's docstring).

    Args:
        engine: An engine from :func:`convostore.connect` (or your own), which the caller
            disposes of. Give this or ``url``.
        url: Open an engine for this URL (any form convostore accepts; ``None`` with no
            ``engine`` resolves the environment, then ``./convostore.db``); :meth:`close`
            disposes of it.
        migrate: As for :func:`convostore.connect`, when the service first uses the engine.
        exact_recent_events: ``num_recent_events`` returns exactly that many events, even
            when that cuts a function call off from its response (default: widen to the
            call).

    Raises:
        ConfigurationError: Both ``engine`` and ``url`` were given.
    """

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        *,
        url: str | URL | None = None,
        migrate: bool | None = None,
        exact_recent_events: bool = False,
    ) -> None:
        if engine is not None and url is not None:
            raise ConfigurationError("give engine or url, not both")
        check_exact(exact_recent_events)
        self._owns_engine = engine is None
        self._runner = TransactionRunner(engine if engine is not None else create_engine(url))
        self._migrate = migrate
        self._exact_recent_events = exact_recent_events

    @property
    def engine(self) -> AsyncEngine:
        """The engine this service runs on."""
        return self._runner.engine

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact(self.engine.url)!r})"

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session; ``app:`` and ``user:`` keys of ``state`` go to their scopes.

        ``temp:`` keys are not stored, as in ADK. A new session id is a random UUID.

        Raises:
            SessionAlreadyExistsError: A session with ``session_id`` exists.
            ValidationError: An id is not usable.
            SerializationError: A state value cannot be stored as JSON.
        """
        _check_key(app_name, user_id)
        session_id = _checked("session_id", str(uuid4()) if session_id is None else session_id)
        app_delta, user_delta, own_state = _split(state or {})
        now = datetime.now(UTC)
        await self._ready()

        async def work(session: Executor) -> Session:
            app_state = await _merge_state(session, _app_states, {"app_name": app_name}, app_delta)
            user_state = await _merge_state(
                session, _user_states, {"app_name": app_name, "user_id": user_id}, user_delta
            )
            await session.execute(
                insert(_sessions).values(
                    app_name=app_name,
                    user_id=user_id,
                    session_id=session_id,
                    state=own_state,
                    next_position=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            return Session(
                id=session_id,
                app_name=app_name,
                user_id=user_id,
                state=_merged(app_state, user_state, own_state),
                last_update_time=now.timestamp(),
            )

        try:
            return await self._runner.run(work)
        except ConflictError as exc:
            raise SessionAlreadyExistsError(
                f"Session with id {session_id} already exists."
            ) from exc

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        """The session with its merged state and events (``None`` if there is none).

        With ``config.after_timestamp``, only events whose own timestamp is at least that;
        with ``config.num_recent_events``, only the latest that many of those, widened back
        to the function call of every function response among them (unless the service
        was made with ``exact_recent_events=True``); in append order either way.

        Raises:
            ValidationError: An id is not usable.
        """
        _check_key(app_name, user_id)
        _checked("session_id", session_id)
        recent = None if config is None else config.num_recent_events
        after = None if config is None else config.after_timestamp
        await self._ready()

        async def work(session: Executor) -> Session | None:
            key = _session_key(_sessions, app_name, user_id, session_id)
            row = (
                await session.execute(select(_sessions.c.state, _sessions.c.updated_at).where(*key))
            ).one_or_none()
            if row is None:
                return None
            events: list[Any] = []
            if recent != 0:
                stmt = (
                    select(_events.c.position, _events.c.event)
                    .where(*_session_key(_events, app_name, user_id, session_id))
                    .order_by(_events.c.position.desc())
                )
                if after is not None:
                    stmt = stmt.where(_events.c.timestamp >= _from_timestamp(after))
                rows = list((await session.execute(stmt.limit(recent))).all())
                if recent is not None and not self._exact_recent_events:
                    rows = await _widened(session, stmt, rows, recent)
                events = [row.event for row in reversed(rows)]
            app_state, user_state = await _scope_states(session, app_name, [user_id])
            return Session(
                id=session_id,
                app_name=app_name,
                user_id=user_id,
                state=_merged(app_state, user_state.get(user_id, {}), row.state),
                events=[_event(data) for data in events],
                last_update_time=row.updated_at.timestamp(),
            )

        return await self._runner.run(work)

    async def list_sessions(
        self,
        *,
        app_name: str,
        user_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> SessionPage:
        """The app's sessions (one user's, with ``user_id``), least recently updated first.

        Sessions come with their merged state and no events, as in ADK. Without
        ``page_size``, all of them; with it, one keyset page: pass ``next_page_token`` of
        a page as ``page_token`` for the next. Order is by last update, then user id, then
        session id, so a session appended to while you page moves to the end.

        Raises:
            ValidationError: An id, ``page_size`` (at least 1) or ``page_token`` is not usable.
        """
        _checked("app_name", app_name)
        if user_id is not None:
            _checked("user_id", user_id)
        check_optional_int(page_size, "page_size", minimum=1)
        cursor = None if page_token is None else _decode_token(page_token)
        await self._ready()

        async def work(session: Executor) -> SessionPage:
            c = _sessions.c
            stmt = select(c.user_id, c.session_id, c.state, c.updated_at).where(
                c.app_name == app_name
            )
            if user_id is not None:
                stmt = stmt.where(c.user_id == user_id)
            stmt = stmt.order_by(c.updated_at, c.user_id, c.session_id)
            if cursor is not None:
                stmt = stmt.where(tuple_(c.updated_at, c.user_id, c.session_id) > tuple_(*cursor))
            if page_size is not None:
                stmt = stmt.limit(page_size + 1)
            rows = list(await session.execute(stmt))
            more = page_size is not None and len(rows) > page_size
            rows = rows[:page_size] if page_size is not None else rows
            app_state, user_states = await _scope_states(
                session, app_name, sorted({row.user_id for row in rows})
            )
            sessions = [
                Session(
                    id=row.session_id,
                    app_name=app_name,
                    user_id=row.user_id,
                    state=_merged(app_state, user_states.get(row.user_id, {}), row.state),
                    last_update_time=row.updated_at.timestamp(),
                )
                for row in rows
            ]
            last = rows[-1] if more else None
            token = (
                None
                if last is None
                else _encode_token(last.updated_at, last.user_id, last.session_id)
            )
            return SessionPage(sessions=sessions, next_page_token=token)

        return await self._runner.run(work)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete the session and its events (nothing happens if there is none).

        Raises:
            ValidationError: An id is not usable.
        """
        _check_key(app_name, user_id)
        _checked("session_id", session_id)
        await self._ready()

        async def work(session: Executor) -> None:
            await session.execute(
                delete(_events).where(*_session_key(_events, app_name, user_id, session_id))
            )
            await session.execute(
                delete(_sessions).where(*_session_key(_sessions, app_name, user_id, session_id))
            )

        await self._runner.run(work)

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user's ``user:`` state, keys without the prefix (``{}`` if none is stored).

        Raises:
            ValidationError: An id is not usable.
        """
        _check_key(app_name, user_id)
        await self._ready()

        async def work(session: Executor) -> dict[str, Any]:
            _, states = await _scope_states(session, app_name, [user_id])
            return states.get(user_id, {})

        return await self._runner.run(work)

    async def append_event(self, session: Session, event: Event) -> Event:
        """Store ``event`` at the session's next position and apply its state delta.

        The event, the session's state, and the app's and user's states change in one
        transaction. ``temp:`` keys reach ``session.state`` only, as in ADK; a partial
        (streaming) event is returned unstored. ``session`` need not be the latest copy:
        another writer's events do not make it stale. An event whose id the session
        already holds is not stored or applied again.

        Raises:
            SessionMissingError: The session is not stored.
            ValidationError: ``session`` or ``event`` is not ADK's, or an id is not usable.
            SerializationError: The event or a state value cannot be stored as JSON.
        """
        if not isinstance(session, Session) or not isinstance(event, Event):
            raise ValidationError("append_event takes an ADK Session and Event")
        if event.partial:
            return event
        app_name, user_id, session_id = session.app_name, session.user_id, session.id
        _check_key(app_name, user_id)
        _checked("session_id", session_id)
        event_id = _checked("event id", event.id)
        delta = dict(event.actions.state_delta) if event.actions else {}
        app_delta, user_delta, own_delta = _split(delta)
        data = _event_data(event)
        when = _from_timestamp(event.timestamp)
        await self._ready()

        async def work(db: Executor) -> bool:
            found = await db.execute(
                select(_events.c.position).where(
                    *_session_key(_events, app_name, user_id, session_id),
                    _events.c.event_id == event_id,
                )
            )
            if found.first() is not None:
                return False
            # Bumping the counter first takes the session row's write lock (on SQLite, the
            # database's: its driver begins a transaction at the first write, not at a
            # read), so the position read back is ours until commit. Then app before user,
            # the order create_session takes them in.
            key = _session_key(_sessions, app_name, user_id, session_id)
            bumped = await db.execute(
                update(_sessions)
                .where(*key)
                .values(next_position=_sessions.c.next_position + 1, updated_at=when)
            )
            if bumped.rowcount == 0:  # type: ignore[attr-defined]
                raise SessionMissingError(f"Session {session_id} not found.")
            row = (
                await db.execute(
                    select(_sessions.c.next_position, _sessions.c.state)
                    .where(*key)
                    .with_for_update()
                )
            ).one()
            position = row.next_position - 1
            if own_delta:
                await db.execute(
                    update(_sessions).where(*key).values(state={**row.state, **own_delta})
                )
            if app_delta:
                await _merge_state(db, _app_states, {"app_name": app_name}, app_delta)
            if user_delta:
                await _merge_state(
                    db, _user_states, {"app_name": app_name, "user_id": user_id}, user_delta
                )
            await db.execute(
                insert(_events).values(
                    app_name=app_name,
                    user_id=user_id,
                    session_id=session_id,
                    position=position,
                    event_id=event_id,
                    timestamp=when,
                    event=data,
                )
            )
            return True

        # A concurrent append of the same event id loses on the unique index: run once
        # more, and the event is found.
        await self._runner.run(work, rerun_on_conflict=True)
        if any(known.id == event_id for known in session.events):
            return event
        appended = await super().append_event(session, event)
        # What storage keeps (microseconds), as ADK's own service takes it back from the
        # row: the caller's session then equals the one get_session reads.
        session.last_update_time = when.timestamp()
        return appended

    async def close(self) -> None:
        """Dispose of the engine if this service opened it (``url=``)."""
        if self._owns_engine:
            await self.engine.dispose()

    async def _ready(self) -> None:
        await migrations.prepare(self.engine, migrate=self._migrate)


_WIDEN_PAGE = 50
"""Older events read per step when ``num_recent_events`` widens to a function call."""


async def _widened(session: Executor, stmt: Any, rows: list[Any], recent: int) -> list[Any]:
    """``rows`` (the latest ``recent`` events, newest first), with the older events back to
    the call of every function response among them (:mod:`convostore.pairs`)."""
    pairing = Pairing()
    for row in rows:
        pairing.add([row.event])
    more = len(rows) == recent
    while more and not pairing.complete:
        older = list(
            (
                await session.execute(
                    stmt.where(_events.c.position < rows[-1].position).limit(_WIDEN_PAGE)
                )
            ).all()
        )
        for row in older:
            rows.append(row)
            pairing.add([row.event])
            if pairing.complete:
                break
        more = len(older) == _WIDEN_PAGE
    oldest_first = rows[::-1]
    start = widened_start([[row.event] for row in oldest_first], recent)
    return oldest_first[start:][::-1]


def _checked(name: str, value: object) -> str:
    return check_id(value, name, ADK_KEY_LENGTH)


def _check_key(app_name: object, user_id: object) -> None:
    _checked("app_name", app_name)
    _checked("user_id", user_id)


def _session_key(table: Table, app_name: str, user_id: str, session_id: str) -> tuple[Any, ...]:
    return (
        table.c.app_name == app_name,
        table.c.user_id == user_id,
        table.c.session_id == session_id,
    )


def _jsonable(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        converted = to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise SerializationError(f"{what} cannot be stored as JSON: {exc}") from exc
    assert isinstance(converted, dict)
    return converted


def _split(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """ADK's scopes of a state (delta): app, user and session keys; ``temp:`` keys dropped."""
    if not isinstance(state, Mapping) or not all(isinstance(key, str) for key in state):
        raise ValidationError("state must be a mapping with str keys")
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, value in _jsonable(state, "a state value").items():
        if key.startswith(State.APP_PREFIX):
            app[key.removeprefix(State.APP_PREFIX)] = value
        elif key.startswith(State.USER_PREFIX):
            user[key.removeprefix(State.USER_PREFIX)] = value
        elif not key.startswith(State.TEMP_PREFIX):
            own[key] = value
    return app, user, own


def _merged(
    app: Mapping[str, Any], user: Mapping[str, Any], own: Mapping[str, Any]
) -> dict[str, Any]:
    """The state a session shows: its own keys, then the app's and user's with prefixes."""
    state = dict(own)
    state.update({State.APP_PREFIX + key: value for key, value in app.items()})
    state.update({State.USER_PREFIX + key: value for key, value in user.items()})
    return state


async def _merge_state(
    session: Executor, table: Table, key: Mapping[str, str], delta: Mapping[str, Any]
) -> dict[str, Any]:
    """Create the state row at ``key`` if needed, apply ``delta`` under its lock, return it."""
    now = datetime.now(UTC)
    await session.execute(
        insert_ignore(
            family_of(session), table, {**key, "state": {}, "updated_at": now}, key=list(key)
        )
    )
    where = [table.c[name] == value for name, value in key.items()]
    locked = select(table.c.state).where(*where)
    if delta:
        locked = locked.with_for_update()
    state: dict[str, Any] = (await session.execute(locked)).scalar_one()
    if delta:
        state = {**state, **delta}
        await session.execute(update(table).where(*where).values(state=state, updated_at=now))
    return state


async def _scope_states(
    session: Executor, app_name: str, user_ids: Sequence[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The app's state, and the state of each of ``user_ids`` that has one."""
    app = (
        await session.execute(select(_app_states.c.state).where(_app_states.c.app_name == app_name))
    ).scalar_one_or_none()
    users: dict[str, dict[str, Any]] = {}
    if user_ids:
        rows = await session.execute(
            select(_user_states.c.user_id, _user_states.c.state).where(
                _user_states.c.app_name == app_name, _user_states.c.user_id.in_(user_ids)
            )
        )
        users = {row.user_id: row.state for row in rows}
    return app or {}, users


def _event_data(event: Event) -> dict[str, Any]:
    """The event as stored: ADK's JSON dump, without ``temp:`` keys in its state delta."""
    try:
        data: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    except PydanticSerializationError as exc:
        raise SerializationError(f"the event cannot be stored as JSON: {exc}") from exc
    actions = data.get("actions")
    if isinstance(actions, dict) and isinstance(actions.get("state_delta"), dict):
        actions["state_delta"] = {
            key: value
            for key, value in actions["state_delta"].items()
            if not key.startswith(State.TEMP_PREFIX)
        }
    return data


def _event(data: Any) -> Event:
    try:
        return Event.model_validate(data)
    except pydantic.ValidationError as exc:
        raise SerializationError(f"a stored event is not an ADK event: {exc}") from exc


def _from_timestamp(value: float) -> datetime:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError, TypeError) as exc:
        raise ValidationError(f"{value!r} is not a usable timestamp") from exc


def _encode_token(updated_at: datetime, user_id: str, session_id: str) -> str:
    raw = json.dumps([updated_at.isoformat(), user_id, session_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: object) -> tuple[datetime, str, str]:
    if type(token) is not str:
        raise ValidationError(f"page_token must be a str, not {type(token).__name__}")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        when, user_id, session_id = json.loads(raw)
        updated_at = datetime.fromisoformat(when)
        if updated_at.tzinfo is None or type(user_id) is not str or type(session_id) is not str:
            raise ValueError("not a cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValidationError("page_token is not a token from list_sessions") from exc
    return updated_at, user_id, session_id
