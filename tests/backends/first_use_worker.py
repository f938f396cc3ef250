"""The body of one process of ``test_first_use`` (imported by spawned children).

Kept apart from the test module so a child imports convostore and nothing of pytest.
"""

from __future__ import annotations

import asyncio
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from convostore import ContextMessage, SQLAlchemyContextStore

SESSIONS = 3
MESSAGES = 4
BARRIER_TIMEOUT_S = 60


async def write(url: str, prefix: str, migrate: bool | None) -> None:
    """Several tasks, each a store with its own engine, each writing one session."""
    stores = [
        SQLAlchemyContextStore(url=url, session_id=f"{prefix}-{s}", project="p", migrate=migrate)
        for s in range(SESSIONS)
    ]
    try:
        await asyncio.gather(
            *(
                store.append_many([ContextMessage(role="user") for _ in range(MESSAGES)])
                for store in stores
            )
        )
    finally:
        for store in stores:
            await store.close()


def write_sessions(
    url: str, prefix: str, migrate: bool | None, barrier: Barrier, results: Queue[str]
) -> None:
    """Wait for the other processes, write, and put ``"ok"`` or the traceback on ``results``."""
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
        asyncio.run(write(url, prefix, migrate))
        results.put("ok")
    except BaseException:
        results.put(traceback.format_exc())
