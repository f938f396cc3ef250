"""Search over message history: keyset pages of hits, best first, for both message tables.

The matching and ranking SQL differs per backend (:func:`convostore.sql.fulltext.text_matches`;
SQLite's index: :mod:`convostore.sql.search_index`); here the page of keys is picked first,
then only its rows are read in full.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Select,
    Table,
    and_,
    or_,
    select,
    tuple_,
)

from convostore import search
from convostore.models import (
    ContextSearchHit,
    MessageSearchHit,
    construct,
)
from convostore.sql import search_index
from convostore.sql.dml import Executor, family_of
from convostore.sql.fulltext import text_matches
from convostore.sql.repositories.rows import _context_messages, _messages, _stored, message_from_row
from convostore.sql.tables import (
    readable_columns,
)

__all__ = ["SearchCursor", "search_context", "search_messages"]


# A search cursor: the last hit's rank, then its key but the scope (session or thread, and
# position), which orders hits of equal rank.
SearchCursor = tuple[int, tuple[str, int]]


async def search_context(
    session: Executor,
    project: str,
    query: search.Query,
    *,
    session_id: str | None,
    limit: int,
    before: ContextSearchHit | None,
    pending: bool = False,
) -> list[ContextSearchHit]:
    """The project's messages (or one session's) matching ``query``, best first.

    Keyset pages: ``before`` is the last hit of the previous page; hits tie on rank are
    ordered by session and position. ``pending``: also match the rows SQLite's index has
    not reached (:func:`convostore.sql.search_index.prepare_search`).
    """
    scope = {"project": project}
    if session_id is not None:
        scope["session_id"] = session_id
    cursor = None if before is None else (before.rank, (before.session_id, before.message.position))
    rows = await _search(
        session, _context_messages, query, scope, {}, limit, cursor, pending=pending
    )
    hits = []
    for row in rows:
        stored = _stored((row.position, row.role, row.content, row.created_at, row.client_id))
        found = search.snippet(search.context_text(stored.content), query.terms)
        hits.append(
            construct(
                ContextSearchHit,
                {
                    "session_id": row.session_id,
                    "message": stored,
                    "snippet": found.text,
                    "highlights": list(found.highlights),
                    "rank": row.rank,
                },
            )
        )
    return hits


async def search_messages(
    session: Executor,
    agent_key: str,
    agent_name: str | None,
    query: search.Query,
    *,
    user_id: str | None,
    thread_id: str | None,
    limit: int,
    before: MessageSearchHit | None,
    pending: bool = False,
) -> list[MessageSearchHit]:
    """The agent's messages (or one user's, or one thread's) matching ``query``, best first.

    Keyset pages as :func:`search_context`; ties on rank are ordered by thread and ``idx``.
    """
    scope: dict[str, Any] = {"agent_name": agent_key}
    if thread_id is not None:
        scope["thread_id"] = thread_id
    cursor = (
        None if before is None else (before.rank, (before.message.thread_id, before.message.idx))
    )
    filters = {} if user_id is None else {"user_id": user_id}
    rows = await _search(session, _messages, query, scope, filters, limit, cursor, pending=pending)
    hits = []
    for row in rows:
        message = message_from_row(row, agent_name)
        found = search.snippet(search.message_text(message.message, message.content), query.terms)
        hits.append(
            MessageSearchHit(
                message=message,
                snippet=found.text,
                highlights=list(found.highlights),
                rank=row.rank,
            )
        )
    return hits


async def _search(
    session: Executor,
    target: Table,
    query: search.Query,
    scope: dict[str, Any],
    filters: dict[str, Any],
    limit: int,
    cursor: SearchCursor | None,
    *,
    pending: bool = False,
) -> list[Any]:
    kind = family_of(session)
    # (scope, session or thread, position): the primary key of both message tables.
    key = tuple(column.name for column in target.primary_key.columns)
    terms = query.indexed_terms()
    if kind == "sqlite":
        indexed = search_index.indexed_matches(target, terms, scope)
    else:
        indexed = text_matches(kind, target, key, terms, scope)
    matches = indexed.subquery("matches")
    _, thread_column, position_column = key

    def same_key(table: Any, other: Any) -> Any:
        return and_(*(table.c[name] == other.c[name] for name in key))

    # The page's keys and ranks first, so only its rows are read in full (their payloads).
    rank = matches.c.rank
    order = (rank.desc(), matches.c[thread_column], matches.c[position_column])
    top: Select[Any] = select(matches)
    if filters:
        top = top.join(target, same_key(target, matches)).where(
            *(target.c[name] == value for name, value in filters.items())
        )
    if cursor is not None:
        # Worse rank, or the same rank and a later key.
        last_rank, last_key = cursor
        top = top.where(
            or_(
                rank < last_rank,
                (rank == last_rank)
                & (tuple_(matches.c[thread_column], matches.c[position_column]) > last_key),
            )
        )
    page = top.order_by(*order).limit(limit).subquery("page")
    extra: list[Any] = []
    if pending:
        # A read-only SQLite engine cannot catch the index up: the rows it has not reached
        # are matched here (first: see search_index.merge), with the same rank.
        extra = await search_index.pending_hits(
            session,
            search_index.dialect_of(session),
            target,
            readable_columns(target),
            terms,
            scope,
            filters,
        )
    stmt: Select[Any] = (
        select(*readable_columns(target), page.c.rank)
        .join(page, same_key(target, page))
        .where(*(target.c[name] == value for name, value in scope.items()))
        .order_by(page.c.rank.desc(), page.c[thread_column], page.c[position_column])
    )
    rows = list((await session.execute(stmt)).all())
    if not pending:
        return rows
    return search_index.merge(rows, extra, (thread_column, position_column), limit, cursor)
