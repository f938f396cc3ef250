"""A writer that appends forever to an SQLite file and reports every acknowledged write.

    python tests/reliability/crash_writer.py PATH [COUNT]

Each round writes three transactions and prints one line per write once the call has
returned (so the write is acknowledged), flushing after each line:

* ``a FIRST SIZE``: ``append_many`` of SIZE (1-3) context messages at positions FIRST...;
  message ``i`` carries ``{"seq": i, "batch": FIRST, "size": SIZE}``;
* ``t IDX``: ``add_message`` to thread ``t`` stored at IDX;
* ``c BALANCE``: ``credit(u, 1)`` returned BALANCE.

It continues from whatever the file holds, so a writer started after a crash picks up
where the killed one stopped. Without COUNT it runs until killed; with it, it stops after
COUNT rounds and exits 0.
"""

from __future__ import annotations

import asyncio
import sys

from convostore import ContextMessage, SQLAlchemyContextStore, SQLAlchemyDatabase, connect

PROJECT = "crash"
SESSION = "s"
AGENT = "crash-agent"
THREAD = "t"
USER = "u"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(path: str, rounds: int | None) -> None:
    engine = await connect(path)
    try:
        store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=SESSION)
        db = SQLAlchemyDatabase(engine=engine, agent_name=AGENT)
        position = len(await store.get_history())
        say("ready")
        done = 0
        while rounds is None or done < rounds:
            size = 1 + done % 3
            batch = [
                ContextMessage(
                    role="assistant",
                    content=[{"seq": position + j, "batch": position, "size": size}],
                )
                for j in range(size)
            ]
            await store.append_many(batch)
            say(f"a {position} {size}")
            position += size
            message = await db.add_message(THREAD, USER, "agent", message=f"round {done}")
            say(f"t {message.idx}")
            say(f"c {await db.credit(USER, 1)}")
            done += 1
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
