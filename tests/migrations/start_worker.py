"""The body of one process in the concurrent first-start test (imported by spawned children).

Kept apart from the test module so a child imports convostore and nothing of pytest.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from convostore import Database, connect

BARRIER_TIMEOUT_S = 60


class UpgradeCounter(logging.Handler):
    """Counts the migrations this process applied, from Alembic's "Running upgrade" lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Running upgrade"):
            self.count += 1


async def open_and_close(url: str, how: str, migrate: bool | None) -> None:
    if how == "connect":
        engine = await connect(url, migrate=migrate)
        await engine.dispose()
    else:
        db = await Database(url, agent_name="start", migrate=migrate).async_init()
        await db.close()


def start(
    url: str,
    how: str,
    migrate: bool | None,
    barrier: Barrier,
    results: Queue[tuple[str, int]],
) -> None:
    """Wait for the others, open the database the way ``how`` says, and report.

    Puts ``(outcome, migrations applied by this process)`` on ``results``; the outcome is
    ``"ok"`` or the error's traceback.
    """
    counter = UpgradeCounter()
    logger = logging.getLogger("alembic.runtime.migration")
    logger.setLevel(logging.INFO)
    logger.addHandler(counter)
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
        asyncio.run(open_and_close(url, how, migrate))
    except BaseException:
        results.put((traceback.format_exc(), counter.count))
    else:
        results.put(("ok", counter.count))
