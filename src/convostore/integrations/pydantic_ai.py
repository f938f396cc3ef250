"""pydantic-ai: an agent's ``list[ModelMessage]`` kept in convostore's context store.

::

    from convostore.integrations.pydantic_ai import MessageHistory

    history = MessageHistory("user-123", url="postgresql://localhost/app")
    result = await agent.run("Hello", message_history=await history.load())
    await history.append(result.new_messages())

Storage: each ``ModelMessage`` is one context message whose content is the list
``[data]``, where ``data`` is the message as pydantic-ai's own
``ModelMessagesTypeAdapter`` dumps it to JSON (parts, timestamps, usage, tool calls, binary
content as base64, ...). :meth:`MessageHistory.load` validates it back with the same
adapter, so a loaded history equals the one stored. The role is a label derived from the
message, never read back: ``assistant`` for a ``ModelResponse``, ``tool`` for a
``ModelRequest`` holding only tool returns or retry prompts, ``user`` for any other request.
Histories live in their own project, :data:`DEFAULT_PROJECT`.

Requires ``pydantic-ai-slim`` (``pip install convostore[pydantic-ai]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pydantic
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    ToolReturnPart,
)
from pydantic_core import PydanticSerializationError
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.context import SQLAlchemyContextStore
from convostore.errors import SerializationError, ValidationError
from convostore.interfaces import ContextStore
from convostore.models import ContextMessage, ContextRole

__all__ = ["DEFAULT_PROJECT", "MessageHistory", "from_context", "message_role", "to_context"]

DEFAULT_PROJECT = "pydantic-ai"
"""The context-store project that histories use unless told otherwise."""


def message_role(message: ModelMessage) -> ContextRole:
    """The context-store role a message is labelled with (see the module's docstring)."""
    if isinstance(message, ModelResponse):
        return "assistant"
    if message.parts and all(
        isinstance(part, ToolReturnPart | RetryPromptPart) for part in message.parts
    ):
        return "tool"
    return "user"


def to_context(message: ModelMessage) -> ContextMessage:
    """The context message that stores ``message`` (pydantic-ai's JSON form, as one block).

    Raises:
        ValidationError: ``message`` is not a ``ModelRequest`` or ``ModelResponse``.
        SerializationError: pydantic-ai cannot dump ``message`` to JSON (an argument that
            is an arbitrary object, say).
    """
    if not isinstance(message, ModelRequest | ModelResponse):
        raise ValidationError(
            f"a message must be a ModelRequest or ModelResponse, not {type(message).__name__}"
        )
    try:
        [data] = ModelMessagesTypeAdapter.dump_python([message], mode="json")
    except PydanticSerializationError as exc:
        raise SerializationError(f"a message cannot be stored as JSON: {exc}") from exc
    return ContextMessage.model_construct(role=message_role(message), content=[data])


def from_context(message: ContextMessage) -> ModelMessage:
    """The pydantic-ai message stored as ``message``.

    Raises:
        SerializationError: The stored content is not a pydantic-ai message.
    """
    try:
        [model_message] = ModelMessagesTypeAdapter.validate_python(message.content)
    except (pydantic.ValidationError, ValueError) as exc:
        raise SerializationError(f"a stored message is not a pydantic-ai message: {exc}") from exc
    return model_message


class MessageHistory:
    """One conversation's pydantic-ai messages, in a convostore context store.

    Args:
        session_id: The conversation's id.
        engine: An engine from :func:`convostore.connect` (or your own), shared by many
            histories; the caller disposes of it. Give this or ``url``.
        url: Open an engine for this URL (any form convostore accepts; ``None`` with no
            ``engine`` resolves the environment, then ``./convostore.db``); :meth:`close`
            disposes of it.
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

    @classmethod
    def from_store(cls, store: ContextStore) -> MessageHistory:
        """A history over an existing context store (its session), SQL or in-memory."""
        history = cls.__new__(cls)
        history._store = store
        return history

    @property
    def store(self) -> ContextStore:
        """The underlying context store."""
        return self._store

    @property
    def session_id(self) -> str:
        """The conversation's id."""
        return self._store.session_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store!r})"

    async def load(self) -> list[ModelMessage]:
        """The stored messages in order, ready for ``agent.run(message_history=...)``.

        Raises:
            SerializationError: A stored message is not a pydantic-ai message.
        """
        return [from_context(message) for message in await self._store.get_history()]

    async def append(self, messages: Iterable[ModelMessage]) -> None:
        """Append ``messages`` (say ``result.new_messages()``) in one transaction: all or none.

        Raises:
            ValidationError: An item is not a ``ModelRequest`` or ``ModelResponse``.
            SerializationError: pydantic-ai cannot dump a message to JSON.
        """
        await self._store.append_many([to_context(message) for message in _listed(messages)])

    async def replace(self, messages: Iterable[ModelMessage]) -> None:
        """Make ``messages`` (say ``result.all_messages()``) the whole history, atomically.

        On any failure the old history is left as it was.

        Raises:
            ValidationError: An item is not a ``ModelRequest`` or ``ModelResponse``.
            SerializationError: pydantic-ai cannot dump a message to JSON.
        """
        await self._store.replace_history([to_context(message) for message in _listed(messages)])

    async def clear(self) -> None:
        """Remove every message of the conversation."""
        await self._store.clear()

    async def close(self) -> None:
        """Dispose of the engine if this history opened it (``url=``)."""
        await self._store.close()


def _listed(messages: Iterable[ModelMessage]) -> list[Any]:
    if isinstance(messages, str | bytes | ModelRequest | ModelResponse):
        raise ValidationError(
            f"messages must be an iterable of messages, not {type(messages).__name__}"
        )
    try:
        return list(messages)
    except TypeError:
        raise ValidationError(
            f"messages must be an iterable of messages, not {type(messages).__name__}"
        ) from None
