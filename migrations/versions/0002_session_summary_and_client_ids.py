"""Session and thread summaries, and client message ids.

context_tokens gains updated_at (last activity, backfilled from created_at),
parent_session_id and forked_at; threads gain user_id (the first message's user,
backfilled) with an index for listing a user's threads; context_messages and messages gain
a nullable client_id, unique within its session / thread, so a retried append is stored
once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from convostore.sql.types import UTCDateTime, key_string

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("context_tokens") as batch:
        batch.add_column(sa.Column("updated_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("parent_session_id", key_string(128), nullable=True))
        batch.add_column(sa.Column("forked_at", sa.BigInteger(), nullable=True))
    op.execute("UPDATE context_tokens SET updated_at = created_at")
    with op.batch_alter_table("context_tokens") as batch:
        batch.alter_column("updated_at", existing_type=UTCDateTime(), nullable=False)

    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("user_id", key_string(255), nullable=True))
    op.execute(
        "UPDATE threads SET user_id = (SELECT m.user_id FROM messages m"
        " WHERE m.agent_name = threads.agent_name AND m.thread_id = threads.thread_id"
        " ORDER BY m.idx LIMIT 1)"
    )
    op.create_index(
        "ix_threads_agent_name_user_id_updated_at",
        "threads",
        ["agent_name", "user_id", "updated_at"],
    )

    with op.batch_alter_table("context_messages") as batch:
        batch.add_column(sa.Column("client_id", key_string(128), nullable=True))
    op.create_index(
        "ix_context_messages_project_session_id_client_id",
        "context_messages",
        ["project", "session_id", "client_id"],
        unique=True,
    )

    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("client_id", key_string(128), nullable=True))
    op.create_index(
        "ix_messages_agent_name_thread_id_client_id",
        "messages",
        ["agent_name", "thread_id", "client_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_agent_name_thread_id_client_id", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("client_id")
    op.drop_index("ix_context_messages_project_session_id_client_id", table_name="context_messages")
    with op.batch_alter_table("context_messages") as batch:
        batch.drop_column("client_id")
    op.drop_index("ix_threads_agent_name_user_id_updated_at", table_name="threads")
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("user_id")
    with op.batch_alter_table("context_tokens") as batch:
        batch.drop_column("forked_at")
        batch.drop_column("parent_session_id")
        batch.drop_column("updated_at")
