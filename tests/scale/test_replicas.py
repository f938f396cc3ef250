"""Reads from a real streaming standby: routing, read-your-writes, lag, a replica going away.

``topology`` is this session's PostgreSQL test database and the same database on a hot
standby streaming from it (``tests/scale/conftest.py``). Pausing WAL replay on the standby
(``pg_wal_replay_pause()``) makes it lag by exactly what the primary writes meanwhile, so
what a read returns tells which server answered it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import event

from convostore import (
    ConfigurationError,
    ContextMessage,
    Database,
    DatabaseError,
    SQLAlchemyContextStore,
    connect,
)
from convostore.sql.replicas import ReadReplicas, replicas_of
from tests.scale.conftest import Topology, caught_up

pytestmark = pytest.mark.replica


def message(text: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text}])


def texts(history: list[Any]) -> list[str]:
    return [m.content[0]["text"] for m in history]


class Counter:
    """Counts the statements an engine runs."""

    def __init__(self, engine: Any) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self)

    def __call__(self, *_args: Any) -> None:
        self.count += 1


async def test_reads_go_to_the_replica(topology: Topology) -> None:
    writer = SQLAlchemyContextStore(url=topology.primary, project="p", session_id="s")
    reader = SQLAlchemyContextStore(
        url=topology.primary, project="p", session_id="s", read_url=topology.replica
    )
    try:
        await writer.append(message("first"))
        await caught_up(topology.primary, topology.replica)
        await topology.pause_replay()
        await writer.append(message("second"))
        # The reader never wrote: it reads the paused replica, which lacks "second".
        assert texts(await reader.get_history()) == ["first"]
        assert (await reader.list_sessions())[0].message_count == 1
        assert texts(await writer.get_history()) == ["first", "second"]
        await topology.resume_replay()
        assert texts(await reader.get_history()) == ["first", "second"]
    finally:
        await writer.close()
        await reader.close()


async def test_a_store_reads_its_own_writes_from_the_replica(topology: Topology) -> None:
    store = SQLAlchemyContextStore(
        url=topology.primary, project="p", session_id="own", read_url=[topology.replica]
    )
    assert store._replicas is not None
    on_replica = Counter(store._replicas.engines[0])
    try:
        for n in range(20):
            await store.append(message(str(n)))
            assert texts(await store.get_history()) == [str(i) for i in range(n + 1)]
            await store.add_context_tokens(1, 0)
            assert await store.get_context_tokens() == (n + 1, 0)
    finally:
        await store.close()
    # Replay kept up: the reads (and their LSN checks) ran on the replica.
    assert on_replica.count >= 40


async def test_a_lagging_replica_is_waited_for_then_the_primary_answers(
    topology: Topology,
) -> None:
    store = SQLAlchemyContextStore(
        url=topology.primary,
        project="p",
        session_id="lag",
        read_url=ReadReplicas(topology.replica, max_wait=0.3),
    )
    stale = SQLAlchemyContextStore(
        url=topology.primary,
        project="p",
        session_id="lag",
        read_url=ReadReplicas(topology.replica, stale_reads=True),
    )
    try:
        await store.append(message("before"))
        assert texts(await store.get_history()) == ["before"]
        await topology.pause_replay()
        await store.append(message("after"))
        started = time.monotonic()
        # The replica cannot catch up while paused: after max_wait the primary answers.
        assert texts(await store.get_history()) == ["before", "after"]
        assert time.monotonic() - started >= 0.3
        # Stale reads are allowed to miss it, and do: they read the paused replica.
        await stale.append(message("stale-write"))
        assert texts(await stale.get_history()) == ["before"]
    finally:
        await store.close()
        await stale.close()


async def test_transactions_and_writes_use_the_primary(topology: Topology) -> None:
    db = Database(topology.primary.render_as_string(hide_password=False), agent_name="a",
                  read_url=topology.replica)  # fmt: skip
    try:
        await topology.pause_replay()
        async with db.transaction() as tx:
            await tx.add_message("t", "u", "user", message="inside")
            # Uncommitted: only the primary, inside this transaction, can see it.
            assert [m.message for m in await tx.get_messages("t", "u")] == ["inside"]
            await tx.credit("u", 5)
            assert (await tx.get_user("u")).available_balance == 5
        # Read-your-writes after the block: the replica is paused, the primary answers.
        assert [m.message for m in await db.get_messages("t", "u")] == ["inside"]
        assert [t.thread_id for t in await db.list_threads("u")] == ["t"]
    finally:
        await db.close()


async def test_a_replica_stopped_mid_run_falls_back_to_the_primary(topology: Topology) -> None:
    engine = await connect(topology.primary, read_url=topology.replica)
    store = SQLAlchemyContextStore(engine, project="p", session_id="stop")
    strict = SQLAlchemyContextStore(
        url=topology.primary,
        project="p",
        session_id="stop",
        read_url=ReadReplicas(topology.replica, fallback="raise"),
    )
    replicas = replicas_of(engine)
    assert replicas is not None
    try:
        await store.append(message("kept"))
        await caught_up(topology.primary, topology.replica)
        results: list[list[str]] = []
        for n in range(40):
            if n == 15:
                await asyncio.to_thread(topology.standby.stop, "fast")
            results.append(texts(await store.get_history()))
        # Every read answered, before and after the replica went away.
        assert results == [["kept"]] * 40
        with pytest.raises(DatabaseError, match=r"read replica .* is unavailable") as caught:
            await strict.get_history()
        assert str(topology.replica.port) in str(caught.value)
        # Writes never needed the replica.
        await store.append(message("while down"))
        assert texts(await store.get_history()) == ["kept", "while down"]
    finally:
        await asyncio.to_thread(topology.standby.start)
        await strict.close()
        await engine.close()
    # Closing the engine closed the replica's pool too.
    assert replicas.engines[0].sync_engine.pool.checkedin() == 0  # type: ignore[attr-defined]


def test_read_replicas_are_postgresql_only(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        SQLAlchemyContextStore(url=str(tmp_path / "a.db"), read_url=str(tmp_path / "b.db"))
    with pytest.raises(ConfigurationError, match="fallback"):
        SQLAlchemyContextStore(
            url="postgresql://u@h/db",
            read_url=ReadReplicas("postgresql://u@r/db", fallback="maybe"),  # type: ignore[arg-type]
        )
