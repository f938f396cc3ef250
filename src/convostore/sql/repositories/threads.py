"""Agent threads and their messages: the repository of one agent, and
:class:`ThreadAppender`, the one way messages are added to threads."""

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

from convostore.errors import ConflictError
from convostore.models import Message, NewMessage, ThreadInfo
from convostore.sql.counters import appends_in_one_statement, bump_counters, insert_at_counter
from convostore.sql.dml import Executor, insert_rows
from convostore.sql.engine import family
from convostore.sql.group_commit import committer_for
from convostore.sql.repositories.rows import (
    _MESSAGE_COLUMNS,
    _group,
    _messages,
    _positions,
    _threads,
    message_from_row,
)
from convostore.sql.runner import TransactionRunner

__all__ = [
    "ThreadAppend",
    "ThreadAppender",
    "ThreadRepository",
    "append_thread_batch",
    "message_row",
]


class ThreadRepository:
    """Threads of one agent and their messages."""

    def __init__(self, session: Executor, agent_key: str) -> None:
        self._session = session
        self._agent = agent_key

    async def _append_ending(
        self,
        thread_id: str,
        user_id: str,
        rows: Sequence[dict[str, Any]],
        now: datetime,
    ) -> int:
        """Append message rows (without ``idx``) to the thread at the next ``idx`` values.

        The last statement of its transaction (its commit may ride along with it): only
        :class:`ThreadAppender` ends a transaction with it.

        Returns the first ``idx``. A new thread is owned by ``user_id``; its row stays
        write-locked until the transaction ends, so concurrent writers get disjoint,
        gap-free ranges. One statement on PostgreSQL for a single row, one round trip on
        SQLite (:func:`~convostore.sql.counters.insert_at_counter`).
        """
        return await insert_at_counter(
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
            last=True,
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

    As :func:`~convostore.sql.repositories.sessions.append_context_batch`, for agent
    threads: a new thread belongs to the user of its first message, as with
    a single append.
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
    bumped = await bump_counters(
        session,
        _threads,
        counters,
        key=("agent_name", "thread_id"),
        counter="next_idx",
        also_update=_thread_activity,
    )
    indexes_out = _positions(groups, bumped, len(items))
    await insert_rows(
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


class ThreadAppender:
    """The one way messages are added to the threads of one agent, through one runner.

    As :class:`~convostore.sql.repositories.sessions.ContextAppender` for context
    sessions: it owns group commit, the autocommit decision and the commit riding along
    with the last statement.
    """

    def __init__(self, runner: TransactionRunner, agent_key: str, agent_name: str | None) -> None:
        self._runner = runner
        # Whether a single append is one statement, atomic alone: then it runs without
        # BEGIN/COMMIT (the runner still wraps it when PgBouncer pools transactions).
        self._one_statement = appends_in_one_statement(family(runner.engine))
        self._agent = agent_key
        self._agent_name = agent_name

    async def add(self, new: NewMessage, now: datetime) -> Message:
        """Add one message and return it as stored; concurrent calls on one engine are
        committed together, each returning once its message is stored."""
        runner = self._runner
        if runner.bound is not None:
            # A caller's transaction is its own: nothing to share it with.
            (stored,) = await self.add_many(new.thread_id, new.user_id, [new], [None], now)
            return stored
        committer = committer_for(
            runner.engine,
            "thread",
            append_thread_batch,
            _add_one,
            one_autocommit=self._one_statement,
        )
        row = message_row(new, new.user_id, now, None)
        idx = await runner.noting_write(
            committer.submit(ThreadAppend(self._agent, new.thread_id, row))
        )
        return self._stored(new, new.thread_id, new.user_id, idx, now)

    async def add_many(
        self,
        thread_id: str,
        user_id: str,
        news: Sequence[NewMessage],
        client_ids: Sequence[str | None],
        now: datetime,
    ) -> list[Message]:
        """Add messages in one transaction, at consecutive ``idx`` values.

        With ``client_ids`` holding an id, a batch whose first id is already stored in the
        thread is a retry: nothing is written and the stored messages are returned.

        Raises:
            ConflictError: The first id was used by another user in this thread.
        """
        retry_key = next((i for i in client_ids if i is not None), None)

        async def work(executor: Executor) -> list[Message]:
            threads = ThreadRepository(executor, self._agent)
            if retry_key is not None:
                found = await threads.find_client_id(thread_id, retry_key)
                if found is not None:
                    if found.user_id != user_id:
                        raise ConflictError(
                            f"client_id {retry_key!r} was used by another user in this thread"
                        )
                    # A retry: the batch starts where the key's message sits, less its offset.
                    start = found.idx - list(client_ids).index(retry_key)
                    rows = await threads.messages(
                        thread_id,
                        user_id,
                        limit=len(news),
                        before_idx=None,
                        after_idx=start - 1,
                        reverse=False,
                    )
                    return [message_from_row(row, self._agent_name) for row in rows]
            first = await threads._append_ending(
                thread_id,
                user_id,
                [
                    message_row(new, user_id, now, client_id)
                    for new, client_id in zip(news, client_ids, strict=True)
                ],
                now,
            )
            return [
                self._stored(new, thread_id, user_id, first + offset, now)
                for offset, new in enumerate(news)
            ]

        one_statement = len(news) == 1 and self._one_statement
        return await self._runner.run(
            work, autocommit=one_statement, rerun_on_conflict=retry_key is not None
        )

    def _stored(
        self, new: NewMessage, thread_id: str, user_id: str, idx: int, now: datetime
    ) -> Message:
        return Message(
            agent_name=self._agent_name,
            thread_id=thread_id,
            user_id=user_id,
            idx=idx,
            message=new.message,
            content=new.content,
            role=new.role,
            kind=new.kind,
            satoshis=new.satoshis,
            # Decoded from what was written, as get_messages will return them: tuples
            # become lists, and later changes to the caller's objects do not show through.
            extra_inputs=new.encoded_inputs.value(),
            extra_outputs=new.encoded_outputs.value(),
            created_at=now,
        )


def message_row(
    new: NewMessage, user_id: str, now: datetime, client_id: str | None
) -> dict[str, Any]:
    """A ``messages`` row but for its scope (agent, thread) and ``idx``."""
    return {
        "user_id": user_id,
        "role": new.role,
        "kind": new.kind,
        "message": new.message,
        "content": new.encoded_content,
        "satoshis": new.satoshis,
        "extra_inputs": new.encoded_inputs,
        "extra_outputs": new.encoded_outputs,
        "created_at": now,
        "client_id": client_id,
        **({} if new.search_text is None else {"search_text": new.search_text}),
    }


async def _add_one(executor: Executor, item: ThreadAppend) -> int:
    # A group commit's write of one message, alone in its transaction.
    repo = ThreadRepository(executor, item.agent_name)
    return await repo._append_ending(
        item.thread_id, item.row["user_id"], [item.row], item.row["created_at"]
    )


def _thread_activity(new: Any) -> dict[str, Any]:
    return {"updated_at": new.updated_at}
