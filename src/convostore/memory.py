"""In-memory implementations of both interfaces: the reference behaviour, and fakes for tests.

They check arguments and encode payloads exactly as the SQL implementations do (the same
functions run), so a value that one refuses the other refuses too, and what they return is
a fresh copy, never an alias of what is stored. Nothing persists beyond the
:class:`MemoryStorage` object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self
from uuid import uuid4

from convostore import codec
from convostore.database import DEFAULT_AGENT_KEY
from convostore.errors import InsufficientBalance
from convostore.interfaces import AgentDatabase, ContextStore
from convostore.models import (
    ContextMessage,
    ContextRole,
    Message,
    SessionInfo,
    User,
    check_amount,
    check_id,
    check_optional_int,
    encoded_context_message,
    new_message,
    validated,
)
from convostore.repositories import NO_PREVIEW
from convostore.tables import (
    AGENT_NAME_LENGTH,
    PROJECT_LENGTH,
    SESSION_ID_LENGTH,
    THREAD_ID_LENGTH,
    USER_ID_LENGTH,
)

__all__ = ["InMemoryContextStore", "InMemoryDatabase", "MemoryStorage"]


@dataclass
class _StoredMessage:
    message: Message
    content: bytes
    extra_inputs: bytes
    extra_outputs: bytes


@dataclass
class _Session:
    created_at: datetime
    messages: list[tuple[ContextRole, bytes]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    preview: str | None = None


@dataclass
class MemoryStorage:
    """Everything the in-memory implementations store; share one to share data."""

    users: dict[tuple[str, str], User] = field(default_factory=dict)
    threads: dict[tuple[str, str], list[_StoredMessage]] = field(default_factory=dict)
    sessions: dict[tuple[str, str], _Session] = field(default_factory=dict)


class InMemoryDatabase(AgentDatabase):
    """The agent database held in a :class:`MemoryStorage`."""

    def __init__(
        self, storage: MemoryStorage | None = None, *, agent_name: str | None = None
    ) -> None:
        self.conn_str = "memory://"
        self.agent_name = agent_name
        self._agent = (
            DEFAULT_AGENT_KEY
            if agent_name is None
            else check_id(agent_name, "agent_name", AGENT_NAME_LENGTH)
        )
        self.storage = storage if storage is not None else MemoryStorage()

    async def async_init(self) -> Self:
        return self

    async def close(self) -> None:
        return None

    async def get_user(self, user_id: str) -> User:
        check_id(user_id, "user_id", USER_ID_LENGTH)
        stored = self.storage.users.get((self._agent, user_id))
        return User(user_id=user_id) if stored is None else stored.model_copy()

    async def upsert_user(self, user: User) -> None:
        checked = validated(User, user)
        check_id(checked.user_id, "user_id", USER_ID_LENGTH)
        if checked.current_thread_id is not None:
            check_id(checked.current_thread_id, "current_thread_id", THREAD_ID_LENGTH)
        check_amount(checked.available_balance, "available_balance")
        self.storage.users[(self._agent, checked.user_id)] = checked

    async def get_current_thread_id(self, user_id: str) -> str | None:
        return (await self.get_user(user_id)).current_thread_id

    async def set_current_thread_id(self, user_id: str, thread_id: str | None) -> None:
        check_id(user_id, "user_id", USER_ID_LENGTH)
        if thread_id is not None:
            check_id(thread_id, "thread_id", THREAD_ID_LENGTH)
        user = await self.get_user(user_id)
        user.current_thread_id = thread_id
        self.storage.users[(self._agent, user_id)] = user

    async def credit(self, user_id: str, amount: int) -> int:
        check_id(user_id, "user_id", USER_ID_LENGTH)
        check_amount(amount, "amount")
        user = await self.get_user(user_id)
        user.available_balance += amount
        self.storage.users[(self._agent, user_id)] = user
        return user.available_balance

    async def debit(self, user_id: str, amount: int) -> int:
        check_id(user_id, "user_id", USER_ID_LENGTH)
        check_amount(amount, "amount")
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
    ) -> Message:
        new = new_message(
            thread_id,
            user_id,
            role,
            message,
            content,
            kind,
            satoshis,
            extra_inputs,
            extra_outputs,
            id_lengths=(THREAD_ID_LENGTH, USER_ID_LENGTH),
        )
        thread = self.storage.threads.setdefault((self._agent, new.thread_id), [])
        stored = Message(
            agent_name=self.agent_name,
            thread_id=new.thread_id,
            user_id=new.user_id,
            idx=len(thread),
            message=new.message,
            content=new.content,
            role=new.role,
            kind=new.kind,
            satoshis=new.satoshis,
            created_at=datetime.now(UTC),
        )
        thread.append(
            _StoredMessage(
                stored,
                new.encoded_content.data,
                new.encoded_inputs.data,
                new.encoded_outputs.data,
            )
        )
        return self._load(thread[-1])

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
        check_id(thread_id, "thread_id", THREAD_ID_LENGTH)
        check_id(user_id, "user_id", USER_ID_LENGTH)
        check_optional_int(limit, "limit", minimum=0)
        check_optional_int(before_idx, "before_idx")
        check_optional_int(after_idx, "after_idx")
        rows = [
            row
            for row in self.storage.threads.get((self._agent, thread_id), [])
            if row.message.user_id == user_id
            and (after_idx is None or row.message.idx > after_idx)
            and (before_idx is None or row.message.idx < before_idx)
        ]
        if reverse:
            rows.reverse()
        if limit is not None:
            rows = rows[:limit]
        return [self._load(row) for row in rows]

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
        project: str = "default",
    ) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        self._session_id = check_id(
            uuid4().hex if session_id is None else session_id, "session_id", SESSION_ID_LENGTH
        )
        self._project = check_id(project, "project", PROJECT_LENGTH)

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def project(self) -> str:
        return self._project

    def with_session(self, session_id: str) -> Self:
        """A store for another session of the same project and storage."""
        return type(self)(self.storage, session_id=session_id, project=self._project)

    def _state(self) -> _Session:
        key = (self._project, self._session_id)
        state = self.storage.sessions.get(key)
        if state is None:
            state = self.storage.sessions[key] = _Session(created_at=datetime.now(UTC))
        return state

    async def append(self, message: ContextMessage) -> None:
        await self.append_many([message])

    async def append_many(self, messages: Iterable[ContextMessage]) -> None:
        """Append messages at consecutive positions, all or none."""
        checked = [encoded_context_message(message) for message in messages]
        if not checked:
            return
        state = self._state()
        for message, data in checked:
            if state.preview is None:
                state.preview = message.preview()
            state.messages.append((message.role, data.data))

    async def get_history(self) -> list[ContextMessage]:
        state = self.storage.sessions.get((self._project, self._session_id))
        if state is None:
            return []
        return [
            ContextMessage.model_construct(role=role, content=codec.decode(data))
            for role, data in state.messages
        ]

    async def get_last(self, count: int) -> list[ContextMessage]:
        check_amount(count, "count")
        return (await self.get_history())[-count:] if count else []

    async def replace_history(self, messages: Iterable[ContextMessage]) -> None:
        # Everything is checked and encoded before the stored list is touched: all or none.
        checked = [encoded_context_message(message) for message in messages]
        state = self._state()
        state.messages = [(message.role, data.data) for message, data in checked]
        state.preview = next((p for m, _ in checked if (p := m.preview()) is not None), None)

    async def pop(self) -> ContextMessage | None:
        state = self.storage.sessions.get((self._project, self._session_id))
        if state is None or not state.messages:
            return None
        role, data = state.messages.pop()
        return ContextMessage.model_construct(role=role, content=codec.decode(data))

    async def clear(self) -> None:
        self.storage.sessions.pop((self._project, self._session_id), None)

    async def fork(self) -> InMemoryContextStore:
        new_id = uuid4().hex
        state = self.storage.sessions.get((self._project, self._session_id))
        if state is not None:
            self.storage.sessions[(self._project, new_id)] = _Session(
                created_at=datetime.now(UTC),
                messages=list(state.messages),
                input_tokens=state.input_tokens,
                output_tokens=state.output_tokens,
                preview=state.preview,
            )
        return self.with_session(new_id)

    async def set_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        check_amount(input_tokens, "input_tokens")
        check_amount(output_tokens, "output_tokens")
        state = self._state()
        state.input_tokens, state.output_tokens = input_tokens, output_tokens

    async def add_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        check_amount(input_tokens, "input_tokens")
        check_amount(output_tokens, "output_tokens")
        state = self._state()
        state.input_tokens += input_tokens
        state.output_tokens += output_tokens

    async def get_context_tokens(self) -> tuple[int, int]:
        state = self.storage.sessions.get((self._project, self._session_id))
        return (0, 0) if state is None else (state.input_tokens, state.output_tokens)

    async def list_sessions(self) -> list[SessionInfo]:
        found = [
            SessionInfo(
                session_id=session_id,
                message_count=len(state.messages),
                preview=NO_PREVIEW if state.preview is None else state.preview,
                created_at=state.created_at,
                input_tokens=state.input_tokens,
                output_tokens=state.output_tokens,
            )
            for (project, session_id), state in self.storage.sessions.items()
            if project == self._project and state.messages
        ]
        found.sort(key=lambda info: (info.created_at, info.session_id), reverse=True)
        return found

    async def close(self) -> None:
        return None
