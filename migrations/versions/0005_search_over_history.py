"""Search over history: a ``search_text`` column on both message tables, and its index.

The column holds each message's *feed* (its words, normalised: see
:mod:`convostore.search`), written by convostore with the message. Each backend indexes it
with its own full-text search, kept in step by the database in the writing transaction:

* SQLite: a contentless FTS5 table per message table (``context_search``,
  ``message_search``: the index alone, no copy of the text), a small map from the FTS
  row id to the message key and its word count (``*_search_docs``; a message table's own
  rowid is no key: ``VACUUM`` may renumber it), and an ``fts5vocab`` view of the index
  (``*_search_vocab``: each word's occurrences per message, for ranking). Triggers on
  the message tables keep the index and the map in step, on inserts, deletes (cascades
  included) and updates of the column.
* PostgreSQL: the column is a ``tsvector`` (``to_tsvector('simple', feed)``, made as the
  row is written), with a GIN index.
* MySQL/MariaDB: a ``FULLTEXT`` index, created with InnoDB's stopword list off, so every
  word can be found.

Rows written before this revision have ``search_text`` ``NULL`` ("not indexed yet");
``convostore search index`` (:func:`convostore.search_index.backfill`) fills them in
batches. Revision files import only :mod:`convostore.sql.types`, never the models.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TSVECTOR

from convostore.sql.types import long_text, search_text_mysql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (message table, its key columns, the SQLite index's name)
TABLES = (
    ("context_messages", ("project", "session_id", "position"), "context_search"),
    ("messages", ("agent_name", "thread_id", "idx"), "message_search"),
)


def _sqlite_objects(table: str, key: tuple[str, ...], fts: str) -> list[str]:
    docs = f"{fts}_docs"
    columns = ", ".join(key)
    new = ", ".join(f"new.{c}" for c in key)
    match_old = " AND ".join(f"{c} = old.{c}" for c in key)
    indexed = "{row}.search_text IS NOT NULL AND {row}.search_text <> ''"
    # words: the message's word count, the denominator of its rank.
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
        # doc_id is the rowid (an INTEGER PRIMARY KEY): VACUUM keeps it.
        f"CREATE TABLE {docs} (doc_id INTEGER PRIMARY KEY, "
        f"{key[0]} VARCHAR NOT NULL, {key[1]} VARCHAR NOT NULL, {key[2]} BIGINT NOT NULL, "
        "words INTEGER NOT NULL)",
        f"CREATE UNIQUE INDEX ix_{docs}_key ON {docs} ({columns})",
        # Contentless: the index alone. The trigger hands 'delete' the exact words indexed.
        f"CREATE VIRTUAL TABLE {fts} USING fts5(search_text, content='', "
        "tokenize='unicode61 remove_diacritics 0')",
        # Each word's occurrences per message, read from the index (the rank's numerator).
        f"CREATE VIRTUAL TABLE {fts}_vocab USING fts5vocab({fts}, 'instance')",
        f"CREATE TRIGGER {fts}_insert AFTER INSERT ON {table} "
        f"WHEN {indexed.format(row='new')} BEGIN {add} END",
        f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} "
        f"WHEN {indexed.format(row='old')} BEGIN {remove} END",
        # One trigger for updates, so the old words leave before the new ones come in.
        f"CREATE TRIGGER {fts}_update AFTER UPDATE OF search_text ON {table} "
        f"WHEN old.search_text IS NOT new.search_text BEGIN "
        f"{guarded(remove_words, 'old')} DELETE FROM {docs} WHERE {match_old}; "
        f"{guarded(add_doc, 'new')} {guarded(add_words, 'new')} END",
    ]


def upgrade() -> None:
    name = op.get_bind().dialect.name
    if name in ("mysql", "mariadb"):
        # Applies to the FULLTEXT indexes created in this session: no word is a stopword.
        op.execute("SET SESSION innodb_ft_enable_stopword = OFF")
    for table, key, fts in TABLES:
        # PostgreSQL keeps the feed as a tsvector (to_tsvector('simple', feed), made as it is
        # written), so ranking reads the vector instead of parsing text.
        column: sa.types.TypeEngine[str] = long_text()
        if name == "postgresql":
            column = TSVECTOR()
        elif name in ("mysql", "mariadb"):
            column = search_text_mysql()
        op.add_column(table, sa.Column("search_text", column, nullable=True))
        index = f"ix_{table}_search_text"
        if name == "sqlite":
            for statement in _sqlite_objects(table, key, fts):
                op.execute(statement)
        elif name == "postgresql":
            op.create_index(index, table, ["search_text"], postgresql_using="gin")
        elif name in ("mysql", "mariadb"):
            op.create_index(index, table, ["search_text"], mysql_prefix="FULLTEXT")


def downgrade() -> None:
    name = op.get_bind().dialect.name
    for table, _key, fts in TABLES:
        if name == "sqlite":
            for suffix in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER {fts}_{suffix}")
            op.execute(f"DROP TABLE {fts}_vocab")
            op.execute(f"DROP TABLE {fts}")
            op.execute(f"DROP TABLE {fts}_docs")
        else:
            op.drop_index(f"ix_{table}_search_text", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("search_text")
