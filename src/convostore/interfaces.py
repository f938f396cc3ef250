"""The two interfaces convostore implements, as abstract base classes.

:class:`AgentDatabase` is method-for-method agentstr's ``BaseDatabase``;
:class:`ContextStore` is axio's ``ContextStore``. Each has a SQL implementation
(:mod:`convostore.database`, :mod:`convostore.context`) and an in-memory reference
(:mod:`convostore.memory`); one contract suite in ``tests/contract`` runs against all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Self

from convostore import pairs
from convostore.errors import ValidationError
from convostore.models import (
    ContextMessage,
    ContextSearchHit,
    Message,
    MessageSearchHit,
    SessionInfo,
    StoredContextMessage,
    ThreadInfo,
    User,
)

__all__ = ["AgentDatabase", "ContextStore"]


class AgentDatabase(ABC):
    """Users, balances and threaded messages of one agent (agentstr's ``BaseDatabase``).

    Attributes:
        conn_str: The connection string the database was created with.
        agent_name: The agent whose rows this object reads and writes (``None`` allowed).
    """

    conn_str: str
    agent_name: str | None

    @abstractmethod
    async def async_init(self) -> Self:
        """Prepare the database for use (an embedded SQLite file is migrated); returns self."""

    @abstractmethod
    async def close(self) -> None:
        """Release what this object opened."""

    @abstractmethod
    async def get_user(self, user_id: str) -> User:
        """The user, or ``User(user_id)`` with a zero balance if it was never stored."""

    @abstractmethod
    async def upsert_user(self, user: User) -> None:
        """Create the user or overwrite its balance and current thread, atomically."""

    @abstractmethod
    async def get_current_thread_id(self, user_id: str) -> str | None:
        """The user's current thread id, or ``None``."""

    @abstractmethod
    async def set_current_thread_id(self, user_id: str, thread_id: str | None) -> None:
        """Set (or clear, with ``None``) the user's current thread."""

    @abstractmethod
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
        """Append a message to a thread at the next ``idx`` and return it as stored.

        A repeated call with the same ``client_id`` in the same thread stores nothing and
        returns the message stored the first time.
        """

    @abstractmethod
    async def add_messages(
        self, thread_id: str, user_id: str, messages: Iterable[Mapping[str, Any]]
    ) -> list[Message]:
        """Append several messages (each a mapping of ``add_message``'s keyword arguments:
        role, message, content, kind, satoshis, extra_inputs, extra_outputs, client_id) at
        consecutive ``idx`` values, in one transaction; all or none."""

    @abstractmethod
    async def list_threads(
        self, user_id: str, *, limit: int | None = None, before: ThreadInfo | None = None
    ) -> list[ThreadInfo]:
        """The user's threads (those whose first message is theirs), most recently active
        first; with ``limit``, keyset pages continued by passing the last one as ``before``."""

    @abstractmethod
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
        """Messages of the thread from this user, ordered by ``idx`` (descending if ``reverse``).

        ``before_idx`` and ``after_idx`` are exclusive bounds; ``limit`` caps the count after
        ordering.
        """

    @abstractmethod
    async def search(
        self,
        query: str,
        *,
        limit: int = 20,
        before: MessageSearchHit | None = None,
        user_id: str | None = None,
        thread_id: str | None = None,
    ) -> list[MessageSearchHit]:
        """The agent's messages (optionally one user's or one thread's) whose text matches
        ``query``, best first, in keyset pages (``before``: the last hit of a page)."""

    @abstractmethod
    async def credit(self, user_id: str, amount: int) -> int:
        """Add ``amount`` (>= 0) to the user's balance atomically; return the new balance."""

    @abstractmethod
    async def debit(self, user_id: str, amount: int) -> int:
        """Subtract ``amount`` (>= 0) atomically; return the new balance.

        Raises:
            InsufficientBalance: The balance is below ``amount``; nothing changed.
        """


class ContextStore(ABC):
    """The message history of one session within a project (axio's ``ContextStore``)."""

    @property
    @abstractmethod
    def session_id(self) -> str:
        """This store's session id."""

    @property
    @abstractmethod
    def project(self) -> str:
        """The project the session belongs to."""

    @abstractmethod
    async def append(
        self, message: ContextMessage, *, client_id: str | None = None
    ) -> StoredContextMessage:
        """Append a message at the end of the session and return it as stored.

        A repeated append with the same ``client_id`` stores nothing and returns the
        message stored the first time.
        """

    @abstractmethod
    async def append_many(
        self,
        messages: Iterable[ContextMessage],
        *,
        client_ids: Sequence[str | None] | None = None,
    ) -> list[StoredContextMessage]:
        """Append messages at consecutive positions, all or none."""

    @abstractmethod
    async def get_messages(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[StoredContextMessage]:
        """A keyset window of the history (exclusive position bounds; newest first if reverse)."""

    @abstractmethod
    async def get_history(self) -> list[ContextMessage]:
        """All messages in insertion order."""

    async def get_last(self, count: int, *, exact: bool = False) -> list[ContextMessage]:
        """The last ``count`` messages in insertion order (fewer if the session is shorter),
        widened back to the call of every tool result among them (:mod:`convostore.pairs`),
        so a window never starts with a result whose call was cut off; ``exact=True``
        returns exactly the last ``count``."""
        pairs.check_exact(exact)
        history = await self.get_history()
        if count <= 0:
            return []
        if exact:
            return history[-count:]
        return history[pairs.widened_start([m.content for m in history], count) :]

    async def iter_history(self, *, batch_size: int = 500) -> AsyncIterator[StoredContextMessage]:
        """Stream the whole history in position order, ``batch_size`` messages per read.

        Each batch is one keyset window (:meth:`get_messages`), so memory stays bounded by
        a batch however long the session is.
        """
        if type(batch_size) is not int or batch_size < 1:
            raise ValidationError("batch_size must be a positive int")
        after = -1
        while True:
            batch = await self.get_messages(after=after, limit=batch_size)
            for message in batch:
                yield message
            if len(batch) < batch_size:
                return
            after = batch[-1].position

    @abstractmethod
    async def replace_history(self, messages: Iterable[ContextMessage]) -> None:
        """Make ``messages`` the whole history atomically: all of it is stored, or nothing changes.

        Positions restart at 0, the preview is recomputed and the token totals are kept.
        """

    @abstractmethod
    async def pop(self) -> ContextMessage | None:
        """Remove the last message and return it, atomically; ``None`` if there is none."""

    @abstractmethod
    async def clear(self) -> None:
        """Remove this session's messages and token totals."""

    @abstractmethod
    async def fork(self, *, at: int | None = None) -> ContextStore:
        """A new session in the same project with a copy of the history and tokens."""

    @abstractmethod
    async def set_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        """Overwrite the session's token totals."""

    @abstractmethod
    async def add_context_tokens(self, input_tokens: int, output_tokens: int) -> None:
        """Add to the session's token totals atomically."""

    @abstractmethod
    async def get_context_tokens(self) -> tuple[int, int]:
        """``(input_tokens, output_tokens)``; ``(0, 0)`` when never set."""

    @abstractmethod
    async def list_sessions(
        self, *, limit: int | None = None, before: SessionInfo | None = None
    ) -> list[SessionInfo]:
        """The project's sessions that hold messages, newest first (keyset pages with limit)."""

    @abstractmethod
    async def search(
        self,
        query: str,
        *,
        limit: int = 20,
        before: ContextSearchHit | None = None,
        session_id: str | None = None,
    ) -> list[ContextSearchHit]:
        """The project's messages (optionally one session's) whose text matches ``query``,
        best first, in keyset pages (``before``: the last hit of a page)."""

    @abstractmethod
    async def close(self) -> None:
        """Release what this store opened."""
