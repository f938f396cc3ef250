"""A real streaming standby of the machine's PostgreSQL, for the ``replica`` backend.

Made once per test session on first use (``pg_basebackup -R`` of the running cluster into
a temporary directory, started on a free loopback port; see :class:`tests.servers.Standby`)
and removed when the session ends. Unavailable (no replication access in ``pg_hba.conf``,
say): skipped with the reason, or, with ``CI=true``, a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import URL, text
from sqlalchemy.pool import NullPool

from convostore import create_engine
from tests.conftest import (
    _servers,
    empty_tables,
    in_ci,
    require_backend,
    run_sync,
    server_admin_url,
)
from tests.servers import ServerUnavailableError, Standby

# How long the standby may take to replay what the primary did (it normally takes ms).
CATCH_UP_S = 30


async def _primary_settings() -> dict[str, str]:
    engine = create_engine(server_admin_url("postgresql"), poolclass=NullPool)
    names = ("server_version_num", *Standby.MATCHED)
    try:
        async with engine.connect() as conn:
            return {n: str((await conn.execute(text(f"SHOW {n}"))).scalar_one()) for n in names}
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def standby(request: pytest.FixtureRequest) -> Iterator[Standby]:
    require_backend(request.config, "replica")
    require_backend(request.config, "postgresql")
    server = Standby(run_sync(_primary_settings()))
    try:
        server.create()
    except ServerUnavailableError as exc:
        server.destroy()
        reason = f"cannot make a streaming standby of the local PostgreSQL: {exc}"
        if in_ci():
            pytest.fail(f"CI=true requires every backend: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.destroy()


async def caught_up(primary: URL, replica: URL) -> None:
    """Return once the standby has replayed everything the primary has written so far."""
    source = create_engine(primary, poolclass=NullPool)
    target = create_engine(replica, poolclass=NullPool)
    try:
        async with source.connect() as conn:
            lsn = (await conn.execute(text("SELECT pg_current_wal_lsn()::text"))).scalar_one()
        async with asyncio.timeout(CATCH_UP_S):
            while True:
                async with target.connect() as conn:
                    done = await conn.execute(
                        text(
                            "SELECT pg_last_wal_replay_lsn() >= CAST(CAST(:lsn AS TEXT) AS pg_lsn)"
                        ),
                        {"lsn": lsn},
                    )
                    if done.scalar_one():
                        return
                await asyncio.sleep(0.02)
    finally:
        await source.dispose()
        await target.dispose()


@dataclass
class Topology:
    """This session's primary test database and the same database on the standby."""

    primary: URL
    replica: URL
    standby: Standby

    async def pause_replay(self) -> None:
        await self._on_replica("SELECT pg_wal_replay_pause()")

    async def resume_replay(self) -> None:
        await self._on_replica("SELECT pg_wal_replay_resume()")
        await caught_up(self.primary, self.replica)

    async def _on_replica(self, statement: str) -> None:
        engine = create_engine(self.replica, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()


@pytest.fixture
async def topology(standby: Standby) -> AsyncIterator[Topology]:
    """Empty tables on the primary, replayed on the standby before the test starts."""
    primary = _servers["postgresql"].url
    assert primary is not None
    assert primary.database is not None
    await empty_tables(primary)
    replica = standby.url(primary.database)
    await caught_up(primary, replica)
    topology = Topology(primary, replica, standby)
    yield topology
    await topology.resume_replay()
