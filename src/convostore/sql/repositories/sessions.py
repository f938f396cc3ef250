"""Context-store sessions: the repository of one session (its state row and messages), and
:class:`ContextAppender`, the one way messages are appended to sessions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    case,
    delete,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.sql.functions import coalesce

from convostore.codec import Encoded
from convostore.models import (
    NO_PREVIEW,
    ContextMessage,
    SessionInfo,
    StoredContextMessage,
    construct,
)
from convostore.rules import checked_counter
from convostore.sql.counters import appends_in_one_statement, bump_counters, insert_at_counter
from convostore.sql.dml import Executor, cached, family_of, insert_rows, params_for, upsert
from convostore.sql.engine import family
from convostore.sql.group_commit import committer_for
from convostore.sql.repositories.rows import (
    _STORED_COLUMNS,
    _blocks,
    _context_messages,
    _group,
    _positions,
    _sessions,
    _stored,
)
from convostore.sql.runner import TransactionRunner

__all__ = ["ContextAppend", "ContextAppender", "SessionRepository", "append_context_batch"]


class SessionRepository:
    """One context-store session (project + session id): its state row and messages."""

    def __init__(self, session: Executor, project: str, session_id: str) -> None:
        self._session = session
        self._project = project
        self._session_id = session_id
        self._kind = family_of(session)

    def _state_key(self) -> tuple[Any, ...]:
        return (_sessions.c.project == self._project, _sessions.c.session_id == self._session_id)

    def _messages_key(self) -> tuple[Any, ...]:
        c = _context_messages.c
        return (c.project == self._project, c.session_id == self._session_id)

    async def _append_ending(
        self,
        rows: Sequence[tuple[str, Encoded]],
        now: datetime,
        preview: str | None,
        client_ids: Sequence[str | None],
    ) -> int:
        """Append ``(role, encoded content)`` rows at the next positions; return the first.

        The last statement of its transaction (its commit may ride along with it): only
        :class:`ContextAppender` and :meth:`replace` end a transaction with it.

        ``preview`` is kept only if the session has none yet: pass the preview of the first
        user message among the new ones, or ``None``. The session row is created on first
        use and stays write-locked until the transaction ends, so concurrent writers get
        disjoint, gap-free ranges. One statement on PostgreSQL for a single row, one round
        trip on SQLite (:func:`~convostore.sql.counters.insert_at_counter`).
        """
        return await insert_at_counter(
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
                    **_feed(content.search_text),
                }
                for (role, content), client_id in zip(rows, client_ids, strict=True)
            ],
            last=True,
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
            await self._append_ending(rows, now, preview, [None] * len(rows))

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

            values = params_for(_sessions, _SESSION_COLUMNS)
            stmt = upsert(
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
        result = await self._session.execute(cached((kind, "tokens", how), build), params)
        if kind != "mysql":
            totals = result.one()
            checked_counter(totals[0], "context_tokens", "input_tokens")
            checked_counter(totals[1], "context_tokens", "output_tokens")

    async def clear(self) -> None:
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
        columns = ["project", "session_id", "position", "role", "content", "created_at"]
        copies: list[Any] = [
            c.project,
            literal(new_session_id, c.session_id.type),
            c.position,
            c.role,
            c.content,
            c.created_at,
        ]
        columns.append("client_id")
        copies.append(c.client_id)
        if self._kind != "sqlite":
            # The copies keep their words; on SQLite the index catches up with them.
            columns.append("search_text")
            copies.append(c.search_text)
        source = select(*copies).where(*self._messages_key())
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


async def append_context_batch(session: Executor, items: Sequence[ContextAppend]) -> list[int]:
    """Append messages to their sessions in one transaction; return each one's position.

    One counter bump for all the sessions (each by its number of messages, in key order)
    and one ``INSERT`` for all the messages: the statements of a group commit
    (:mod:`convostore.sql.group_commit`). Each session's messages get consecutive positions
    in the order given; its preview is kept if it has one, else set from the first of its
    messages that has one, as a single append does.
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
    bumped = await bump_counters(
        session,
        _sessions,
        counters,
        key=("project", "session_id"),
        counter="next_position",
        also_update=_session_activity,
    )
    positions = _positions(groups, bumped, len(items))
    await insert_rows(
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
                **_feed(item.content.search_text),
            }
            for item, position in zip(items, positions, strict=True)
        ],
        last=True,
    )
    return positions


class ContextAppender:
    """The one way messages are appended to context sessions, through one runner.

    It takes the decisions a façade would otherwise repeat per call: single appends from
    concurrent tasks share one transaction (:mod:`convostore.sql.group_commit`); a write
    that the backend makes one statement runs without ``BEGIN``/``COMMIT``
    (:func:`~convostore.sql.counters.appends_in_one_statement`); and the last statement of
    each of its transactions carries the commit on SQLite's thin driver
    (:mod:`convostore.sql.sqlite_driver`). Inside a caller's unit of work (a bound
    runner) every append is a plain statement of that transaction.
    """

    def __init__(self, runner: TransactionRunner) -> None:
        self._runner = runner
        # Whether a single append is one statement, atomic alone: then it runs without
        # BEGIN/COMMIT (the runner still wraps it when PgBouncer pools transactions).
        self._one_statement = appends_in_one_statement(family(runner.engine))

    async def append(
        self,
        project: str,
        session_id: str,
        role: str,
        content: Encoded,
        preview: str | None,
        now: datetime,
    ) -> StoredContextMessage:
        """Append one message and return it as stored; concurrent calls on one engine
        are committed together, each returning once its message is stored."""
        runner = self._runner
        if runner.bound is not None:
            # A caller's transaction is its own: nothing to share it with.
            (stored,) = await self.append_many(
                project, session_id, [(role, content)], preview, [None], now
            )
            return stored
        committer = committer_for(
            runner.engine,
            "context",
            append_context_batch,
            _append_one,
            one_autocommit=self._one_statement,
        )
        position = await runner.noting_write(
            committer.submit(ContextAppend(project, session_id, role, content, now, preview))
        )
        return stored_message(role, content, position, now, None)

    async def append_many(
        self,
        project: str,
        session_id: str,
        rows: Sequence[tuple[str, Encoded]],
        preview: str | None,
        client_ids: Sequence[str | None],
        now: datetime,
    ) -> list[StoredContextMessage]:
        """Append ``(role, content)`` rows in one transaction, at consecutive positions.

        With ``client_ids`` holding an id, a batch whose first id is already stored is a
        retry: nothing is written and the stored messages with those ids are returned.
        """
        retry_key = next((i for i in client_ids if i is not None), None)

        async def work(executor: Executor) -> list[StoredContextMessage]:
            repo = SessionRepository(executor, project, session_id)
            if retry_key is not None:
                found = await repo.find_client_id(retry_key)
                if found is not None:
                    # A retry: the batch starts where the key's message sits, less its offset.
                    start = found.position - list(client_ids).index(retry_key)
                    return await repo.window(
                        after=start - 1, before=None, limit=len(rows), newest_first=False
                    )
            first = await repo._append_ending(rows, now, preview, client_ids)
            return [
                stored_message(role, content, first + offset, now, client_id)
                for offset, ((role, content), client_id) in enumerate(
                    zip(rows, client_ids, strict=True)
                )
            ]

        one_statement = len(rows) == 1 and self._one_statement
        return await self._runner.run(
            work, autocommit=one_statement, rerun_on_conflict=retry_key is not None
        )


async def _append_one(executor: Executor, item: ContextAppend) -> int:
    # A group commit's write of one message, alone in its transaction.
    repo = SessionRepository(executor, item.project, item.session_id)
    return await repo._append_ending(
        [(item.role, item.content)], item.created_at, item.preview, [None]
    )


def stored_message(
    role: str, data: Encoded, position: int, now: datetime, client_id: str | None
) -> StoredContextMessage:
    """A message as stored: its content decoded from what was written, as reads return it."""
    return construct(
        StoredContextMessage,
        {
            "role": role,
            "content": data.value(),
            "position": position,
            "created_at": now,
            "client_id": client_id,
        },
    )


def _session_activity(new: Any) -> dict[str, Any]:
    # On an append to an existing session: keep the first preview, note the activity.
    return {"preview": coalesce(_sessions.c.preview, new.preview), "updated_at": new.updated_at}


_SESSION_COLUMNS = tuple(_sessions.c.keys())


def _feed(search_text: str | None) -> dict[str, Any]:
    # The feed is in the row only where a backend indexes it with the row (PostgreSQL,
    # MySQL/MariaDB); SQLite's rows have no such column (convostore.sql.search_index).
    return {} if search_text is None else {"search_text": search_text}
