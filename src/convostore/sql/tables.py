"""The tables, as declarative SQLAlchemy 2.0 models.

The five core tables serve both interfaces; the four ``adk_*`` tables hold Google ADK
sessions (:mod:`convostore.integrations.adk`), whose three-part key and three state scopes
the context store does not have; the three ``langgraph_*`` tables hold LangGraph
checkpoints (:mod:`convostore.integrations.langgraph`).

The schema itself is owned by the Alembic migrations in ``migrations/``; these classes
describe it for queries, and ``alembic check`` proves the two agree.

Scope columns (agent, project, session/thread) lead every key and index, so every lookup is
an index range within one tenant. Order always comes from an integer position allocated
from a counter row in the same transaction as the insert: ``threads.next_idx`` for agent
messages, ``context_tokens.next_position`` for context messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from convostore.rules import (
    ADK_KEY_LENGTH,
    AGENT_NAME_LENGTH,
    CLIENT_ID_LENGTH,
    LANGGRAPH_CHANNEL_LENGTH,
    LANGGRAPH_CHECKPOINT_ID_LENGTH,
    LANGGRAPH_NS_LENGTH,
    LANGGRAPH_TASK_ID_LENGTH,
    LANGGRAPH_TASK_PATH_LENGTH,
    LANGGRAPH_THREAD_ID_LENGTH,
    PREVIEW_LENGTH,
    PROJECT_LENGTH,
    SESSION_ID_LENGTH,
    THREAD_ID_LENGTH,
    USER_ID_LENGTH,
)
from convostore.sql.types import (
    ClearOnlyText,
    CompressedJSON,
    SealableText,
    UTCDateTime,
    key_string,
    search_text,
)

__all__ = [
    "ADK_KEY_LENGTH",
    "AGENT_NAME_LENGTH",
    "CLIENT_ID_LENGTH",
    "PREVIEW_LENGTH",
    "PROJECT_LENGTH",
    "SESSION_ID_LENGTH",
    "THREAD_ID_LENGTH",
    "USER_ID_LENGTH",
    "AdkAppStateRecord",
    "AdkEventRecord",
    "AdkSessionRecord",
    "AdkUserStateRecord",
    "Base",
    "ContextMessageRecord",
    "ContextSessionRecord",
    "ContextTokensRecord",
    "LangGraphBlobRecord",
    "LangGraphCheckpointRecord",
    "LangGraphWriteRecord",
    "MessageRecord",
    "ThreadRecord",
    "UserRecord",
    "described_here",
    "readable_columns",
    "table_of",
]


_HAS_CLIENT_ID = text("client_id IS NOT NULL")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


SEARCH_INDEXES = frozenset({"ix_context_messages_search_text", "ix_messages_search_text"})
"""The full-text indexes of migration 0005 (PostgreSQL, MySQL/MariaDB), which these models
do not describe: SQLAlchemy has no portable spelling for them."""

SEARCH_TABLE_PREFIXES = ("context_search", "message_search")
"""SQLite's FTS5 tables (and their shadow tables) and row-id maps, from migration 0005."""

SEARCH_STATE_TABLE = "search_state"
"""SQLite's catch-up watermarks, from migration 0007 (:mod:`convostore.sql.search_index`)."""


def described_here(name: str | None, kind: str, backend: str | None = None) -> bool:
    """Whether a schema object is one these models describe (``alembic check`` compares
    only those): everything but the backend-specific search index of migrations 0005 and
    0007 (on SQLite, ``backend``, the message tables have no ``search_text`` column)."""
    if name is None:
        return True
    if kind == "index":
        return name not in SEARCH_INDEXES
    if kind == "table":
        return not name.startswith(SEARCH_TABLE_PREFIXES) and name != SEARCH_STATE_TABLE
    if kind == "column" and name == "search_text":
        return backend != "sqlite"
    return True


def readable_columns(table: Table) -> list[Column[Any]]:
    """The columns a read of a message returns: all but ``search_text``, the feed of the
    search index, which only the database's index reads."""
    return [c for c in table.c if c.name != "search_text"]


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention, so migrations are deterministic."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(record: type[Base]) -> Table:
    """The Core table of a record class, typed as one (``__table__`` is a ``FromClause``)."""
    return Base.metadata.tables[record.__tablename__]


class UserRecord(Base):
    """A user of one agent: balance and the thread they are talking in."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("available_balance >= 0", name="balance_not_negative"),)

    agent_name: Mapped[str] = mapped_column(key_string(AGENT_NAME_LENGTH), primary_key=True)
    user_id: Mapped[str] = mapped_column(key_string(USER_ID_LENGTH), primary_key=True)
    available_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    current_thread_id: Mapped[str | None] = mapped_column(key_string(THREAD_ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ThreadRecord(Base):
    """A thread of one agent; ``next_idx`` is the counter that orders its messages.

    ``next_idx`` is also the message count, ``updated_at`` the last write, and ``user_id``
    the user of the first message, so listing a user's threads reads this table alone.
    """

    __tablename__ = "threads"
    __table_args__ = (
        Index("ix_threads_agent_name_user_id_updated_at", "agent_name", "user_id", "updated_at"),
    )

    agent_name: Mapped[str] = mapped_column(key_string(AGENT_NAME_LENGTH), primary_key=True)
    thread_id: Mapped[str] = mapped_column(key_string(THREAD_ID_LENGTH), primary_key=True)
    next_idx: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The user who wrote the thread's first message: list_threads(user_id) pages on it.
    user_id: Mapped[str | None] = mapped_column(key_string(USER_ID_LENGTH))


class MessageRecord(Base):
    """One message of an agent thread, at position ``idx`` (0, 1, 2, ...)."""

    __tablename__ = "messages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["agent_name", "thread_id"],
            ["threads.agent_name", "threads.thread_id"],
            ondelete="CASCADE",
        ),
        Index("ix_messages_agent_name_user_id_thread_id", "agent_name", "user_id", "thread_id"),
        Index(
            "ix_messages_agent_name_thread_id_client_id",
            "agent_name",
            "thread_id",
            "client_id",
            unique=True,
            # Most rows have no client id: index only those that do (MySQL/MariaDB have
            # no partial indexes and index every row).
            sqlite_where=_HAS_CLIENT_ID,
            postgresql_where=_HAS_CLIENT_ID,
        ),
    )

    agent_name: Mapped[str] = mapped_column(key_string(AGENT_NAME_LENGTH), primary_key=True)
    thread_id: Mapped[str] = mapped_column(key_string(THREAD_ID_LENGTH), primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[str] = mapped_column(key_string(USER_ID_LENGTH))
    role: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    # Sealed like a payload when the engine stores nothing in clear (convostore.encryption).
    message: Mapped[str] = mapped_column(SealableText())
    content: Mapped[Any] = mapped_column(CompressedJSON())
    satoshis: Mapped[int | None] = mapped_column(BigInteger)
    extra_inputs: Mapped[Any] = mapped_column(CompressedJSON())
    extra_outputs: Mapped[Any] = mapped_column(CompressedJSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The caller's id for this message, if it gave one: a retried add_message with the same
    # id finds the stored message instead of adding it twice.
    client_id: Mapped[str | None] = mapped_column(key_string(CLIENT_ID_LENGTH))
    # The words search finds this message by (convostore.search.feed); NULL: not indexed.
    search_text: Mapped[str | None] = mapped_column(search_text())


class ContextSessionRecord(Base):
    """The per-session row of the context store, one per (project, session_id).

    The table keeps its first name, ``context_tokens`` (what it held at first, and what
    raw SQL and the query plans on the performance page name); in code it is the session.

    Besides the token totals it holds ``next_position`` (the counter that orders the
    session's messages, equal to its message count since positions are gap-free), the
    preview (first user message's first text block; ``"(no preview)"`` when it has none),
    the creation and last-activity times, and where a fork came from. It is updated in the
    same statement that allocates positions, so ``list_sessions`` reads this table alone.
    """

    __tablename__ = "context_tokens"
    __table_args__ = (Index("ix_context_tokens_project_created_at", "project", "created_at"),)

    project: Mapped[str] = mapped_column(key_string(PROJECT_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(key_string(SESSION_ID_LENGTH), primary_key=True)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    next_position: Mapped[int] = mapped_column(BigInteger, default=0)
    # NULL when the engine stores nothing in clear (convostore.encryption).
    preview: Mapped[str | None] = mapped_column(ClearOnlyText(PREVIEW_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    parent_session_id: Mapped[str | None] = mapped_column(key_string(SESSION_ID_LENGTH))
    forked_at: Mapped[int | None] = mapped_column(BigInteger)


ContextTokensRecord = ContextSessionRecord
"""The earlier name of :class:`ContextSessionRecord`, kept for code that imports it."""


class ContextMessageRecord(Base):
    """One message of a context-store session, at ``position`` (0, 1, 2, ...)."""

    __tablename__ = "context_messages"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project", "session_id"],
            ["context_tokens.project", "context_tokens.session_id"],
            ondelete="CASCADE",
        ),
        Index(
            "ix_context_messages_project_session_id_client_id",
            "project",
            "session_id",
            "client_id",
            unique=True,
            # Most rows have no client id: index only those that do (MySQL/MariaDB have
            # no partial indexes and index every row).
            sqlite_where=_HAS_CLIENT_ID,
            postgresql_where=_HAS_CLIENT_ID,
        ),
    )

    project: Mapped[str] = mapped_column(key_string(PROJECT_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(key_string(SESSION_ID_LENGTH), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[Any] = mapped_column(CompressedJSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    client_id: Mapped[str | None] = mapped_column(key_string(CLIENT_ID_LENGTH))
    # The words search finds this message by (convostore.search.feed); NULL: not indexed.
    search_text: Mapped[str | None] = mapped_column(search_text())


class AdkSessionRecord(Base):
    """A Google ADK session: its own state, and the counter that orders its events.

    ``next_position`` is also the event count; ``updated_at`` is the timestamp of the last
    event appended (ADK's ``last_update_time``), which ``list_sessions`` orders and pages by.
    """

    __tablename__ = "adk_sessions"
    __table_args__ = (
        Index(
            "ix_adk_sessions_app_name_updated_at",
            "app_name",
            "updated_at",
            "user_id",
            "session_id",
        ),
        Index(
            "ix_adk_sessions_app_name_user_id_updated_at",
            "app_name",
            "user_id",
            "updated_at",
            "session_id",
        ),
    )

    app_name: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    user_id: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    state: Mapped[Any] = mapped_column(CompressedJSON())
    next_position: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AdkEventRecord(Base):
    """One event of an ADK session, at ``position`` (0, 1, 2, ...).

    ``event`` is the event as ADK dumps it to JSON; ``timestamp`` is its own time, kept in a
    column for ``get_session(after_timestamp=...)``; order comes from the position alone.
    """

    __tablename__ = "adk_events"
    __table_args__ = (
        ForeignKeyConstraint(
            ["app_name", "user_id", "session_id"],
            ["adk_sessions.app_name", "adk_sessions.user_id", "adk_sessions.session_id"],
            ondelete="CASCADE",
        ),
        Index(
            "ix_adk_events_app_name_user_id_session_id_event_id",
            "app_name",
            "user_id",
            "session_id",
            "event_id",
            unique=True,
        ),
    )

    app_name: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    user_id: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    event: Mapped[Any] = mapped_column(CompressedJSON())


class AdkAppStateRecord(Base):
    """The ``app:`` state of one ADK app, shared by all its users and sessions."""

    __tablename__ = "adk_app_states"

    app_name: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    state: Mapped[Any] = mapped_column(CompressedJSON())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AdkUserStateRecord(Base):
    """The ``user:`` state of one user of an ADK app, shared by the user's sessions."""

    __tablename__ = "adk_user_states"

    app_name: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    user_id: Mapped[str] = mapped_column(key_string(ADK_KEY_LENGTH), primary_key=True)
    state: Mapped[Any] = mapped_column(CompressedJSON())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LangGraphCheckpointRecord(Base):
    """A LangGraph checkpoint of one (thread, namespace), without its channel values.

    LangGraph orders a thread's checkpoints by ``checkpoint_id`` (a UUIDv6: its order is
    creation order, and a copied thread keeps it), so this table has no position of its own.
    ``run_id`` is the metadata's ``run_id``, kept in a column for ``delete_for_runs``;
    ``created_at`` is when the checkpoint was stored, for retention (``convostore prune``).
    """

    __tablename__ = "langgraph_checkpoints"

    thread_id: Mapped[str] = mapped_column(key_string(LANGGRAPH_THREAD_ID_LENGTH), primary_key=True)
    checkpoint_ns: Mapped[str] = mapped_column(key_string(LANGGRAPH_NS_LENGTH), primary_key=True)
    checkpoint_id: Mapped[str] = mapped_column(
        key_string(LANGGRAPH_CHECKPOINT_ID_LENGTH), primary_key=True
    )
    parent_checkpoint_id: Mapped[str | None] = mapped_column(
        key_string(LANGGRAPH_CHECKPOINT_ID_LENGTH)
    )
    run_id: Mapped[str | None] = mapped_column(key_string(LANGGRAPH_THREAD_ID_LENGTH))
    checkpoint: Mapped[Any] = mapped_column(CompressedJSON())
    checkpoint_metadata: Mapped[Any] = mapped_column(CompressedJSON())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LangGraphBlobRecord(Base):
    """The value of one channel at one version, shared by every checkpoint reading it."""

    __tablename__ = "langgraph_checkpoint_blobs"

    thread_id: Mapped[str] = mapped_column(key_string(LANGGRAPH_THREAD_ID_LENGTH), primary_key=True)
    checkpoint_ns: Mapped[str] = mapped_column(key_string(LANGGRAPH_NS_LENGTH), primary_key=True)
    channel: Mapped[str] = mapped_column(key_string(LANGGRAPH_CHANNEL_LENGTH), primary_key=True)
    version: Mapped[str] = mapped_column(
        key_string(LANGGRAPH_CHECKPOINT_ID_LENGTH), primary_key=True
    )
    value: Mapped[Any] = mapped_column(CompressedJSON())


class LangGraphWriteRecord(Base):
    """A pending write of one task of a checkpoint (``idx`` < 0: LangGraph's special
    writes, such as errors and interrupts, which a later write replaces)."""

    __tablename__ = "langgraph_checkpoint_writes"

    thread_id: Mapped[str] = mapped_column(key_string(LANGGRAPH_THREAD_ID_LENGTH), primary_key=True)
    checkpoint_ns: Mapped[str] = mapped_column(key_string(LANGGRAPH_NS_LENGTH), primary_key=True)
    checkpoint_id: Mapped[str] = mapped_column(
        key_string(LANGGRAPH_CHECKPOINT_ID_LENGTH), primary_key=True
    )
    task_id: Mapped[str] = mapped_column(key_string(LANGGRAPH_TASK_ID_LENGTH), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    channel: Mapped[str] = mapped_column(key_string(LANGGRAPH_CHANNEL_LENGTH))
    task_path: Mapped[str] = mapped_column(key_string(LANGGRAPH_TASK_PATH_LENGTH))
    value: Mapped[Any] = mapped_column(CompressedJSON())
