"""``convostore ui``: a local, read-only web viewer for any convostore database.

Needs the ``ui`` extra (``pip install 'convostore[ui]'``: Starlette, Jinja2, uvicorn). The
app (:func:`create_app`) is a Starlette application over one engine; :func:`serve` runs it
with uvicorn on loopback. See ``docs/ui.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convostore.ui.app import create_app
    from convostore.ui.server import read_only, serve

__all__ = ["create_app", "read_only", "serve"]

_EXPORTS = {
    "create_app": "convostore.ui.app",
    "read_only": "convostore.ui.server",
    "serve": "convostore.ui.server",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'convostore.ui' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
