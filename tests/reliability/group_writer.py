"""A writer whose concurrent appends are group-committed, reporting each acknowledged one.

    python tests/reliability/group_writer.py PATH

``TASKS`` tasks append to a session each, at once, forever (one engine, so their appends
share transactions); after each call returns it prints ``g SESSION POSITION``, flushing.
Message ``p`` of a session carries ``{"seq": p}``. It continues from what the file holds.
"""

from __future__ import annotations

import asyncio
import sys

from convostore import ContextMessage, SQLAlchemyContextStore, connect

PROJECT = "group-crash"
TASKS = 16


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def writer(store: SQLAlchemyContextStore) -> None:
    position = len(await store.get_history())
    while True:
        stored = await store.append(ContextMessage(role="assistant", content=[{"seq": position}]))
        assert stored.position == position, (stored.position, position)
        say(f"g {store.session_id} {position}")
        position += 1


async def run(path: str) -> None:
    engine = await connect(path)
    stores = [
        SQLAlchemyContextStore(engine, project=PROJECT, session_id=f"s{i}") for i in range(TASKS)
    ]
    say("ready")
    await asyncio.gather(*(writer(store) for store in stores))


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1]))
