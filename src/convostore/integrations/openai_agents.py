"""The OpenAI Agents SDK's ``Session`` on convostore's context store.

::

    from agents import Agent, Runner
    from convostore.integrations.openai_agents import ConvostoreSession

    session = ConvostoreSession("user-123", url="postgresql://localhost/app")
    result = await Runner.run(agent, "Hello", session=session)

What the SDK's ``SQLiteSession`` gives, on SQLite, PostgreSQL or MariaDB/MySQL, with
Alembic migrations, compressed payloads and atomic writes under concurrency.

Storage: each item is one context message whose content is the list ``[item]``: the item
itself, exactly as the SDK gave it, so it reads back equal (dicts, key order, numbers).
The message's role is a label derived from the item, never read back: the item's own
``role`` (``developer`` stored as ``system``), ``tool`` for an item whose ``type`` ends in
``_output`` (a tool's result), and ``assistant`` for everything else the model produced
(function calls, reasoning, ...). Sessions live in their own project,
:data:`DEFAULT_PROJECT`, apart from axio's.

Requires ``openai-agents`` (``pip install convostore[openai-agents]``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator, Mapping
from typing import Any, cast

from agents.items import TResponseInputItem
from agents.memory.session_settings import (
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.context import SQLAlchemyContextStore
from convostore.errors import ValidationError
from convostore.interfaces import ContextStore
from convostore.memory import InMemoryContextStore
from convostore.models import ContextMessage, ContextRole
from convostore.pairs import check_exact

__all__ = ["DEFAULT_PROJECT", "ConvostoreSession", "item_role"]

DEFAULT_PROJECT = "openai-agents"
"""The context-store project that sessions use unless told otherwise."""


def item_role(item: Mapping[str, Any]) -> ContextRole:
    """The context-store role an item is labelled with (see the module's docstring)."""
    role = item.get("role")
    if role in ("user", "assistant", "system"):
        return cast(ContextRole, role)
    if role == "developer":
        return "system"
    kind = item.get("type")
    if isinstance(kind, str) and kind.endswith("_output"):
        return "tool"
    return "assistant"


class ConvostoreSession:
    """A conversation of the Agents SDK (its ``Session`` protocol) stored by convostore.

    Args:
        session_id: The conversation's id.
        engine: An engine from :func:`convostore.connect` (or your own), shared by many
            sessions; the caller disposes of it. Give this or ``url``.
        url: Open an engine for this URL (any form convostore accepts; ``None`` with no
            ``engine`` resolves the environment, then ``./convostore.db``); :meth:`close`
            disposes of it.
        project: The context-store project holding the session.
        session_settings: The SDK's settings; ``limit`` is the default of :meth:`get_items`.
        migrate: As for :func:`convostore.connect`, when the session first uses the engine.
        exact_limit: :meth:`get_items` returns exactly ``limit`` items, even when that cuts
            a function call off from its output (default: widen to the call).

    Raises:
        ConfigurationError: Both ``engine`` and ``url`` were given.
        ValidationError: ``session_id`` or ``project`` is not a usable id.
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        engine: AsyncEngine | None = None,
        *,
        url: str | URL | None = None,
        project: str = DEFAULT_PROJECT,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        migrate: bool | None = None,
        exact_limit: bool = False,
    ) -> None:
        store = SQLAlchemyContextStore(
            engine, url=url, session_id=session_id, project=project, migrate=migrate
        )
        self._init(store, session_settings, exact_limit)

    @classmethod
    def from_store(
        cls,
        store: ContextStore,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        exact_limit: bool = False,
    ) -> ConvostoreSession:
        """A session over an existing context store (its session id), SQL or in-memory."""
        session = cls.__new__(cls)
        session._init(store, session_settings, exact_limit)
        return session

    def _init(
        self,
        store: ContextStore,
        settings: SessionSettings | dict[str, Any] | None,
        exact_limit: bool,
    ) -> None:
        check_exact(exact_limit)
        self._exact_limit = exact_limit
        self._store = store
        self.session_id: str = store.session_id
        self.session_settings = (
            SessionSettings() if settings is None else coerce_session_settings(settings)
        )

    @property
    def store(self) -> ContextStore:
        """The underlying context store."""
        return self._store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store!r})"

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The conversation's items in order; with ``limit``, the latest ``limit`` of them,
        widened back to the call of every ``function_call_output`` (or other ``*_output``)
        among them, so the model never sees an output whose call was cut off (unless the
        session was made with ``exact_limit=True``).

        ``limit=None`` falls back to ``session_settings.limit``; ``0`` gives ``[]``.

        Raises:
            ValidationError: ``limit`` is negative.
        """
        resolved = resolve_session_limit(limit, self.session_settings)
        if resolved is None:
            messages = await self._store.get_history()
        else:
            messages = await (
                self._store.get_last(resolved, exact=True)
                if self._exact_limit
                else self._store.get_last(resolved)
            )
        return [_item(message) for message in messages]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append the items in one transaction: all of them are stored, or none.

        Raises:
            ValidationError: An item is not a mapping.
            SerializationError: An item is not exactly JSON.
        """
        messages = []
        for item in items:
            if not isinstance(item, Mapping):
                raise ValidationError(f"an item must be a mapping, not {type(item).__name__}")
            as_dict = dict(item)
            messages.append(
                ContextMessage.model_construct(role=item_role(as_dict), content=[as_dict])
            )
        if isinstance(self._store, SQLAlchemyContextStore | InMemoryContextStore):
            await self._store.append_many(messages)
        else:
            for message in messages:
                await self._store.append(message)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the latest item and return it, in one transaction; ``None`` when empty."""
        message = await self._store.pop()
        return None if message is None else _item(message)

    async def clear_session(self) -> None:
        """Remove every item of the session."""
        await self._store.clear()

    def close(self) -> Awaitable[None]:
        """Dispose of the engine if this session opened it (``url=``).

        The SDK's own ``SQLiteSession.close()`` is synchronous, and its users call it
        without ``await``; here ``session.close()`` and ``await session.close()`` both
        work. In a running event loop the disposal starts as a task, returned to be awaited
        if you like; it completes even when ``asyncio.run`` ends right after the call.
        Outside a loop it runs before ``close()`` returns. An engine you passed in is left
        open, as before: you dispose of it.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _close_outside_a_loop(self._store)
            return _Done()
        task = _ClosingTask(self._store.close(), loop=loop)
        # The loop keeps only a weak reference to a task: hold this one until it is done.
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        return task


class _Done:
    """What ``close()`` returns when it has already finished: awaiting it does nothing."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class _ClosingTask(asyncio.Task[None]):
    """A task that cannot be cancelled: ``asyncio.run`` cancels the tasks left when its
    main coroutine returns, which is where an un-awaited ``close()`` usually is, and a
    connection cancelled half-closed is logged with a traceback (or never closed)."""

    def cancel(self, msg: Any = None) -> bool:
        return False


_closing: set[_ClosingTask] = set()


def _close_outside_a_loop(store: ContextStore) -> None:
    engine = store.engine if isinstance(store, SQLAlchemyContextStore) else None
    if engine is not None and engine.dialect.name != "sqlite":
        # A server driver's connections belong to the event loop that opened them, which
        # has ended: they cannot be closed politely any more, only let go.
        if getattr(store, "_owns_engine", False):
            engine.sync_engine.dispose(close=False)
        return
    # aiosqlite's connections are threads of their own: a fresh loop can close them.
    asyncio.run(store.close())


def _item(message: ContextMessage) -> TResponseInputItem:
    return cast(TResponseInputItem, message.content[0])
