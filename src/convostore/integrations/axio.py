"""axio's context store on convostore: a drop-in for ``axio-context-sqlite`` on any URL.

Switching is one import and one name::

    from convostore.integrations.axio import AxioContextStore, connect
    # was: from axio_context_sqlite import SQLiteContextStore, connect

    conn = await connect("chat.db")                    # or a postgresql:// / mysql:// URL
    try:
        store = AxioContextStore(conn, session_id)     # an axio.context.ContextStore
        await agent.run("Hello", store)
    finally:
        await conn.close()

Or, with only the import line changed from axio-context-sqlite's README::

    from convostore.integrations.axio import connect, AxioContextStore as SQLiteContextStore

``connect()`` returns a :class:`convostore.Engine`: an ``AsyncEngine`` that also has the
``close()`` axio-context-sqlite's connection has. ``db_name`` keeps stores apart as that
package's table-name prefix does: each ``db_name`` is a namespace of its own in convostore's
tables (the default, ``"axio_context"``, is convostore's default namespace).

Messages are stored as convostore context messages whose content is axio's own block
serialization (:func:`axio.blocks.to_dict`), read back with :func:`axio.blocks.from_dict`,
so every block type axio serializes round-trips exactly, including image/audio/video bytes,
signatures, tool uses and tool results (text or block list, ``is_error``).

axio's :class:`~axio.compaction.AutoCompactStore` rewrites a history with ``clear()``
followed by one ``append()`` per message: a crash in between loses the conversation.
:class:`AtomicAutoCompactStore` is the same wrapper, doing the rewrite with
:meth:`AxioContextStore.replace_history`, in one transaction.

Requires Python 3.12+ and ``axio`` (``pip install convostore[axio]``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import Self

from axio.blocks import to_dict
from axio.compaction import AutoCompactStore, compact_context
from axio.context import ContextStore, SessionInfo
from axio.messages import Message
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.context import SQLAlchemyContextStore
from convostore.context import connect as _connect
from convostore.errors import ValidationError
from convostore.models import ContextMessage
from convostore.models import SessionInfo as ConvostoreSessionInfo
from convostore.settings import resolve_url
from convostore.sql.engine import Engine, sqlite_path

__all__ = [
    "CREATED_AT_FORMAT",
    "DEFAULT_DB_NAME",
    "AtomicAutoCompactStore",
    "AxioContextStore",
    "connect",
    "from_axio",
    "to_axio",
]

CREATED_AT_FORMAT = "%Y-%m-%d %H:%M:%S"
"""How ``SessionInfo.created_at`` is rendered: UTC, to the second.

This is the text axio-context-sqlite stores (SQLite's ``datetime('now')``), so code that
parses or sorts axio's ``created_at`` strings keeps working.
"""


DEFAULT_DB_NAME = "axio_context"
"""axio-context-sqlite's default ``db_name``: stored in convostore's default namespace."""


async def connect(
    db_path: str | Path | URL | None = None, *, migrate: bool | None = None
) -> Engine:
    """Open the database and return the engine to pass to :class:`AxioContextStore`.

    Like ``axio_context_sqlite.connect``: a path opens (creating its directory and the
    schema) a SQLite file, and the caller closes the result (``await conn.close()``, as
    with axio-context-sqlite's connection; ``dispose()`` and ``async with`` work too).
    Unlike it, ``db_path`` may also be any URL convostore accepts, such as
    ``postgresql://...`` or ``mysql://...``; a server database is checked, and migrated
    only with ``migrate=True``. ``None`` resolves ``CONVOSTORE_DATABASE_URL``, then
    ``DATABASE_URL``, then ``./convostore.db``.

    Raises:
        SchemaVersionError: The schema is not at head and may not be migrated here.
    """
    # axio-context-sqlite creates the file's directory, and code written for it relies on
    # that: the drop-in does too (convostore's own connect() never creates directories).
    if db_path is not None:
        path = sqlite_path(resolve_url(str(db_path) if isinstance(db_path, Path) else db_path))
        if path is not None:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    return await _connect(db_path, migrate=migrate)


def from_axio(message: Message) -> ContextMessage:
    """The convostore form of an axio message: same role, blocks as axio serializes them."""
    return ContextMessage.model_construct(
        role=message.role, content=[to_dict(block) for block in message.content]
    )


def to_axio(message: ContextMessage) -> Message:
    """The axio message stored as ``message`` (blocks rebuilt by ``axio.blocks.from_dict``)."""
    return Message.from_dict({"role": message.role, "content": message.content})


class AxioContextStore(ContextStore):
    """An ``axio.context.ContextStore`` kept in convostore's schema, on any backend.

    The positional parameters are axio-context-sqlite's ``SQLiteContextStore(conn,
    session_id, project=None, db_name="axio_context")``.

    Args:
        conn: The engine from :func:`connect` (or your own); the caller closes it, as with
            axio-context-sqlite's connection. Give this or ``url``.
        session_id: The session's id; a new random one by default.
        project: The project; the resolved working directory by default, as axio does.
        db_name: axio-context-sqlite's table-name prefix. Stores with different names never
            see each other's sessions: each name is a namespace of its own (letters, digits
            and underscores, at most 64), and the default is convostore's default namespace.
        url: Open an engine for this URL instead; :meth:`close` disposes of it.
        migrate: As for :func:`connect`, when the store first uses the engine.

    Raises:
        ConfigurationError: Both ``conn`` and ``url`` were given.
        ValidationError: ``session_id``, ``project`` or ``db_name`` is not usable.
    """

    def __init__(
        self,
        conn: AsyncEngine | None = None,
        session_id: str | None = None,
        project: str | None = None,
        db_name: str = DEFAULT_DB_NAME,
        *,
        url: str | URL | None = None,
        migrate: bool | None = None,
    ) -> None:
        if type(db_name) is not str:
            raise ValidationError(f"db_name must be a str, not {type(db_name).__name__}")
        self._store = SQLAlchemyContextStore(
            conn,
            url=url,
            session_id=session_id,
            project=project,
            namespace=None if db_name == DEFAULT_DB_NAME else db_name,
            migrate=migrate,
        )

    @classmethod
    def wrap(cls, store: SQLAlchemyContextStore) -> Self:
        """The axio view of an existing convostore store (same engine, project and session)."""
        view = cls.__new__(cls)
        view._store = store
        return view

    @property
    def store(self) -> SQLAlchemyContextStore:
        """The underlying convostore store (for ``transaction()``, ``bind()`` and the rest)."""
        return self._store

    @property
    def session_id(self) -> str:
        return self._store.session_id

    @property
    def project(self) -> str:
        """The project this session belongs to."""
        return self._store.project

    @property
    def db_name(self) -> str:
        """axio-context-sqlite's ``db_name``: the namespace this store's sessions live in."""
        namespace = self._store.namespace
        return DEFAULT_DB_NAME if namespace is None else namespace

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store!r})"

    async def append(self, message: Message) -> None:
        await self._store.append(from_axio(message))

    async def append_many(self, messages: Iterable[Message]) -> None:
        """Append several messages in one transaction, at consecutive positions."""
        await self._store.append_many([from_axio(m) for m in messages])

    async def get_history(self) -> list[Message]:
        return [to_axio(m) for m in await self._store.get_history()]

    async def replace_history(self, messages: Iterable[Message]) -> None:
        """Make ``messages`` the whole history in one transaction; token totals are kept.

        On any failure (a block that cannot be stored, a lost connection, a crash) the old
        history is left exactly as it was.
        """
        await self._store.replace_history([from_axio(m) for m in messages])

    async def clear(self) -> None:
        await self._store.clear()

    async def fork(self) -> AxioContextStore:
        """A new session in the same project with a copy of the history and tokens."""
        return type(self).wrap(await self._store.fork())

    async def set_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        await self._store.set_context_tokens(input_tokens, output_tokens)

    async def add_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        await self._store.add_context_tokens(input_tokens, output_tokens)

    async def get_context_tokens(self) -> tuple[int, int]:
        return await self._store.get_context_tokens()

    async def list_sessions(self) -> list[SessionInfo]:
        """The project's sessions that hold messages, newest first, as axio's ``SessionInfo``.

        ``created_at`` is rendered with :data:`CREATED_AT_FORMAT` (UTC). It is when the session
        was first written to (a token update counts), where axio-context-sqlite takes its
        oldest message's time; the two differ only for a session whose tokens were set
        before its first message.
        """
        return [_session_info(info) for info in await self._store.list_sessions()]

    async def close(self) -> None:
        """Dispose of the engine if this store opened it (``url=``), not an engine passed in."""
        await self._store.close()

    @classmethod
    async def from_history(cls, history: list[Message]) -> Self:
        """A new session holding ``history``, written in one transaction.

        As axio's default, the store is ``cls()``: a new session on the default URL.
        """
        store = cls()
        await store.replace_history(history)
        return store


def _session_info(info: ConvostoreSessionInfo) -> SessionInfo:
    return SessionInfo(
        session_id=info.session_id,
        message_count=info.message_count,
        preview=info.preview,
        created_at=info.created_at.astimezone(UTC).strftime(CREATED_AT_FORMAT),
        input_tokens=info.input_tokens,
        output_tokens=info.output_tokens,
    )


class AtomicAutoCompactStore(AutoCompactStore):
    """axio's ``AutoCompactStore`` with the compacted history written in one transaction.

    Same arguments and behaviour as :class:`axio.compaction.AutoCompactStore`. When the
    wrapped store is an :class:`AxioContextStore`, the summary and the kept messages replace
    the history through :meth:`AxioContextStore.replace_history` (token totals kept, as axio
    keeps them), and the snapshot session axio forks to summarise from is deleted afterwards
    instead of being left in ``list_sessions``. Any other store is compacted by axio's own code.
    """

    async def fork(self) -> AtomicAutoCompactStore:
        return AtomicAutoCompactStore(
            await self._store.fork(),
            self._transport,
            keep_recent=self._keep_recent,
            max_tokens=self._max_tokens,
            threshold=self._threshold,
        )

    async def _do_compact(self) -> None:
        store = self._store
        if not isinstance(store, AxioContextStore):
            await super()._do_compact()
            return
        # As axio does: summarise from a snapshot, so the live session stays writable.
        snapshot = await store.fork()
        try:
            compacted = await compact_context(
                snapshot, self._transport, keep_recent=self._keep_recent
            )
        finally:
            await snapshot.clear()
        if compacted is not None:
            await store.replace_history(compacted)
