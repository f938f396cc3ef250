"""agentstr: convostore's agent database where agentstr takes a ``BaseDatabase``.

:class:`~convostore.SQLAlchemyDatabase` has agentstr's ``BaseDatabase`` methods, defaults and
``conn_str`` / ``agent_name`` attributes, and returns field-compatible ``User`` and
``Message`` models, so the switch is one line::

    from convostore.integrations.agentstr import Database
    # was: from agentstr.database import Database

agentstr-sdk is not a dependency (it pulls in dozens of heavy packages), so
``SQLAlchemyDatabase`` cannot inherit from ``BaseDatabase``. :func:`register` makes it a
*virtual* subclass instead (``BaseDatabase.register``), so ``isinstance(db, BaseDatabase)``
holds. The :func:`Database` here calls it before delegating to :func:`convostore.Database`;
code that builds its database with ``convostore.Database`` can call :func:`register` once.
"""

from __future__ import annotations

import importlib
import sys

from sqlalchemy import URL

from convostore.database import Database as _Database
from convostore.database import SQLAlchemyDatabase

__all__ = ["Database", "register", "register_if_loaded"]

_BASE_MODULE = "agentstr.database.base"


def register() -> bool:
    """Register :class:`~convostore.SQLAlchemyDatabase` as agentstr's ``BaseDatabase``.

    Imports agentstr's database module if it is not loaded yet. Safe to call any number of
    times, and without agentstr installed.

    Returns:
        Whether agentstr could be imported (and the class is now registered).
    """
    try:
        module = importlib.import_module(_BASE_MODULE)
    except ImportError:
        return False
    module.BaseDatabase.register(SQLAlchemyDatabase)
    return True


def register_if_loaded() -> bool:
    """Like :func:`register`, but only if agentstr's database module is already imported.

    Never imports anything, so it costs nothing where agentstr is installed but unused.
    """
    if _BASE_MODULE not in sys.modules:
        return False
    return register()


def Database(  # noqa: N802 - agentstr's factory is a function named like a class
    conn_str: str | URL | None = None,
    *,
    agent_name: str | None = None,
    migrate: bool | None = None,
) -> SQLAlchemyDatabase:
    """agentstr's ``Database`` drop-in: :func:`convostore.Database`, after :func:`register`."""
    register()
    return _Database(conn_str, agent_name=agent_name, migrate=migrate)
