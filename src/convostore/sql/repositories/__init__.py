"""Repositories: the SQL of each aggregate, over an ``AsyncSession`` they never commit.

They run their statements on a :data:`~convostore.sql.dialects.Executor`: the caller's
``AsyncSession`` in a unit of work, or the ``AsyncConnection`` of a transaction a façade owns
(cheaper than a session for one short call; they need nothing but ``execute()``).

Each repository is built for one scope (an agent, or a project + session) and puts that
scope's key into every statement it issues, so no method can touch another tenant's rows.
They may flush; commit, rollback and close belong to the caller (the façades in
:mod:`convostore.database` and :mod:`convostore.context`, or the user's unit of work).

Hot paths use Core statements, built once, through the session rather than ORM
unit-of-work flushes: an append is one counter bump plus one ``INSERT`` (a single
statement on PostgreSQL, see :func:`convostore.sql.dialects.insert_at_counter`).
"""

from convostore.models import NO_PREVIEW
from convostore.sql.repositories.rows import message_from_row
from convostore.sql.repositories.search import search_context, search_messages
from convostore.sql.repositories.sessions import (
    ContextAppend,
    SessionRepository,
    append_context_batch,
)
from convostore.sql.repositories.threads import ThreadAppend, ThreadRepository, append_thread_batch
from convostore.sql.repositories.users import UserRepository

__all__ = [
    "NO_PREVIEW",
    "ContextAppend",
    "SessionRepository",
    "ThreadAppend",
    "ThreadRepository",
    "UserRepository",
    "append_context_batch",
    "append_thread_batch",
    "message_from_row",
    "search_context",
    "search_messages",
]
