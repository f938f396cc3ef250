"""SQLite's search index off the append's path, and no clear-text feed in its rows.

On SQLite the message tables lose ``search_text`` (a clear-text copy of each message's
words) and the triggers that indexed it inside the append's transaction. The index of
revision 0005 (contentless FTS5 table, ``*_docs`` map, ``fts5vocab`` view) stays, with
what it holds; it now catches up after the append (:mod:`convostore.sql.search_index`):

* ``search_state``: per message table, the rowid up to which every row has been
  indexed. It starts just below the first row that had no feed yet (rows written before
  revision 0005, or by an engine that indexed nothing), so those are indexed by the next
  catch-up, as ``convostore search index`` did.
* the FTS5 tables are rebuilt with ``columnsize=0`` (no per-message size: ranks read the
  word count from the map), from the feeds while the column still exists;
* one trigger per message table, on delete: it removes the row's words from the index
  (their exact list, rebuilt from the payload by the ``convostore_search_feed`` SQL
  function that convostore registers on its connections), its map entry, and lowers the
  watermark to the largest rowid left (SQLite reuses a deleted largest rowid).

PostgreSQL keeps only the ``tsvector`` (no text) and MySQL/MariaDB need the text for their
``FULLTEXT`` index: both go on indexing in the append, and this revision changes nothing
there.

Downgrade empties SQLite's index and puts the column back with every row ``NULL`` ("not
indexed yet"), which revision 0005's ``convostore search index`` fills again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (message table, its key columns, the SQLite index's name)
TABLES = (
    ("context_messages", ("project", "session_id", "position"), "context_search"),
    ("messages", ("agent_name", "thread_id", "idx"), "message_search"),
)

STATE = "search_state"
FEED_FUNCTION = "convostore_search_feed"
MISMATCH = (
    "convostore: a message no longer has the words the search index holds for it (changed "
    "outside convostore?); rebuild the index: convostore.transfer.rebuild_search_index"
)
TOKENIZE = "tokenize='unicode61 remove_diacritics 0'"


def _fts(fts: str, options: str) -> list[str]:
    # The index and its fts5vocab view (each word's occurrences per message: the rank).
    return [
        f"CREATE VIRTUAL TABLE {fts} USING fts5(search_text, content='', {TOKENIZE}{options})",
        f"CREATE VIRTUAL TABLE {fts}_vocab USING fts5vocab({fts}, 'instance')",
    ]


def _delete_trigger(table: str, key: tuple[str, ...], fts: str) -> str:
    docs = f"{fts}_docs"
    match_old = " AND ".join(f"{c} = old.{c}" for c in key)
    message = "old.message" if table == "messages" else "NULL"
    feed = f"{FEED_FUNCTION}('{table}', {message}, old.content, words)"
    return (
        f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} BEGIN "
        # Words that differ from the ones indexed would corrupt the index: refuse.
        f"SELECT RAISE(ABORT, '{MISMATCH}') FROM {docs} WHERE {match_old} AND {feed} IS NULL; "
        f"INSERT INTO {fts} ({fts}, rowid, search_text) "
        f"SELECT 'delete', doc_id, {feed} FROM {docs} WHERE {match_old}; "
        f"DELETE FROM {docs} WHERE {match_old}; "
        f"UPDATE {STATE} SET watermark = min(watermark, "
        f"(SELECT coalesce(max(rowid), 0) FROM {table})) WHERE name = '{table}'; "
        "END"
    )


def _old_triggers(table: str, key: tuple[str, ...], fts: str) -> list[str]:
    # Revision 0005's triggers, as it made them.
    docs = f"{fts}_docs"
    columns = ", ".join(key)
    new = ", ".join(f"new.{c}" for c in key)
    match_old = " AND ".join(f"{c} = old.{c}" for c in key)
    indexed = "{row}.search_text IS NOT NULL AND {row}.search_text <> ''"
    count = "length(new.search_text) - length(replace(new.search_text, ' ', '')) + 1"
    add_doc = f"INSERT INTO {docs} ({columns}, words) SELECT {new}, {count}"
    add_words = (
        f"INSERT INTO {fts} (rowid, search_text) SELECT last_insert_rowid(), new.search_text"
    )
    remove_words = (
        f"INSERT INTO {fts} ({fts}, rowid, search_text) "
        f"SELECT 'delete', doc_id, old.search_text FROM {docs} WHERE {match_old}"
    )

    def guarded(statement: str, row: str) -> str:
        glue = " AND " if " WHERE " in statement else " WHERE "
        return f"{statement}{glue}{indexed.format(row=row)};"

    add = f"{add_doc}; {add_words};"
    remove = f"{remove_words}; DELETE FROM {docs} WHERE {match_old};"
    return [
        f"CREATE TRIGGER {fts}_insert AFTER INSERT ON {table} "
        f"WHEN {indexed.format(row='new')} BEGIN {add} END",
        f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} "
        f"WHEN {indexed.format(row='old')} BEGIN {remove} END",
        f"CREATE TRIGGER {fts}_update AFTER UPDATE OF search_text ON {table} "
        f"WHEN old.search_text IS NOT new.search_text BEGIN "
        f"{guarded(remove_words, 'old')} DELETE FROM {docs} WHERE {match_old}; "
        f"{guarded(add_doc, 'new')} {guarded(add_words, 'new')} END",
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        f"CREATE TABLE {STATE} (name VARCHAR(32) NOT NULL PRIMARY KEY, watermark BIGINT NOT NULL)"
    )
    for table, key, fts in TABLES:
        for suffix in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER {fts}_{suffix}")
        # The same index without its per-message sizes (columnsize=0: ~12 bytes a message;
        # ranks read the word count from the map), rebuilt from the feeds while they exist.
        op.execute(f"DROP TABLE {fts}_vocab")
        op.execute(f"ALTER TABLE {fts} RENAME TO {fts}_old")
        for statement in _fts(fts, ", columnsize=0"):
            op.execute(statement)
        joined = " AND ".join(f"d.{c} = t.{c}" for c in key)
        op.execute(
            f"INSERT INTO {fts} (rowid, search_text) SELECT d.doc_id, t.search_text "
            f"FROM {fts}_docs AS d JOIN {table} AS t ON {joined}"
        )
        op.execute(f"DROP TABLE {fts}_old")
        # Every row below the first one without a feed is in the index (or has no words).
        op.execute(
            f"INSERT INTO {STATE} (name, watermark) SELECT '{table}', coalesce("
            f"(SELECT min(rowid) FROM {table} WHERE search_text IS NULL) - 1, "
            f"(SELECT max(rowid) FROM {table}), 0)"
        )
        # SQLite >= 3.35 drops a column in place (no table copy, rowids kept).
        op.execute(f"ALTER TABLE {table} DROP COLUMN search_text")
    for table, key, fts in TABLES:
        op.execute(_delete_trigger(table, key, fts))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, key, fts in TABLES:
        op.execute(f"DROP TRIGGER {fts}_delete")
        op.execute(f"ALTER TABLE {table} ADD COLUMN search_text TEXT")
        # Revision 0005 reads the column: every row is "not indexed yet", so the index
        # starts empty (with 0005's options) and its back-fill fills it again.
        op.execute(f"DROP TABLE {fts}_vocab")
        op.execute(f"DROP TABLE {fts}")
        for statement in _fts(fts, ""):
            op.execute(statement)
        op.execute(f"DELETE FROM {fts}_docs")
        for statement in _old_triggers(table, key, fts):
            op.execute(statement)
    op.execute(f"DROP TABLE {STATE}")
