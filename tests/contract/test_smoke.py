"""A first pass of both contracts on every implementation."""

from __future__ import annotations

from convostore import ContextMessage
from tests.contract.conftest import MakeDatabase, MakeStore


async def test_agent_database_round_trip(make_database: MakeDatabase) -> None:
    db = await make_database()
    first = await db.add_message("t1", "u1", "user", message="hi", extra_inputs={"k": [1]})
    second = await db.add_message("t1", "u1", "agent", message="yo", kind="final_response")
    assert (first.idx, second.idx) == (0, 1)
    stored = await db.get_messages("t1", "u1")
    assert [m.message for m in stored] == ["hi", "yo"]
    assert stored[0].extra_inputs == {"k": [1]}


async def test_context_store_round_trip(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(ContextMessage(role="user", content=[{"type": "text", "text": "Hello"}]))
    history = await store.get_history()
    assert history == [ContextMessage(role="user", content=[{"type": "text", "text": "Hello"}])]
    sessions = await store.list_sessions()
    assert [(s.session_id, s.message_count, s.preview) for s in sessions] == [("s1", 1, "Hello")]
