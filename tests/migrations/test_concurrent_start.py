"""Several processes starting at once on an empty database: all succeed, one migrates.

Half the processes open the database with ``connect()``, half with ``Database(...).async_init()``.
They are released together by a barrier; the migration lock (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL advisory lock, MySQL ``GET_LOCK``) must make exactly one of them run the
migration while the others wait and then find the database at head.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import URL

from convostore import migrate
from tests.conftest import WITH_PGBOUNCER, selected_backend
from tests.migrations.conftest import SCHEMA_TABLES, plain, table_names, version_rows
from tests.migrations.start_worker import start

# Through PgBouncer too: the migration lock (pg_advisory_xact_lock) lives in the
# migration's own transaction, which transaction pooling keeps on one server connection.
backend = pytest.fixture(params=WITH_PGBOUNCER)(selected_backend)

PROCESSES = 4
JOIN_TIMEOUT_S = 120


@pytest.mark.slow
def test_processes_starting_at_once_migrate_once(backend: str, empty_url: URL) -> None:
    # SQLite migrates itself by default; a server database only when asked to.
    migrate_flag = None if backend == "sqlite" else True
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results: multiprocessing.Queue[tuple[str, int]] = ctx.Queue()
    processes = [
        ctx.Process(
            target=start,
            args=(plain(empty_url), ("connect", "database")[i % 2], migrate_flag, barrier, results),
        )
        for i in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=JOIN_TIMEOUT_S) for _ in processes]
    except queue.Empty:
        pytest.fail("a process neither finished nor reported within the time limit")
    finally:
        for process in processes:
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()

    failures = [outcome for outcome, _ in outcomes if outcome != "ok"]
    assert not failures, "\n".join(failures)
    assert sum(applied for _, applied in outcomes) == len(_revisions())
    assert asyncio.run(version_rows(empty_url)) == [migrate.head()]
    assert asyncio.run(table_names(empty_url)) == SCHEMA_TABLES | {"alembic_version"}


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [revision.revision for revision in script.walk_revisions()]
