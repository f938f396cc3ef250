"""Cancellation: a call cancelled anywhere leaves all of its change or none of it.

Each operation (an append, an ``append_many`` of many messages, a fork of a large session,
a ``replace_history``) is started as a task and cancelled at every point in turn:

* deterministically, as it sends its n-th statement or its commit (a listener on the
  engine's ``before_cursor_execute`` and ``commit`` events cancels the running task, so
  the ``CancelledError`` lands in the await of exactly that statement), for every n;
* after k turns of the event loop (``asyncio.sleep(0)`` k times), for k = 0, 1, 2, ...,
  which also reaches the pool checkout, the connect and the rollback.

After each attempt the session must equal either its state before the call or the state
an uncancelled run produces (compared row by row, ids and timestamps aside), its counter
must match its rows, no connection may stay checked out of the pool, and the next call
must succeed. SQLite's file must pass ``PRAGMA integrity_check`` at the end.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import URL, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import ContextMessage, SQLAlchemyContextStore, codec

pytestmark = pytest.mark.slow

SessionView = tuple[Any, ...]


def messages(count: int, tag: str) -> list[ContextMessage]:
    first = ContextMessage(role="user", content=[{"type": "text", "text": f"{tag} first"}])
    rest = [
        ContextMessage(role="assistant", content=[{"type": "text", "text": f"{tag} {i}", "i": i}])
        for i in range(1, count)
    ]
    return [first, *rest][:count]


async def view(engine: AsyncEngine, project: str) -> list[SessionView]:
    """Every session of ``project`` as plain data, without ids and timestamps, sorted."""
    sessions: dict[str, list[Any]] = {}
    async with engine.connect() as conn:
        states = await conn.execute(
            text(
                "SELECT session_id, next_position, preview, input_tokens, output_tokens"
                " FROM context_tokens WHERE project = :p"
            ),
            {"p": project},
        )
        for session_id, *state in states:
            sessions[session_id] = [tuple(state), []]
        rows = await conn.execute(
            text(
                "SELECT session_id, position, role, content FROM context_messages"
                " WHERE project = :p ORDER BY session_id, position"
            ),
            {"p": project},
        )
        for session_id, position, role, content in rows:
            assert session_id in sessions, "messages without their session row"
            sessions[session_id][1].append(
                (position, role, codec.decode(bytes(content), max_size=10**7))
            )
    result = []
    for state, rows_of in sessions.values():
        assert [r[0] for r in rows_of] == list(range(len(rows_of))), "positions have a gap"
        assert state[0] == len(rows_of), "counter and rows disagree"
        result.append((state, repr(rows_of)))
    return sorted(result)


@dataclass
class Operation:
    """Set up a project, then the call to cancel."""

    name: str
    setup: Callable[[SQLAlchemyContextStore], Awaitable[None]]
    call: Callable[[SQLAlchemyContextStore], Awaitable[Any]]


async def _seed(store: SQLAlchemyContextStore, count: int) -> None:
    await store.append_many(messages(count, "old"))
    await store.set_context_tokens(7, 11)


OPERATIONS = [
    Operation(
        "append",
        lambda s: _seed(s, 20),
        lambda s: s.append(ContextMessage(role="user", content=[{"type": "text", "text": "x"}])),
    ),
    Operation("append_many", lambda s: _seed(s, 5), lambda s: s.append_many(messages(200, "new"))),
    Operation("fork", lambda s: _seed(s, 300), lambda s: s.fork()),
    Operation(
        "replace_history", lambda s: _seed(s, 100), lambda s: s.replace_history(messages(150, "r"))
    ),
]


class StatementCanceller:
    """Cancels the task it is armed with when the engine sends its n-th statement or commit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.count = 0
        self.at: int | None = None
        self.task: asyncio.Task[Any] | None = None

    def arm(self, task: asyncio.Task[Any] | None, at: int | None) -> None:
        self.task, self.at, self.count = task, at, 0

    def _hit(self, *_: Any) -> None:
        self.count += 1
        if self.task is not None and self.count == self.at:
            self.task.cancel()

    def __enter__(self) -> StatementCanceller:
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._hit)
        event.listen(self.engine.sync_engine, "commit", self._hit)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine.sync_engine, "before_cursor_execute", self._hit)
        event.remove(self.engine.sync_engine, "commit", self._hit)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.name)
async def test_cancelled_calls_are_all_or_nothing(
    engine: AsyncEngine, backend: str, operation: Operation
) -> None:
    # The reference: the same call, not cancelled, on a project of its own.
    reference = SQLAlchemyContextStore(engine, project=f"{operation.name}-ref", session_id="s")
    await operation.setup(reference)
    await operation.call(reference)
    after = await view(engine, reference.project)

    outcomes: dict[str, int] = {"none": 0, "whole": 0, "cancelled": 0}
    attempt = 0

    async def attempt_once(canceller: StatementCanceller, at: int | None, turns: int) -> bool:
        """One cancelled run; returns whether the call finished before it could be cancelled."""
        nonlocal attempt
        attempt += 1
        store = SQLAlchemyContextStore(
            engine, project=f"{operation.name}-{attempt}", session_id="s"
        )
        await operation.setup(store)
        before = await view(engine, store.project)
        task = asyncio.ensure_future(operation.call(store))
        canceller.arm(task, at)
        for _ in range(turns):
            await asyncio.sleep(0)
        finished_first = task.done()
        if at is None:
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
        canceller.arm(None, None)
        state = await view(engine, store.project)
        assert state in (before, after), f"{operation.name}: half a change (at={at}, k={turns})"
        outcomes["none" if state == before else "whole"] += 1
        assert engine.pool.checkedout() == 0, "a connection was not returned to the pool"  # type: ignore[attr-defined]
        # The pool is healthy: the next call on the engine succeeds.
        assert await store.get_context_tokens() == (7, 11)
        return finished_first

    with StatementCanceller(engine) as canceller:
        # Count the statements of one uncancelled run, then cancel at each of them.
        probe = SQLAlchemyContextStore(engine, project=f"{operation.name}-probe", session_id="s")
        await operation.setup(probe)
        canceller.arm(None, None)
        await operation.call(probe)
        statements = canceller.count
        assert statements >= 2
        for at in range(1, statements + 1):
            await attempt_once(canceller, at, turns=0)
        for turns in range(60):
            if await attempt_once(canceller, None, turns):
                break

    assert outcomes["cancelled"] > 0
    assert outcomes["none"] > 0
    if backend == "sqlite":
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA integrity_check"))).all() == [("ok",)]


CANCEL_WHILE_CONNECTING = """
import asyncio, gc, sys
from sqlalchemy.pool import NullPool
from convostore import ContextMessage, SQLAlchemyContextStore, create_engine

async def main(url):
    # NullPool: every call opens its connection, so cancelling after k turns of the loop
    # lands in every step of the connect, the TLS negotiation included.
    engine = create_engine(url, poolclass=NullPool)
    store = SQLAlchemyContextStore(engine, project="/cancel", session_id="s")
    await store.get_history()
    for turns in range(60):
        tasks = [
            asyncio.create_task(store.append(ContextMessage(role="user")))
            for _ in range(4)
        ]
        for _ in range(turns):
            await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await engine.dispose()
    gc.collect()

asyncio.run(main(sys.argv[1]))
"""


def test_cancelled_calls_write_nothing_to_stderr(db_url: URL) -> None:
    """On PostgreSQL, a call cancelled while asyncpg opened its connection left a future
    that asyncio reported at collection: "Future exception was never retrieved"."""
    result = subprocess.run(
        [sys.executable, "-c", CANCEL_WHILE_CONNECTING, db_url.render_as_string(False)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
