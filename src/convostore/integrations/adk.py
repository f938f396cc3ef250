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
from collections.abc import Mapping
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
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    SerializationError,
    ValidationError,
)
from convostore.facade import Facade
from convostore.models import check_id, check_optional_int, utc_now
from convostore.pairs import Pairing, check_exact, widened_start
from convostore.rules import ADK_KEY_LENGTH
from convostore.settings import redact
from convostore.sql.dml import Executor
from convostore.sql.engine import create_engine
from convostore.sql.repositories import adk as repo
from convostore.sql.repositories.adk import SessionKey

__all__ = [
    "ConvostoreSessionService",
    "SessionAlreadyExistsError",
    "SessionMissingError",
    "SessionPage",
]


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


class ConvostoreSessionService(Facade, BaseSessionService):
    """ADK's session service, stored by convostore (see the module's docstring).

    A façade like :class:`~convostore.SQLAlchemyContextStore`: each call is one
    transaction of its :class:`~convostore.sql.runner.TransactionRunner`, and ``async
    with ConvostoreSessionService(url=...) as service:`` prepares the schema on entry and
    disposes of the engine it opened on exit.

    Args:
        engine: An engine from :func:`convostore.connect` (or your own), which the caller
            disposes of. Give this or ``url``.
        url: Open an engine for this URL (any form convostore accepts; ``None`` with no
            ``engine`` resolves the environment, then ``./convostore.db``);
            :meth:`~convostore.facade.Facade.close` disposes of it.
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
        self._exact_recent_events = exact_recent_events
        self._start(
            engine if engine is not None else create_engine(url),
            owns_engine=engine is None,
            migrate=migrate,
            read_url=None,
        )

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
        await self._ensure_ready()

        key = SessionKey(app_name, user_id, session_id)

        async def work(session: Executor) -> Session:
            app_state = await repo.merge_app_state(session, app_name, app_delta, utc_now())
            user_state = await repo.merge_user_state(
                session, app_name, user_id, user_delta, utc_now()
            )
            await repo.insert_session(session, key, own_state, now)
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
        await self._ensure_ready()

        key = SessionKey(app_name, user_id, session_id)
        since = None if after is None else _from_timestamp(after)

        async def work(session: Executor) -> Session | None:
            row = await repo.session_row(session, key)
            if row is None:
                return None
            events: list[Any] = []
            if recent != 0:
                rows = await repo.event_rows(session, key, since=since, limit=recent)
                if recent is not None and not self._exact_recent_events:
                    rows = await _widened(session, key, since, rows, recent)
                events = [row.event for row in reversed(rows)]
            app_state, user_state = await repo.scope_states(session, app_name, [user_id])
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
        await self._ensure_ready()

        async def work(session: Executor) -> SessionPage:
            limit = None if page_size is None else page_size + 1
            rows = await repo.sessions_page(session, app_name, user_id, cursor, limit)
            more = page_size is not None and len(rows) > page_size
            rows = rows[:page_size] if page_size is not None else rows
            app_state, user_states = await repo.scope_states(
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
        await self._ensure_ready()

        key = SessionKey(app_name, user_id, session_id)
        await self._runner.run(lambda session: repo.delete_session(session, key))

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user's ``user:`` state, keys without the prefix (``{}`` if none is stored).

        Raises:
            ValidationError: An id is not usable.
        """
        _check_key(app_name, user_id)
        await self._ensure_ready()

        async def work(session: Executor) -> dict[str, Any]:
            _, states = await repo.scope_states(session, app_name, [user_id])
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
        await self._ensure_ready()

        key = SessionKey(app_name, user_id, session_id)

        async def work(db: Executor) -> bool:
            if await repo.find_event(db, key, event_id) is not None:
                return False
            # The session row first (its lock orders concurrent appends), then app before
            # user, the order create_session takes them in.
            taken = await repo.take_position(db, key, when)
            if taken is None:
                raise SessionMissingError(f"Session {session_id} not found.")
            position, own_state = taken
            if own_delta:
                await repo.set_session_state(db, key, {**own_state, **own_delta})
            if app_delta:
                await repo.merge_app_state(db, app_name, app_delta, utc_now())
            if user_delta:
                await repo.merge_user_state(db, app_name, user_id, user_delta, utc_now())
            await repo.insert_event(
                db, key, position=position, event_id=event_id, timestamp=when, event=data
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


_WIDEN_PAGE = 50
"""Older events read per step when ``num_recent_events`` widens to a function call."""


async def _widened(
    session: Executor, key: SessionKey, since: datetime | None, rows: list[Any], recent: int
) -> list[Any]:
    """``rows`` (the latest ``recent`` events, newest first), with the older events back to
    the call of every function response among them (:mod:`convostore.pairs`)."""
    pairing = Pairing()
    for row in rows:
        pairing.add([row.event])
    more = len(rows) == recent
    while more and not pairing.complete:
        older = await repo.event_rows(
            session, key, since=since, before=rows[-1].position, limit=_WIDEN_PAGE
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
    return {
        **own,
        **{State.APP_PREFIX + key: value for key, value in app.items()},
        **{State.USER_PREFIX + key: value for key, value in user.items()},
    }


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
