"""Running the viewer: a read-only engine, the app, uvicorn on loopback."""

from __future__ import annotations

import webbrowser
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.sql.profile import replace_profile
from convostore.ui.app import create_app
from convostore.ui.security import LOOPBACK_HOSTS, TOKEN, new_token

__all__ = ["TOKEN", "new_token", "read_only", "serve"]

_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})
_READ_ONLY = {
    "sqlite": "PRAGMA query_only = ON",
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """Make every new connection of ``engine`` refuse writes, on the server's side
    (SQLite ``query_only``, a read-only session on PostgreSQL and MySQL/MariaDB), so no
    code path of the viewer can change the database even by mistake. Returns ``engine``.
    """
    statement = _READ_ONLY[engine.dialect.name]

    def configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        # asyncpg's adapter ran the SET in a transaction of its own, and a SET undone by
        # the pool's reset would be lost: commit it (harmless elsewhere).
        dbapi_connection.commit()

    event.listen(engine.sync_engine, "connect", configure)
    # What convostore reads to write nothing itself (SQLite's search catch-up included).
    replace_profile(engine, read_only=True)
    return engine


async def serve(
    engine: AsyncEngine,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    open_browser: bool = False,
    announce: Callable[[str], None] = print,
    hosts: Iterable[str] = (),
) -> None:
    """Serve the viewer over ``engine`` until interrupted.

    Args:
        engine: A read-only engine (:func:`read_only`) on the database to show.
        host: The address to listen on (loopback unless the caller checked a token).
        port: The port (``0``: any free port).
        token: Require this token; the URL announced carries it.
        open_browser: Open the URL in the default browser once listening.
        announce: Where the URL is told (the CLI prints it).
        hosts: More host names the ``Host`` header may carry besides loopback and ``host``.
    """
    allowed: set[str] | None = {*LOOPBACK_HOSTS, host.lower(), *hosts}
    if host in _ANY_ADDRESS and token is not None:
        # Listening on every interface: the names it is reached by are not known here,
        # and the token already refuses a rebound name (its cookie is not sent there).
        allowed = None
    app = create_app(engine, hosts=allowed, token=token)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )

    def started(server: uvicorn.Server) -> None:
        bound = port
        for listener in server.servers:
            for sock in listener.sockets:
                bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
        announce(url)
        if open_browser:
            webbrowser.open(url)

    await _Server(config, started).serve()


class _Server(uvicorn.Server):
    """uvicorn's server, telling when it listens (with the port it got)."""

    def __init__(self, config: uvicorn.Config, on_start: Callable[[uvicorn.Server], None]):
        super().__init__(config)
        self._on_start = on_start

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_start(self)
