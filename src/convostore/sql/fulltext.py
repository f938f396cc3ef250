"""Full-text SQL: the rows whose ``search_text`` matches a search, with a rank that depends
on the message alone: SQLite's FTS5, PostgreSQL's ``tsvector`` (``ts_rank``), MySQL/MariaDB's
``MATCH … AGAINST`` in boolean mode (:func:`text_matches`).
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
    and_,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    select,
    table,
)
from sqlalchemy import cast as sql_cast

from convostore.search import PAD
from convostore.sql.engine import Family

__all__ = ["RANK_SCALE", "text_matches"]

RANK_SCALE = 10**12
"""Ranks are the backend's score times this, as integers: exact keyset cursors everywhere."""

# The SQLite search index of migration 0005, per message table.
_SQLITE_INDEX = {"context_messages": "context_search", "messages": "message_search"}
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
        fts_name = _SQLITE_INDEX[target.name]
        fts = table(fts_name, column("rowid"))
        docs = table(
            f"{fts_name}_docs", column("doc_id"), column("words"), *(column(n) for n in key)
        )
        expression = " ".join(f'"{word}"' + ("*" if prefix else "") for word, prefix in terms)
        found = literal_column(fts_name).op("MATCH")(bindparam("search", expression))
        in_scope = [docs.c[name] == value for name, value in scope.items()]
        exact = [word.rstrip(PAD) for word, prefix in terms if not prefix]
        if len(scope) > 1 or len(exact) != 1:
            # The rank from each match's feed: for one session or thread (its few rows,
            # each looked up in the index, cost less than walking every match in the
            # table), and for several words or prefixes, whose matches (messages with all
            # of them) are fewer than the entries of their most common word.
            stmt = (
                select(
                    *(docs.c[name] for name in key),
                    _density_rank(kind, target.c.search_text, terms).label("rank"),
                )
                .select_from(
                    fts.join(docs, docs.c.doc_id == fts.c.rowid).join(
                        target, and_(*(target.c[n] == docs.c[n] for n in key))
                    )
                )
                .where(found, *in_scope)
            )
            if len(scope) > 1:
                mine = docs.alias("mine")
                stmt = stmt.where(
                    fts.c.rowid.in_(
                        select(mine.c.doc_id).where(
                            *(mine.c[name] == value for name, value in scope.items())
                        )
                    )
                )
            return stmt
        # One word over a whole project or agent, where it may match a large share of the
        # table: the same rank from the index itself, no message row read. Its occurrences
        # come from the fts5vocab view (one pass over the word's entries).
        vocab = table(f"{fts_name}_vocab", column("term"), column("doc"))
        occurrences = (
            select(vocab.c.doc, func.count().label("n"))
            .where(vocab.c.term.in_(exact))
            .group_by(vocab.c.doc)
            .subquery("occurrences")
        )
        prefixes = sum(1 for _, prefix in terms if prefix)
        score = (occurrences.c.n + prefixes) * RANK_SCALE / docs.c.words
        return (
            select(
                *(docs.c[name] for name in key),
                sql_cast(func.round(score), BigInteger).label("rank"),
            )
            .select_from(occurrences.join(docs, docs.c.doc_id == occurrences.c.doc))
            .where(occurrences.c.doc.in_(select(fts.c.rowid).where(found)), *in_scope)
        )
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
