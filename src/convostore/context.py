"""The conversation context store: axio's ``ContextStore`` API on SQLAlchemy.

``engine = await connect("chat.db")`` opens (and migrates) a database;
``SQLAlchemyContextStore(engine, session_id=..., project=...)`` is one session of one project.
Stores are cheap: make one per session and share the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self
from uuid import uuid4

from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import arguments, pairs
from convostore.encryption import Keyring
from convostore.errors import ConfigurationError
from convostore.facade import Facade
from convostore.interfaces import ContextStore
from convostore.models import (
    ContextMessage,
    ContextSearchHit,
    SessionInfo,
    StoredContextMessage,
    encoded_context_messages,
    utc_now,
)
from convostore.rules import check_client_key, default_project
from convostore.settings import redact
from convostore.sql import search_index
from convostore.sql.dml import Executor
from convostore.sql.engine import Engine, create_engine, is_read_only
from convostore.sql.replicas import ReplicaUrls
from convostore.sql.repositories.search import search_context
from convostore.sql.repositories.sessions import ContextAppender, SessionRepository
from convostore.sql.tables import ContextMessageRecord, table_of
from convostore.sql.types import feeds_in_rows, require_search_index
from convostore.telemetry import traced

CONTEXT_MESSAGES = table_of(ContextMessageRecord)

__all__ = ["SQLAlchemyContextStore", "connect", "default_project"]

_WIDEN_PAGE = 50
"""Older messages read per step when ``get_last`` widens its window to a tool call."""


async def connect(
    url: str | Path | URL | None = None,
    *,
    migrate: bool | None = None,
    read_url: ReplicaUrls | None = None,
    encryption: Keyring | None = None,
    search_index: bool | None = None,
    read_only: bool = False,
) -> Engine:
    """Open the database at ``url`` (a path or URL) with its schema at head.

    SQLite gets WAL, a 5 s busy timeout, ``synchronous=NORMAL`` and foreign keys, and is
    migrated to the latest revision (safe when several processes start at once). A server
    database is checked, and migrated only with ``migrate=True``.

    The result is an :class:`~convostore.sql.engine.Engine`: an ``AsyncEngine`` that the caller
    closes with ``await engine.close()`` (or ``dispose()``, or ``async with``).

    ``read_url``: PostgreSQL read replicas (one URL, a list, or
    :class:`~convostore.sql.replicas.ReadReplicas`); stores on the engine read from them, with
    read-your-writes (see :mod:`convostore.sql.replicas`). Closing the engine closes them.

    ``encryption``: a :class:`~convostore.encryption.Keyring`; payloads are encrypted at
    rest (see ``docs/encryption.md``).

    ``search_index``: ``False`` writes no search feed (see :func:`create_engine`).

    ``read_only``: open an SQLite file read-only, as ``?mode=ro`` in the URL does (see
    :func:`create_engine`): the schema is checked, never migrated.

    Raises:
        SchemaVersionError: The schema is not at head and may not be migrated here.
    """
    engine = create_engine(
        str(url) if isinstance(url, Path) else url,
        encryption=encryption,
        search_index=search_index,
        read_only=read_only,
        read_url=read_url,
    )
    try:
        from convostore import migrate as migrations  # Alembic loads on first use

        await migrations.prepare(engine, migrate=False if is_read_only(engine) else migrate)
    except BaseException:
        await engine.dispose()
        raise
    return engine


class SQLAlchemyContextStore(Facade, ContextStore):
    """One session of one project, stored through SQLAlchemy.

    Args:
        engine: The engine to use (from :func:`connect`, or your own). Give this or ``url``.
        url: Open an engine for this URL; :meth:`~convostore.facade.Facade.close` disposes it.
        session_id: The session's id; a new random one by default.
        project: The project's name; the current working directory by default.
        namespace: Keep this store's sessions apart from those of other namespaces in the
            same database (axio-context-sqlite's ``db_name``): 1 to 64 letters, digits or
            underscores. ``None``, the default namespace, is where every other store and
            the CLI look.
        migrate: As for :func:`connect`, when this store opens or first uses the engine.
        read_url: PostgreSQL read replicas for this store's reads (one URL, a list, or
            :class:`~convostore.sql.replicas.ReadReplicas`); :meth:`~convostore.facade.Facade.close`
            closes them.
        encryption: A :class:`~convostore.encryption.Keyring` for the engine (and its
            replicas): payloads are encrypted at rest. On a shared engine it must be the
            keyring the engine already has, if any.

    Raises:
        ConfigurationError: Both ``engine`` and ``url`` were given.
        ValidationError: ``session_id``, ``project`` or ``namespace`` is not usable.
    """

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        *,
        url: str | URL | None = None,
        session_id: str | None = None,
        project: str | None = None,
        namespace: str | None = None,
        migrate: bool | None = None,
        read_url: ReplicaUrls | None = None,
        encryption: Keyring | None = None,
    ) -> None:
        if engine is not None and url is not None:
            raise ConfigurationError("give engine or url, not both")
        # _scope is what the project and session columns hold: every statement is scoped by it.
        self._session_id, self._project, self._namespace, self._scope = arguments.open_session(
            session_id, project, namespace
        )
        self._start(
            engine if engine is not None else create_engine(url, encryption=encryption),
            owns_engine=engine is None,
            migrate=migrate,
            read_url=read_url,
            encryption=encryption,
        )

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def project(self) -> str:
        return self._project

    @property
    def namespace(self) -> str | None:
        """The namespace this store's sessions live in (``None``: the default one)."""
        return self._namespace

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={redact(self.engine.url)!r}, "
            f"project={self._project!r}, session_id={self._session_id!r}"
            + ("" if self._namespace is None else f", namespace={self._namespace!r}")
            + ")"
        )

    def with_session(self, session_id: str) -> Self:
        """A store for another session of the same project, sharing this store's engine."""
        other = self._view()
        other._session_id = arguments.session_id(session_id)
        return other

    @traced()
    async def append(
        self, message: ContextMessage, *, client_id: str | None = None
    ) -> StoredContextMessage:
        """Append a message at the end of the session and return it as stored.

        Concurrent appends on one engine (many sessions written at once) are committed
        together, each returning once its message is stored (:mod:`convostore.sql.group_commit`).

        Args:
            message: The message (or a mapping / object with ``role`` and ``content``).
            client_id: Your id for this message. Appending again with the same id (a
                retry after a timeout, say) stores nothing and returns the stored message.
        """
        if client_id is not None:
            # A retry key must be looked up first: a transaction of its own.
            stored = await self.append_many([message], client_ids=[client_id])
            return stored[0]
        ((checked, data),) = encoded_context_messages([message], feed=self._feed())
        await self._ensure_ready()
        return await ContextAppender(self._runner).append(
            self._scope, self._session_id, checked.role, data, checked.preview(), utc_now()
        )

    @traced()
    async def append_many(
        self,
        messages: Iterable[ContextMessage],
        *,
        client_ids: Sequence[str | None] | None = None,
    ) -> list[StoredContextMessage]:
        """Append messages in one transaction, at consecutive positions; all or none.

        With ``client_ids`` (one per message, ``None`` allowed), a batch whose first id is
        already stored is a retry: nothing is written and the stored messages with those
        ids are returned.
        """
        checked = encoded_context_messages(messages, feed=self._feed())
        ids = arguments.client_ids(client_ids, len(checked))
        check_client_key(self._scope, self._session_id, ids)
        if not checked:
            return []
        preview = next((p for m, _ in checked if (p := m.preview()) is not None), None)
        await self._ensure_ready()
        rows = [(m.role, data) for m, data in checked]
        return await ContextAppender(self._runner).append_many(
            self._scope, self._session_id, rows, preview, ids, utc_now()
        )

    @traced()
    async def get_history(self) -> list[ContextMessage]:
        await self._ensure_ready()
        return await self._runner.run(lambda s: self._repo(s).history(), read=True)

    @traced()
    async def get_last(self, count: int, *, exact: bool = False) -> list[ContextMessage]:
        """The last ``count`` messages in insertion order (fewer if the session is shorter).

        The window is widened back to the call of every tool result it holds
        (:mod:`convostore.pairs`), so it never starts with a result whose call was cut
        off; ``exact=True`` returns exactly the last ``count``. All in one read.
        """
        arguments.count(count)
        pairs.check_exact(exact)
        if count == 0:
            return []
        await self._ensure_ready()
        if exact:
            return await self._runner.run(lambda s: self._repo(s).last(count), read=True)

        async def work(session: Executor) -> list[ContextMessage]:
            repo = self._repo(session)
            newest_first = await repo.window(
                after=None, before=None, limit=count, newest_first=True
            )
            pairing = pairs.Pairing()
            for message in newest_first:
                pairing.add(message.content)
            more = len(newest_first) == count
            # Older pages only while a result's call is still missing (rarely more than one).
            while more and not pairing.complete:
                older = await repo.window(
                    after=None,
                    before=newest_first[-1].position,
                    limit=_WIDEN_PAGE,
                    newest_first=True,
                )
                for message in older:
                    newest_first.append(message)
                    pairing.add(message.content)
                    if pairing.complete:
                        break
                more = len(older) == _WIDEN_PAGE
            window = newest_first[::-1]
            start = pairs.widened_start([m.content for m in window], count)
            return [m.message() for m in window[start:]]

        return await self._runner.run(work, read=True)

    @traced()
    async def replace_history(self, messages: Iterable[ContextMessage]) -> None:
        """Make ``messages`` the session's whole history, in one transaction.

        Positions restart at 0, the preview is recomputed from the new messages and the
        token totals are kept. Either the new history is stored or, on any failure, the old
        one is left exactly as it was (unlike ``clear()`` followed by appends).
        """
        checked = encoded_context_messages(messages, feed=self._feed())
        preview = next((p for m, _ in checked if (p := m.preview()) is not None), None)
        await self._ensure_ready()
        now = utc_now()
        rows = [(m.role, data) for m, data in checked]
        await self._runner.run(lambda s: self._repo(s).replace(rows, now, preview))

    @traced()
    async def pop(self) -> ContextMessage | None:
        """Remove the last message and return it, atomically; ``None`` if there is none."""
        await self._ensure_ready()
        return await self._runner.run(lambda s: self._repo(s).pop_last())

    @traced()
    async def clear(self) -> None:
        await self._ensure_ready()
        await self._runner.run(lambda s: self._repo(s).clear())

    @traced()
    async def fork(self, *, at: int | None = None) -> SQLAlchemyContextStore:
        """A new session in the same project with a copy of the history and tokens.

        The copy is made server-side (``INSERT … SELECT``), in one transaction.

        Args:
            at: Branch from an earlier point: copy only the messages before position
                ``at``. The new session records this one as its parent and how many
                messages it took (see :class:`SessionInfo`).
        """
        arguments.fork_at(at)
        await self._ensure_ready()
        new_id = uuid4().hex
        now = utc_now()
        await self._runner.run(lambda s: self._repo(s).copy_to(new_id, now, at=at))
        return self.with_session(new_id)

    @traced()
    async def get_messages(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[StoredContextMessage]:
        """A window of the history, by position, without OFFSET.

        ``after`` and ``before`` are exclusive position bounds. With ``reverse``, the window
        is taken from the end and returned newest first: ``get_messages(limit=50,
        reverse=True)`` is the latest 50; ``get_messages(before=p, limit=50,
        reverse=True)`` the 50 before them.
        """
        arguments.context_window(after, before, limit, reverse)
        await self._ensure_ready()
        return await self._runner.run(
            lambda s: self._repo(s).window(
                after=after, before=before, limit=limit, newest_first=reverse
            ),
            read=True,
        )

    @traced()
    async def set_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        arguments.tokens(input_tokens, output_tokens)
        await self._ensure_ready()
        now = utc_now()
        await self._runner.run(lambda s: self._repo(s).set_tokens(input_tokens, output_tokens, now))

    @traced()
    async def add_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        arguments.tokens(input_tokens, output_tokens)
        await self._ensure_ready()
        now = utc_now()
        await self._runner.run(lambda s: self._repo(s).add_tokens(input_tokens, output_tokens, now))

    @traced()
    async def get_context_tokens(self) -> tuple[int, int]:
        await self._ensure_ready()
        return await self._runner.run(lambda s: self._repo(s).tokens(), read=True)

    @traced()
    async def list_sessions(
        self, *, limit: int | None = None, before: SessionInfo | None = None
    ) -> list[SessionInfo]:
        """The project's sessions that hold messages, newest first.

        Without arguments, all of them (axio's semantics). With ``limit``, one keyset page;
        pass the last :class:`SessionInfo` of a page as ``before`` for the next one.
        """
        arguments.list_sessions(limit, before)
        await self._ensure_ready()
        return await self._runner.run(
            lambda s: self._repo(s).list_project(limit=limit, before=before), read=True
        )

    @traced()
    async def search(
        self,
        query: str,
        *,
        limit: int = 20,
        before: ContextSearchHit | None = None,
        session_id: str | None = None,
    ) -> list[ContextSearchHit]:
        """The project's messages whose text matches ``query``, best match first.

        Every word of ``query`` must appear in a message (``word*`` matches a prefix; see
        :mod:`convostore.search` for how text and queries are read). Each hit holds the
        message as stored, its session, a snippet with highlights and its rank.

        Args:
            query: The words to find.
            limit: Hits per page (1 to 1000).
            before: The last hit of the previous page, for the next one.
            session_id: Search this session only (``store.session_id`` for this store's
                own), instead of every session of the project.
        """
        parsed, session = arguments.search_context(query, limit, before, session_id)
        require_search_index(self.engine, "search")
        await self._ensure_ready()
        pending = await search_index.prepare_search(self._runner, self.engine, CONTEXT_MESSAGES)
        return await self._runner.run(
            lambda s: search_context(
                s,
                self._scope,
                parsed,
                session_id=session,
                limit=limit,
                before=before,
                pending=pending,
            ),
            read=True,
        )

    def _feed(self) -> bool:
        # The search feed is computed only for an engine that stores it in the row.
        return feeds_in_rows(self.engine)

    def _repo(self, session: Executor) -> SessionRepository:
        return SessionRepository(session, self._scope, self._session_id)
