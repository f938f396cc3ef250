"""The context-store operations the integrations build on: replace_history, pop, get_last.

No framework needed: these run under every supported Python, on the in-memory reference
and every selected SQL backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    ContextMessage,
    SerializationError,
    SQLAlchemyContextStore,
    ValidationError,
)
from tests.frameworks.conftest import MakeStore, SimulatedCrashError, crash_on, inserts_messages


def text(role: Any, value: str) -> ContextMessage:
    return ContextMessage(role=role, content=[{"type": "text", "text": value}])


OLD = [text("user", "old question"), text("assistant", "old answer"), text("user", "more")]
NEW = [text("user", "new question"), text("assistant", "new answer")]


async def test_replace_history_restarts_positions_and_keeps_tokens(make_store: MakeStore) -> None:
    store = make_store(session_id="s")
    for message in OLD:
        await store.append(message)
    await store.set_context_tokens(5, 7)

    await store.replace_history(NEW)

    assert await store.get_history() == NEW
    assert await store.get_context_tokens() == (5, 7)
    [info] = await store.list_sessions()
    assert (info.message_count, info.preview) == (2, "new question")
    await store.append(text("user", "after"))
    assert await store.get_history() == [*NEW, text("user", "after")]
    assert (await store.list_sessions())[0].message_count == 3


async def test_replace_history_recomputes_the_preview_from_the_new_messages(
    make_store: MakeStore,
) -> None:
    store = make_store(session_id="s")
    await store.append(text("user", "old question"))

    await store.replace_history([text("assistant", "summary only")])

    [info] = await store.list_sessions()
    assert info.preview == "(no preview)"
    await store.append(text("user", "next question"))
    assert (await store.list_sessions())[0].preview == "next question"


async def test_replace_history_with_nothing_empties_the_session_but_keeps_tokens(
    make_store: MakeStore,
) -> None:
    store = make_store(session_id="s")
    await store.append(text("user", "hi"))
    await store.set_context_tokens(1, 2)

    await store.replace_history([])

    assert await store.get_history() == []
    assert await store.list_sessions() == []
    assert await store.get_context_tokens() == (1, 2)


async def test_replace_history_of_a_new_session_creates_it(make_store: MakeStore) -> None:
    store = make_store(session_id="fresh")
    await store.replace_history(NEW)
    assert await store.get_history() == NEW
    assert [i.session_id for i in await store.list_sessions()] == ["fresh"]


async def test_replace_history_leaves_other_sessions_alone(make_store: MakeStore) -> None:
    mine, other = make_store(session_id="mine"), make_store(session_id="other")
    await other.append(text("user", "keep me"))
    await mine.append(text("user", "replace me"))

    await mine.replace_history(NEW)

    assert await other.get_history() == [text("user", "keep me")]


async def test_a_message_failing_to_encode_partway_leaves_the_old_history(
    make_store: MakeStore,
) -> None:
    store = make_store(session_id="s")
    for message in OLD:
        await store.append(message)
    await store.set_context_tokens(3, 4)
    bad = ContextMessage(role="user", content=[{"type": "text", "text": float("nan")}])

    with pytest.raises(SerializationError):
        await store.replace_history([*NEW, bad, text("user", "never stored")])

    assert await store.get_history() == OLD
    assert await store.get_context_tokens() == (3, 4)
    [info] = await store.list_sessions()
    assert (info.message_count, info.preview) == (3, "old question")


async def test_an_error_in_the_callers_transaction_rolls_the_replacement_back(
    sql_engine: AsyncEngine,
) -> None:
    store = SQLAlchemyContextStore(sql_engine, session_id="s", project="/p")
    await store.append_many(OLD)

    async def replace_then_fail() -> None:
        async with store.transaction() as tx:
            await tx.replace_history(NEW)
            assert await tx.get_history() == NEW
            raise RuntimeError("after the replacement")

    with pytest.raises(RuntimeError, match="after the replacement"):
        await replace_then_fail()

    assert await store.get_history() == OLD
    assert (await store.list_sessions())[0].message_count == 3


async def test_a_crash_between_delete_and_insert_keeps_the_old_history(
    sql_engine: AsyncEngine,
) -> None:
    store = SQLAlchemyContextStore(sql_engine, session_id="s", project="/p")
    await store.append_many(OLD)

    with crash_on(sql_engine, inserts_messages), pytest.raises(SimulatedCrashError):
        await store.replace_history(NEW)

    assert await store.get_history() == OLD
    assert (await store.list_sessions())[0].message_count == 3


async def test_the_same_crash_loses_the_history_with_clear_then_append(
    sql_engine: AsyncEngine,
) -> None:
    # Why replace_history exists: this is what axio's compaction does to a plain store.
    store = SQLAlchemyContextStore(sql_engine, session_id="s", project="/p")
    await store.append_many(OLD)

    await store.clear()
    with crash_on(sql_engine, inserts_messages), pytest.raises(SimulatedCrashError):
        await store.append_many(NEW)

    assert await store.get_history() == []


async def test_pop_removes_and_returns_the_last_message(make_store: MakeStore) -> None:
    store = make_store(session_id="s")
    assert await store.pop() is None
    for message in OLD:
        await store.append(message)

    assert await store.pop() == OLD[-1]
    assert await store.get_history() == OLD[:-1]
    assert (await store.list_sessions())[0].message_count == 2
    await store.append(text("user", "again"))
    assert await store.get_history() == [*OLD[:-1], text("user", "again")]
    assert [await store.pop() for _ in range(4)] == [text("user", "again"), *OLD[1::-1], None]
    assert await store.list_sessions() == []


async def test_pop_leaves_other_sessions_alone(make_store: MakeStore) -> None:
    mine, other = make_store(session_id="mine"), make_store(session_id="other")
    await other.append(text("user", "keep me"))
    assert await mine.pop() is None
    assert await other.get_history() == [text("user", "keep me")]


async def test_concurrent_pops_take_each_message_exactly_once(sql_engine: AsyncEngine) -> None:
    writer = SQLAlchemyContextStore(sql_engine, session_id="s", project="/p")
    messages = [text("user", f"m{i}") for i in range(12)]
    await writer.append_many(messages)
    poppers = [SQLAlchemyContextStore(sql_engine, session_id="s", project="/p") for _ in range(16)]

    popped = await asyncio.gather(*(p.pop() for p in poppers))

    found = [m for m in popped if m is not None]
    assert sorted(m.content[0]["text"] for m in found) == sorted(f"m{i}" for i in range(12))
    assert popped.count(None) == 4
    assert await writer.get_history() == []


async def test_get_last_returns_the_tail_in_order(make_store: MakeStore) -> None:
    store = make_store(session_id="s")
    for message in OLD:
        await store.append(message)

    assert await store.get_last(0) == []
    assert await store.get_last(2) == OLD[1:]
    assert await store.get_last(10) == OLD
    with pytest.raises(ValidationError):
        await store.get_last(-1)
