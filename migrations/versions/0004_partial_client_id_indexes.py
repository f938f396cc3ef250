"""Client message ids indexed only where there is one (SQLite, PostgreSQL).

Most messages have no client id, yet the unique indexes of revision 0002 held an entry for
every row: about 40 of the ~640 bytes an SQLite database spends per message. Rebuilt as
partial indexes (``WHERE client_id IS NOT NULL``), they keep the same uniqueness (NULLs
never conflicted) and still serve every lookup, which always names a client id.
MySQL/MariaDB have no partial indexes, so their indexes stay as they are.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    (
        "ix_context_messages_project_session_id_client_id",
        "context_messages",
        "project",
        "session_id",
    ),
    ("ix_messages_agent_name_thread_id_client_id", "messages", "agent_name", "thread_id"),
)


def _rebuild(*, partial: bool) -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        return
    where = sa.text("client_id IS NOT NULL") if partial else None
    for name, table, scope, thread in INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(
            name,
            table,
            [scope, thread, "client_id"],
            unique=True,
            sqlite_where=where,
            postgresql_where=where,
        )


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
