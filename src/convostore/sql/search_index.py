"""SQLite's search index, off the append's path and with no clear-text copy in the row.

Since migration 0007 an append on SQLite stores the message only. The index (migration
0005's contentless FTS5 table per message table, its ``*_docs`` map from the FTS row id to
the message key and word count, and its ``fts5vocab`` view) catches up afterwards:

* **the watermark**: ``search_state`` holds, per message table, the highest ``rowid`` up
  to which every message has been indexed (or passed over: see below). SQLite has one
  writer at a time, so rowids become visible in order: no row below the watermark can
  still be on its way. A new row gets ``max(rowid) + 1``; the delete trigger lowers the
  watermark to the largest rowid left, so a reused rowid is never below it.
* **catch-up** (:func:`catch_up`): reads the rows above the watermark that are not in the
  map yet, decodes each payload, builds its feed (:mod:`convostore.search`) and inserts
  it into the FTS table and the map, and moves the watermark, all in one transaction. A
  search on a writable engine runs it first (a search right after an append finds it);
  the writer thread runs it in bounded batches when its queue is idle
  (:data:`IDLE_BATCH`). A crash before the commit leaves the watermark where it was.
* **deletes**: a contentless FTS5 table forgets a row only when told its exact words.
  The delete trigger rebuilds them from the payload being deleted through an SQL function
  (:data:`FEED_FUNCTION`, registered on every connection of a convostore engine), so
  every delete path (clear, replace, pop, prune, retention, delete thread/session/user,
  cascades) keeps the index exact with no code of its own. The function checks the word
  count against the map, so a feed that came out different fails the delete instead of
  corrupting the index.
* **read-only engines** (``read_only=True``, ``?mode=ro``) cannot write the catch-up:
  their search reads the index as it is and matches the rows above the watermark in
  Python (:func:`pending_hits`), with the same rank, so results are the same.

Rows whose payload this engine cannot open (encrypted under a key it does not have) are
passed over, as before: they are not indexed. An engine whose keyring stores nothing in
clear neither searches nor catches up.

PostgreSQL and MySQL/MariaDB keep indexing inside the append (their ids do not commit in
order, so a watermark would miss rows): see docs/performance.md.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    BigInteger,
    LargeBinary,
    Select,
    Table,
    and_,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    select,
    table,
    text,
    type_coerce,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from convostore import search
from convostore.errors import ConvostoreError, DatabaseError
from convostore.sql.dml import Executor
from convostore.sql.engine import is_read_only
from convostore.sql.fulltext import RANK_SCALE
from convostore.sql.search_feed import (
    FEED_FUNCTION,
    INDEXES,
    KEYS,
    STATE_TABLE,
    decoders,
    feed_of,
    words_in,
)
from convostore.sql.tables import ContextMessageRecord, MessageRecord, table_of

if TYPE_CHECKING:
    from convostore.sql.runner import TransactionRunner

__all__ = [
    "FEED_FUNCTION",
    "IDLE_BATCH",
    "INDEXES",
    "SEARCH_BATCH",
    "STATE_TABLE",
    "catch_up",
    "pending_hits",
    "rank_of",
]


_SQLITE_VARIABLES: Final = 32_000 if sqlite3.sqlite_version_info >= (3, 32) else 999

SEARCH_BATCH: Final = 5000
"""Rows a search's catch-up indexes per transaction (it loops until none is left)."""

TABLES: Final[tuple[Table, ...]] = (table_of(ContextMessageRecord), table_of(MessageRecord))
"""The message tables, each with its own index."""

IDLE_BATCH: Final = 64
"""Rows the writer thread indexes per transaction while it has nothing else to do."""


@dataclass(frozen=True, slots=True)
class _Statements:
    select: str
    insert_doc: str
    insert_words: str
    watermark: str
    advance: str
    top: str
    count: str
    lock: str
    behind: str


def _statements(table: str) -> _Statements:
    fts = INDEXES[table]
    key = KEYS[table]
    columns = ", ".join(key)
    joined = " AND ".join(f"d.{c} = t.{c}" for c in key)
    message = "t.message" if table == "messages" else "NULL"
    above = (
        f"FROM {table} AS t LEFT JOIN {fts}_docs AS d ON {joined} "
        "WHERE t.rowid > :after AND d.doc_id IS NULL"
    )
    return _Statements(
        select=(
            f"SELECT t.rowid, {', '.join(f't.{c}' for c in key)}, {message}, t.content "
            f"{above} ORDER BY t.rowid LIMIT :size"
        ),
        count=f"SELECT count(*) {above}",
        lock=f"UPDATE {STATE_TABLE} SET watermark = watermark WHERE name = '{table}'",
        behind=(
            f"SELECT coalesce(max(rowid), 0) > (SELECT watermark FROM {STATE_TABLE} "
            f"WHERE name = '{table}') FROM {table}"
        ),
        insert_doc=f"INSERT INTO {fts}_docs (doc_id, {columns}, words) VALUES ",
        insert_words=f"INSERT INTO {fts} (rowid, search_text) VALUES ",
        watermark=f"SELECT watermark FROM {STATE_TABLE} WHERE name = '{table}'",
        advance=f"UPDATE {STATE_TABLE} SET watermark = :watermark WHERE name = '{table}'",
        top=(
            f"SELECT coalesce(max(rowid), 0), "
            f"(SELECT coalesce(max(doc_id), 0) FROM {fts}_docs) FROM {table}"
        ),
    )


_STATEMENTS = {name: _statements(name) for name in INDEXES}


async def catch_up(
    session: Executor, dialect: Dialect, table: Table, *, limit: int
) -> tuple[int, int] | None:
    """Index up to ``limit`` of ``table``'s rows above the watermark, in ``session``'s
    transaction: how many rows were read and how many indexed, or ``None`` when none was
    left.

    Rows this engine cannot open stay unindexed (as an append by an engine without the
    key leaves them) and are passed over like rows with no text.
    """
    sql = _STATEMENTS[table.name]
    # A write first: the transaction takes SQLite's write lock before it reads, so nobody
    # (another process) can add, delete or change a row between the read and the writes
    # (the driver begins a transaction only at the first write).
    await session.execute(text(sql.lock))
    watermark = int((await session.execute(text(sql.watermark))).scalar_one())
    rows = (await session.execute(text(sql.select), {"after": watermark, "size": limit})).all()
    last_row, last_doc = (await session.execute(text(sql.top))).one()
    if not rows:
        if last_row != watermark:
            await session.execute(text(sql.advance), {"watermark": last_row})
        return None
    docs: list[dict[str, Any]] = []
    open_message, open_content = decoders(dialect, table)
    for number, row in zip(itertools.count(int(last_doc) + 1), rows, strict=False):
        try:
            feed = feed_of(table.name, open_message(row[4]), open_content(row[5]))
        except ConvostoreError:
            continue
        if not feed:
            continue
        docs.append({"doc_id": number, "key": row[1:4], "words": words_in(feed), "feed": feed})
    if docs:
        connection = session if isinstance(session, AsyncConnection) else await session.connection()
        await _insert_many(
            connection, sql.insert_doc, [(d["doc_id"], *d["key"], d["words"]) for d in docs]
        )
        await _insert_many(connection, sql.insert_words, [(d["doc_id"], d["feed"]) for d in docs])
    # Every row up to the last one read has been looked at; when the batch was not full,
    # so has every row there is.
    done = int(rows[-1][0]) if len(rows) == limit else int(last_row)
    await session.execute(text(sql.advance), {"watermark": done})
    return len(rows), len(docs)


async def _insert_many(connection: Any, head: str, rows: list[tuple[Any, ...]]) -> None:
    # Multi-row VALUES on the driver, not executemany: FTS5 flushes its pending words to a
    # new segment at each statement, and SQLAlchemy's per-row parameter handling is most of
    # the cost of a row otherwise.
    width = len(rows[0])
    per_statement = max(1, _SQLITE_VARIABLES // width)
    group = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = tuple(value for row in chunk for value in row)
        await connection.exec_driver_sql(head + ", ".join([group] * len(chunk)), values)


async def catch_up_all(session: Executor, dialect: Dialect, table: Table) -> int:
    """:func:`catch_up` in batches of :data:`SEARCH_BATCH` until nothing is left; how
    many rows were indexed."""
    total = 0
    while (counts := await catch_up(session, dialect, table, limit=SEARCH_BATCH)) is not None:
        read, indexed = counts
        total += indexed
        if read < SEARCH_BATCH:
            break
    return total


async def behind(session: Executor, table: Table) -> bool:
    """Whether ``table`` has a row above the watermark (a cheap read: no row is decoded)."""
    return bool((await session.execute(text(_STATEMENTS[table.name].behind))).scalar())


async def pending_count(session: Executor, table: Table) -> int:
    """How many of ``table``'s rows the index has not reached yet."""
    sql = _STATEMENTS[table.name]
    watermark = (await session.execute(text(sql.watermark))).scalar_one()
    return int((await session.execute(text(sql.count), {"after": watermark})).scalar_one())


async def reset(session: Executor, table: Table) -> None:
    """Empty ``table``'s index and put the watermark back to the start: the catch-up then
    indexes every message again."""
    fts = INDEXES[table.name]
    await session.execute(text(f"INSERT INTO {fts} ({fts}) VALUES ('delete-all')"))
    await session.execute(text(f"DELETE FROM {fts}_docs"))
    await session.execute(text(_STATEMENTS[table.name].advance), {"watermark": 0})


async def drop(session: Executor, table: Table) -> int:
    """Empty ``table``'s index and pass every row there is (what turning clear text off
    asks); how many messages left the index or its queue (the rows above the watermark)."""
    fts = INDEXES[table.name]
    sql = _STATEMENTS[table.name]
    indexed = (await session.execute(text(f"SELECT count(*) FROM {fts}_docs"))).scalar_one()
    count = int(indexed) + await pending_count(session, table)
    await session.execute(text(f"INSERT INTO {fts} ({fts}) VALUES ('delete-all')"))
    await session.execute(text(f"DELETE FROM {fts}_docs"))
    last_row, _ = (await session.execute(text(sql.top))).one()
    await session.execute(text(sql.advance), {"watermark": last_row})
    return count


def dialect_of(executor: Executor) -> Dialect:
    """The dialect an executor runs on (its keyring opens sealed payloads)."""
    bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
    return bind.dialect


async def prepare_search(runner: TransactionRunner, engine: AsyncEngine, target: Table) -> bool:
    """Bring SQLite's index up to date before a search of ``target``; whether the search
    must match the rows the index has not reached itself (:func:`pending_hits`).

    On a writable engine the catch-up runs in its own short write transaction first. A
    read-only engine cannot write it, nor should a caller's unit of work carry it: those
    searches match the pending rows in Python instead. Other backends index as they write.
    """
    if engine.dialect.name != "sqlite":
        return False
    if is_read_only(engine) or runner.bound is not None:
        return True

    async def work(session: Executor) -> int:
        return await catch_up_all(session, dialect_of(session), target)

    async def is_behind(session: Executor) -> bool:
        return await behind(session, target)

    # Every append acknowledged before this call has committed: a row above the mark
    # now is one this search must see. Nothing there (the usual case once the writer's
    # idle catch-up has run): no write transaction at all.
    if not await runner.run(is_behind, read=True):
        return False
    try:
        await runner.run(work)
    except DatabaseError as exc:
        # A file this process may read but not write (its permissions, query_only).
        if "readonly" not in str(exc).replace(" ", "").replace("-", "").lower():
            raise
        return True
    return False


def indexed_matches(
    target: Table, terms: Sequence[tuple[str, bool]], scope: Mapping[str, Any]
) -> Select[Any]:
    """``SELECT key…, rank`` of the indexed rows of ``target`` in ``scope`` whose words
    match: SQLite's part of :func:`convostore.sql.fulltext.text_matches`.

    The rank depends on the message alone (FTS5's ``bm25`` weighs words by the whole
    table, so a write anywhere would move every rank and break the keyset cursor): each
    exact word's occurrences, read from the index through the ``fts5vocab`` view, plus
    one per prefix word, divided by the message's word count (from the map). No message
    row is read, and the table holds no copy of the words.
    """
    fts_name = INDEXES[target.name]
    key = KEYS[target.name]
    fts = table(fts_name, column("rowid"))
    docs = table(f"{fts_name}_docs", column("doc_id"), column("words"), *(column(n) for n in key))
    expression = " ".join(f'"{word}"' + ("*" if prefix else "") for word, prefix in terms)
    found = literal_column(fts_name).op("MATCH")(bindparam("search", expression))
    matched = select(fts.c.rowid).where(found)
    if len(scope) > 1:
        # One session or thread: its few rows, each looked up in the index.
        mine = docs.alias("mine")
        matched = matched.where(
            fts.c.rowid.in_(
                select(mine.c.doc_id).where(*(mine.c[n] == value for n, value in scope.items()))
            )
        )
    in_scope = [docs.c[name] == value for name, value in scope.items()]
    exact = [word.rstrip(search.PAD) for word, prefix in terms if not prefix]
    prefixes = sum(1 for _, prefix in terms if prefix)
    keys = [docs.c[name] for name in key]
    if not exact:
        score: Any = literal(prefixes) * RANK_SCALE / docs.c.words
        return select(*keys, sql_cast(func.round(score), BigInteger).label("rank")).where(
            docs.c.doc_id.in_(matched), *in_scope
        )
    vocab = table(f"{fts_name}_vocab", column("term"), column("doc"))
    occurrences = (
        select(vocab.c.doc, func.count().label("n"))
        .where(vocab.c.term.in_(exact))
        .group_by(vocab.c.doc)
        .subquery("occurrences")
    )
    score = (occurrences.c.n + prefixes) * RANK_SCALE / docs.c.words
    return (
        select(*keys, sql_cast(func.round(score), BigInteger).label("rank"))
        .select_from(occurrences.join(docs, docs.c.doc_id == occurrences.c.doc))
        .where(occurrences.c.doc.in_(matched), *in_scope)
    )


def rank_of(tokens: Sequence[str], terms: Sequence[tuple[str, bool]]) -> int | None:
    """The rank SQLite's index gives a message with these feed words, or ``None`` unless
    every term matches: each exact word's occurrences, plus one per prefix word, times
    :data:`~convostore.sql.fulltext.RANK_SCALE`, divided by the word count, rounded."""
    total = 0
    for word, prefix in terms:
        if prefix:
            if not any(token.startswith(word) for token in tokens):
                return None
            total += 1
        else:
            found = tokens.count(word)
            if not found:
                return None
            total += found
    # As SQLite computes it: a real division, rounded half away from zero.
    return math.floor(total * RANK_SCALE / len(tokens) + 0.5)


async def pending_hits(
    session: Executor,
    dialect: Dialect,
    target: Table,
    columns: Sequence[Any],
    terms: Sequence[tuple[str, bool]],
    scope: Mapping[str, Any],
    filters: Mapping[str, Any],
) -> list[Any]:
    """The rows above the watermark (not indexed yet) in ``scope`` that match ``terms``,
    each with its ``rank``: what a read-only engine adds to the index's hits."""
    fts = INDEXES[target.name]
    key = KEYS[target.name]
    docs = table(f"{fts}_docs", *(column(c) for c in ("doc_id", *key)))
    state = table(STATE_TABLE, column("name"), column("watermark"))
    names = [c.name for c in columns]
    raw = [type_coerce(c, LargeBinary).label(c.name) if c.name == "content" else c for c in columns]
    watermark = (
        select(state.c.watermark).where(state.c.name == bindparam("state_name", target.name))
    ).scalar_subquery()
    stmt = (
        select(*raw)
        .select_from(target.outerjoin(docs, and_(*(docs.c[c] == target.c[c] for c in key))))
        .where(
            literal_column(f"{target.name}.rowid") > watermark,
            docs.c.doc_id.is_(None),
            *(target.c[name] == value for name, value in scope.items()),
            *(target.c[name] == value for name, value in filters.items()),
        )
    )
    _, open_content = decoders(dialect, target)
    hits = []
    for row in (await session.execute(stmt)).all():
        values = dict(zip(names, row, strict=True))
        try:
            values["content"] = open_content(values["content"])
            feed = feed_of(target.name, values.get("message"), values["content"])
        except ConvostoreError:
            continue
        if not feed:
            continue
        rank = rank_of(feed.split(" "), terms)
        if rank is not None:
            hits.append(SimpleNamespace(**values, rank=rank))
    return hits


def merge(
    indexed: Iterable[Any],
    pending: Iterable[Any],
    key: tuple[str, str],
    limit: int,
    cursor: tuple[int, tuple[str, int]] | None,
) -> list[Any]:
    """One page of hits from the index's page and the pending rows' hits (read first:
    a row is pending at that read, or in the index at the later one)."""
    thread, position = key
    hits = {
        # A row caught up by another process between the two reads is in both: once.
        (getattr(hit, thread), getattr(hit, position)): hit
        for hit in itertools.chain(pending, indexed)
    }
    return search.page(((hit.rank, where, hit) for where, hit in hits.items()), limit, cursor)
