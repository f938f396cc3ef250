"""The agent database: agentstr's ``BaseDatabase`` API on SQLAlchemy.

``Database(conn_str, agent_name=...)`` is the drop-in factory; :class:`SQLAlchemyDatabase` is
the class. Each public call is one short transaction (see :mod:`convostore.sql.runner`);
:meth:`SQLAlchemyDatabase.transaction` groups several calls into one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import arguments
from convostore.encryption import Keyring
from convostore.errors import (
    ConfigurationError,
    InsufficientBalance,
)
from convostore.facade import Facade
from convostore.integrations._agentstr_base import register_if_loaded
from convostore.interfaces import AgentDatabase
from convostore.models import (
    Message,
    MessageSearchHit,
    NewMessage,
    ThreadInfo,
    User,
    utc_now,
)
from convostore.rules import DEFAULT_AGENT_KEY
from convostore.settings import DEFAULT_SQLITE_PATH, configured_url, redact, resolve_url
from convostore.sql import search_index
from convostore.sql.dml import Executor
from convostore.sql.engine import create_engine
from convostore.sql.replicas import ReplicaUrls
from convostore.sql.repositories import users
from convostore.sql.repositories.rows import message_from_row
from convostore.sql.repositories.search import search_messages
from convostore.sql.repositories.threads import ThreadAppender, ThreadRepository
from convostore.sql.repositories.users import UserRepository
from convostore.sql.tables import MessageRecord, table_of
from convostore.sql.types import feeds_in_rows, require_search_index
from convostore.telemetry import traced

MESSAGES = table_of(MessageRecord)

__all__ = ["DEFAULT_AGENT_KEY", "Database", "SQLAlchemyDatabase"]


class SQLAlchemyDatabase(Facade, AgentDatabase):
    """The agent database on any SQLAlchemy async URL.

    Args:
        conn_str: A URL (see :mod:`convostore.settings`), or ``None`` for the environment's
            or the default SQLite file. Give this or ``engine``, not both.
        engine: An engine to share; it is not disposed by :meth:`close`. ``conn_str`` is
            then the engine's URL with the password hidden.
        agent_name: The agent whose rows this object sees; ``None`` is a valid agent.
        migrate: Bring the schema to head in :meth:`async_init`. Default: yes for SQLite,
            no (only check) for server databases.
        read_url: PostgreSQL read replicas for this object's reads (one URL, a list, or
            :class:`~convostore.sql.replicas.ReadReplicas`); :meth:`close` closes them.
        encryption: A :class:`~convostore.encryption.Keyring` for the engine (and its
            replicas): payloads are encrypted at rest. On a shared engine it must be the
            keyring the engine already has, if any.

    Raises:
        ConfigurationError: Both or neither-and-unresolvable of ``conn_str`` and ``engine``.
        ValidationError: ``agent_name`` is not a usable id.
    """

    def __init__(
        self,
        conn_str: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        agent_name: str | None = None,
        migrate: bool | None = None,
        read_url: ReplicaUrls | None = None,
        encryption: Keyring | None = None,
    ) -> None:
        if conn_str is not None and engine is not None:
            raise ConfigurationError("give conn_str or engine, not both")
        self.agent_name = agent_name
        self._agent_key = arguments.agent_key(agent_name)
        if engine is None:
            if conn_str is None:
                # As agentstr does: the configured string itself, or its default file in
                # agentstr's sqlite://PATH form, which its agents know how to read.
                conn_str = configured_url() or f"sqlite://{DEFAULT_SQLITE_PATH}"
            self.conn_str = conn_str
            owns_engine = True
            engine = create_engine(resolve_url(conn_str), encryption=encryption)
        else:
            self.conn_str = engine.url.render_as_string(hide_password=True)
            owns_engine = False
        self._start(
            engine,
            owns_engine=owns_engine,
            migrate=migrate,
            read_url=read_url,
            encryption=encryption,
        )
        # What async_init() needs to reopen what close() disposed of.
        self._opened_with = (read_url, encryption)
        self.conn: AsyncEngine | None = None
        """agentstr's attribute: ``None`` until :meth:`async_init`, then the engine (agentstr's
        agent server tests it to know whether to initialise the database)."""
        # Where agentstr is loaded, make isinstance(db, BaseDatabase) hold without importing
        # it ourselves (it is heavy): `from convostore import Database` is the whole switch.
        register_if_loaded(SQLAlchemyDatabase)

    _reopen_hint = "call async_init() to reopen it, as agentstr's databases do"

    def __repr__(self) -> str:
        url = redact(self.engine.url)
        return f"{type(self).__name__}(url={url!r}, agent_name={self.agent_name!r})"

    async def async_init(self) -> Self:
        """Migrate an embedded SQLite database (or check a server's schema); returns self.

        After :meth:`close`, it reopens, as agentstr's databases reconnect in
        ``async_init``: a new engine on the same URL, with the same replicas and keyring
        (for ``sqlite://:memory:`` a new, empty database, as agentstr's). Other calls
        after :meth:`close` raise :class:`ConfigurationError` until then.

        Raises:
            SchemaVersionError: A server database is not at head and ``migrate`` is off.
        """
        if self._closed:
            read_url, encryption = self._opened_with
            self._closed = False
            self._start(
                create_engine(resolve_url(self.conn_str)),
                owns_engine=True,
                migrate=self._migrate,
                read_url=read_url,
                encryption=encryption,
            )
        await self._ready()
        return self

    async def _ready(self) -> None:
        await self._prepare()
        self.conn = self.engine

    async def _ensure_ready(self) -> None:
        # Never reopens: a call after close() says the database is closed.
        await self._ready()

    async def close(self) -> None:
        """Dispose of the engine (and read replicas) if this object created them;
        :meth:`async_init` reopens them."""
        self.conn = None
        await super().close()

    @traced("user_id")
    async def get_user(self, user_id: str) -> User:
        arguments.user_id(user_id)
        await self._ensure_ready()
        stored = await self._runner.run(
            lambda s: UserRepository(s, self._agent_key).get_or_none(user_id), read=True
        )
        return stored if stored is not None else User(user_id=user_id)

    @traced()
    async def upsert_user(self, user: User) -> None:
        checked = arguments.upsert_user(user)
        await self._ensure_ready()
        now = utc_now()
        await self._runner.run(lambda s: UserRepository(s, self._agent_key).upsert(checked, now))

    async def get_current_thread_id(self, user_id: str) -> str | None:
        return (await self.get_user(user_id)).current_thread_id

    @traced("user_id", "thread_id")
    async def set_current_thread_id(self, user_id: str, thread_id: str | None) -> None:
        arguments.set_current_thread(user_id, thread_id)
        await self._ensure_ready()
        now = utc_now()
        await self._runner.run(
            lambda s: UserRepository(s, self._agent_key).set_current_thread(user_id, thread_id, now)
        )

    @traced("user_id")
    async def credit(self, user_id: str, amount: int) -> int:
        arguments.balance_change(user_id, amount)
        await self._ensure_ready()
        return await users.credit(self._runner, self._agent_key, user_id, amount, utc_now())

    @traced("user_id")
    async def debit(self, user_id: str, amount: int) -> int:
        arguments.balance_change(user_id, amount)
        await self._ensure_ready()
        now = utc_now()

        async def work(session: Executor) -> int:
            repo = UserRepository(session, self._agent_key)
            debited = await repo.debit(user_id, amount, now)
            user = await repo.get_or_none(user_id)
            balance = 0 if user is None else user.available_balance
            if not debited and not (user is None and amount == 0):
                raise InsufficientBalance(
                    f"balance of {user_id!r} is {balance}, cannot debit {amount}"
                )
            return balance

        return await self._runner.run(work)

    @traced("thread_id", "user_id")
    async def add_message(
        self,
        thread_id: str,
        user_id: str,
        role: str,
        message: str = "",
        content: str = "",
        kind: str = "request",
        satoshis: int | None = None,
        extra_inputs: Mapping[str, Any] | None = None,
        extra_outputs: Mapping[str, Any] | None = None,
        *,
        client_id: str | None = None,
    ) -> Message:
        new = arguments.add_message(
            thread_id,
            user_id,
            role,
            message,
            content,
            kind,
            satoshis,
            extra_inputs,
            extra_outputs,
            feed=feeds_in_rows(self.engine),
        )
        if client_id is not None:
            # A retry key must be looked up first: a transaction of its own.
            (stored,) = await self._add(new.thread_id, new.user_id, [new], [client_id])
            return stored
        await self._ensure_ready()
        return await self._appender().add(new, utc_now())

    @traced("thread_id", "user_id")
    async def add_messages(
        self, thread_id: str, user_id: str, messages: Iterable[Mapping[str, Any]]
    ) -> list[Message]:
        news, client_ids = arguments.add_messages(
            thread_id, user_id, messages, feed=feeds_in_rows(self.engine)
        )
        return await self._add(thread_id, user_id, news, client_ids)

    async def _add(
        self,
        thread_id: str,
        user_id: str,
        news: Sequence[NewMessage],
        client_ids: Sequence[str | None],
    ) -> list[Message]:
        ids = arguments.client_ids(list(client_ids), len(news))
        if not news:
            return []
        await self._ensure_ready()
        return await self._appender().add_many(thread_id, user_id, news, ids, utc_now())

    def _appender(self) -> ThreadAppender:
        return ThreadAppender(self._runner, self._agent_key, self.agent_name)

    @traced("user_id")
    async def list_threads(
        self, user_id: str, *, limit: int | None = None, before: ThreadInfo | None = None
    ) -> list[ThreadInfo]:
        arguments.list_threads(user_id, limit, before)
        await self._ensure_ready()
        return await self._runner.run(
            lambda s: ThreadRepository(s, self._agent_key).threads_of(
                user_id, limit=limit, before=before
            ),
            read=True,
        )

    @traced()
    async def search(
        self,
        query: str,
        *,
        limit: int = 20,
        before: MessageSearchHit | None = None,
        user_id: str | None = None,
        thread_id: str | None = None,
    ) -> list[MessageSearchHit]:
        """The agent's messages whose text matches ``query``, best match first.

        Every word of ``query`` must appear in a message (``word*`` matches a prefix; see
        :mod:`convostore.search`); the text is the ``message`` and a text ``content``.

        Args:
            query: The words to find.
            limit: Hits per page (1 to 1000).
            before: The last hit of the previous page, for the next one.
            user_id: Only this user's messages.
            thread_id: Only this thread's messages.
        """
        parsed = arguments.search_messages(query, limit, before, user_id, thread_id)
        require_search_index(self.engine, "search")
        await self._ensure_ready()
        pending = await search_index.prepare_search(self._runner, self.engine, MESSAGES)
        return await self._runner.run(
            lambda s: search_messages(
                s,
                self._agent_key,
                self.agent_name,
                parsed,
                user_id=user_id,
                thread_id=thread_id,
                limit=limit,
                before=before,
                pending=pending,
            ),
            read=True,
        )

    @traced("thread_id", "user_id")
    async def get_messages(
        self,
        thread_id: str,
        user_id: str,
        *,
        limit: int | None = None,
        before_idx: int | None = None,
        after_idx: int | None = None,
        reverse: bool = False,
    ) -> list[Message]:
        arguments.get_messages(thread_id, user_id, limit, before_idx, after_idx, reverse)
        await self._ensure_ready()
        rows = await self._runner.run(
            lambda s: ThreadRepository(s, self._agent_key).messages(
                thread_id,
                user_id,
                limit=limit,
                before_idx=before_idx,
                after_idx=after_idx,
                reverse=reverse,
            ),
            read=True,
        )
        return [message_from_row(row, self.agent_name) for row in rows]


def Database(  # noqa: N802 - agentstr's factory is a function named like a class
    conn_str: str | URL | None = None,
    *,
    agent_name: str | None = None,
    migrate: bool | None = None,
    read_url: ReplicaUrls | None = None,
    encryption: Keyring | None = None,
) -> SQLAlchemyDatabase:
    """Create the agent database for a connection string, like agentstr's ``Database``.

    ``conn_str`` may be any form :func:`convostore.settings.resolve_url` accepts, including
    agentstr's ``sqlite://PATH`` and ``postgres://user:pass@host:port/db``. Call
    ``await db.async_init()`` before use (agentstr's protocol; calls also do it lazily).
    """
    if isinstance(conn_str, URL):
        conn_str = conn_str.render_as_string(hide_password=False)
    return SQLAlchemyDatabase(
        conn_str, agent_name=agent_name, migrate=migrate, read_url=read_url, encryption=encryption
    )
