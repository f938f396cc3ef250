"""A second process for the search catch-up tests, on an SQLite file.

    python tests/backends/search_writer.py PATH append COUNT TAG
    python tests/backends/search_writer.py PATH catch-up BATCH

``append``: COUNT single appends to session TAG of project ``/p``, message ``i`` saying
``TAG word{i}``; prints ``ok i`` once each call has returned (acknowledged), flushing.
``catch-up``: the search index's back-fill (its catch-up run to the end) in batches of
BATCH, printing ``batch`` after each committed batch and ``done`` at the end.
"""

from __future__ import annotations

import asyncio
import sys

from convostore import ContextMessage, SQLAlchemyContextStore, connect, transfer


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Batches:
    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        say("batch")


async def run(path: str, mode: str, args: list[str]) -> None:
    engine = await connect(path)
    try:
        if mode == "append":
            count, tag = int(args[0]), args[1]
            store = SQLAlchemyContextStore(engine, project="/p", session_id=tag)
            for i in range(count):
                text = f"{tag} word{i}"
                await store.append(
                    ContextMessage(role="user", content=[{"type": "text", "text": text}])
                )
                say(f"ok {i}")
        else:
            await transfer.backfill(engine, batch_size=int(args[0]), progress=Batches())
            say("done")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], sys.argv[3:]))
