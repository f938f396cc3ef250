"""Full-text SQL: the rows whose ``search_text`` matches a search, with a rank that depends
on the message alone: PostgreSQL's ``tsvector`` (``ts_rank``), MySQL/MariaDB's ``MATCH …
AGAINST`` in boolean mode (:func:`text_matches`). SQLite's index has no such column since
migration 0007: :mod:`convostore.sql.search_index`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Table,
    Text,
    bindparam,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy import cast as sql_cast

from convostore.sql.engine import Family

__all__ = ["RANK_SCALE", "text_matches"]

RANK_SCALE = 10**12
"""Ranks are the backend's score times this, as integers: exact keyset cursors everywhere."""

_SIMPLE: ColumnElement[Any] = literal_column("'simple'::regconfig")


def text_matches(
    kind: Family,
    target: Table,
    key: Sequence[str],
    terms: Sequence[tuple[str, bool]],
    scope: Mapping[str, Any],
) -> Select[Any]:
    """``SELECT key…, rank`` of the rows of ``target`` in ``scope`` whose words match.

    ``terms`` are ``(word, prefix)`` pairs as the index holds words (see
    :meth:`convostore.search.Query.indexed_terms`); every one must match. ``rank`` is an
    integer, higher for better matches. ``scope`` maps key columns to values, and every
    statement is filtered by it. The words hold letters, digits and ``_`` only, so they
    are safe inside each backend's query syntax (passed as a bound parameter all the same).
    """
    if kind == "sqlite":
        # SQLite's index is kept apart from the rows: convostore.sql.search_index.
        raise ValueError("SQLite's matches come from convostore.sql.search_index")
    words = target.c.search_text
    if kind == "postgresql":
        expression = " & ".join(word + (":*" if prefix else "") for word, prefix in terms)
        query = func.to_tsquery(_SIMPLE, bindparam("search", expression))
        # search_text is a tsvector there (convostore.sql.types.SearchVector), GIN-indexed.
        # ts_rank reads the message's own vector alone: a stable cursor.
        rank: ColumnElement[Any] = sql_cast(
            func.round(func.ts_rank(words, query) * RANK_SCALE), BigInteger
        )
        matched: ColumnElement[Any] = words.op("@@")(query)
    else:
        expression = " ".join(f"+{word}" + ("*" if prefix else "") for word, prefix in terms)
        matched = words.match(bindparam("search", expression))
        rank = _density_rank(kind, words, terms)
    return (
        select(*(target.c[name] for name in key), rank.label("rank"))
        .where(matched)
        .where(*(target.c[name] == value for name, value in scope.items()))
    )


def _density_rank(
    kind: Family, feed: ColumnElement[Any], terms: Sequence[tuple[str, bool]]
) -> ColumnElement[Any]:
    """How much of a message its matching words are, from its feed alone (SQLite, MySQL).

    FTS5's ``bm25`` and MySQL's relevance weigh words by the whole table, so a write
    anywhere (another tenant's included) would move every rank and break the keyset
    cursor between two pages. This counts each exact word's occurrences in the feed (the
    words are space-separated, so doubling the spaces makes every occurrence
    ``" word "``), adds one per prefix word, and divides by the message's word count.
    """
    text_ = Text()
    spaced = literal(" ") + func.replace(feed, " ", "  ", type_=text_) + literal(" ")
    total: Any = literal(0)
    for word, prefix in terms:
        if prefix:
            total = total + 1
            continue
        # LENGTH counts characters on SQLite and bytes on MySQL/MariaDB.
        width = (len(word.encode()) if kind == "mysql" else len(word)) + 2
        gone = func.replace(spaced, literal(f" {word} "), "", type_=text_)
        total = total + (func.length(spaced) - func.length(gone)) / width
    count = func.length(feed) - func.length(func.replace(feed, " ", "", type_=text_)) + 1
    return sql_cast(func.round(total * RANK_SCALE / count), BigInteger)
