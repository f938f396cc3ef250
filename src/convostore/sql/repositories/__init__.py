"""Repositories: the SQL of each aggregate, over an ``AsyncSession`` they never commit.

They run their statements on a :data:`~convostore.sql.dialects.Executor`: the caller's
``AsyncSession`` in a unit of work, or the ``AsyncConnection`` of a transaction a façade owns
(cheaper than a session for one short call; they need nothing but ``execute()``).

Each repository is built for one scope (an agent, or a project + session) and puts that
scope's key into every statement it issues, so no method can touch another tenant's rows.
They may flush; commit, rollback and close belong to the caller (the façades in
:mod:`convostore.database` and :mod:`convostore.context`, or the user's unit of work).

Hot paths use Core statements, built once, through the session rather than ORM
unit-of-work flushes: an append is one counter bump plus one ``INSERT`` (a single
statement on PostgreSQL, see :func:`convostore.sql.dialects.insert_at_counter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Row,
    Select,
    Table,
    and_,
    case,
    delete,
    insert,
    literal,
    null,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql.functions import coalesce

from convostore import search
from convostore.codec import Encoded
from convostore.errors import SerializationError, ValidationError
from convostore.models import (
    NO_PREVIEW,
    ContextMessage,
    ContextSearchHit,
    Message,
    MessageSearchHit,
    SessionInfo,
    StoredContextMessage,
    ThreadInfo,
    User,
    construct,
)
from convostore.sql import dialects
from convostore.sql.dialects import Executor
from convostore.sql.tables import (
    ContextMessageRecord,
    ContextSessionRecord,
    MessageRecord,
    ThreadRecord,
    UserRecord,
    readable_columns,
)

__all__ = [
    "NO_PREVIEW",
    "ContextAppend",
    "SessionRepository",
    "ThreadAppend",
    "ThreadRepository",
    "UserRepository",
    "append_context_batch",
    "append_thread_batch",
    "search_context",
    "search_messages",
]

_users: Table = UserRecord.__table__  # type: ignore[assignment]
_threads: Table = ThreadRecord.__table__  # type: ignore[assignment]
_messages: Table = MessageRecord.__table__  # type: ignore[assignment]
_sessions: Table = ContextSessionRecord.__table__  # type: ignore[assignment]
_context_messages: Table = ContextMessageRecord.__table__  # type: ignore[assignment]
_MESSAGE_COLUMNS = readable_columns(_messages)


class UserRepository:
    """Users of one agent."""

    def __init__(self, session: Executor, agent_key: str) -> None:
        self._session = session
        self._agent = agent_key
        self._kind = dialects.family_of(session)

    def _key(self, user_id: str) -> tuple[Any, ...]:
        return (_users.c.agent_name == self._agent, _users.c.user_id == user_id)

    async def get(self, user_id: str) -> User | None:
        """The stored user, or ``None``."""
        stmt = select(_users.c.available_balance, _users.c.current_thread_id).where(
            *self._key(user_id)
        )
        row = (await self._session.execute(stmt)).one_or_none()
        if row is None:
            return None
        return User(
            user_id=user_id, available_balance=row.available_balance, current_thread_id=row[1]
        )

    async def upsert(self, user: User, now: datetime) -> None:
        """Create the user or overwrite its balance and current thread (agentstr's semantics)."""
        values = {
            "agent_name": self._agent,
            "user_id": user.user_id,
            "available_balance": user.available_balance,
            "current_thread_id": user.current_thread_id,
            "created_at": now,
            "updated_at": now,
        }
        stmt = dialects.upsert(
            self._kind,
            _users,
            values,
            key=["agent_name", "user_id"],
            update=lambda new: {
                "available_balance": new.available_balance,
                "current_thread_id": new.current_thread_id,
                "updated_at": new.updated_at,
            },
        )
        await self._session.execute(stmt)

    async def set_current_thread(self, user_id: str, thread_id: str | None, now: datetime) -> None:
        """Set the user's current thread, creating the user with a zero balance if needed."""
        values = {
            "agent_name": self._agent,
            "user_id": user_id,
            "available_balance": 0,
            "current_thread_id": thread_id,
            "created_at": now,
            "updated_at": now,
        }
        stmt = dialects.upsert(
            self._kind,
            _users,
            values,
            key=["agent_name", "user_id"],
            update=lambda new: {
                "current_thread_id": new.current_thread_id,
                "updated_at": new.updated_at,
            },
        )
        await self._session.execute(stmt)

    async def credit(self, user_id: str, amount: int, now: datetime, *, last: bool = False) -> int:
        """Add ``amount`` to the balance in one atomic statement; return the new balance.

        ``last``: nothing follows in this transaction, so its commit may ride along.
        """
        return await dialects.bump_counter(
            self._session,
            _users,
            {"agent_name": self._agent, "user_id": user_id},
            counter="available_balance",
            n=amount,
            insert_values={"current_thread_id": None, "created_at": now, "updated_at": now},
            also_update=lambda new: {"updated_at": new.updated_at},
            last=last,
        )

    async def debit(self, user_id: str, amount: int, now: datetime) -> bool:
        """Subtract ``amount`` if the balance covers it, in one atomic statement.

        Returns:
            Whether the balance was debited; ``False`` changes nothing.
        """
        stmt = (
            update(_users)
            .where(*self._key(user_id), _users.c.available_balance >= amount)
            .values(available_balance=_users.c.available_balance - amount, updated_at=now)
        )
        result = await self._session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]


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


class SessionRepository:
    """One context-store session (project + session id): its state row and messages."""

    def __init__(self, session: Executor, project: str, session_id: str) -> None:
        self._session = session
        self._project = project
        self._session_id = session_id
        self._kind = dialects.family_of(session)

    def _state_key(self) -> tuple[Any, ...]:
        return (_sessions.c.project == self._project, _sessions.c.session_id == self._session_id)

    def _messages_key(self) -> tuple[Any, ...]:
        c = _context_messages.c
        return (c.project == self._project, c.session_id == self._session_id)

    async def append(
        self,
        rows: Sequence[tuple[str, Encoded]],
        now: datetime,
        preview: str | None,
        client_ids: Sequence[str | None],
        *,
        last: bool = False,
    ) -> int:
        """Append ``(role, encoded content)`` rows at the next positions; return the first.

        ``preview`` is kept only if the session has none yet: pass the preview of the first
        user message among the new ones, or ``None``. The session row is created on first
        use and stays write-locked until the transaction ends, so concurrent writers get
        disjoint, gap-free ranges. One statement on PostgreSQL for a single row, one round
        trip on SQLite (:func:`dialects.insert_at_counter`). ``last``: nothing follows in
        this transaction, so its commit may ride along.
        """
        return await dialects.insert_at_counter(
            self._session,
            _sessions,
            {"project": self._project, "session_id": self._session_id},
            counter="next_position",
            insert_values={
                "input_tokens": 0,
                "output_tokens": 0,
                "preview": preview,
                "created_at": now,
                "updated_at": now,
                "parent_session_id": None,
                "forked_at": None,
            },
            also_update=_session_activity,
            target=_context_messages,
            position="position",
            rows=[
                {
                    "project": self._project,
                    "session_id": self._session_id,
                    "role": role,
                    "content": content,
                    "created_at": now,
                    "client_id": client_id,
                    "search_text": content.search_text,
                }
                for (role, content), client_id in zip(rows, client_ids, strict=True)
            ],
            last=last,
        )

    async def find_client_id(self, client_id: str) -> StoredContextMessage | None:
        """The message appended with ``client_id``, if any."""
        c = _context_messages.c
        stmt = select(*_STORED_COLUMNS).where(*self._messages_key(), c.client_id == client_id)
        row = (await self._session.execute(stmt)).one_or_none()
        return None if row is None else _stored(row)

    async def window(
        self,
        *,
        after: int | None,
        before: int | None,
        limit: int | None,
        newest_first: bool,
    ) -> list[StoredContextMessage]:
        """Messages with ``after < position < before``, by position, at most ``limit``.

        A keyset read on the primary key: its cost grows with the window, not the session.
        ``newest_first`` takes the window from the end (the latest ``limit`` messages
        before ``before``) and returns it newest first.
        """
        c = _context_messages.c
        stmt = select(*_STORED_COLUMNS).where(*self._messages_key())
        if after is not None:
            stmt = stmt.where(c.position > after)
        if before is not None:
            stmt = stmt.where(c.position < before)
        stmt = stmt.order_by(c.position.desc() if newest_first else c.position)
        if limit is not None:
            stmt = stmt.limit(limit)
        return [_stored(row) for row in (await self._session.execute(stmt)).all()]

    async def history(self) -> list[ContextMessage]:
        """All messages in position order."""
        c = _context_messages.c
        stmt = select(c.role, c.content).where(*self._messages_key()).order_by(c.position)
        rows = (await self._session.execute(stmt)).all()
        return [
            construct(ContextMessage, {"role": role, "content": _blocks(content)})
            for role, content in rows
        ]

    async def last(self, count: int) -> list[ContextMessage]:
        """The last ``count`` messages, in position order."""
        c = _context_messages.c
        stmt = (
            select(c.role, c.content)
            .where(*self._messages_key())
            .order_by(c.position.desc())
            .limit(count)
        )
        rows = (await self._session.execute(stmt)).all()
        return [
            construct(ContextMessage, {"role": role, "content": _blocks(content)})
            for role, content in reversed(rows)
        ]

    async def replace(
        self, rows: Sequence[tuple[str, Encoded]], now: datetime, preview: str | None
    ) -> None:
        """Make ``rows`` the whole history, at positions 0, 1, ...; tokens are kept.

        The state row is written first, so it is locked before the messages are touched:
        the same order as an append, which keeps concurrent writers from deadlocking.
        """
        await self._session.execute(
            update(_sessions).where(*self._state_key()).values(next_position=0, preview=None)
        )
        await self._session.execute(delete(_context_messages).where(*self._messages_key()))
        if rows:
            await self.append(rows, now, preview, [None] * len(rows), last=True)

    async def pop_last(self) -> ContextMessage | None:
        """Remove the last message and return it, or ``None`` if there is none.

        Positions are gap-free, so the last message sits at ``next_position - 1``. The
        counter is decremented first: that write locks the state row (the database, on
        SQLite), so two concurrent pops take different messages and a concurrent append
        waits and then lands right after what remains.
        """
        s = _sessions.c
        result = await self._session.execute(
            update(_sessions)
            .where(*self._state_key(), s.next_position > 0)
            .values(next_position=s.next_position - 1)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
        # A locking read: on MySQL/MariaDB a plain SELECT could see an older snapshot.
        position = (
            await self._session.execute(
                select(s.next_position).where(*self._state_key()).with_for_update()
            )
        ).scalar_one()
        c = _context_messages.c
        at = (*self._messages_key(), c.position == position)
        row = (await self._session.execute(select(c.role, c.content).where(*at))).one()
        await self._session.execute(delete(_context_messages).where(*at))
        return ContextMessage.model_construct(role=row.role, content=_blocks(row.content))

    async def tokens(self) -> tuple[int, int]:
        """``(input, output)`` token totals; ``(0, 0)`` for an unknown session."""
        stmt = select(_sessions.c.input_tokens, _sessions.c.output_tokens).where(*self._state_key())
        row = (await self._session.execute(stmt)).one_or_none()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def set_tokens(self, input_tokens: int, output_tokens: int, now: datetime) -> None:
        """Overwrite the token totals."""
        await self._tokens_upsert("set", input_tokens, output_tokens, now)

    async def add_tokens(self, input_tokens: int, output_tokens: int, now: datetime) -> None:
        """Add to the token totals in one atomic statement."""
        await self._tokens_upsert("add", input_tokens, output_tokens, now)

    async def _tokens_upsert(
        self, how: str, input_tokens: int, output_tokens: int, now: datetime
    ) -> None:
        kind = self._kind

        def build() -> Any:
            c = _sessions.c

            def assignments(new: Any) -> dict[str, Any]:
                if how == "set":
                    return {"input_tokens": new.input_tokens, "output_tokens": new.output_tokens}
                return {
                    "input_tokens": c.input_tokens + new.input_tokens,
                    "output_tokens": c.output_tokens + new.output_tokens,
                }

            values = dialects.params_for(_sessions, _SESSION_COLUMNS)
            stmt = dialects.upsert(
                kind, _sessions, values, key=["project", "session_id"], update=assignments
            )
            # Read the totals back where the dialect can, to refuse an overflow SQLite
            # would otherwise store as a REAL (servers raise on their own).
            return stmt if kind == "mysql" else stmt.returning(c.input_tokens, c.output_tokens)

        params = {
            "project": self._project,
            "session_id": self._session_id,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "next_position": 0,
            "preview": None,
            "created_at": now,
            "updated_at": now,
            "parent_session_id": None,
            "forked_at": None,
        }
        result = await self._session.execute(dialects.cached((kind, "tokens", how), build), params)
        if kind != "mysql":
            totals = result.one()
            dialects.checked_counter(totals[0], "context_tokens", "input_tokens")
            dialects.checked_counter(totals[1], "context_tokens", "output_tokens")

    async def delete(self) -> None:
        """Remove the session's messages and state (tokens, counter, preview).

        The state row goes first: like an append or a pop, this locks it before touching
        any message, so concurrent writers always take locks in the same order.
        """
        await self._session.execute(delete(_sessions).where(*self._state_key()))
        await self._session.execute(delete(_context_messages).where(*self._messages_key()))

    async def copy_to(self, new_session_id: str, now: datetime, *, at: int | None = None) -> None:
        """Copy state and messages into ``new_session_id`` of the same project, server-side.

        With ``at``, only the messages before position ``at`` are copied (a branch from an
        earlier point). The copy records this session as its parent and how many messages
        it took (``forked_at``); token totals are copied as they are.
        """
        s = _sessions.c
        # Lock the source's state row first (PostgreSQL, MySQL/MariaDB) so no append lands
        # between copying the counter and copying the messages. On SQLite the INSERT below
        # takes the database write lock before it reads, which gives the same guarantee.
        await self._session.execute(
            select(s.next_position).where(*self._state_key()).with_for_update()
        )
        copied: Any = s.next_position
        if at is not None:
            copied = case((s.next_position > at, literal(at, BigInteger())), else_=s.next_position)
        await self._session.execute(
            insert(_sessions).from_select(
                [*_SESSION_COLUMNS],
                select(
                    s.project,
                    literal(new_session_id, s.session_id.type),
                    s.input_tokens,
                    s.output_tokens,
                    copied,
                    s.preview if at is None else null(),
                    literal(now, s.created_at.type),
                    literal(now, s.updated_at.type),
                    literal(self._session_id, s.parent_session_id.type),
                    copied,
                ).where(*self._state_key()),
            )
        )
        c = _context_messages.c
        columns = [
            "project",
            "session_id",
            "position",
            "role",
            "content",
            "created_at",
            "client_id",
            "search_text",
        ]
        source = select(
            c.project,
            literal(new_session_id, c.session_id.type),
            c.position,
            c.role,
            c.content,
            c.created_at,
            c.client_id,
            c.search_text,
        ).where(*self._messages_key())
        if at is not None:
            source = source.where(c.position < at)
        await self._session.execute(insert(_context_messages).from_select(columns, source))
        if at is not None:
            await self._recompute_preview(new_session_id)

    async def _recompute_preview(self, session_id: str) -> None:
        c = _context_messages.c
        first_user = (
            select(c.content)
            .where(c.project == self._project, c.session_id == session_id, c.role == "user")
            .order_by(c.position)
            .limit(1)
        )
        content = (await self._session.execute(first_user)).scalar_one_or_none()
        if content is None:
            return
        preview = ContextMessage.model_construct(role="user", content=_blocks(content)).preview()
        await self._session.execute(
            update(_sessions)
            .where(_sessions.c.project == self._project, _sessions.c.session_id == session_id)
            .values(preview=preview)
        )

    async def list_project(
        self, *, limit: int | None = None, before: SessionInfo | None = None
    ) -> list[SessionInfo]:
        """Sessions of this repository's project that hold messages, newest first.

        A keyset page: ``before`` is the last session of the previous page, and the cost
        grows with ``limit``, not with the number of sessions or messages.
        """
        s = _sessions.c
        stmt = select(
            s.session_id,
            s.next_position,
            s.preview,
            s.created_at,
            s.updated_at,
            s.input_tokens,
            s.output_tokens,
            s.parent_session_id,
            s.forked_at,
        ).where(s.project == self._project, s.next_position > 0)
        if before is not None:
            at = literal(before.created_at, s.created_at.type)
            # The first condition is implied by the second; it is there so SQLite and
            # PostgreSQL bound the index range with it (EXPLAIN: tests/backends/
            # test_query_plans.py), instead of filtering every row of the earlier pages.
            stmt = stmt.where(
                s.created_at <= at,
                or_(s.created_at < at, s.session_id < before.session_id),
            )
        stmt = stmt.order_by(s.created_at.desc(), s.session_id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        return [
            construct(
                SessionInfo,
                {
                    "session_id": session_id,
                    "message_count": count,
                    "preview": NO_PREVIEW if preview is None else preview,
                    "created_at": created_at,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "updated_at": updated_at,
                    "parent_session_id": parent,
                    "forked_at": forked_at,
                },
            )
            for (
                session_id,
                count,
                preview,
                created_at,
                updated_at,
                input_tokens,
                output_tokens,
                parent,
                forked_at,
            ) in (await self._session.execute(stmt)).all()
        ]


@dataclass(frozen=True, slots=True)
class ContextAppend:
    """One message of a batch of appends to any sessions; it carries its own scope key."""

    project: str
    session_id: str
    role: str
    content: Encoded
    created_at: datetime
    preview: str | None


@dataclass(frozen=True, slots=True)
class ThreadAppend:
    """One message of a batch of ``add_message`` calls to any threads of any agents."""

    agent_name: str
    thread_id: str
    row: dict[str, Any]  # the message's columns but its scope and idx


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


async def append_context_batch(session: Executor, items: Sequence[ContextAppend]) -> list[int]:
    """Append messages to their sessions in one transaction; return each one's position.

    One counter bump for all the sessions (each by its number of messages, in key order)
    and one ``INSERT`` for all the messages: the statements of a group commit
    (:mod:`convostore.sql.group_commit`). Each session's messages get consecutive positions
    in the order given; its preview is kept if it has one, else set from the first of its
    messages that has one, as :meth:`SessionRepository.append` does.
    """
    groups = _group([(item.project, item.session_id) for item in items])
    counters = []
    for (project, session_id), indexes in groups.items():
        mine = [items[i] for i in indexes]
        counters.append(
            {
                "project": project,
                "session_id": session_id,
                "input_tokens": 0,
                "output_tokens": 0,
                "next_position": len(mine),
                "preview": next((m.preview for m in mine if m.preview is not None), None),
                "created_at": mine[0].created_at,
                "updated_at": max(m.created_at for m in mine),
                "parent_session_id": None,
                "forked_at": None,
            }
        )
    bumped = await dialects.bump_counters(
        session,
        _sessions,
        counters,
        key=("project", "session_id"),
        counter="next_position",
        also_update=_session_activity,
    )
    positions = _positions(groups, bumped, len(items))
    await dialects.insert_rows(
        session,
        _context_messages,
        [
            {
                "project": item.project,
                "session_id": item.session_id,
                "position": position,
                "role": item.role,
                "content": item.content,
                "created_at": item.created_at,
                "client_id": None,
                "search_text": item.content.search_text,
            }
            for item, position in zip(items, positions, strict=True)
        ],
        last=True,
    )
    return positions


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


# A search cursor: the last hit's rank, then its key but the scope (session or thread, and
# position), which orders hits of equal rank.
Cursor = tuple[int, tuple[str, int]]


async def search_context(
    session: Executor,
    project: str,
    query: search.Query,
    *,
    session_id: str | None,
    limit: int,
    before: ContextSearchHit | None,
) -> list[ContextSearchHit]:
    """The project's messages (or one session's) matching ``query``, best first.

    Keyset pages: ``before`` is the last hit of the previous page; hits tie on rank are
    ordered by session and position.
    """
    scope = {"project": project}
    if session_id is not None:
        scope["session_id"] = session_id
    cursor = None if before is None else (before.rank, (before.session_id, before.message.position))
    rows = await _search(session, _context_messages, query, scope, {}, limit, cursor)
    hits = []
    for row in rows:
        stored = _stored((row.position, row.role, row.content, row.created_at, row.client_id))
        found = search.snippet(search.context_text(stored.content), query.terms)
        hits.append(
            construct(
                ContextSearchHit,
                {
                    "session_id": row.session_id,
                    "message": stored,
                    "snippet": found.text,
                    "highlights": list(found.highlights),
                    "rank": row.rank,
                },
            )
        )
    return hits


async def search_messages(
    session: Executor,
    agent_key: str,
    agent_name: str | None,
    query: search.Query,
    *,
    user_id: str | None,
    thread_id: str | None,
    limit: int,
    before: MessageSearchHit | None,
) -> list[MessageSearchHit]:
    """The agent's messages (or one user's, or one thread's) matching ``query``, best first.

    Keyset pages as :func:`search_context`; ties on rank are ordered by thread and ``idx``.
    """
    scope: dict[str, Any] = {"agent_name": agent_key}
    if thread_id is not None:
        scope["thread_id"] = thread_id
    cursor = (
        None if before is None else (before.rank, (before.message.thread_id, before.message.idx))
    )
    filters = {} if user_id is None else {"user_id": user_id}
    rows = await _search(session, _messages, query, scope, filters, limit, cursor)
    hits = []
    for row in rows:
        message = message_from_row(row, agent_name)
        found = search.snippet(search.message_text(message.message, message.content), query.terms)
        hits.append(
            MessageSearchHit(
                message=message,
                snippet=found.text,
                highlights=list(found.highlights),
                rank=row.rank,
            )
        )
    return hits


async def _search(
    session: Executor,
    target: Table,
    query: search.Query,
    scope: dict[str, Any],
    filters: dict[str, Any],
    limit: int,
    cursor: Cursor | None,
) -> list[Row[Any]]:
    kind = dialects.family_of(session)
    # (scope, session or thread, position): the primary key of both message tables.
    key = tuple(column.name for column in target.primary_key.columns)
    matches = dialects.text_matches(kind, target, key, query.indexed_terms(), scope).subquery(
        "matches"
    )
    _, thread_column, position_column = key

    def same_key(table: Any, other: Any) -> Any:
        return and_(*(table.c[name] == other.c[name] for name in key))

    # The page's keys and ranks first, so only its rows are read in full (their payloads).
    rank = matches.c.rank
    order = (rank.desc(), matches.c[thread_column], matches.c[position_column])
    top: Select[Any] = select(matches)
    if filters:
        top = top.join(target, same_key(target, matches)).where(
            *(target.c[name] == value for name, value in filters.items())
        )
    if cursor is not None:
        # Worse rank, or the same rank and a later key.
        last_rank, last_key = cursor
        top = top.where(
            or_(
                rank < last_rank,
                (rank == last_rank)
                & (tuple_(matches.c[thread_column], matches.c[position_column]) > last_key),
            )
        )
    page = top.order_by(*order).limit(limit).subquery("page")
    stmt: Select[Any] = (
        select(*readable_columns(target), page.c.rank)
        .join(page, same_key(target, page))
        .where(*(target.c[name] == value for name, value in scope.items()))
        .order_by(page.c.rank.desc(), page.c[thread_column], page.c[position_column])
    )
    return list((await session.execute(stmt)).all())


def _session_activity(new: Any) -> dict[str, Any]:
    # On an append to an existing session: keep the first preview, note the activity.
    return {"preview": coalesce(_sessions.c.preview, new.preview), "updated_at": new.updated_at}


def _thread_activity(new: Any) -> dict[str, Any]:
    return {"updated_at": new.updated_at}


_SESSION_COLUMNS = tuple(_sessions.c.keys())
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
