"""What every part of :mod:`convostore.transfer` shares: the record types of the export
format, the checks each record passes, timestamps, reports and progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from sqlalchemy import Table

from convostore.errors import ValidationError
from convostore.models import (
    CONTEXT_ROLES,
    KINDS,
    ROLES,
    check_amount,
    check_choice,
    check_id,
    check_text,
)
from convostore.rules import (
    AGENT_NAME_LENGTH,
    DEFAULT_AGENT_KEY,
    LANGGRAPH_CHANNEL_LENGTH,
    LANGGRAPH_CHECKPOINT_ID_LENGTH,
    LANGGRAPH_NS_LENGTH,
    LANGGRAPH_TASK_ID_LENGTH,
    LANGGRAPH_TASK_PATH_LENGTH,
    LANGGRAPH_THREAD_ID_LENGTH,
    PREVIEW_LENGTH,
    PROJECT_LENGTH,
    SESSION_ID_LENGTH,
    THREAD_ID_LENGTH,
    USER_ID_LENGTH,
)
from convostore.sql.tables import (
    ContextMessageRecord,
    ContextSessionRecord,
    LangGraphBlobRecord,
    LangGraphCheckpointRecord,
    LangGraphWriteRecord,
    MessageRecord,
    ThreadRecord,
    UserRecord,
    table_of,
)

EXPORT_FORMAT: Final = "convostore-export"
EXPORT_VERSION: Final = 1
BATCH_SIZE: Final = 500

USERS = table_of(UserRecord)
THREADS = table_of(ThreadRecord)
MESSAGES = table_of(MessageRecord)
SESSIONS = table_of(ContextSessionRecord)
CONTEXT_MESSAGES = table_of(ContextMessageRecord)
LANGGRAPH_CHECKPOINTS = table_of(LangGraphCheckpointRecord)
LANGGRAPH_BLOBS = table_of(LangGraphBlobRecord)
LANGGRAPH_WRITES = table_of(LangGraphWriteRecord)


# --- per-field checks, one table per record type ------------------------------------------
# Each check gets the field's value and name and raises ValidationError; they are the
# checks the façades apply to what they write, so imported rows read back.

FieldCheck = Callable[[Any, str], object]


def _id(length: int) -> FieldCheck:
    return lambda value, name: check_id(value, name, length)


def _optional(check: FieldCheck) -> FieldCheck:
    return lambda value, name: None if value is None else check(value, name)


def _choice(allowed: frozenset[str]) -> FieldCheck:
    return lambda value, name: check_choice(value, name, allowed)


def _agent(value: Any, name: str) -> object:
    # The default agent's key is stored as it is; it would not pass as a user-given name.
    return value if value == DEFAULT_AGENT_KEY else check_id(value, name, AGENT_NAME_LENGTH)


def _json_string(value: Any, name: str) -> object:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string")
    return value


def _json_object(value: Any, name: str) -> object:
    if not isinstance(value, dict):
        raise ValidationError(f"{name} must be a JSON object")
    return value


def _blocks(value: Any, name: str) -> object:
    if not isinstance(value, list) or not all(isinstance(b, dict) for b in value):
        raise ValidationError(f"{name} must be a list of JSON objects")
    return value


def _langgraph_key(length: int, *, empty: bool = False) -> FieldCheck:
    # What convostore.integrations.langgraph accepts: LangGraph's keys are its own (a
    # namespace may be empty), so only the column's limits apply.
    def check(value: Any, name: str) -> object:
        if type(value) is not str or (not value and not empty):
            raise ValidationError(f"{name} must be a{'' if empty else ' non-empty'} string")
        if len(value) > length:
            raise ValidationError(f"{name} is {len(value)} characters long; the limit is {length}")
        return check_text(value, name) if value else value

    return check


def _langgraph_payload(value: Any, name: str) -> object:
    # A LangGraph serializer's output as the saver stores it: [type, base64 of the bytes].
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ValidationError(f"{name} must be a [type, base64] pair of strings")
    return value


def _int(value: Any, name: str) -> object:
    if type(value) is not int or not -(2**31) <= value < 2**31:
        raise ValidationError(f"{name} must be a 32-bit int")
    return value


def _preview(value: Any, name: str) -> object:
    check_text(value, name)
    if len(value) > PREVIEW_LENGTH:
        raise ValidationError(f"{name} is longer than {PREVIEW_LENGTH}")
    return value


CHECKS: Final[dict[str, tuple[tuple[str, FieldCheck], ...]]] = {
    "user": (
        ("agent_name", _agent),
        ("user_id", _id(USER_ID_LENGTH)),
        ("available_balance", check_amount),
        ("current_thread_id", _optional(_id(THREAD_ID_LENGTH))),
    ),
    "thread": (
        ("agent_name", _agent),
        ("thread_id", _id(THREAD_ID_LENGTH)),
        ("next_idx", check_amount),
    ),
    "message": (
        ("agent_name", _agent),
        ("thread_id", _id(THREAD_ID_LENGTH)),
        ("user_id", _id(USER_ID_LENGTH)),
        ("idx", check_amount),
        ("role", _choice(ROLES)),
        ("kind", _choice(KINDS)),
        ("message", check_text),
        ("content", _json_string),
        ("satoshis", _optional(check_amount)),
        ("extra_inputs", _json_object),
        ("extra_outputs", _json_object),
    ),
    "session": (
        ("project", _id(PROJECT_LENGTH)),
        ("session_id", _id(SESSION_ID_LENGTH)),
        ("input_tokens", check_amount),
        ("output_tokens", check_amount),
        ("next_position", check_amount),
        ("preview", _optional(_preview)),
    ),
    "context_message": (
        ("project", _id(PROJECT_LENGTH)),
        ("session_id", _id(SESSION_ID_LENGTH)),
        ("position", check_amount),
        ("role", _choice(CONTEXT_ROLES)),
        ("content", _blocks),
    ),
    "langgraph_checkpoint": (
        ("thread_id", _langgraph_key(LANGGRAPH_THREAD_ID_LENGTH)),
        ("checkpoint_ns", _langgraph_key(LANGGRAPH_NS_LENGTH, empty=True)),
        ("checkpoint_id", _langgraph_key(LANGGRAPH_CHECKPOINT_ID_LENGTH)),
        ("parent_checkpoint_id", _optional(_langgraph_key(LANGGRAPH_CHECKPOINT_ID_LENGTH))),
        ("run_id", _optional(_langgraph_key(LANGGRAPH_THREAD_ID_LENGTH))),
        ("checkpoint", _langgraph_payload),
        ("checkpoint_metadata", _langgraph_payload),
    ),
    "langgraph_blob": (
        ("thread_id", _langgraph_key(LANGGRAPH_THREAD_ID_LENGTH)),
        ("checkpoint_ns", _langgraph_key(LANGGRAPH_NS_LENGTH, empty=True)),
        ("channel", _langgraph_key(LANGGRAPH_CHANNEL_LENGTH)),
        ("version", _langgraph_key(LANGGRAPH_CHECKPOINT_ID_LENGTH)),
        ("value", _langgraph_payload),
    ),
    "langgraph_write": (
        ("thread_id", _langgraph_key(LANGGRAPH_THREAD_ID_LENGTH)),
        ("checkpoint_ns", _langgraph_key(LANGGRAPH_NS_LENGTH, empty=True)),
        ("checkpoint_id", _langgraph_key(LANGGRAPH_CHECKPOINT_ID_LENGTH)),
        ("task_id", _langgraph_key(LANGGRAPH_TASK_ID_LENGTH)),
        ("idx", _int),
        ("channel", _langgraph_key(LANGGRAPH_CHANNEL_LENGTH)),
        ("task_path", _langgraph_key(LANGGRAPH_TASK_PATH_LENGTH, empty=True)),
        ("value", _langgraph_payload),
    ),
}


def check_row(name: str, row: dict[str, Any], where: str) -> None:
    """Run the checks of record type ``name`` on ``row``; the message starts with ``where``."""
    try:
        for field_name, check in CHECKS[name]:
            check(row[field_name], field_name)
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from exc


# --- record types ------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How one record type of the export format maps onto its table."""

    name: str
    table: Table
    fields: tuple[str, ...]
    key: tuple[str, ...]
    timestamps: tuple[str, ...]
    # Fields added after version 1 was first written: absent means null (a missing
    # updated_at is the created_at).
    optional: tuple[str, ...] = ()


KINDS_IN_ORDER: Final = (
    Kind(
        "user",
        USERS,
        (
            "agent_name",
            "user_id",
            "available_balance",
            "current_thread_id",
            "created_at",
            "updated_at",
        ),
        ("agent_name", "user_id"),
        ("created_at", "updated_at"),
    ),
    Kind(
        "thread",
        THREADS,
        ("agent_name", "thread_id", "next_idx", "created_at", "updated_at", "user_id"),
        ("agent_name", "thread_id"),
        ("created_at", "updated_at"),
        ("user_id",),
    ),
    Kind(
        "message",
        MESSAGES,
        (
            "agent_name",
            "thread_id",
            "idx",
            "user_id",
            "role",
            "kind",
            "message",
            "content",
            "satoshis",
            "extra_inputs",
            "extra_outputs",
            "created_at",
            "client_id",
        ),
        ("agent_name", "thread_id", "idx"),
        ("created_at",),
        ("client_id",),
    ),
    Kind(
        "session",
        SESSIONS,
        (
            "project",
            "session_id",
            "input_tokens",
            "output_tokens",
            "next_position",
            "preview",
            "created_at",
            "updated_at",
            "parent_session_id",
            "forked_at",
        ),
        ("project", "session_id"),
        ("created_at", "updated_at"),
        ("updated_at", "parent_session_id", "forked_at"),
    ),
    Kind(
        "context_message",
        CONTEXT_MESSAGES,
        ("project", "session_id", "position", "role", "content", "created_at", "client_id"),
        ("project", "session_id", "position"),
        ("created_at",),
        ("client_id",),
    ),
    # LangGraph checkpoints (convostore.integrations.langgraph), after every core record.
    Kind(
        "langgraph_checkpoint",
        LANGGRAPH_CHECKPOINTS,
        (
            "thread_id",
            "checkpoint_ns",
            "checkpoint_id",
            "parent_checkpoint_id",
            "run_id",
            "checkpoint",
            "checkpoint_metadata",
            "created_at",
        ),
        ("thread_id", "checkpoint_ns", "checkpoint_id"),
        ("created_at",),
    ),
    Kind(
        "langgraph_blob",
        LANGGRAPH_BLOBS,
        ("thread_id", "checkpoint_ns", "channel", "version", "value"),
        ("thread_id", "checkpoint_ns", "channel", "version"),
        (),
    ),
    Kind(
        "langgraph_write",
        LANGGRAPH_WRITES,
        (
            "thread_id",
            "checkpoint_ns",
            "checkpoint_id",
            "task_id",
            "idx",
            "channel",
            "task_path",
            "value",
        ),
        ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"),
        (),
    ),
)
BY_NAME: Final = {kind.name: kind for kind in KINDS_IN_ORDER}
RECORD_TYPES: Final = tuple(kind.name for kind in KINDS_IN_ORDER)
"""The record types of the export format, in the order an export writes them."""


# --- progress and reports ------------------------------------------------------------------


class Progress(Protocol):
    """Receives progress of a long operation (the CLI draws a bar; the default ignores it)."""

    def start(self, label: str, total: int | None) -> None:
        """A new phase begins; ``total`` units of work, if known."""

    def advance(self, amount: int) -> None:
        """``amount`` more units are done."""


class NoProgress:
    """The :class:`Progress` that ignores everything."""

    def start(self, label: str, total: int | None) -> None:
        """Ignored."""

    def advance(self, amount: int) -> None:
        """Ignored."""


@dataclass
class TransferReport:
    """What an export or import did, per record type.

    ``source`` counts the records read; ``inserted`` the rows that are new in the
    destination (its row count after minus before); ``skipped`` the records whose key was
    already there. ``verified`` is set once every key read has been found in the destination.
    """

    operation: str
    source: str
    destination: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    verified: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json`` output)."""
        return {
            "operation": self.operation,
            "source": self.source,
            "destination": self.destination,
            "counts": self.counts,
            "verified": self.verified,
        }


# --- timestamps -----------------------------------------------------------------------------


def iso(value: datetime) -> str:
    """``value`` as ISO-8601 UTC with microseconds and a ``Z``, as the export format writes."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object, where: str) -> datetime:
    """A timestamp of the export format: ISO-8601 with a time zone."""
    if not isinstance(value, str):
        raise ValidationError(f"{where}: timestamp must be an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{where}: invalid timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        raise ValidationError(f"{where}: timestamp {value!r} has no time zone")
    return parsed.astimezone(UTC)


def source_time(value: object, where: str) -> datetime:
    """A timestamp from a foreign SQLite database; naive values are UTC (as both tools write)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{where}: missing or invalid timestamp {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{where}: invalid timestamp {value!r}") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
