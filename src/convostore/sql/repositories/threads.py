"""Agent threads and their messages: the repository of one agent, and the batch writer of
``add_message`` calls to any threads (the statements of a group commit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Row,
    literal,
    or_,
    select,
)

from convostore.models import (
    ThreadInfo,
)
from convostore.sql import dialects
from convostore.sql.dialects import Executor
from convostore.sql.repositories.rows import (
    _MESSAGE_COLUMNS,
    _group,
    _messages,
    _positions,
    _threads,
)

__all__ = ["ThreadAppend", "ThreadRepository", "append_thread_batch"]


class ThreadRepository:
    """Threads of one agent and their messages."""

    def __init__(self, session: Executor, agent_key: str) -> None:
        self._session = session
        self._agent = agent_key

    async def append(
        self,
        thread_id: str,
        user_id: str,
        rows: Sequence[dict[str, Any]],
        now: datetime,
        *,
        last: bool = False,
    ) -> int:
        """Append message rows (without ``idx``) to the thread at the next ``idx`` values.

        Returns the first ``idx``. A new thread is owned by ``user_id``; its row stays
        write-locked until the transaction ends, so concurrent writers get disjoint,
        gap-free ranges. One statement on PostgreSQL for a single row, one round trip on
        SQLite (:func:`dialects.insert_at_counter`). ``last``: nothing follows in this
        transaction, so its commit may ride along.
        """
        return await dialects.insert_at_counter(
            self._session,
            _threads,
            {"agent_name": self._agent, "thread_id": thread_id},
            counter="next_idx",
            insert_values={"created_at": now, "updated_at": now, "user_id": user_id},
            also_update=_thread_activity,
            target=_messages,
            position="idx",
            rows=[
                {"client_id": None, **row, "agent_name": self._agent, "thread_id": thread_id}
                for row in rows
            ],
            last=last,
        )

    async def find_client_id(self, thread_id: str, client_id: str) -> Row[Any] | None:
        """The message row added to the thread with ``client_id``, if any."""
        m = _messages.c
        stmt = select(*_MESSAGE_COLUMNS).where(
            m.agent_name == self._agent, m.thread_id == thread_id, m.client_id == client_id
        )
        return (await self._session.execute(stmt)).one_or_none()

    async def threads_of(
        self, user_id: str, *, limit: int | None, before: ThreadInfo | None
    ) -> list[ThreadInfo]:
        """The user's threads (by first message), most recently active first; keyset pages."""
        t = _threads.c
        stmt = select(t.thread_id, t.user_id, t.next_idx, t.created_at, t.updated_at).where(
            t.agent_name == self._agent, t.user_id == user_id
        )
        if before is not None:
            at = literal(before.updated_at, t.updated_at.type)
            # As in SessionRepository.list_project: the redundant bound makes an index range.
            stmt = stmt.where(
                t.updated_at <= at, or_(t.updated_at < at, t.thread_id < before.thread_id)
            )
        stmt = stmt.order_by(t.updated_at.desc(), t.thread_id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        return [
            ThreadInfo(
                thread_id=row.thread_id,
                user_id=row.user_id,
                message_count=row.next_idx,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in (await self._session.execute(stmt)).all()
        ]

    async def messages(
        self,
        thread_id: str,
        user_id: str,
        *,
        limit: int | None,
        before_idx: int | None,
        after_idx: int | None,
        reverse: bool,
    ) -> list[Row[Any]]:
        """Message rows of one thread and user, ordered by ``idx``."""
        m = _messages.c
        stmt = select(*_MESSAGE_COLUMNS).where(
            m.agent_name == self._agent, m.thread_id == thread_id, m.user_id == user_id
        )
        if after_idx is not None:
            stmt = stmt.where(m.idx > after_idx)
        if before_idx is not None:
            stmt = stmt.where(m.idx < before_idx)
        stmt = stmt.order_by(m.idx.desc() if reverse else m.idx)
        if limit is not None:
            stmt = stmt.limit(limit)
        return list((await self._session.execute(stmt)).all())


@dataclass(frozen=True, slots=True)
class ThreadAppend:
    """One message of a batch of ``add_message`` calls to any threads of any agents."""

    agent_name: str
    thread_id: str
    row: dict[str, Any]  # the message's columns but its scope and idx


async def append_thread_batch(session: Executor, items: Sequence[ThreadAppend]) -> list[int]:
    """Add messages to their threads in one transaction; return each one's ``idx``.

    As :func:`append_context_batch`, for agent threads: a new thread belongs to the user of
    its first message, as with :meth:`ThreadRepository.append`.
    """
    groups = _group([(item.agent_name, item.thread_id) for item in items])
    counters = []
    for (agent_name, thread_id), indexes in groups.items():
        mine = [items[i] for i in indexes]
        counters.append(
            {
                "agent_name": agent_name,
                "thread_id": thread_id,
                "next_idx": len(mine),
                "created_at": mine[0].row["created_at"],
                "updated_at": max(m.row["created_at"] for m in mine),
                "user_id": mine[0].row["user_id"],
            }
        )
    bumped = await dialects.bump_counters(
        session,
        _threads,
        counters,
        key=("agent_name", "thread_id"),
        counter="next_idx",
        also_update=_thread_activity,
    )
    indexes_out = _positions(groups, bumped, len(items))
    await dialects.insert_rows(
        session,
        _messages,
        [
            {
                "client_id": None,
                **item.row,
                "agent_name": item.agent_name,
                "thread_id": item.thread_id,
                "idx": idx,
            }
            for item, idx in zip(items, indexes_out, strict=True)
        ],
        last=True,
    )
    return indexes_out


def _thread_activity(new: Any) -> dict[str, Any]:
    return {"updated_at": new.updated_at}
