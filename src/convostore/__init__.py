"""convostore: persistence for LLM agent conversations.

Two interfaces over one schema, on SQLite, PostgreSQL and MariaDB/MySQL:

* the agent database (agentstr's ``BaseDatabase``): :func:`Database`, :class:`SQLAlchemyDatabase`;
* the conversation context store (axio's ``ContextStore``): :func:`connect`,
  :class:`SQLAlchemyContextStore`.

Nothing here opens a connection at import time.
"""

from convostore.context import SQLAlchemyContextStore, connect
from convostore.database import Database, SQLAlchemyDatabase
from convostore.engine import Engine, create_engine
from convostore.errors import (
    ConfigurationError,
    ConflictError,
    ConvostoreError,
    DatabaseError,
    DeadlineExceeded,
    InsufficientBalance,
    NotFoundError,
    SchemaVersionError,
    SerializationError,
    ValidationError,
)
from convostore.interfaces import AgentDatabase, ContextStore
from convostore.memory import InMemoryContextStore, InMemoryDatabase, MemoryStorage
from convostore.models import ContextMessage, Message, SessionInfo, User
from convostore.replicas import ReadReplicas
from convostore.types import CompressedJSON, UTCDateTime

__all__ = [
    "AgentDatabase",
    "CompressedJSON",
    "ConfigurationError",
    "ConflictError",
    "ContextMessage",
    "ContextStore",
    "ConvostoreError",
    "Database",
    "DatabaseError",
    "DeadlineExceeded",
    "Engine",
    "InMemoryContextStore",
    "InMemoryDatabase",
    "InsufficientBalance",
    "MemoryStorage",
    "Message",
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
]

__version__ = "0.1.0"
