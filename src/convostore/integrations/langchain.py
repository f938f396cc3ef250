"""LangChain: a ``BaseChatMessageHistory`` kept in convostore's context store.

::

    from convostore.integrations.langchain import ConvostoreChatMessageHistory

    engine = await convostore.connect("postgresql://localhost/app")
    chain = RunnableWithMessageHistory(
        prompt | model, lambda session_id: ConvostoreChatMessageHistory(session_id, engine)
    )

Storage: each message is one context message whose content is the list ``[data]``, where
``data`` is LangChain's own serialisation of it (``langchain_core.messages.message_to_dict``:
``{"type": ..., "data": ...}``, every field: content blocks, tool calls, additional kwargs,
response metadata, ids, usage), read back with ``messages_from_dict``, so messages come back
equal to what was added. The role is a label derived from the type, never read back.
Histories live in their own project, :data:`DEFAULT_PROJECT`.

Async methods (``aget_messages``, ``aadd_messages``, ``aclear``) run on the caller's event
loop with the store. The sync ones (``messages``, ``add_messages``, ``clear``), which
LangChain calls from ``invoke``, cannot use that loop's connections: an asyncio driver's
connection belongs to the loop that opened it. They run on one background event loop per
process instead, on a second engine for the same URL that is opened the first time sync code
uses an engine and shared by every history on it.

Requires ``langchain-core`` (``pip install convostore[langchain]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.context import SQLAlchemyContextStore
from convostore.errors import SerializationError, ValidationError
from convostore.integrations._sync_bridge import SyncBridge
from convostore.interfaces import ContextStore
from convostore.models import ContextMessage, ContextRole

__all__ = [
    "DEFAULT_PROJECT",
    "ConvostoreChatMessageHistory",
    "from_context",
    "message_role",
    "to_context",
]

T = TypeVar("T")

DEFAULT_PROJECT = "langchain"
"""The context-store project that histories use unless told otherwise."""

_ROLES: dict[str, ContextRole] = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


def message_role(message: BaseMessage) -> ContextRole:
    """The context-store role a message is labelled with: by its type (a chunk as its
    message), a ``ChatMessage`` by its ``role``; ``user`` for anything else."""
    kind = message.type
    if kind == "chat":
        kind = str(getattr(message, "role", ""))
    kind = kind.lower().removesuffix("messagechunk")
    return _ROLES.get(kind, "user")


def to_context(message: BaseMessage) -> ContextMessage:
    """The context message that stores ``message`` (LangChain's ``message_to_dict``).

    Raises:
        ValidationError: ``message`` is not a LangChain ``BaseMessage``.
    """
    if not isinstance(message, BaseMessage):
        raise ValidationError(f"a message must be a BaseMessage, not {type(message).__name__}")
    return ContextMessage.model_construct(
        role=message_role(message), content=[message_to_dict(message)]
    )


def from_context(message: ContextMessage) -> BaseMessage:
    """The LangChain message stored as ``message`` (``messages_from_dict``).

    Raises:
        SerializationError: The stored content is not a LangChain message.
    """
    try:
        [langchain_message] = messages_from_dict(message.content)
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"a stored message is not a LangChain message: {exc}") from exc
    return langchain_message


class ConvostoreChatMessageHistory(BaseChatMessageHistory):
    """One conversation's LangChain messages, in a convostore context store.

    Args:
        session_id: The conversation's id.
        engine: An engine from :func:`convostore.connect` (or your own), shared by many
            histories; the caller disposes of it. Give this or ``url``.
        url: Open an engine for this URL (any form convostore accepts; ``None`` with no
            ``engine`` resolves the environment, then ``./convostore.db``);
            :meth:`aclose` / :meth:`close` dispose of it.
        project: The context-store project holding the conversation.
        migrate: As for :func:`convostore.connect`, when the history first uses the engine.

    Raises:
        ConfigurationError: Both ``engine`` and ``url`` were given.
        ValidationError: ``session_id`` or ``project`` is not a usable id.
    """

    def __init__(
        self,
        session_id: str,
        engine: AsyncEngine | None = None,
        *,
        url: str | URL | None = None,
        project: str = DEFAULT_PROJECT,
        migrate: bool | None = None,
    ) -> None:
        self._store: ContextStore = SQLAlchemyContextStore(
            engine, url=url, session_id=session_id, project=project, migrate=migrate
        )
        self._migrate = migrate
        self._owns_engine = engine is None

    @classmethod
    def from_store(cls, store: ContextStore) -> ConvostoreChatMessageHistory:
        """A history over an existing context store (its session), SQL or in-memory."""
        history = cls.__new__(cls)
        history._store = store
        history._migrate = None
        history._owns_engine = False
        return history

    @property
    def store(self) -> ContextStore:
        """The underlying context store (the one the async methods use)."""
        return self._store

    @property
    def session_id(self) -> str:
        """The conversation's id."""
        return self._store.session_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store!r})"

    # --- async: on the caller's loop ---------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        """The stored messages in order.

        Raises:
            SerializationError: A stored message is not a LangChain message.
        """
        return [from_context(message) for message in await self._store.get_history()]

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one transaction: all of them are stored, or none.

        Raises:
            ValidationError: An item is not a ``BaseMessage``.
            SerializationError: A message holds a value that is not exactly JSON.
        """
        await self._store.append_many(_contexts(messages))

    async def aclear(self) -> None:
        """Remove every message of the conversation."""
        await self._store.clear()

    async def aclose(self) -> None:
        """Dispose of the engine this history opened (``url=``) and of its sync twin."""
        if self._owns_engine:
            self._forget_twin()
        await self._store.close()

    # --- sync: on the background loop ----------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:
        """The stored messages in order (sync; see the module's docstring).

        Raises:
            SerializationError: A stored message is not a LangChain message.
        """
        store = self._sync_store()
        return [from_context(message) for message in _bridge.run(store.get_history())]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one transaction (sync): all of them are stored, or none.

        Raises:
            ValidationError: An item is not a ``BaseMessage``.
            SerializationError: A message holds a value that is not exactly JSON.
        """
        contexts = _contexts(messages)
        _bridge.run(self._sync_store().append_many(contexts))

    def clear(self) -> None:
        """Remove every message of the conversation (sync)."""
        _bridge.run(self._sync_store().clear())

    def close(self) -> None:
        """Sync :meth:`aclose`, for a history used only from sync code.

        An engine that async methods used on another loop must be closed there: call
        :meth:`aclose` instead.
        """
        if self._owns_engine:
            self._forget_twin()
            _bridge.run(self._store.close())

    def _forget_twin(self) -> None:
        if isinstance(self._store, SQLAlchemyContextStore):
            _bridge.forget(self._store.engine)

    def _sync_store(self) -> ContextStore:
        store = self._store
        if not isinstance(store, SQLAlchemyContextStore):
            # The in-memory store holds no connections: any loop can use it.
            return store
        twin = _bridge.twin_engine(store.engine)
        return SQLAlchemyContextStore(
            twin,
            session_id=store.session_id,
            project=store.project,
            namespace=store.namespace,
            migrate=self._migrate,
        )


def _contexts(messages: Sequence[BaseMessage]) -> list[ContextMessage]:
    if isinstance(messages, str | bytes | BaseMessage):
        raise ValidationError(
            f"messages must be a sequence of messages, not {type(messages).__name__}"
        )
    try:
        return [to_context(message) for message in messages]
    except TypeError:
        raise ValidationError(
            f"messages must be a sequence of messages, not {type(messages).__name__}"
        ) from None


_bridge = SyncBridge("langchain", "history")
