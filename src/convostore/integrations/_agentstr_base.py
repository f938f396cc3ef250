"""Registering with agentstr's ``BaseDatabase`` without importing agentstr (or convostore).

A leaf module: :mod:`convostore.database` registers its class here when agentstr happens
to be loaded, and :mod:`convostore.integrations.agentstr` builds on it, so neither of the
two imports the other's importer (no import cycle).
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["BASE_MODULE", "register", "register_if_loaded"]

BASE_MODULE = "agentstr.database.base"


def register_if_loaded(cls: type) -> bool:
    """Make ``cls`` a virtual subclass of agentstr's ``BaseDatabase`` if agentstr's database
    module is already imported. Never imports anything, so it costs nothing where agentstr
    is installed but unused.
    """
    module = sys.modules.get(BASE_MODULE)
    if module is None:
        return False
    module.BaseDatabase.register(cls)
    return True


def register(cls: type) -> bool:
    """Like :func:`register_if_loaded`, importing agentstr's database module first.

    Returns:
        Whether agentstr could be imported (and ``cls`` is now registered).
    """
    try:
        importlib.import_module(BASE_MODULE)
    except ImportError:
        return False
    return register_if_loaded(cls)
