"""Reads from PostgreSQL streaming replicas, with read-your-writes (``read_url=``).

``connect(url, read_url=...)``, ``SQLAlchemyContextStore(..., read_url=...)`` and
``Database(..., read_url=...)`` take one replica URL, a list of them, or a
:class:`ReadReplicas` for the full set of options. Then:

* **Reads** — history, windows, the last messages, token totals, session and thread
  listings, users — go to a replica (round robin over the healthy ones).
* **Writes**, and every call inside ``transaction()``, go to the primary.
* **Read-your-writes**, per store or database object (and the views and sessions made from
  it): after it wrote, its next read first makes sure the replica has replayed the
  primary's WAL up to where it stood after that write (``pg_current_wal_lsn()`` on the
  primary, ``pg_last_wal_replay_lsn()`` on the replica). A replica that is behind is given
  up to ``max_wait`` seconds (default 0.5) to catch up; after that the read goes to the
  primary. Other objects' writes are not waited for: their reads may be up to the
  replica's lag behind, as with any replica. ``stale_reads=True`` skips the wait
  altogether (reads never touch the primary while a replica is up).
* **A replica that fails** (refuses connections, is shut down, errors) is left alone for
  ``retry_after`` seconds (default 5). With ``fallback="primary"`` (the default) its reads
  go to the primary meanwhile; with ``fallback="raise"`` they raise
  :class:`~convostore.errors.DatabaseError` naming the replica (password hidden).

Replicas are PostgreSQL only (the LSN check is PostgreSQL's); their URLs take the same
options as the primary's (``?pgbouncer=transaction`` included).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.errors import (
    ConfigurationError,
    DatabaseError,
    DeadlineExceeded,
)
from convostore.settings import redact
from convostore.sql.profile import profile_of, replace_profile
from convostore.sql.retry import translate_errors

__all__ = [
    "ReadReplicas",
    "ReadYourWrites",
    "ReplicaSet",
    "ReplicaUrls",
    "attach_replicas",
    "replicas_of",
]

T = TypeVar("T")

_PRIMARY_LSN = text("SELECT pg_current_wal_lsn()::text")
# A node that is not in recovery is a primary (a read_url naming the primary itself, or a
# promoted standby): it has everything.
_CAUGHT_UP = text(
    "SELECT NOT pg_is_in_recovery() "
    "OR pg_last_wal_replay_lsn() >= CAST(CAST(:lsn AS TEXT) AS pg_lsn)"
)
_POLL_S = 0.005
_MAX_POLL_S = 0.05


@dataclass(frozen=True)
class ReadReplicas:
    """Replica URLs and how reads use them (see the module documentation).

    Args:
        urls: One URL or several.
        stale_reads: Never wait for a replica to catch up with this object's writes.
        max_wait: Seconds a read waits for a lagging replica before reading the primary.
        fallback: ``"primary"``: read the primary while a replica is down; ``"raise"``:
            raise :class:`~convostore.errors.DatabaseError` instead.
        retry_after: Seconds a failed replica is left alone before it is tried again.
    """

    urls: str | URL | Sequence[str | URL]
    stale_reads: bool = False
    max_wait: float = 0.5
    fallback: Literal["primary", "raise"] = "primary"
    retry_after: float = 5.0


ReplicaUrls = str | URL | Sequence[str | URL] | ReadReplicas


class ReadYourWrites:
    """What one store or database object wrote, so its reads can wait for it."""

    __slots__ = ("_confirmed", "_generation", "_lsn", "_lsn_generation")

    def __init__(self) -> None:
        self._generation = 0  # bumped after every write
        self._lsn: str | None = None
        self._lsn_generation = 0
        self._confirmed: dict[int, int] = {}  # replica -> generation it is known to have

    def wrote(self) -> None:
        self._generation += 1

    def has(self, replica: int) -> bool:
        return self._confirmed.get(replica, 0) >= self._generation

    async def target(self, primary: AsyncEngine) -> tuple[str, int]:
        """The primary's WAL position after this object's last write, and its generation."""
        generation = self._generation
        if self._lsn is None or self._lsn_generation != generation:
            # Read after the write returned: at or past its commit record.
            with translate_errors():
                async with primary.connect() as conn:
                    self._lsn = str((await conn.execute(_PRIMARY_LSN)).scalar_one())
            self._lsn_generation = generation
        return self._lsn, generation

    def confirm(self, replica: int, generation: int) -> None:
        self._confirmed[replica] = max(self._confirmed.get(replica, 0), generation)


class _Replica:
    __slots__ = ("down_until", "engine", "index")

    def __init__(self, index: int, engine: AsyncEngine) -> None:
        self.index = index
        self.engine = engine
        self.down_until = 0.0


class ReplicaSet:
    """The replica engines of one primary, and the policy of reads on them."""

    def __init__(self, engines: Sequence[AsyncEngine], options: ReadReplicas) -> None:
        if not engines:
            raise ConfigurationError("read_url names no replica")
        for engine in engines:
            if engine.dialect.name != "postgresql":
                raise ConfigurationError(
                    f"read replicas are supported on PostgreSQL only, not {redact(engine.url)!r}"
                )
        if options.max_wait < 0 or options.retry_after < 0:
            raise ConfigurationError("max_wait and retry_after cannot be negative")
        if options.fallback not in ("primary", "raise"):
            raise ConfigurationError(f"fallback={options.fallback!r}: use 'primary' or 'raise'")
        self.options = options
        self._replicas = [_Replica(i, engine) for i, engine in enumerate(engines)]
        self._turn = itertools.count()

    @property
    def engines(self) -> list[AsyncEngine]:
        return [replica.engine for replica in self._replicas]

    async def dispose(self) -> None:
        for replica in self._replicas:
            await replica.engine.dispose()

    async def read(
        self,
        primary: AsyncEngine,
        consistency: ReadYourWrites,
        work: Callable[[AsyncEngine], Awaitable[T]],
        on_primary: Callable[[], Awaitable[T]],
    ) -> T:
        """Run the read ``work`` on a replica that has this object's writes, else the primary."""
        replica = self._next()
        if replica is None:
            return await on_primary()
        try:
            if not self.options.stale_reads and not consistency.has(replica.index):
                lsn, generation = await consistency.target(primary)
                if not await self._caught_up(replica, lsn):
                    return await on_primary()  # lagging: the primary has the write
                consistency.confirm(replica.index, generation)
            return await work(replica.engine)
        except DeadlineExceeded:
            raise
        except DatabaseError as exc:
            replica.down_until = time.monotonic() + self.options.retry_after
            if self.options.fallback == "raise":
                raise DatabaseError(
                    f"read replica {redact(replica.engine.url)} is unavailable: {exc}"
                ) from exc
            return await on_primary()

    def _next(self) -> _Replica | None:
        now = time.monotonic()
        healthy = [r for r in self._replicas if r.down_until <= now]
        if not healthy:
            if self.options.fallback == "raise":
                shown = ", ".join(redact(r.engine.url) for r in self._replicas)
                raise DatabaseError(f"every read replica is unavailable ({shown})")
            return None
        return healthy[next(self._turn) % len(healthy)]

    async def _caught_up(self, replica: _Replica, lsn: str) -> bool:
        give_up = time.monotonic() + self.options.max_wait
        pause = _POLL_S
        with translate_errors():
            async with replica.engine.connect() as conn:
                while True:
                    if (await conn.execute(_CAUGHT_UP, {"lsn": lsn})).scalar_one():
                        return True
                    if time.monotonic() >= give_up:
                        return False
                    await conn.rollback()  # a fresh snapshot, and no transaction held open
                    await asyncio.sleep(pause)
                    pause = min(_MAX_POLL_S, pause * 2)


def attach_replicas(engine: AsyncEngine, replicas: ReplicaSet | None) -> None:
    """Make every façade on ``engine`` read from ``replicas`` (disposed with the engine).

    For an engine made elsewhere: it replaces the engine's profile with one holding
    ``replicas``. An engine convostore creates takes them as ``read_url=``
    (:func:`convostore.create_engine`, :func:`convostore.connect`).
    """
    if replicas is not None:
        replace_profile(engine, replicas=replicas)


def replicas_of(engine: AsyncEngine) -> ReplicaSet | None:
    """The replicas ``engine`` reads from (its profile's ``replicas``), if any."""
    return profile_of(engine).replicas
