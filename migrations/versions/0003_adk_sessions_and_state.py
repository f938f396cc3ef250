"""Google ADK sessions: sessions, events, and app- and user-scoped state.

adk_sessions (app_name, user_id, session_id) holds a session's own state and the counter
that orders its events; adk_events holds each event at a gap-free position, unique by
event id within its session, with the event's own timestamp in a column;
adk_app_states and adk_user_states hold ADK's ``app:`` and ``user:`` state. Every key is
at most 4 x 128 characters, 2048 bytes in utf8mb4: under MySQL/MariaDB's 3072-byte limit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from convostore.sql.types import CompressedJSON, UTCDateTime, key_string

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "adk_sessions",
        sa.Column("app_name", key_string(128), nullable=False),
        sa.Column("user_id", key_string(128), nullable=False),
        sa.Column("session_id", key_string(128), nullable=False),
        sa.Column("state", CompressedJSON(), nullable=False),
        sa.Column("next_position", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_name", "user_id", "session_id", name=op.f("pk_adk_sessions")),
    )
    op.create_index(
        "ix_adk_sessions_app_name_updated_at",
        "adk_sessions",
        ["app_name", "updated_at", "user_id", "session_id"],
    )
    op.create_index(
        "ix_adk_sessions_app_name_user_id_updated_at",
        "adk_sessions",
        ["app_name", "user_id", "updated_at", "session_id"],
    )
    op.create_table(
        "adk_events",
        sa.Column("app_name", key_string(128), nullable=False),
        sa.Column("user_id", key_string(128), nullable=False),
        sa.Column("session_id", key_string(128), nullable=False),
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", key_string(128), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("event", CompressedJSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_name", "user_id", "session_id"],
            ["adk_sessions.app_name", "adk_sessions.user_id", "adk_sessions.session_id"],
            name=op.f("fk_adk_events_app_name_user_id_session_id_adk_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "app_name", "user_id", "session_id", "position", name=op.f("pk_adk_events")
        ),
    )
    op.create_index(
        "ix_adk_events_app_name_user_id_session_id_event_id",
        "adk_events",
        ["app_name", "user_id", "session_id", "event_id"],
        unique=True,
    )
    op.create_table(
        "adk_app_states",
        sa.Column("app_name", key_string(128), nullable=False),
        sa.Column("state", CompressedJSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_name", name=op.f("pk_adk_app_states")),
    )
    op.create_table(
        "adk_user_states",
        sa.Column("app_name", key_string(128), nullable=False),
        sa.Column("user_id", key_string(128), nullable=False),
        sa.Column("state", CompressedJSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("app_name", "user_id", name=op.f("pk_adk_user_states")),
    )


def downgrade() -> None:
    op.drop_table("adk_user_states")
    op.drop_table("adk_app_states")
    op.drop_index("ix_adk_events_app_name_user_id_session_id_event_id", table_name="adk_events")
    op.drop_table("adk_events")
    op.drop_index("ix_adk_sessions_app_name_user_id_updated_at", table_name="adk_sessions")
    op.drop_index("ix_adk_sessions_app_name_updated_at", table_name="adk_sessions")
    op.drop_table("adk_sessions")
