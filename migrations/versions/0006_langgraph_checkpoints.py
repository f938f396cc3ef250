"""LangGraph checkpoints: checkpoints, channel values per version, and pending writes.

langgraph_checkpoints holds one row per checkpoint of a (thread_id, checkpoint_ns), keyed
by LangGraph's own checkpoint id (a UUIDv6, which sorts in creation order: LangGraph's
savers order by it, and copies keep it); ``run_id`` is the metadata's run id in its own
column, for ``delete_for_runs``, and ``created_at`` when it was stored (for retention:
``convostore prune``). langgraph_checkpoint_blobs holds each channel's value once
per version (a checkpoint names the versions it reads in its ``channel_versions``), so a
step stores only the channels it changed. langgraph_checkpoint_writes holds the pending
writes of a checkpoint's tasks. Payloads are LangGraph's serializer output inside
``CompressedJSON`` (compressed, and encrypted on an engine with a keyring).

The scope (thread_id, checkpoint_ns) leads every key. The longest key, of the blobs,
is 128 + 255 + 200 + 64 characters: 2588 bytes in utf8mb4, under MySQL/MariaDB's 3072.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from convostore.sql.types import CompressedJSON, UTCDateTime, key_string

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "langgraph_checkpoints",
        sa.Column("thread_id", key_string(128), nullable=False),
        sa.Column("checkpoint_ns", key_string(255), nullable=False),
        sa.Column("checkpoint_id", key_string(64), nullable=False),
        sa.Column("parent_checkpoint_id", key_string(64), nullable=True),
        sa.Column("run_id", key_string(128), nullable=True),
        sa.Column("checkpoint", CompressedJSON(), nullable=False),
        sa.Column("checkpoint_metadata", CompressedJSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "checkpoint_id", name=op.f("pk_langgraph_checkpoints")
        ),
    )
    op.create_table(
        "langgraph_checkpoint_blobs",
        sa.Column("thread_id", key_string(128), nullable=False),
        sa.Column("checkpoint_ns", key_string(255), nullable=False),
        sa.Column("channel", key_string(200), nullable=False),
        sa.Column("version", key_string(64), nullable=False),
        sa.Column("value", CompressedJSON(), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id",
            "checkpoint_ns",
            "channel",
            "version",
            name=op.f("pk_langgraph_checkpoint_blobs"),
        ),
    )
    op.create_table(
        "langgraph_checkpoint_writes",
        sa.Column("thread_id", key_string(128), nullable=False),
        sa.Column("checkpoint_ns", key_string(255), nullable=False),
        sa.Column("checkpoint_id", key_string(64), nullable=False),
        sa.Column("task_id", key_string(128), nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("channel", key_string(200), nullable=False),
        sa.Column("task_path", key_string(1024), nullable=False),
        sa.Column("value", CompressedJSON(), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id",
            "checkpoint_ns",
            "checkpoint_id",
            "task_id",
            "idx",
            name=op.f("pk_langgraph_checkpoint_writes"),
        ),
    )


def downgrade() -> None:
    op.drop_table("langgraph_checkpoint_writes")
    op.drop_table("langgraph_checkpoint_blobs")
    op.drop_table("langgraph_checkpoints")
