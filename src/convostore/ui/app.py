"""The viewer's pages: a Starlette app over one engine, rendered by Jinja2 templates.

Every page reads through the library's read APIs (the façades' keyset pages and search,
:mod:`convostore.transfer.browse`, :func:`convostore.transfer.stats`), never writes, and
shows an unreadable value (a key that is not available) in place instead of failing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from convostore import migrate, transfer
from convostore.context import SQLAlchemyContextStore
from convostore.database import SQLAlchemyDatabase
from convostore.errors import ConvostoreError, EncryptionError, NotFoundError, ValidationError
from convostore.models import (
    ContextSearchHit,
    Message,
    MessageSearchHit,
    SessionInfo,
    StoredContextMessage,
    ThreadInfo,
    construct,
)
from convostore.settings import redact
from convostore.sql.types import writes_search_index
from convostore.transfer import browse
from convostore.ui.security import LOOPBACK_HOSTS, Guard

__all__ = ["PAGE", "create_app"]

PAGE: Final = 50
"""Rows or messages per page."""

_HERE = Path(__file__).parent
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


# The route handlers are nested closures over the engine and the templates; mccabe adds
# their branches to this factory's, though each handler on its own is simple.
def create_app(  # noqa: C901
    engine: AsyncEngine,
    *,
    hosts: Iterable[str] | None = LOOPBACK_HOSTS,
    token: str | None = None,
) -> Guard:
    """The viewer as an ASGI app over ``engine`` (which it never writes to nor disposes).

    Args:
        engine: The database to show; give it the keyring to read encrypted values with.
        hosts: Host names the ``Host`` header may carry (default: loopback names only;
            ``None``: any, only together with a token).
        token: Require this token (``?token=`` once, then a cookie) on every request.
    """
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals |= {
        "link": _link,
        "when": _when,
        "pretty": _pretty,
        "image_src": _image_src,
        "adk_parts": _adk_parts,
        "database": redact(engine.url),
    }
    env.tests["unreadable"] = lambda value: isinstance(value, browse.Unreadable)

    def page(name: str, **values: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**values))

    def handler(
        fn: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except NotFoundError as exc:
                response = page("error.html", title="Not found", message=str(exc))
                response.status_code = 404
            except ValidationError as exc:  # an id or a cursor no database could hold
                response = page("error.html", title="Bad request", message=str(exc))
                response.status_code = 400
            except ConvostoreError as exc:
                response = page("error.html", title="Cannot show this", message=str(exc))
                response.status_code = 500
            return response

        return wrapped

    async def projects(request: Request) -> Response:
        after = request.query_params.get("after")
        rows = await browse.list_projects(engine, after=after, limit=PAGE + 1)
        agents = await browse.list_agents(engine, limit=PAGE + 1)
        return page(
            "projects.html",
            title="Projects",
            projects=rows[:PAGE],
            more=rows[PAGE - 1].project if len(rows) > PAGE else None,
            agents=agents[:PAGE],
        )

    async def sessions(request: Request) -> Response:
        project = _required(request, "project")
        before = _session_cursor(request)
        store = SQLAlchemyContextStore(engine, project=project, migrate=False)
        rows = await store.list_sessions(limit=PAGE + 1, before=before)
        last = rows[PAGE - 1] if len(rows) > PAGE else None
        return page(
            "sessions.html",
            title=project,
            project=project,
            sessions=rows[:PAGE],
            next=None
            if last is None
            else {"at": last.created_at.isoformat(), "id": last.session_id},
        )

    async def transcript(request: Request) -> Response:
        project = _required(request, "project")
        session_id = _required(request, "session")
        summary = await browse.session_summary(engine, project=project, session_id=session_id)
        if summary is None:
            raise NotFoundError(f"no session {session_id!r} in project {project!r}")
        after, before = _window(request, summary["message_count"])
        messages = await browse.context_page(
            engine, project=project, session_id=session_id, after=after, before=before, limit=PAGE
        )
        return page(
            "transcript.html",
            title=session_id,
            project=project,
            session_id=session_id,
            summary=summary,
            messages=messages,
            results=_tool_results(messages),
            pages=_pager(messages, summary["message_count"], "position"),
            target=_int(request, "at"),
        )

    async def raw_message(request: Request) -> Response:
        project = _required(request, "project")
        session_id = _required(request, "session")
        position = _int(request, "position")
        if position is None:
            raise HTTPException(400, "position is required")
        found = await browse.context_page(
            engine, project=project, session_id=session_id, after=position - 1, limit=1
        )
        if not found or found[0].position != position:
            raise NotFoundError(f"no message {position} in session {session_id!r}")
        message = found[0]
        content: Any = message.content
        if isinstance(content, browse.Unreadable):
            content = str(content)
        body = {
            "project": project,
            "session_id": session_id,
            "position": message.position,
            "role": message.role,
            "created_at": message.created_at.isoformat(),
            "client_id": message.client_id,
            "content": content,
        }
        # Served as JSON (nosniff, no script allowed), and with <, > and & escaped as well:
        # the same value, but no browser can ever read markup in it.
        data = orjson.dumps(body, option=orjson.OPT_INDENT_2)
        for char, escaped in ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026")):
            data = data.replace(char, escaped)
        return Response(data, media_type="application/json")

    async def agents(request: Request) -> Response:
        after = request.query_params.get("after")
        rows = await browse.list_agents(engine, after=after, limit=PAGE + 1)
        return page(
            "agents.html",
            title="Agents",
            agents=rows[:PAGE],
            more=rows[PAGE - 1].agent if len(rows) > PAGE else None,
        )

    async def users(request: Request) -> Response:
        agent = request.query_params.get("agent", "")
        after = request.query_params.get("after")
        rows = await browse.list_users(engine, agent=agent, after=after, limit=PAGE + 1)
        return page(
            "users.html",
            title=f"Agent {agent or '(default)'}",
            agent=agent,
            users=rows[:PAGE],
            more=rows[PAGE - 1].user_id if len(rows) > PAGE else None,
        )

    async def threads(request: Request) -> Response:
        agent = request.query_params.get("agent", "")
        user = _required(request, "user")
        before = _thread_cursor(request)
        database = SQLAlchemyDatabase(engine=engine, agent_name=agent or None, migrate=False)
        rows = await database.list_threads(user, limit=PAGE + 1, before=before)
        balance = (await database.get_user(user)).available_balance
        last = rows[PAGE - 1] if len(rows) > PAGE else None
        return page(
            "threads.html",
            title=f"User {user}",
            agent=agent,
            user=user,
            balance=balance,
            threads=rows[:PAGE],
            next=None
            if last is None
            else {"at": last.updated_at.isoformat(), "id": last.thread_id},
        )

    async def thread(request: Request) -> Response:
        agent = request.query_params.get("agent", "")
        thread_id = _required(request, "thread")
        summary = await browse.thread_summary(engine, agent=agent, thread_id=thread_id)
        if summary is None:
            raise NotFoundError(f"no thread {thread_id!r} of agent {agent or '(default)'!r}")
        count = summary["message_count"]
        after, before = _window(request, count)
        messages = await browse.thread_page(
            engine, agent=agent, thread_id=thread_id, after=after, before=before, limit=PAGE
        )
        return page(
            "thread.html",
            title=thread_id,
            agent=agent,
            thread_id=thread_id,
            summary=summary,
            messages=messages,
            pages=_pager(messages, count, "idx"),
            target=_int(request, "at"),
        )

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        project = request.query_params.get("project")
        agent = request.query_params.get("agent")
        hits: list[ContextSearchHit] | list[MessageSearchHit] = []
        problem = None
        cursor = _search_cursor(request)
        if query and (project is not None or agent is not None):
            try:
                if project is not None:
                    store = SQLAlchemyContextStore(engine, project=project, migrate=False)
                    before = None
                    if cursor is not None:
                        # Only the fields the keyset reads: rank, session, position.
                        stored = construct(StoredContextMessage, {"position": cursor[2]})
                        before = construct(
                            ContextSearchHit,
                            {"rank": cursor[0], "session_id": cursor[1], "message": stored},
                        )
                    hits = await store.search(query, limit=PAGE, before=before)
                else:
                    database = SQLAlchemyDatabase(
                        engine=engine, agent_name=agent or None, migrate=False
                    )
                    after = None
                    if cursor is not None:
                        message = construct(Message, {"thread_id": cursor[1], "idx": cursor[2]})
                        after = construct(MessageSearchHit, {"rank": cursor[0], "message": message})
                    hits = await database.search(query, limit=PAGE, before=after)
            except EncryptionError as exc:
                problem = f"some matching messages cannot be read: {exc}"
            except ConvostoreError as exc:
                problem = str(exc)
        more = None
        if len(hits) == PAGE:
            last = hits[-1]
            if isinstance(last, ContextSearchHit):
                more = (last.rank, last.session_id, last.message.position)
            else:
                more = (last.rank, last.message.thread_id, last.message.idx)
        return page(
            "search.html",
            title="Search",
            query=query,
            project=project,
            agent=agent,
            hits=hits,
            problem=problem,
            more=more,
            continued=cursor is not None,
            projects=await browse.list_projects(engine, limit=PAGE),
            agents=await browse.list_agents(engine, limit=PAGE),
        )

    async def stats(request: Request) -> Response:
        revision = await migrate.current(engine)
        sizes: transfer.Stats | None = None
        problem = None
        try:
            sizes = await transfer.stats(engine)
        except EncryptionError as exc:
            problem = f"payload sizes cannot be measured: {exc}"
        pending = await browse.search_pending(engine)
        return page(
            "stats.html",
            title="Statistics",
            revision=revision,
            head=migrate.head(),
            sizes=sizes,
            problem=problem,
            dialect=engine.dialect.name,
            indexing=writes_search_index(engine),
            pending=pending,
        )

    async def adk_apps(request: Request) -> Response:
        after = request.query_params.get("after")
        apps = await browse.list_adk_apps(engine, after=after, limit=PAGE + 1)
        return page(
            "adk_apps.html",
            title="ADK apps",
            apps=apps[:PAGE],
            more=apps[PAGE - 1] if len(apps) > PAGE else None,
        )

    async def adk_sessions(request: Request) -> Response:
        app = _required(request, "app")
        at, user, key = (
            request.query_params.get(name) for name in ("before_at", "before_user", "before_id")
        )
        before = None
        if at is not None and user is not None and key is not None:
            before = (_parse_time(at), user, key)
        rows = await browse.list_adk_sessions(engine, app=app, before=before, limit=PAGE + 1)
        last = rows[PAGE - 1] if len(rows) > PAGE else None
        return page(
            "adk_sessions.html",
            title=f"ADK app {app}",
            app=app,
            sessions=rows[:PAGE],
            next=None
            if last is None
            else {"at": last.updated_at.isoformat(), "user": last.user_id, "id": last.session_id},
        )

    async def adk_session(request: Request) -> Response:
        app = _required(request, "app")
        user = _required(request, "user")
        session_id = _required(request, "session")
        summary = await browse.adk_session(engine, app=app, user=user, session_id=session_id)
        if summary is None:
            raise NotFoundError(f"no ADK session {session_id!r} of user {user!r} in {app!r}")
        after, before = _window(request, summary["events"])
        events = await browse.adk_events_page(
            engine,
            app=app,
            user=user,
            session_id=session_id,
            after=after,
            before=before,
            limit=PAGE,
        )
        return page(
            "adk_session.html",
            title=session_id,
            app=app,
            user=user,
            session_id=session_id,
            summary=summary,
            events=events,
            pages=_pager(events, summary["events"], "position"),
            target=_int(request, "at"),
        )

    routes = [
        Route("/", handler(projects)),
        Route("/sessions", handler(sessions)),
        Route("/transcript", handler(transcript)),
        Route("/message.json", handler(raw_message)),
        Route("/agents", handler(agents)),
        Route("/users", handler(users)),
        Route("/threads", handler(threads)),
        Route("/thread", handler(thread)),
        Route("/search", handler(search)),
        Route("/stats", handler(stats)),
        Route("/adk", handler(adk_apps)),
        Route("/adk/sessions", handler(adk_sessions)),
        Route("/adk/session", handler(adk_session)),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        response = page("error.html", title=f"Error {status}", message=detail)
        response.status_code = status
        return response

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
    return Guard(app, hosts=hosts, token=token)


# --- helpers for the handlers and the templates ---------------------------------------------


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if value is None:
        raise HTTPException(400, f"{name} is required")
    return value


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer") from None


def _window(request: Request, count: int) -> tuple[int | None, int | None]:
    """The exclusive bounds of the page asked for: ``after``, ``before``, ``at`` (a page
    that shows position ``at`` with a few messages before it), or the first page."""
    after, before, at = _int(request, "after"), _int(request, "before"), _int(request, "at")
    if at is not None:
        return max(-1, at - 6), None
    if before is not None:
        return None, min(before, count)
    return (-1 if after is None else after), None


def _pager(messages: list[Any], count: int, key: str) -> dict[str, int | None]:
    if not messages:
        return {"before": None, "after": None, "last": count, "count": count}
    first, last = getattr(messages[0], key), getattr(messages[-1], key)
    return {
        "before": first if first > 0 else None,
        "after": last if last < count - 1 else None,
        "last": count,
        "count": count,
    }


def _tool_results(messages: list[browse.BrowsedContextMessage]) -> dict[str, dict[str, Any]]:
    """The tool results of a page by the id of the call they answer."""
    found: dict[str, dict[str, Any]] = {}
    for message in messages:
        if isinstance(message.content, browse.Unreadable):
            continue
        for block in message.content:
            call = block.get("tool_use_id")
            if block.get("type") == "tool_result" and isinstance(call, str):
                found[call] = {**block, "_position": message.position}
    return found


def _session_cursor(request: Request) -> SessionInfo | None:
    at, key = request.query_params.get("before_at"), request.query_params.get("before_id")
    if at is None or key is None:
        return None
    return SessionInfo.model_construct(
        session_id=key, created_at=_parse_time(at), message_count=0, preview=""
    )


def _thread_cursor(request: Request) -> ThreadInfo | None:
    at, key = request.query_params.get("before_at"), request.query_params.get("before_id")
    if at is None or key is None:
        return None
    moment = _parse_time(at)
    return ThreadInfo.model_construct(
        thread_id=key, user_id=None, message_count=0, created_at=moment, updated_at=moment
    )


def _search_cursor(request: Request) -> tuple[int, str, int] | None:
    """The last hit of the previous page: its rank, session or thread, and position."""
    rank, key, at = (
        request.query_params.get(name) for name in ("after_rank", "after_key", "after_pos")
    )
    if rank is None or key is None or at is None:
        return None
    try:
        return int(rank), key, int(at)
    except ValueError:
        raise HTTPException(400, "a page cursor is malformed") from None


def _parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, "a page cursor is malformed") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _link(path: str, **params: Any) -> str:
    """A URL of this viewer: ``path`` and its query (``None`` values left out)."""
    query = urlencode([(k, str(v)) for k, v in params.items() if v is not None])
    return f"{path}?{query}" if query else path


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    if isinstance(value, browse.Unreadable):
        return str(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return repr(value)


def _adk_parts(event: Any) -> list[dict[str, Any]]:
    """The parts of an ADK event's content (text, function calls and responses), or []."""
    content = event.get("content") if isinstance(event, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _image_src(block: dict[str, Any]) -> str | None:
    """A ``data:`` URL for an image block carrying base64 data of a raster type, else None."""
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        return None
    media, data = source.get("media_type"), source.get("data")
    if media not in _IMAGE_TYPES or not isinstance(data, str) or not _BASE64.fullmatch(data):
        return None
    try:
        base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None
    return f"data:{media};base64,{''.join(data.split())}"
