"""The rules the SQL implementations and the in-memory twin share, without SQLAlchemy.

Id lengths (the key columns of ``convostore.sql.tables`` are sized from them), the key the
default agent is stored under, the preview's length, the 64-bit bound of every counter and
the default project. The namespace helpers and the preview itself are in
:mod:`convostore.models`, also free of SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from convostore.errors import ValidationError

__all__ = [
    "ADK_KEY_LENGTH",
    "AGENT_NAME_LENGTH",
    "CLIENT_ID_LENGTH",
    "CLIENT_KEY_BYTES",
    "DEFAULT_AGENT_KEY",
    "INT64_MAX",
    "LANGGRAPH_CHANNEL_LENGTH",
    "LANGGRAPH_CHECKPOINT_ID_LENGTH",
    "LANGGRAPH_NS_LENGTH",
    "LANGGRAPH_TASK_ID_LENGTH",
    "LANGGRAPH_TASK_PATH_LENGTH",
    "LANGGRAPH_THREAD_ID_LENGTH",
    "PREVIEW_LENGTH",
    "PROJECT_LENGTH",
    "SESSION_ID_LENGTH",
    "THREAD_ID_LENGTH",
    "USER_ID_LENGTH",
    "check_client_key",
    "checked_counter",
    "default_project",
]

# Key lengths keep every composite key under MySQL/MariaDB's 3072-byte index limit
# at 4 bytes per utf8mb4 character.
AGENT_NAME_LENGTH: Final = 128
USER_ID_LENGTH: Final = 255
THREAD_ID_LENGTH: Final = 255
PROJECT_LENGTH: Final = 512
SESSION_ID_LENGTH: Final = 128
PREVIEW_LENGTH: Final = 100
CLIENT_ID_LENGTH: Final = 128
CLIENT_KEY_BYTES: Final = 2600
"""The most UTF-8 bytes a context message's project (with its namespace), session id and
client id may take together. They are one key of a unique index, and PostgreSQL's B-tree
holds at most 2704 bytes per key, overhead included: at four bytes a character the
column lengths alone (512 + 128 + 128) would allow 3072. Checked before any SQL, on every
backend alike."""
# ADK's own key columns are 128 characters (app name, user id, session id, event id).
ADK_KEY_LENGTH: Final = 128
# LangGraph's keys: thread ids and task ids (UUIDs in practice), checkpoint namespaces
# ("node:task_id|node:task_id" for nested subgraphs), channel names, checkpoint ids and
# channel versions (UUIDv6 and "<32 digits>.<16 digits>" at most).
LANGGRAPH_THREAD_ID_LENGTH: Final = 128
LANGGRAPH_NS_LENGTH: Final = 255
LANGGRAPH_CHECKPOINT_ID_LENGTH: Final = 64
LANGGRAPH_CHANNEL_LENGTH: Final = 200
LANGGRAPH_TASK_ID_LENGTH: Final = 128
LANGGRAPH_TASK_PATH_LENGTH: Final = 1024

DEFAULT_AGENT_KEY: Final = ""
"""How ``agent_name=None`` is stored: key columns cannot be NULL, and an agent's name is
never empty (:func:`convostore.models.check_id` refuses it), so the two cannot collide."""

INT64_MAX: Final = 2**63 - 1


def check_client_key(project: str, session_id: str, client_ids: list[str | None]) -> None:
    """Refuse client ids whose index key would exceed :data:`CLIENT_KEY_BYTES`.

    Raises:
        ValidationError: Naming the limit and the bytes the key would take.
    """
    longest = max((len(i.encode()) for i in client_ids if i is not None), default=None)
    if longest is None:
        return
    size = len(project.encode()) + len(session_id.encode()) + longest
    if size > CLIENT_KEY_BYTES:
        raise ValidationError(
            f"project, session_id and client_id take {size} bytes of UTF-8 together; the "
            f"limit is {CLIENT_KEY_BYTES} (CLIENT_KEY_BYTES: they form one index key, and "
            "PostgreSQL's index keys hold at most 2704 bytes): use a shorter client_id"
        )


def checked_counter(value: Any, table: str, counter: str) -> int:
    """``value`` as an int, refusing what overflowed 64 bits.

    PostgreSQL and MySQL/MariaDB raise on a BIGINT overflow (which
    :func:`convostore.sql.retry.translate_errors` makes a ValidationError); SQLite instead
    turns the result into a REAL, which this catches so the transaction rolls back the
    same way. The in-memory twin calls it for the same refusal.
    """
    if type(value) is not int or value > INT64_MAX:
        raise ValidationError(f"{table}.{counter} would overflow 64 bits")
    return value


def default_project() -> str:
    """The default project: the resolved current working directory, as axio uses."""
    return str(Path.cwd().resolve())
