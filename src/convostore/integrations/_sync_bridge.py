"""One background event loop for an adapter's sync methods, and a twin engine per engine.

An asyncio driver's connection belongs to the loop that opened it, so an adapter whose
framework calls it from sync code (LangChain's ``invoke``, LangGraph's sync graphs) cannot
use the caller's engine there. It runs the call on one background loop of its own instead,
on a twin engine opened the first time sync code needs it: the same database, with a copy
of the source engine's profile (:func:`convostore.sql.engine.twin_engine`), so it writes
exactly as the source does. Each twin is disposed of when its source engine is
garbage-collected, or when the adapter owning the source engine is closed
(:meth:`SyncBridge.forget`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.errors import ConfigurationError
from convostore.settings import is_memory_sqlite
from convostore.sql.engine import twin_engine

__all__ = ["SyncBridge"]

T = TypeVar("T")


class SyncBridge:
    """A background loop (thread ``convostore-{name}-sync``) and the twins of engines.

    Args:
        name: The adapter's name, in the thread's name.
        what: What the sync methods belong to ("saver", "history"), for error messages.
    """

    def __init__(self, name: str, what: str) -> None:
        self._name = name
        self._what = what
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._twins: dict[int, AsyncEngine] = {}

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever,
                    name=f"convostore-{self._name}-sync",
                    daemon=True,
                )
                self._thread.start()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the background loop and wait for its result."""
        loop = self._running_loop()
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise ConfigurationError(f"a sync {self._what} method was called from its own loop")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, loop)
        return future.result()

    def twin_engine(self, source: AsyncEngine) -> AsyncEngine:
        """The engine the background loop uses for ``source``'s database (made once)."""
        if source.dialect.name == "sqlite" and is_memory_sqlite(source.url):
            raise ConfigurationError(
                "an in-memory SQLite database is reachable only from its own event loop: "
                "use the async methods (ainvoke), or a file or server database"
            )
        with self._lock:
            twin = self._twins.get(id(source))
            if twin is None:
                # The twin reads and writes as its source does: a copy of its profile
                # (keyring, search switch, deadline, read-only, replicas...).
                twin = self._twins[id(source)] = twin_engine(source)
                weakref.finalize(source, self._dispose, id(source))
            return twin

    def forget(self, source: AsyncEngine) -> None:
        """Dispose of the twin of ``source``, if sync code made one."""
        self._dispose(id(source), wait=True)

    def _dispose(self, key: int, wait: bool = False) -> None:
        with self._lock:
            twin = self._twins.pop(key, None)
            loop = self._loop
        if twin is None or loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(twin.dispose(), loop)
        if wait and threading.current_thread() is not self._thread:
            future.result()
