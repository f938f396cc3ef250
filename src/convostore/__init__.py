"""convostore: persistence for LLM agent conversations.

Two interfaces over one schema, on SQLite, PostgreSQL and MariaDB/MySQL:

* the agent database (agentstr's ``BaseDatabase``): :func:`Database`, :class:`SQLAlchemyDatabase`;
* the conversation context store (axio's ``ContextStore``): :func:`connect`,
  :class:`SQLAlchemyContextStore`.

Nothing here opens a connection at import time. The names below are imported on first use
(PEP 562), so ``import convostore.memory`` alone, the in-memory twin, does not load
SQLAlchemy, and neither does ``from convostore import Database`` (or ``connect``): the two
entry points (:mod:`convostore.entry`) load the façades when first called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convostore.context import SQLAlchemyContextStore
    from convostore.database import SQLAlchemyDatabase
    from convostore.encryption import Keyring
    from convostore.entry import Database, connect
    from convostore.errors import (
        CommitOutcomeUnknown,
        ConfigurationError,
        ConflictError,
        ConvostoreError,
        CorruptEnvelopeError,
        DatabaseError,
        DeadlineExceeded,
        DecryptionError,
        EncryptionError,
        InsufficientBalance,
        KeyNotFoundError,
        NotFoundError,
        SchemaVersionError,
        SerializationError,
        ValidationError,
    )
    from convostore.interfaces import AgentDatabase, ContextStore
    from convostore.memory import InMemoryContextStore, InMemoryDatabase, MemoryStorage
    from convostore.models import (
        ContextMessage,
        ContextSearchHit,
        Message,
        MessageSearchHit,
        SessionInfo,
        User,
    )
    from convostore.sql.engine import Engine, create_engine
    from convostore.sql.profile import EngineProfile, profile_of
    from convostore.sql.replicas import ReadReplicas
    from convostore.sql.types import CompressedJSON, UTCDateTime

# Where each public name lives (the lines above, for type checkers, say the same).
_EXPORTS: dict[str, str] = {
    "AgentDatabase": "convostore.interfaces",
    "CommitOutcomeUnknown": "convostore.errors",
    "CompressedJSON": "convostore.sql.types",
    "ConfigurationError": "convostore.errors",
    "ConflictError": "convostore.errors",
    "ContextMessage": "convostore.models",
    "ContextSearchHit": "convostore.models",
    "ContextStore": "convostore.interfaces",
    "ConvostoreError": "convostore.errors",
    "Database": "convostore.entry",
    "DatabaseError": "convostore.errors",
    "DeadlineExceeded": "convostore.errors",
    "CorruptEnvelopeError": "convostore.errors",
    "DecryptionError": "convostore.errors",
    "EncryptionError": "convostore.errors",
    "Engine": "convostore.sql.engine",
    "EngineProfile": "convostore.sql.profile",
    "InMemoryContextStore": "convostore.memory",
    "InMemoryDatabase": "convostore.memory",
    "InsufficientBalance": "convostore.errors",
    "KeyNotFoundError": "convostore.errors",
    "Keyring": "convostore.encryption",
    "MemoryStorage": "convostore.memory",
    "Message": "convostore.models",
    "MessageSearchHit": "convostore.models",
    "NotFoundError": "convostore.errors",
    "ReadReplicas": "convostore.sql.replicas",
    "SQLAlchemyContextStore": "convostore.context",
    "SQLAlchemyDatabase": "convostore.database",
    "SchemaVersionError": "convostore.errors",
    "SerializationError": "convostore.errors",
    "SessionInfo": "convostore.models",
    "UTCDateTime": "convostore.sql.types",
    "User": "convostore.models",
    "ValidationError": "convostore.errors",
    "connect": "convostore.entry",
    "create_engine": "convostore.sql.engine",
    "profile_of": "convostore.sql.profile",
}

__all__ = [
    "AgentDatabase",
    "CommitOutcomeUnknown",
    "CompressedJSON",
    "ConfigurationError",
    "ConflictError",
    "ContextMessage",
    "ContextSearchHit",
    "ContextStore",
    "ConvostoreError",
    "CorruptEnvelopeError",
    "Database",
    "DatabaseError",
    "DeadlineExceeded",
    "DecryptionError",
    "EncryptionError",
    "Engine",
    "EngineProfile",
    "InMemoryContextStore",
    "InMemoryDatabase",
    "InsufficientBalance",
    "KeyNotFoundError",
    "Keyring",
    "MemoryStorage",
    "Message",
    "MessageSearchHit",
    "NotFoundError",
    "ReadReplicas",
    "SQLAlchemyContextStore",
    "SQLAlchemyDatabase",
    "SchemaVersionError",
    "SerializationError",
    "SessionInfo",
    "UTCDateTime",
    "User",
    "ValidationError",
    "connect",
    "create_engine",
    "profile_of",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, then keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'convostore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
