"""The two entry points, :func:`Database` and :func:`connect`, light to import.

``from convostore import Database`` (or ``connect``) loads this module only: SQLAlchemy,
its drivers, pydantic and the façades load when one of them is first called, not when an
application, a CLI or a test collector merely imports the package. Each delegates to its
implementation (:func:`convostore.database.Database`, :func:`convostore.context.connect`),
which documents it in full.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import URL

    from convostore.database import SQLAlchemyDatabase
    from convostore.encryption import Keyring
    from convostore.sql.engine import Engine
    from convostore.sql.replicas import ReplicaUrls

__all__ = ["Database", "connect"]


def Database(  # noqa: N802 - agentstr's factory is a function named like a class
    conn_str: str | URL | None = None,
    *,
    agent_name: str | None = None,
    migrate: bool | None = None,
    read_url: ReplicaUrls | None = None,
    encryption: Keyring | None = None,
) -> SQLAlchemyDatabase:
    """Create the agent database for a connection string, like agentstr's ``Database``.

    ``conn_str`` may be any form :func:`convostore.settings.resolve_url` accepts, including
    agentstr's ``sqlite://PATH`` and ``postgres://user:pass@host:port/db``. Call
    ``await db.async_init()`` before use (agentstr's protocol; calls also do it lazily).
    See :func:`convostore.database.Database`.
    """
    from convostore import database  # the façade and SQLAlchemy load on first use

    return database.Database(
        conn_str, agent_name=agent_name, migrate=migrate, read_url=read_url, encryption=encryption
    )


async def connect(
    url: str | Path | URL | None = None,
    *,
    migrate: bool | None = None,
    read_url: ReplicaUrls | None = None,
    encryption: Keyring | None = None,
    search_index: bool | None = None,
    read_only: bool = False,
) -> Engine:
    """Open the database at ``url`` (a path or URL) with its schema at head; see
    :func:`convostore.context.connect`.
    """
    from convostore import context  # the façade and SQLAlchemy load on first use

    return await context.connect(
        url,
        migrate=migrate,
        read_url=read_url,
        encryption=encryption,
        search_index=search_index,
        read_only=read_only,
    )
