"""agentstr: convostore's agent database where agentstr takes a ``BaseDatabase``.

:class:`~convostore.SQLAlchemyDatabase` has agentstr's ``BaseDatabase`` methods, defaults and
``conn_str`` / ``agent_name`` attributes, and returns field-compatible ``User`` and
``Message`` models, so the switch is one line::

    from convostore.integrations.agentstr import Database
    # was: from agentstr.database import Database

agentstr's other public names are here too, so that whichever of them your code imports,
the import line is the only change: :class:`SQLiteDatabase` and :class:`PostgresDatabase`
(the backend classes, each refusing a URL of the other kind), ``BaseDatabase`` (convostore's
:class:`~convostore.AgentDatabase`), and the ``User`` and ``Message`` models::

    from convostore.integrations.agentstr import SQLiteDatabase, User
    # was: from agentstr.database.sqlite import SQLiteDatabase; from agentstr.models import User

agentstr-sdk is not a dependency (it pulls in dozens of heavy packages), so
``SQLAlchemyDatabase`` cannot inherit from ``BaseDatabase``. :func:`register` makes it a
*virtual* subclass instead (``BaseDatabase.register``), so ``isinstance(db, BaseDatabase)``
holds. The :func:`Database` here calls it before delegating to :func:`convostore.Database`;
code that builds its database with ``convostore.Database`` can call :func:`register` once.
"""

from __future__ import annotations

from sqlalchemy import URL

from convostore.database import Database as _Database
from convostore.database import SQLAlchemyDatabase
from convostore.errors import ConfigurationError
from convostore.integrations import _agentstr_base as _base
from convostore.interfaces import AgentDatabase as BaseDatabase
from convostore.models import Message, User
from convostore.settings import redact, resolve_url
from convostore.sql.engine import family_from_name

__all__ = [
    "BaseDatabase",
    "Database",
    "Message",
    "PostgresDatabase",
    "SQLiteDatabase",
    "User",
    "register",
    "register_if_loaded",
]


def register() -> bool:
    """Register :class:`~convostore.SQLAlchemyDatabase` as agentstr's ``BaseDatabase``.

    Imports agentstr's database module if it is not loaded yet. Safe to call any number of
    times, and without agentstr installed.

    Returns:
        Whether agentstr could be imported (and the class is now registered).
    """
    return _base.register(SQLAlchemyDatabase)


def register_if_loaded() -> bool:
    """Like :func:`register`, but only if agentstr's database module is already imported.

    Never imports anything, so it costs nothing where agentstr is installed but unused.
    """
    return _base.register_if_loaded(SQLAlchemyDatabase)


def Database(  # noqa: N802 - agentstr's factory is a function named like a class
    conn_str: str | URL | None = None,
    *,
    agent_name: str | None = None,
    migrate: bool | None = None,
) -> SQLAlchemyDatabase:
    """agentstr's ``Database`` drop-in: :func:`convostore.Database`, after :func:`register`."""
    register()
    return _Database(conn_str, agent_name=agent_name, migrate=migrate)


class _BackendDatabase(SQLAlchemyDatabase):
    """An agent database that accepts URLs of one backend family only."""

    _family: str

    def __init__(
        self,
        conn_str: str | URL | None = None,
        *,
        agent_name: str | None = None,
        migrate: bool | None = None,
    ) -> None:
        if isinstance(conn_str, URL):
            conn_str = conn_str.render_as_string(hide_password=False)
        url = resolve_url(conn_str)
        if family_from_name(url.get_backend_name()) != self._family:
            raise ConfigurationError(
                f"{type(self).__name__} needs a {self._family} URL, not {redact(url)!r}; "
                "use Database() to pick the backend from the URL"
            )
        register()
        super().__init__(conn_str, agent_name=agent_name, migrate=migrate)


class SQLiteDatabase(_BackendDatabase):
    """agentstr's ``SQLiteDatabase``: the agent database on an SQLite file or ``:memory:``.

    ``SQLiteDatabase(conn_str="sqlite://:memory:")`` or ``SQLiteDatabase("sqlite://chat.db")``;
    without ``conn_str``, the configured URL or the default file, as for :func:`Database`.

    Raises:
        ConfigurationError: ``conn_str`` is not an SQLite URL.
    """

    _family = "sqlite"


class PostgresDatabase(_BackendDatabase):
    """agentstr's ``PostgresDatabase``: the agent database on PostgreSQL (asyncpg).

    Raises:
        ConfigurationError: ``conn_str`` is not a PostgreSQL URL.
    """

    _family = "postgresql"
