"""Concurrent writers for the concurrency tests, usable in-process or as an OS process.

In-process, the tests call :func:`append_to_session` and :func:`append_to_thread` from
several asyncio tasks. As a process::

    python tests/backends/writers.py {session|thread} URL SCOPE WRITER COUNT

opens its own engine, makes its first connection, prints ``ready`` and waits for a line on
stdin before writing: the parent releases every process at once only when all of them are
connected, so the writes really overlap. It prints ``done`` and exits 0 when every write
was acknowledged, or prints the traceback and exits 1.

Each message carries ``{"writer": WRITER, "seq": i}`` so the tests can check that every
writer's messages come out in the order that writer wrote them.
"""

from __future__ import annotations

import asyncio
import sys
import traceback

from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import ContextMessage, SQLAlchemyContextStore, SQLAlchemyDatabase, create_engine

PROJECT = "concurrency"
AGENT = "concurrency-agent"
USER = "writer-user"


def marker(writer: int, seq: int) -> dict[str, int]:
    """The payload identifying message ``seq`` of ``writer``."""
    return {"writer": writer, "seq": seq}


async def append_to_session(engine: AsyncEngine, session_id: str, writer: int, count: int) -> None:
    """Append ``count`` messages, one call each, to context session ``session_id``."""
    store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=session_id)
    for seq in range(count):
        await store.append(ContextMessage(role="assistant", content=[marker(writer, seq)]))


async def append_to_thread(engine: AsyncEngine, thread_id: str, writer: int, count: int) -> None:
    """Add ``count`` messages, one call each, to agent thread ``thread_id``."""
    db = SQLAlchemyDatabase(engine=engine, agent_name=AGENT)
    for seq in range(count):
        await db.add_message(
            thread_id, USER, "user", message=f"{writer}:{seq}", extra_inputs=marker(writer, seq)
        )


async def _warm_up(engine: AsyncEngine, kind: str, scope: str) -> None:
    """Connect and check the schema, so the timed part is nothing but writes."""
    if kind == "session":
        store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=scope)
        await store.get_context_tokens()
    else:
        await SQLAlchemyDatabase(engine=engine, agent_name=AGENT).get_user(USER)


async def _run(kind: str, url: str, scope: str, writer: int, count: int) -> None:
    engine = create_engine(url)
    try:
        await _warm_up(engine, kind, scope)
        print("ready", flush=True)
        # The start barrier: the parent writes a line once every writer is ready.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if kind == "session":
            await append_to_session(engine, scope, writer, count)
        else:
            await append_to_thread(engine, scope, writer, count)
    finally:
        await engine.dispose()
    print("done", flush=True)


def main(argv: list[str]) -> int:
    """Entry point of a writer process; see the module docstring for the arguments."""
    kind, url, scope, writer, count = argv
    if kind not in ("session", "thread"):
        print(f"unknown kind {kind!r}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(kind, url, scope, int(writer), int(count)))
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
