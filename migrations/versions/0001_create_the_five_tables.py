"""Create the five tables: users, threads, messages, context_tokens, context_messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from convostore.sql.types import CompressedJSON, UTCDateTime, key_string, long_text

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("agent_name", key_string(128), nullable=False),
        sa.Column("user_id", key_string(255), nullable=False),
        sa.Column("available_balance", sa.BigInteger(), nullable=False),
        sa.Column("current_thread_id", key_string(255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("available_balance >= 0", name=op.f("ck_users_balance_not_negative")),
        sa.PrimaryKeyConstraint("agent_name", "user_id", name=op.f("pk_users")),
    )
    op.create_table(
        "threads",
        sa.Column("agent_name", key_string(128), nullable=False),
        sa.Column("thread_id", key_string(255), nullable=False),
        sa.Column("next_idx", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("agent_name", "thread_id", name=op.f("pk_threads")),
    )
    op.create_table(
        "messages",
        sa.Column("agent_name", key_string(128), nullable=False),
        sa.Column("thread_id", key_string(255), nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", key_string(255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", long_text(), nullable=False),
        sa.Column("content", CompressedJSON(), nullable=False),
        sa.Column("satoshis", sa.BigInteger(), nullable=True),
        sa.Column("extra_inputs", CompressedJSON(), nullable=False),
        sa.Column("extra_outputs", CompressedJSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_name", "thread_id"],
            ["threads.agent_name", "threads.thread_id"],
            name=op.f("fk_messages_agent_name_thread_id_threads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_name", "thread_id", "idx", name=op.f("pk_messages")),
    )
    op.create_index(
        "ix_messages_agent_name_user_id_thread_id",
        "messages",
        ["agent_name", "user_id", "thread_id"],
    )
    op.create_table(
        "context_tokens",
        sa.Column("project", key_string(512), nullable=False),
        sa.Column("session_id", key_string(128), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("next_position", sa.BigInteger(), nullable=False),
        sa.Column("preview", sa.String(length=100), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("project", "session_id", name=op.f("pk_context_tokens")),
    )
    op.create_index(
        "ix_context_tokens_project_created_at", "context_tokens", ["project", "created_at"]
    )
    op.create_table(
        "context_messages",
        sa.Column("project", key_string(512), nullable=False),
        sa.Column("session_id", key_string(128), nullable=False),
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", CompressedJSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project", "session_id"],
            ["context_tokens.project", "context_tokens.session_id"],
            name=op.f("fk_context_messages_project_session_id_context_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "project", "session_id", "position", name=op.f("pk_context_messages")
        ),
    )


def downgrade() -> None:
    op.drop_table("context_messages")
    op.drop_index("ix_context_tokens_project_created_at", table_name="context_tokens")
    op.drop_table("context_tokens")
    op.drop_index("ix_messages_agent_name_user_id_thread_id", table_name="messages")
    op.drop_table("messages")
    op.drop_table("threads")
    op.drop_table("users")
