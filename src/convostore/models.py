"""pydantic models at the API boundary, and the checks every id goes through.

``User`` and ``Message`` carry agentstr's field names; ``ContextMessage`` and
``SessionInfo`` mirror axio's. Conversion from table rows lives in the repositories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar, get_args

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from convostore import codec, search
from convostore.errors import ValidationError

__all__ = [
    "CONTEXT_ROLES",
    "KINDS",
    "NAMESPACE_LENGTH",
    "NAMESPACE_SEPARATOR",
    "NO_PREVIEW",
    "ROLES",
    "ContextMessage",
    "ContextRole",
    "ContextSearchHit",
    "Kind",
    "Message",
    "MessageSearchHit",
    "Model",
    "NewMessage",
    "Role",
    "SessionInfo",
    "StoredContextMessage",
    "ThreadInfo",
    "User",
    "check_amount",
    "check_bool",
    "check_choice",
    "check_client_ids",
    "check_id",
    "check_namespace",
    "check_optional_int",
    "check_page",
    "check_text",
    "construct",
    "encoded_context_message",
    "encoded_context_messages",
    "explained",
    "new_message",
    "new_message_batch",
    "scoped_project",
    "utc_now",
    "validated",
    "validated_fields",
]

Role = Literal["user", "agent", "tool"]
Kind = Literal[
    "request", "requires_payment", "tool_message", "requires_input", "final_response", "error"
]
ContextRole = Literal["user", "assistant", "system", "tool"]

ROLES: Final[frozenset[str]] = frozenset(get_args(Role))
KINDS: Final[frozenset[str]] = frozenset(get_args(Kind))
CONTEXT_ROLES: Final[frozenset[str]] = frozenset(get_args(ContextRole))

NO_PREVIEW: Final = "(no preview)"
"""axio's preview of a session whose first user message has no text block, or no user message."""


M = TypeVar("M", bound=BaseModel)


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC: what every stored timestamp is."""
    return datetime.now(UTC)


class Model(BaseModel):
    """The base of convostore's models: an unknown field is refused, never dropped.

    ``User(user_id="u", balance=5)`` raises :class:`~convostore.errors.ValidationError`
    naming ``balance`` (pydantic's default would make a user with a zero balance), as does
    any bad value given to a constructor; validating a mapping at an API boundary
    (:func:`validated`) does the same.
    """

    model_config = ConfigDict(extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise ValidationError(explained(type(self), exc)) from exc


class User(Model):
    """A user of one agent (agentstr's ``User``)."""

    model_config = ConfigDict(validate_assignment=True)

    user_id: str
    # Strict: a balance given as True or "5" is refused, not silently stored as 1 or 5.
    available_balance: int = Field(default=0, ge=0, strict=True)
    current_thread_id: str | None = None


class Message(Model):
    """A stored message of an agent thread (agentstr's ``Message``).

    ``agent_name`` is the database's agent name as given, ``None`` included.
    """

    agent_name: str | None
    thread_id: str
    user_id: str
    idx: int
    message: str
    content: str
    role: Role
    kind: Kind
    satoshis: int | None = None
    extra_inputs: dict[str, Any] = Field(default_factory=dict)
    extra_outputs: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utc_now)


class ContextMessage(Model):
    """One message of a conversation context: a role and a list of JSON content blocks.

    The blocks are stored exactly as given (see :mod:`convostore.codec` for what counts as
    JSON), e.g. ``[{"type": "text", "text": "Hello"}]``.
    """

    role: ContextRole
    content: list[dict[str, Any]] = Field(default_factory=list)

    def preview(self, length: int = 80) -> str | None:
        """axio's preview: the first text block, cut at ``length`` characters with ``...``.

        Returns ``None`` for messages that are not from the user, and :data:`NO_PREVIEW` for
        a user message without a text block (an empty text block previews as ``""``, as in
        axio).
        """
        if self.role != "user":
            return None
        for block in self.content:
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                # NUL is fine inside stored JSON, but the preview is a text column and
                # PostgreSQL's text cannot hold it.
                text: str = block["text"].replace("\x00", "")
                return text[:length] + ("..." if len(text) > length else "")
        return NO_PREVIEW


class ThreadInfo(Model):
    """Summary of one agent thread, as ``list_threads`` returns it."""

    thread_id: str
    user_id: str | None
    message_count: int
    created_at: datetime
    updated_at: datetime


class StoredContextMessage(ContextMessage):
    """A context message as stored: with its position, time and client id."""

    position: int
    created_at: datetime
    client_id: str | None = None

    def message(self) -> ContextMessage:
        """The plain message (role and content), as ``get_history`` returns it."""
        return ContextMessage.model_construct(role=self.role, content=self.content)


class SessionInfo(Model):
    """Summary of one context-store session, as ``list_sessions`` returns it.

    ``updated_at`` is the last time a message was written; ``parent_session_id`` and
    ``forked_at`` (the number of messages taken) are set on sessions made by ``fork``.
    """

    session_id: str
    message_count: int
    preview: str
    created_at: datetime
    input_tokens: int = 0
    output_tokens: int = 0
    updated_at: datetime | None = None
    parent_session_id: str | None = None
    forked_at: int | None = None


class SearchHit(Model):
    """What a search hit has on both interfaces: the snippet and the rank.

    ``snippet`` is a piece of the message's text around its first match, ``…`` where it is
    cut; ``highlights`` are the ``(start, end)`` offsets of the matching words in it.
    ``rank`` orders hits (higher first); it is comparable only within one search, and
    with the hit's key it is the keyset cursor: pass the last hit of a page as
    ``before=`` for the next page.
    """

    snippet: str
    highlights: list[tuple[int, int]] = Field(default_factory=list)
    rank: int

    def highlighted(self, start: str = "**", end: str = "**") -> str:
        """The snippet with each match wrapped in ``start`` and ``end``."""
        out, at = [], 0
        for begin, finish in self.highlights:
            out += [self.snippet[at:begin], start, self.snippet[begin:finish], end]
            at = finish
        out.append(self.snippet[at:])
        return "".join(out)


class ContextSearchHit(SearchHit):
    """A context-store message found by ``search``: its session and the message as stored."""

    session_id: str
    message: StoredContextMessage


class MessageSearchHit(SearchHit):
    """An agent-database message found by ``search`` (thread, user and ``idx`` in it)."""

    message: Message


@dataclass(frozen=True, slots=True)
class NewMessage:
    """The checked arguments of ``add_message``, with payloads already encoded."""

    thread_id: str
    user_id: str
    role: Role
    kind: Kind
    message: str
    content: str
    satoshis: int | None
    encoded_content: codec.Encoded
    encoded_inputs: codec.Encoded
    encoded_outputs: codec.Encoded
    search_text: str | None


def new_message(
    thread_id: object,
    user_id: object,
    role: object,
    message: object,
    content: object,
    kind: object,
    satoshis: object,
    extra_inputs: object,
    extra_outputs: object,
    *,
    id_lengths: tuple[int, int],
    feed: bool = True,
) -> NewMessage:
    """Check ``add_message``'s arguments and encode its payloads, before any SQL runs.

    ``feed``: compute the search feed (not for an engine that writes no index).

    Raises:
        ValidationError: An id, role, kind, text or amount is not acceptable.
        SerializationError: An extra is not exactly JSON.
    """
    thread_length, user_length = id_lengths
    inputs = _json_object(extra_inputs, "extra_inputs")
    outputs = _json_object(extra_outputs, "extra_outputs")
    checked_content = check_text_or_nul(content, "content")
    checked_message = check_text(message, "message")
    return NewMessage(
        thread_id=check_id(thread_id, "thread_id", thread_length),
        user_id=check_id(user_id, "user_id", user_length),
        role=check_choice(role, "role", ROLES),  # type: ignore[arg-type]
        kind=check_choice(kind, "kind", KINDS),  # type: ignore[arg-type]
        message=checked_message,
        content=checked_content,
        satoshis=None if satoshis is None else check_amount(satoshis, "satoshis"),
        encoded_content=codec.encoded(checked_content),
        encoded_inputs=codec.encoded(inputs),
        encoded_outputs=codec.encoded(outputs),
        search_text=search.message_feed(checked_message, checked_content) if feed else None,
    )


def encoded_context_message(
    message: object, *, feed: bool = True
) -> tuple[ContextMessage, codec.Encoded]:
    """Check a message for the context store and encode its content.

    Accepts a :class:`ContextMessage`, or a mapping / object with ``role`` and ``content``.
    ``feed``: compute the search feed (not for an engine that writes no index: ~88 µs of a
    2 KB message saved).

    Raises:
        ValidationError: The role is unknown or the content is not a list of objects.
        SerializationError: The content is not exactly JSON.
    """
    if type(message) is not ContextMessage:
        message = validated(ContextMessage, message)
    assert isinstance(message, ContextMessage)
    check_choice(message.role, "role", CONTEXT_ROLES)
    content = message.content
    if type(content) is not list or any(type(block) is not dict for block in content):
        raise ValidationError("content must be a list of JSON objects (content blocks)")
    return message, codec.encoded(
        content, search_text=search.context_feed(content) if feed else None
    )


def encoded_context_messages(
    messages: object, *, feed: bool = True
) -> list[tuple[ContextMessage, codec.Encoded]]:
    """:func:`encoded_context_message` for each of ``messages`` (any iterable of messages).

    Raises:
        ValidationError: ``messages`` is not iterable, or a message is not acceptable.
        SerializationError: A message's content is not exactly JSON.
    """
    try:
        items = iter(messages)  # type: ignore[call-overload]
    except TypeError:
        raise ValidationError(
            f"messages must be an iterable of messages, not {type(messages).__name__}"
        ) from None
    return [encoded_context_message(message, feed=feed) for message in items]


def new_message_batch(
    thread_id: object,
    user_id: object,
    messages: object,
    *,
    id_lengths: tuple[int, int],
    feed: bool = True,
) -> tuple[list[NewMessage], list[str | None]]:
    """Check ``add_messages``' items (mappings of ``add_message``'s keyword arguments).

    Returns the checked messages and their client ids (``None`` where not given).

    Raises:
        ValidationError: An item is not a mapping, has unknown fields or bad values.
        SerializationError: An extra is not exactly JSON.
    """
    check_id(thread_id, "thread_id", id_lengths[0])
    check_id(user_id, "user_id", id_lengths[1])
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise ValidationError("messages must be an iterable of mappings")
    news, client_ids = [], []
    for item in messages:
        fields = dict(validated_fields(item))
        client_ids.append(fields.pop("client_id", None))
        news.append(
            new_message(
                thread_id,
                user_id,
                fields.get("role"),
                fields.get("message", ""),
                fields.get("content", ""),
                fields.get("kind", "request"),
                fields.get("satoshis"),
                fields.get("extra_inputs"),
                fields.get("extra_outputs"),
                id_lengths=id_lengths,
                feed=feed,
            )
        )
    return news, client_ids


_MESSAGE_FIELDS = frozenset(
    {
        "role",
        "message",
        "content",
        "kind",
        "satoshis",
        "extra_inputs",
        "extra_outputs",
        "client_id",
    }
)


def validated_fields(item: object) -> Mapping[str, Any]:
    """Check one item of ``add_messages``: a mapping of ``add_message``'s keyword arguments."""
    if not isinstance(item, Mapping):
        raise ValidationError(f"each message must be a mapping, not {type(item).__name__}")
    unknown = set(item) - _MESSAGE_FIELDS
    if unknown:
        raise ValidationError(f"unknown message fields {sorted(map(str, unknown))}")
    if "role" not in item:
        raise ValidationError("each message needs a role")
    return item


def _json_object(value: object, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be a mapping, not {type(value).__name__}")
    return dict(value)


def check_text_or_nul(value: object, name: str) -> str:
    """Return ``value`` if it is a ``str`` (NUL allowed: it is stored inside JSON)."""
    if type(value) is not str:
        raise ValidationError(f"{name} must be a str, not {type(value).__name__}")
    return value


def construct(model: type[M], values: dict[str, Any]) -> M:
    """Build ``model`` from trusted ``values`` (every field, already valid), without checks.

    The same object ``model_construct`` makes (tests/unit/test_models.py holds them equal),
    at half its cost, which counts on reads of thousands of rows. ``values`` is used as
    the instance's ``__dict__``: pass a fresh dict.
    """
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


def check_id(value: object, name: str, max_length: int) -> str:
    """Return ``value`` if it is a usable id, else raise :class:`ValidationError`.

    Ids are compared exactly on every backend, so they must be non-empty strings of at most
    ``max_length`` characters, without NUL (PostgreSQL cannot store it), unpaired
    surrogates (not UTF-8) or trailing whitespace (MySQL/MariaDB's PAD SPACE collations
    would treat ``"a"`` and ``"a "`` as one key). Quotes and SQL metacharacters are fine:
    every value is a bound parameter.
    """
    if type(value) is not str:
        raise ValidationError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValidationError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ValidationError(f"{name} is {len(value)} characters long; the limit is {max_length}")
    if value[-1].isspace():
        raise ValidationError(f"{name} must not end with whitespace")
    check_text(value, name)
    return value


NAMESPACE_SEPARATOR = "\x1f"
"""Joins a namespace to a project in the stored project key (U+001F, the unit separator)."""
NAMESPACE_LENGTH = 64
_NAMESPACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def check_namespace(value: object) -> str | None:
    """Return ``value`` if it is a usable namespace (or ``None``), else raise ValidationError.

    A namespace is what axio-context-sqlite calls ``db_name``, a table-name prefix: so it is
    1 to 64 letters, digits or underscores.
    """
    if value is None:
        return None
    if type(value) is not str:
        raise ValidationError(f"namespace must be a str, not {type(value).__name__}")
    if not value or len(value) > NAMESPACE_LENGTH or not set(value) <= _NAMESPACE_CHARS:
        raise ValidationError(
            f"namespace {value!r} must be 1 to {NAMESPACE_LENGTH} letters, digits or underscores"
        )
    return value


def scoped_project(namespace: str | None, project: str, max_length: int) -> str:
    """The project key stored for ``project`` within ``namespace``.

    The default namespace (``None``) stores the project as it is; any other prefixes it
    with the namespace and :data:`NAMESPACE_SEPARATOR`. Projects may not contain the
    separator, so two (namespace, project) pairs never share a key.

    Raises:
        ValidationError: ``project`` contains the separator, or the key is too long.
    """
    if NAMESPACE_SEPARATOR in project:
        raise ValidationError("project must not contain U+001F (the namespace separator)")
    if namespace is None:
        return project
    key = f"{namespace}{NAMESPACE_SEPARATOR}{project}"
    if len(key) > max_length:
        raise ValidationError(
            f"project is too long for namespace {namespace!r}: "
            f"{len(key)} characters with the namespace; the limit is {max_length}"
        )
    return key


def check_text(value: object, name: str) -> str:
    """Return ``value`` if it is a ``str`` a text column can hold on every backend."""
    if type(value) is not str:
        raise ValidationError(f"{name} must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise ValidationError(f"{name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{name} is not valid Unicode text: {exc.reason}") from exc
    return value


def validated(model: type[M], value: object) -> M:
    """Validate ``value`` (a model, a mapping or an object with the fields) as ``model``.

    Accepts look-alike objects, such as agentstr's own ``User``, by their attributes.

    Raises:
        ValidationError: With pydantic's explanation.
    """
    if isinstance(value, model):
        # A subclass's own fields (a StoredContextMessage's position and time) are what
        # the subclass adds, not misspelt fields of ``model``: they are left out on purpose.
        value = {name: getattr(value, name) for name in model.model_fields}
    elif isinstance(value, BaseModel):
        value = value.model_dump()
    try:
        return model.model_validate(value, from_attributes=True)
    except pydantic.ValidationError as exc:
        # Validation runs Model.__init__ (pydantic calls a custom __init__), whose own
        # ValidationError arrives wrapped as a pydantic "value error": pass it on as it is.
        for error in exc.errors(include_url=False):
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, ValidationError):
                raise ValidationError(str(cause)) from cause.__cause__
        raise ValidationError(explained(model, exc)) from exc


def explained(model: type[BaseModel], exc: pydantic.ValidationError) -> str:
    """One line naming each field pydantic refused: ``invalid User: unknown field 'balance'``."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(the value)"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown field {where!r}")
        else:
            problems.append(f"{where}: {error['msg']}")
    return f"invalid {model.__name__}: {'; '.join(problems)}"


def check_client_ids(ids: object, count: int, max_length: int) -> list[str | None]:
    """Check optional client message ids: ``None``, or one id (or ``None``) per message."""
    if ids is None:
        return [None] * count
    if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
        raise ValidationError("client_ids must be a list with one id (or None) per message")
    if len(ids) != count:
        raise ValidationError(f"got {len(ids)} client_ids for {count} messages")
    checked = [None if i is None else check_id(i, "client_id", max_length) for i in ids]
    present = [i for i in checked if i is not None]
    if len(set(present)) != len(present):
        raise ValidationError("client_ids must be distinct")
    return checked


def check_choice(value: object, name: str, allowed: frozenset[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise :class:`ValidationError`."""
    if type(value) is not str or value not in allowed:
        raise ValidationError(f"{name} must be one of {sorted(allowed)}, not {value!r}")
    return value


def check_amount(value: object, name: str) -> int:
    """Return ``value`` if it is a non-negative ``int`` (``bool`` is refused)."""
    if type(value) is not int:
        raise ValidationError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValidationError(f"{name} must not be negative, got {value}")
    if value >= 2**63:
        raise ValidationError(f"{name} does not fit in 64 bits")
    return value


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a ``bool`` (``1`` and ``"yes"`` are refused)."""
    if type(value) is not bool:
        raise ValidationError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_page(limit: object, before: object, cursor: type[BaseModel]) -> None:
    """Check a keyset page's arguments: ``limit`` >= 0 or None, ``before`` a ``cursor``
    (the last item of the previous page) or None."""
    check_optional_int(limit, "limit", minimum=0)
    if before is not None and not isinstance(before, cursor):
        raise ValidationError(f"before must be a {cursor.__name__} from a previous page")


def check_optional_int(value: object, name: str, *, minimum: int | None = None) -> int | None:
    """Return ``value`` if it is ``None`` or an ``int`` of at least ``minimum``."""
    if value is None:
        return None
    if type(value) is not int:
        raise ValidationError(f"{name} must be an int or None, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{name} must be at least {minimum}, got {value}")
    if not -(2**63) <= value < 2**63:
        raise ValidationError(f"{name} does not fit in 64 bits")
    return value
