"""The words of a stored message, rebuilt from its payload: what SQLite's search index
deletes by, and the SQL function its delete trigger calls (see
:mod:`convostore.sql.search_index`, which holds the rest of the design)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from sqlalchemy import Table, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import search
from convostore.sql.tables import ContextMessageRecord, MessageRecord, table_of

__all__ = [
    "FEED_FUNCTION",
    "INDEXES",
    "KEYS",
    "MISMATCH",
    "STATE_TABLE",
    "decoders",
    "feed_function",
    "feed_of",
    "install",
    "stored_feed",
    "words_in",
]

STATE_TABLE: Final = "search_state"
"""Per message table, the rowid up to which the index has caught up (migration 0007)."""

FEED_FUNCTION: Final = "convostore_search_feed"
"""``convostore_search_feed(table, message, content, words)``: the feed of a stored row,
rebuilt from its payload, for the delete trigger (raises unless it has ``words`` words)."""

INDEXES: Final = {"context_messages": "context_search", "messages": "message_search"}
"""The FTS5 table of each message table."""

KEYS: Final = {
    "context_messages": ("project", "session_id", "position"),
    "messages": ("agent_name", "thread_id", "idx"),
}


def feed_of(table: str, message: Any, content: Any) -> str:
    """The feed of a decoded message of ``table``."""
    if table == "context_messages":
        return search.context_feed(content)
    return search.message_feed(message or "", content)


def decoders(dialect: Dialect, table: Table) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    def processor(name: str) -> Callable[[Any], Any]:
        if name not in table.c:
            return lambda value: value
        column_type = table.c[name].type
        return lambda value: (
            None
            if value is None
            else column_type.process_result_value(  # type: ignore[attr-defined]
                value, dialect
            )
        )

    return processor("message"), processor("content")


def stored_feed(dialect: Dialect, table: Table, message: Any, content: Any) -> str:
    """The feed of a row as stored (raw column values), decoded with ``dialect``'s keyring.

    Raises:
        EncryptionError: The payload is encrypted under a key the keyring does not have.
        SerializationError: The payload does not decode.
    """
    open_message, open_content = decoders(dialect, table)
    return feed_of(table.name, open_message(message), open_content(content))


def words_in(feed: str) -> int:
    """How many words a (non-empty) feed holds: the denominator of a message's rank."""
    return feed.count(" ") + 1


MISMATCH: Final = (
    "convostore: a message no longer has the words the search index holds for it (changed "
    "outside convostore?); rebuild the index: convostore.transfer.rebuild_search_index"
)
"""The delete trigger's error when :data:`FEED_FUNCTION` finds other words (``NULL``)."""


def feed_function(dialect: Dialect, tables: Mapping[str, Table]) -> Callable[..., str | None]:
    """The SQL function :data:`FEED_FUNCTION` for connections of the engine of ``dialect``
    (whose keyring, read at each call, opens sealed payloads): the feed, or ``NULL`` when
    it does not have the ``words`` words the index holds (the trigger then aborts with
    :data:`MISMATCH`). The trigger asks twice for each row (check, then delete): the last
    answer is kept for the second call."""
    # One (arguments, answer) pair, read and replaced whole: the engine's connections call
    # from several threads (the pool's, the writer's), and a pair torn between two calls
    # would hand FTS5 another message's words.
    last: list[tuple[tuple[Any, ...], str | None] | None] = [None]

    def rebuilt(table: str, message: Any, content: Any, words: int) -> str | None:
        args = (table, message, content, words)
        entry = last[0]
        if entry is not None and entry[0] == args:
            return entry[1]
        feed: str | None = stored_feed(dialect, tables[table], message, content)
        if not feed or words_in(feed) != words:
            feed = None
        last[0] = (args, feed)
        return feed

    return rebuilt


_INSTALLED = "convostore_search_function"


def install(engine: AsyncEngine) -> None:
    """Register :data:`FEED_FUNCTION` on every connection of an SQLite engine (once per
    engine): as each connection opens, and at checkout for connections an engine made
    elsewhere opened before convostore saw it. The SQLite writer's connection gets it
    with the engine's other ``connect`` hooks. Without it a delete of an indexed message
    fails (``no such function``) instead of leaving its words in the index."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect
    if dialect.name != "sqlite" or getattr(dialect, _INSTALLED, False):
        return
    setattr(dialect, _INSTALLED, True)
    function = feed_function(
        dialect,
        {
            "context_messages": table_of(ContextMessageRecord),
            "messages": table_of(MessageRecord),
        },
    )

    def connect(dbapi_connection: Any, record: Any) -> None:
        info = getattr(record, "info", None)
        if info is not None and info.get(_INSTALLED):
            return
        dbapi_connection.create_function(FEED_FUNCTION, 4, function, deterministic=True)
        if info is not None:
            info[_INSTALLED] = True

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        connect(dbapi_connection, record)

    event.listen(sync_engine, "connect", connect)
    event.listen(sync_engine, "checkout", checkout)
