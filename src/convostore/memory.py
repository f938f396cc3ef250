"""In-memory implementations of both interfaces: the reference behaviour, and fakes for tests.

They check arguments and encode payloads exactly as the SQL implementations do (the same
functions of :mod:`convostore.arguments` and :mod:`convostore.models` run), so a value that
one refuses the other refuses too, and what they return is a fresh copy, never an alias of
what is stored. Nothing persists beyond the :class:`MemoryStorage` object.

This module imports no SQL: only the models, the interfaces, the codec, the errors and the
shared rules (``import convostore.memory`` does not load SQLAlchemy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self
from uuid import uuid4

from convostore import arguments, codec, pairs, search
from convostore.errors import ConflictError, InsufficientBalance
from convostore.interfaces import AgentDatabase, ContextStore
from convostore.models import (
    NO_PREVIEW,
    ContextMessage,
    ContextRole,
    ContextSearchHit,
    Message,
    MessageSearchHit,
    NewMessage,
    SessionInfo,
    StoredContextMessage,
    ThreadInfo,
    User,
    encoded_context_messages,
)
from convostore.rules import check_client_key, checked_counter

__all__ = ["InMemoryContextStore", "InMemoryDatabase", "MemoryStorage"]


@dataclass
class _StoredMessage:
    message: Message
    content: bytes
    extra_inputs: bytes
    extra_outputs: bytes
    client_id: str | None


@dataclass
class _Thread:
    user_id: str
    created_at: datetime
    updated_at: datetime
    messages: list[_StoredMessage] = field(default_factory=list)


@dataclass
class _Entry:
    role: ContextRole
    data: bytes
    created_at: datetime
    client_id: str | None


@dataclass
class _Session:
    created_at: datetime
    updated_at: datetime
    messages: list[_Entry] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    preview: str | None = None
    parent_session_id: str | None = None
    forked_at: int | None = None


@dataclass
class MemoryStorage:
    """Everything the in-memory implementations store; share one to share data."""

    users: dict[tuple[str, str], User] = field(default_factory=dict)
    threads: dict[tuple[str, str], _Thread] = field(default_factory=dict)
    sessions: dict[tuple[str, str], _Session] = field(default_factory=dict)


class InMemoryDatabase(AgentDatabase):
    """The agent database held in a :class:`MemoryStorage`."""

    def __init__(
        self, storage: MemoryStorage | None = None, *, agent_name: str | None = None
    ) -> None:
        self.conn_str = "memory://"
        self.agent_name = agent_name
        self._agent = arguments.agent_key(agent_name)
        self.storage = storage if storage is not None else MemoryStorage()

    async def async_init(self) -> Self:
        return self

    async def close(self) -> None:
        return None

    async def get_user(self, user_id: str) -> User:
        arguments.user_id(user_id)
        stored = self.storage.users.get((self._agent, user_id))
        return User(user_id=user_id) if stored is None else stored.model_copy()

    async def upsert_user(self, user: User) -> None:
        checked = arguments.upsert_user(user)
        self.storage.users[(self._agent, checked.user_id)] = checked

    async def get_current_thread_id(self, user_id: str) -> str | None:
        return (await self.get_user(user_id)).current_thread_id

    async def set_current_thread_id(self, user_id: str, thread_id: str | None) -> None:
        arguments.set_current_thread(user_id, thread_id)
        user = await self.get_user(user_id)
        user.current_thread_id = thread_id
        self.storage.users[(self._agent, user_id)] = user

    async def credit(self, user_id: str, amount: int) -> int:
        arguments.balance_change(user_id, amount)
        user = await self.get_user(user_id)
        checked_counter(user.available_balance + amount, "users", "available_balance")
        user.available_balance += amount
        self.storage.users[(self._agent, user_id)] = user
        return user.available_balance

    async def debit(self, user_id: str, amount: int) -> int:
        arguments.balance_change(user_id, amount)
        user = await self.get_user(user_id)
        if user.available_balance < amount:
            raise InsufficientBalance(
                f"balance of {user_id!r} is {user.available_balance}, cannot debit {amount}"
            )
        if (self._agent, user_id) in self.storage.users:
            user.available_balance -= amount
            self.storage.users[(self._agent, user_id)] = user
        return user.available_balance

    async def add_message(
        self,
        thread_id: str,
        user_id: str,
        role: str,
        message: str = "",
        content: str = "",
        kind: str = "request",
        satoshis: int | None = None,
        extra_inputs: Mapping[str, Any] | None = None,
        extra_outputs: Mapping[str, Any] | None = None,
        *,
        client_id: str | None = None,
    ) -> Message:
        new = arguments.add_message(
            thread_id, user_id, role, message, content, kind, satoshis, extra_inputs, extra_outputs
        )
        (stored,) = self._add(new.thread_id, new.user_id, [new], [client_id])
        return stored

    async def add_messages(
        self, thread_id: str, user_id: str, messages: Iterable[Mapping[str, Any]]
    ) -> list[Message]:
        news, client_ids = arguments.add_messages(thread_id, user_id, messages)
        return self._add(thread_id, user_id, news, client_ids)

    def _add(
        self,
        thread_id: str,
        user_id: str,
        news: Sequence[NewMessage],
        client_ids: Sequence[str | None],
    ) -> list[Message]:
        ids = arguments.client_ids(list(client_ids), len(news))
        if not news:
            return []
        now = datetime.now(UTC)
        thread = self.storage.threads.get((self._agent, thread_id))
        retry_key = next((i for i in ids if i is not None), None)
        if thread is not None and retry_key is not None:
            for row in thread.messages:
                if row.client_id == retry_key:
                    if row.message.user_id != user_id:
                        raise ConflictError(
                            f"client_id {retry_key!r} was used by another user in this thread"
                        )
                    start = row.message.idx - ids.index(retry_key)
                    batch = thread.messages[start : start + len(news)]
                    return [self._load(r) for r in batch if r.message.user_id == user_id]
        taken = {r.client_id for r in thread.messages} if thread is not None else set()
        if any(i is not None and i in taken for i in ids):
            raise ConflictError("a client_id of this batch is already used in this thread")
        if thread is None:
            thread = self.storage.threads[(self._agent, thread_id)] = _Thread(
                user_id=user_id, created_at=now, updated_at=now
            )
        thread.updated_at = now
        for new, client_id in zip(news, ids, strict=True):
            stored = Message(
                agent_name=self.agent_name,
                thread_id=thread_id,
                user_id=user_id,
                idx=len(thread.messages),
                message=new.message,
                content=new.content,
                role=new.role,
                kind=new.kind,
                satoshis=new.satoshis,
                created_at=now,
            )
            thread.messages.append(
                _StoredMessage(
                    stored,
                    new.encoded_content.data,
                    new.encoded_inputs.data,
                    new.encoded_outputs.data,
                    client_id,
                )
            )
        return [self._load(row) for row in thread.messages[-len(news) :]]

    async def get_messages(
        self,
        thread_id: str,
        user_id: str,
        *,
        limit: int | None = None,
        before_idx: int | None = None,
        after_idx: int | None = None,
        reverse: bool = False,
    ) -> list[Message]:
        arguments.get_messages(thread_id, user_id, limit, before_idx, after_idx, reverse)
        thread = self.storage.threads.get((self._agent, thread_id))
        rows = [
            row
            for row in (thread.messages if thread is not None else [])
            if row.message.user_id == user_id
            and (after_idx is None or row.message.idx > after_idx)
            and (before_idx is None or row.message.idx < before_idx)
        ]
        if reverse:
            rows.reverse()
        if limit is not None:
            rows = rows[:limit]
        return [self._load(row) for row in rows]

    async def list_threads(
        self, user_id: str, *, limit: int | None = None, before: ThreadInfo | None = None
    ) -> list[ThreadInfo]:
        arguments.list_threads(user_id, limit, before)
        found = [
            ThreadInfo(
                thread_id=thread_id,
                user_id=thread.user_id,
                message_count=len(thread.messages),
                created_at=thread.created_at,
                updated_at=thread.updated_at,
            )
            for (agent, thread_id), thread in self.storage.threads.items()
            if agent == self._agent and thread.user_id == user_id
        ]
        found.sort(key=lambda info: (info.updated_at, info.thread_id), reverse=True)
        if before is not None:
            cursor = (before.updated_at, before.thread_id)
            found = [info for info in found if (info.updated_at, info.thread_id) < cursor]
        return found if limit is None else found[:limit]

    async def search(
        self,
        query: str,
        *,
        limit: int = 20,
        before: MessageSearchHit | None = None,
        user_id: str | None = None,
        thread_id: str | None = None,
    ) -> list[MessageSearchHit]:
        """As :meth:`convostore.SQLAlchemyDatabase.search`; the rank is the number of
        matching words."""
        parsed = arguments.search_messages(query, limit, before, user_id, thread_id)
        found = []
        for (agent, thread), stored in self.storage.threads.items():
            if agent != self._agent or thread_id not in (None, thread):
                continue
            for row in stored.messages:
                if user_id is not None and row.message.user_id != user_id:
                    continue
                message = self._load(row)
                text = search.message_text(message.message, message.content)
                rank = search.count_matches(text, parsed)
                if rank is None:
                    continue
                cut = search.snippet(text, parsed.terms)
                hit = MessageSearchHit(
                    message=message, snippet=cut.text, highlights=list(cut.highlights), rank=rank
                )
                found.append((rank, (thread, message.idx), hit))
        cursor = (
            None
            if before is None
            else (before.rank, (before.message.thread_id, before.message.idx))
        )
        return search.page(found, limit, cursor)

    @staticmethod
    def _load(row: _StoredMessage) -> Message:
        return row.message.model_copy(
            update={
                "content": codec.decode(row.content),
                "extra_inputs": codec.decode(row.extra_inputs),
                "extra_outputs": codec.decode(row.extra_outputs),
            }
        )


class InMemoryContextStore(ContextStore):
    """One session of one project held in a :class:`MemoryStorage`."""

    def __init__(
        self,
        storage: MemoryStorage | None = None,
        *,
        session_id: str | None = None,
        project: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        self._session_id, self._project, self._namespace, self._scope = arguments.open_session(
            session_id, project, namespace
        )

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def project(self) -> str:
        return self._project

    def with_session(self, session_id: str) -> Self:
        """A store for another session of the same project and storage."""
        return type(self)(
            self.storage, session_id=session_id, project=self._project, namespace=self._namespace
        )

    def _stored_state(self) -> _Session | None:
        return self.storage.sessions.get((self._scope, self._session_id))

    async def append(
        self, message: ContextMessage, *, client_id: str | None = None
    ) -> StoredContextMessage:
        stored = await self.append_many(
            [message], client_ids=None if client_id is None else [client_id]
        )
        return stored[0]

    async def append_many(
        self,
        messages: Iterable[ContextMessage],
        *,
        client_ids: Sequence[str | None] | None = None,
    ) -> list[StoredContextMessage]:
        """Append messages at consecutive positions, all or none."""
        checked = encoded_context_messages(messages)
        ids = arguments.client_ids(client_ids, len(checked))
        check_client_key(self._scope, self._session_id, ids)
        if not checked:
            return []
        now = datetime.now(UTC)
        state = self._stored_state()
        retry_key = next((i for i in ids if i is not None), None)
        if state is not None and retry_key is not None:
            for position, entry in enumerate(state.messages):
                if entry.client_id == retry_key:
                    start = position - ids.index(retry_key)
                    return self._window(state, start, start + len(checked))
        taken = {e.client_id for e in state.messages} if state is not None else set()
        if any(i is not None and i in taken for i in ids):
            raise ConflictError("a client_id of this batch is already used in this session")
        if state is None:
            state = self.storage.sessions[(self._scope, self._session_id)] = _Session(
                created_at=now, updated_at=now
            )
        first = len(state.messages)
        for (message, data), client_id in zip(checked, ids, strict=True):
            if state.preview is None:
                state.preview = message.preview()
            state.messages.append(_Entry(message.role, data.data, now, client_id))
        state.updated_at = now
        return self._window(state, first, len(state.messages))

    @staticmethod
    def _window(state: _Session, start: int, stop: int) -> list[StoredContextMessage]:
        return [
            StoredContextMessage.model_construct(
                role=entry.role,
                content=codec.decode(entry.data),
                position=position,
                created_at=entry.created_at,
                client_id=entry.client_id,
            )
            for position, entry in enumerate(state.messages[start:stop], start)
        ]

    async def get_history(self) -> list[ContextMessage]:
        state = self._stored_state()
        if state is None:
            return []
        return [
            ContextMessage.model_construct(role=entry.role, content=codec.decode(entry.data))
            for entry in state.messages
        ]

    async def get_last(self, count: int, *, exact: bool = False) -> list[ContextMessage]:
        arguments.count(count)
        pairs.check_exact(exact)
        if not count:
            return []
        history = await self.get_history()
        if exact:
            return history[-count:]
        return history[pairs.widened_start([m.content for m in history], count) :]

    async def get_messages(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[StoredContextMessage]:
        arguments.context_window(after, before, limit, reverse)
        state = self._stored_state()
        if state is None:
            return []
        window = [
            message
            for message in self._window(state, 0, len(state.messages))
            if (after is None or message.position > after)
            and (before is None or message.position < before)
        ]
        if reverse:
            window.reverse()
        return window if limit is None else window[:limit]

    async def replace_history(self, messages: Iterable[ContextMessage]) -> None:
        # Everything is checked and encoded before the stored list is touched: all or none.
        checked = encoded_context_messages(messages)
        state = self._stored_state()
        now = datetime.now(UTC)
        if state is None:
            if not checked:
                return
            state = self.storage.sessions[(self._scope, self._session_id)] = _Session(
                created_at=now, updated_at=now
            )
        state.messages = [_Entry(m.role, data.data, now, None) for m, data in checked]
        state.preview = next((p for m, _ in checked if (p := m.preview()) is not None), None)
        if checked:
            state.updated_at = now

    async def pop(self) -> ContextMessage | None:
        state = self._stored_state()
        if state is None or not state.messages:
            return None
        entry = state.messages.pop()
        return ContextMessage.model_construct(role=entry.role, content=codec.decode(entry.data))

    async def clear(self) -> None:
        self.storage.sessions.pop((self._scope, self._session_id), None)

    async def fork(self, *, at: int | None = None) -> InMemoryContextStore:
        arguments.fork_at(at)
        new_id = uuid4().hex
        state = self._stored_state()
        if state is not None:
            now = datetime.now(UTC)
            copied = list(state.messages if at is None else state.messages[:at])
            preview = state.preview
            if at is not None:
                preview = next(
                    (
                        ContextMessage.model_construct(
                            role="user", content=codec.decode(entry.data)
                        ).preview()
                        for entry in copied
                        if entry.role == "user"
                    ),
                    None,
                )
            self.storage.sessions[(self._scope, new_id)] = _Session(
                created_at=now,
                updated_at=now,
                messages=copied,
                input_tokens=state.input_tokens,
                output_tokens=state.output_tokens,
                preview=preview,
                parent_session_id=self._session_id,
                forked_at=len(copied),
            )
        return self.with_session(new_id)

    def _tokens_state(self) -> _Session:
        state = self._stored_state()
        if state is None:
            now = datetime.now(UTC)
            state = self.storage.sessions[(self._scope, self._session_id)] = _Session(
                created_at=now, updated_at=now
            )
        return state

    async def set_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        arguments.tokens(input_tokens, output_tokens)
        state = self._tokens_state()
        state.input_tokens, state.output_tokens = input_tokens, output_tokens

    async def add_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        arguments.tokens(input_tokens, output_tokens)
        current = self._stored_state()
        if current is not None:
            checked_counter(current.input_tokens + input_tokens, "context_tokens", "input_tokens")
            checked_counter(
                current.output_tokens + output_tokens, "context_tokens", "output_tokens"
            )
        state = self._tokens_state()
        state.input_tokens += input_tokens
        state.output_tokens += output_tokens

    async def get_context_tokens(self) -> tuple[int, int]:
        state = self._stored_state()
        return (0, 0) if state is None else (state.input_tokens, state.output_tokens)

    async def list_sessions(
        self, *, limit: int | None = None, before: SessionInfo | None = None
    ) -> list[SessionInfo]:
        arguments.list_sessions(limit, before)
        found = [
            SessionInfo(
                session_id=session_id,
                message_count=len(state.messages),
                preview=NO_PREVIEW if state.preview is None else state.preview,
                created_at=state.created_at,
                updated_at=state.updated_at,
                input_tokens=state.input_tokens,
                output_tokens=state.output_tokens,
                parent_session_id=state.parent_session_id,
                forked_at=state.forked_at,
            )
            for (project, session_id), state in self.storage.sessions.items()
            if project == self._scope and state.messages
        ]
        found.sort(key=lambda info: (info.created_at, info.session_id), reverse=True)
        if before is not None:
            cursor = (before.created_at, before.session_id)
            found = [info for info in found if (info.created_at, info.session_id) < cursor]
        return found if limit is None else found[:limit]

    async def search(
        self,
        query: str,
        *,
        limit: int = 20,
        before: ContextSearchHit | None = None,
        session_id: str | None = None,
    ) -> list[ContextSearchHit]:
        """As :meth:`convostore.SQLAlchemyContextStore.search`; the rank is the number of
        matching words."""
        parsed, only = arguments.search_context(query, limit, before, session_id)
        found = []
        for (project, session), state in self.storage.sessions.items():
            if project != self._scope or only not in (None, session):
                continue
            for position, entry in enumerate(state.messages):
                content = codec.decode(entry.data)
                text = search.context_text(content)
                rank = search.count_matches(text, parsed)
                if rank is None:
                    continue
                cut = search.snippet(text, parsed.terms)
                stored = StoredContextMessage.model_construct(
                    role=entry.role,
                    content=content,
                    position=position,
                    created_at=entry.created_at,
                    client_id=entry.client_id,
                )
                hit = ContextSearchHit.model_construct(
                    session_id=session,
                    message=stored,
                    snippet=cut.text,
                    highlights=list(cut.highlights),
                    rank=rank,
                )
                found.append((rank, (session, position), hit))
        cursor = (
            None if before is None else (before.rank, (before.session_id, before.message.position))
        )
        return search.page(found, limit, cursor)

    async def close(self) -> None:
        return None
