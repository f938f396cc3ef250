"""What the repositories share: their tables, the columns they read, and row conversion.

Also the bookkeeping of the batch writers (:func:`convostore.sql.repositories.sessions.
append_context_batch`, :func:`convostore.sql.repositories.threads.append_thread_batch`):
items grouped by scope key, and the positions each scope's counter bump reserved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Row,
)

from convostore.errors import SerializationError, ValidationError
from convostore.models import (
    Message,
    StoredContextMessage,
    construct,
)
from convostore.sql.tables import (
    ContextMessageRecord,
    ContextSessionRecord,
    MessageRecord,
    ThreadRecord,
    UserRecord,
    readable_columns,
    table_of,
)

__all__ = ["message_from_row"]

_users = table_of(UserRecord)
_threads = table_of(ThreadRecord)
_messages = table_of(MessageRecord)
_sessions = table_of(ContextSessionRecord)
_context_messages = table_of(ContextMessageRecord)
_MESSAGE_COLUMNS = readable_columns(_messages)


def _group(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[int]]:
    # Item indexes per scope key, keys in sorted (lock) order, items in submission order.
    groups: dict[tuple[str, str], list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return dict(sorted(groups.items()))


def _positions(
    groups: dict[tuple[str, str], list[int]], bumped: dict[tuple[Any, ...], int], count: int
) -> list[int]:
    # Each scope's items take the range its counter bump reserved, in submission order.
    positions = [0] * count
    for key, indexes in groups.items():
        first = bumped[key] - len(indexes)
        for offset, index in enumerate(indexes):
            positions[index] = first + offset
    return positions


_STORED_COLUMNS = (
    _context_messages.c.position,
    _context_messages.c.role,
    _context_messages.c.content,
    _context_messages.c.created_at,
    _context_messages.c.client_id,
)


def _blocks(content: Any) -> list[dict[str, Any]]:
    # Reads skip pydantic validation for speed; this is the part of it that a row written
    # outside convostore could violate while still decoding as JSON.
    if type(content) is not list or any(type(block) is not dict for block in content):
        raise SerializationError("stored content is not a list of content blocks")
    return content


def _stored(row: Any) -> StoredContextMessage:
    position, role, content, created_at, client_id = row
    return construct(
        StoredContextMessage,
        {
            "role": role,
            "content": _blocks(content),
            "position": position,
            "created_at": created_at,
            "client_id": client_id,
        },
    )


def message_from_row(row: Row[Any], agent_name: str | None) -> Message:
    """Build the API model of a ``messages`` row; ``agent_name`` as the caller knows it.

    Raises:
        SerializationError: The stored row decodes to values the model cannot hold (a row
            written or damaged outside convostore).
    """
    try:
        return Message(
            agent_name=agent_name,
            thread_id=row.thread_id,
            user_id=row.user_id,
            idx=row.idx,
            message=row.message,
            content=row.content,
            role=row.role,
            kind=row.kind,
            satoshis=row.satoshis,
            extra_inputs=row.extra_inputs or {},
            extra_outputs=row.extra_outputs or {},
            created_at=row.created_at,
        )
    except ValidationError as exc:
        raise SerializationError(
            f"stored message {row.idx} of thread {row.thread_id!r} is not a valid message: {exc}"
        ) from exc
