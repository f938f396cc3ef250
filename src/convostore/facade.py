"""What both SQL façades share: engine ownership, transaction views, closing.

:class:`~convostore.SQLAlchemyDatabase` and :class:`~convostore.SQLAlchemyContextStore`
each run every call through one :class:`~convostore.sql.runner.TransactionRunner`. This
base class owns that runner and what hangs off it, so the two behave alike:

* an engine the façade created (from a URL) is disposed by :meth:`~Facade.close`; one it
  was given is left alone, as are the engines of any view made from it;
* :meth:`~Facade.transaction` and :meth:`~Facade.bind` return *views*: copies that run on
  a transaction the view does not own, and never close anything;
* ``async with`` prepares the schema on entry (as the first call would) and closes on exit.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from convostore.encryption import Keyring, install
from convostore.errors import ConfigurationError
from convostore.sql.engine import is_read_only, replica_set
from convostore.sql.profile import profile_of
from convostore.sql.replicas import ReplicaSet, ReplicaUrls
from convostore.sql.runner import TransactionRunner

__all__ = ["Facade"]


class Facade:
    """The base of the SQL façades: one runner, its engine, its views, and closing."""

    _runner: TransactionRunner
    _owns_engine: bool
    _replicas: ReplicaSet | None
    _migrate: bool | None
    _closed = False
    _reopen_hint = "make a new one"

    def _start(
        self,
        engine: AsyncEngine,
        *,
        owns_engine: bool,
        migrate: bool | None,
        read_url: ReplicaUrls | None,
        encryption: Keyring | None = None,
    ) -> None:
        """Set up the runner on ``engine``; ``owns_engine``: :meth:`close` disposes it.

        An engine the façade created got ``encryption`` from ``create_engine``; one it was
        given gets it here (:func:`~convostore.encryption.install`), if it has no other.
        """
        self._owns_engine = owns_engine
        self._migrate = migrate
        install(engine, encryption)
        # The façade's own replicas decrypt as the engine does.
        self._replicas = replica_set(read_url, encryption=profile_of(engine).keyring)
        self._runner = TransactionRunner(engine, replicas=self._replicas, writer=True)

    @property
    def engine(self) -> AsyncEngine:
        """The engine this object runs on."""
        return self._runner.engine

    async def _prepare(self) -> None:
        """Bring the schema to head (or check it) once per engine."""
        # A view bound to a caller's session trusts that the engine was prepared (connect()
        # or a first call did it): checking would need a second connection, which on SQLite
        # waits for the caller's own write lock.
        if self._closed:
            # Without this, the engine would quietly open new connections: to an empty
            # database for ":memory:" ("no such table"), to the file or server otherwise.
            raise ConfigurationError(
                f"this {type(self).__name__} is closed (close() disposed of the engine it "
                f"opened): {self._reopen_hint}"
            )
        if self._runner.bound is None:
            from convostore import migrate as migrations  # Alembic loads on first use

            # A read-only engine can only check the schema, never migrate it.
            migrate = False if is_read_only(self.engine) else self._migrate
            await migrations.prepare(self.engine, migrate=migrate)

    async def _ensure_ready(self) -> None:
        """What every call awaits first (subclasses may do more, never less)."""
        await self._prepare()

    def _view(self) -> Self:
        """A copy that shares this object's engine and replicas and never closes them."""
        view = copy.copy(self)
        view._owns_engine = False
        view._replicas = None
        return view

    def _with_runner(self, runner: TransactionRunner) -> Self:
        view = self._view()
        view._runner = runner
        return view

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Self]:
        """Run several calls in one transaction: commit at the end, roll back on error.

        The block gets a view of this object whose calls all run in that transaction (and
        are not retried: only the block knows whether it can run again). Example::

            async with db.transaction() as tx:
                await tx.debit("alice", 10)
                await tx.add_message("t1", "alice", "user", message="paid question")
        """
        await self._ensure_ready()
        async with self._runner.transaction() as runner:
            yield self._with_runner(runner)

    def bind(self, session: AsyncSession) -> Self:
        """A view of this object that works inside ``session``'s transaction.

        The view never commits or rolls back: the owner of ``session`` does.
        """
        return self._with_runner(self._runner.bind(session))

    async def close(self) -> None:
        """Dispose of the engine and read replicas if this object created them.

        Calls on an object whose engine was disposed raise :class:`ConfigurationError`;
        one given an engine leaves it open, and keeps working while it is.
        """
        if self._owns_engine:
            self._closed = True
            await self.engine.dispose()
        if self._replicas is not None:
            await self._replicas.dispose()

    async def __aenter__(self) -> Self:
        """Prepare the schema (as the first call would) and return this object.

        If that fails, what this object opened is closed before the error propagates.
        """
        try:
            await self._ensure_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close (what this object owns) however the block ended."""
        await self.close()
