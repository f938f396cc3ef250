"""Keyset windows and pages, partial forks, bulk adds and idempotent retries, everywhere."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from convostore import (
    ConfigurationError,
    ConflictError,
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    ValidationError,
)
from convostore.models import StoredContextMessage
from tests.contract.conftest import MakeDatabase, MakeStore


def text(role: str, body: str) -> ContextMessage:
    return ContextMessage.model_validate(
        {"role": role, "content": [{"type": "text", "text": body}]}
    )


def bodies(messages: list[StoredContextMessage]) -> list[str]:
    return [m.content[0]["text"] for m in messages]


async def filled(make_store: MakeStore, count: int, session_id: str = "s") -> object:
    store = await make_store(session_id=session_id)
    await store.append_many([text("user", f"m{i}") for i in range(count)])
    return store


# -- the context store -----------------------------------------------------------------


async def test_append_returns_the_stored_message(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    first = await store.append(text("user", "a"))
    second = await store.append(text("assistant", "b"), client_id="c-2")
    assert (first.position, second.position) == (0, 1)
    assert (first.client_id, second.client_id) == (None, "c-2")
    assert second.created_at.tzinfo is not None
    assert second.message() == text("assistant", "b")


async def test_windows_by_position(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    await store.append_many([text("user", f"m{i}") for i in range(10)])
    assert bodies(await store.get_messages(limit=3, reverse=True)) == ["m9", "m8", "m7"]
    assert bodies(await store.get_messages(before=7, limit=3, reverse=True)) == [
        "m6",
        "m5",
        "m4",
    ]
    assert bodies(await store.get_messages(after=7)) == ["m8", "m9"]
    assert bodies(await store.get_messages(after=2, before=5)) == ["m3", "m4"]
    assert [m.position for m in await store.get_messages(limit=2)] == [0, 1]
    assert await store.get_messages(after=9) == []
    assert await store.get_messages(limit=0) == []
    with pytest.raises(ValidationError):
        await store.get_messages(limit=-1)


async def test_iter_history_streams_every_message_in_order(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    await store.append_many([text("user", f"m{i}") for i in range(23)])
    assert hasattr(store, "iter_history")
    streamed = [m async for m in store.iter_history(batch_size=5)]
    assert [m.position for m in streamed] == list(range(23))
    assert [m.message() for m in streamed] == await store.get_history()


async def test_list_sessions_pages_newest_first(make_store: MakeStore) -> None:
    for i in range(7):
        store = await make_store(session_id=f"s{i}")
        await store.append(text("user", f"hello {i}"))
        await asyncio.sleep(0.002)  # distinct creation times, so the order is defined
    everything = await store.list_sessions()
    assert [s.session_id for s in everything] == [f"s{i}" for i in reversed(range(7))]
    pages, before = [], None
    while True:
        page = await store.list_sessions(limit=3, before=before)
        if not page:
            break
        pages.append([s.session_id for s in page])
        before = page[-1]
    assert pages == [["s6", "s5", "s4"], ["s3", "s2", "s1"], ["s0"]]
    assert all(s.updated_at is not None for s in everything)


async def test_list_sessions_pages_through_equal_creation_times(make_store: MakeStore) -> None:
    store = await make_store(session_id="a")
    # One append_many per session is fast enough that creation times may tie: the page
    # boundary must then fall back on the session id.
    for name in "abcdef":
        await store.with_session(name).append(text("user", name))  # type: ignore[attr-defined]
    seen, before = [], None
    while page := await store.list_sessions(limit=2, before=before):
        seen += [s.session_id for s in page]
        before = page[-1]
    assert sorted(seen) == list("abcdef")
    assert len(seen) == 6


async def test_fork_at_takes_a_prefix_and_records_its_parent(make_store: MakeStore) -> None:
    store = await make_store(session_id="parent")
    await store.append(text("assistant", "system says hi"))
    await store.append(text("user", "first question"))
    await store.append(text("assistant", "answer"))
    await store.append(text("user", "second question"))
    await store.add_context_tokens(10, 20)

    branch = await store.fork(at=3)
    assert bodies(await branch.get_messages()) == ["system says hi", "first question", "answer"]
    await branch.append(text("user", "a different second question"))
    assert len(await store.get_history()) == 4
    assert len(await branch.get_history()) == 4
    assert await branch.get_context_tokens() == (10, 20)

    early = await store.fork(at=1)
    info = {s.session_id: s for s in await store.list_sessions()}
    assert info[branch.session_id].parent_session_id == "parent"
    assert info[branch.session_id].forked_at == 3
    assert info[branch.session_id].message_count == 4
    assert info[early.session_id].preview == "(no preview)"  # no user message copied
    assert info[early.session_id].forked_at == 1
    assert info["parent"].parent_session_id is None

    whole = await store.fork(at=99)
    assert len(await whole.get_history()) == 4
    with pytest.raises(ValidationError):
        await store.fork(at=-1)


async def test_retried_append_is_stored_once(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    await store.append(text("user", "before"))
    first = await store.append(text("user", "pay 5 sats"), client_id="req-1")
    again = await store.append(text("user", "pay 5 sats"), client_id="req-1")
    assert again == first
    assert bodies(await store.get_messages()) == ["before", "pay 5 sats"]
    other = await make_store(session_id="other")
    elsewhere = await other.append(text("user", "pay 5 sats"), client_id="req-1")
    assert elsewhere.position == 0  # ids are scoped to their session


async def test_retried_batch_is_stored_once(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    batch = [text("user", "q"), text("assistant", "a")]
    stored = await store.append_many(batch, client_ids=["q-1", "a-1"])
    assert await store.append_many(batch, client_ids=["q-1", "a-1"]) == stored
    assert len(await store.get_history()) == 2
    with pytest.raises(ValidationError):
        await store.append_many(batch, client_ids=["x"])
    with pytest.raises(ValidationError):
        await store.append_many(batch, client_ids=["dup", "dup"])
    assert len(await store.get_history()) == 2


async def test_concurrent_retries_store_once(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    results = await asyncio.gather(
        *(store.append(text("user", "once"), client_id="same") for _ in range(8))
    )
    assert len({r.position for r in results}) == 1
    assert bodies(await store.get_messages()) == ["once"]


# -- the agent database ----------------------------------------------------------------


async def test_add_messages_in_one_batch(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.add_message("t", "u", "user", message="first")
    added = await db.add_messages(
        "t",
        "u",
        [
            {"role": "agent", "message": "second", "kind": "tool_message"},
            {"role": "tool", "message": "third", "extra_outputs": {"ok": True}},
        ],
    )
    assert [(m.idx, m.message) for m in added] == [(1, "second"), (2, "third")]
    assert added[1].extra_outputs == {"ok": True}
    assert [m.message for m in await db.get_messages("t", "u")] == ["first", "second", "third"]
    with pytest.raises(ValidationError):
        await db.add_messages("t", "u", [{"role": "agent"}, {"role": "robot"}])
    with pytest.raises(ValidationError):
        await db.add_messages("t", "u", [{"role": "agent", "bogus": 1}])
    assert len(await db.get_messages("t", "u")) == 3
    assert await db.add_messages("t", "u", []) == []


async def test_retried_add_message_is_stored_once(make_database: MakeDatabase) -> None:
    db = await make_database()
    first = await db.add_message("t", "u", "user", message="pay", client_id="pay-1")
    again = await db.add_message("t", "u", "user", message="pay", client_id="pay-1")
    assert again == first
    assert len(await db.get_messages("t", "u")) == 1
    other = await db.add_message("t2", "u", "user", message="pay", client_id="pay-1")
    assert other.idx == 0


async def test_list_threads_pages_by_last_activity(make_database: MakeDatabase) -> None:
    db = await make_database()
    for name in ("t1", "t2", "t3", "t4"):
        await db.add_message(name, "alice", "user", message=name)
        await asyncio.sleep(0.002)
    await db.add_message("bob-thread", "bob", "user", message="not alice's")
    await asyncio.sleep(0.002)
    await db.add_message("t1", "alice", "agent", message="t1 again")  # most recent now
    threads = await db.list_threads("alice")
    assert [t.thread_id for t in threads] == ["t1", "t4", "t3", "t2"]
    assert threads[0].message_count == 2
    assert threads[0].user_id == "alice"
    first = await db.list_threads("alice", limit=3)
    rest = await db.list_threads("alice", limit=3, before=first[-1])
    assert [t.thread_id for t in first + rest] == ["t1", "t4", "t3", "t2"]
    assert [t.thread_id for t in await db.list_threads("bob")] == ["bob-thread"]
    other_agent = await make_database(agent_name="other")
    assert await other_agent.list_threads("alice") == []


async def test_reverse_must_be_a_bool(make_database: MakeDatabase, make_store: MakeStore) -> None:
    db = await make_database()
    store = await make_store(session_id="s")
    with pytest.raises(ValidationError):
        await db.get_messages("t", "u", reverse="yes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await store.get_messages(reverse=1)  # type: ignore[arg-type]


async def test_retried_batch_keyed_on_a_later_message(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    batch = [text("user", "a"), text("assistant", "b")]
    stored = await store.append_many(batch, client_ids=[None, "k"])
    await store.append(text("user", "other"))
    again = await store.append_many(batch, client_ids=[None, "k"])
    assert again == stored
    assert bodies(await store.get_messages()) == ["a", "b", "other"]


async def test_a_client_id_already_stored_later_in_a_batch_conflicts(make_store: MakeStore) -> None:
    store = await make_store(session_id="s")
    await store.append_many([text("user", "a"), text("user", "b")], client_ids=[None, "k"])
    with pytest.raises(ConflictError):
        await store.append_many([text("user", "x"), text("user", "y")], client_ids=["new", "k"])
    assert bodies(await store.get_messages()) == ["a", "b"]


async def test_retried_add_messages_keyed_on_a_later_message(make_database: MakeDatabase) -> None:
    db = await make_database()
    items = [{"role": "agent", "message": "a"}, {"role": "user", "message": "b", "client_id": "k"}]
    stored = await db.add_messages("t", "u", items)
    await db.add_message("t", "u", "user", message="later")
    assert await db.add_messages("t", "u", items) == stored
    assert [m.message for m in await db.get_messages("t", "u")] == ["a", "b", "later"]


async def test_a_client_id_belongs_to_its_user(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.add_message("t", "alice", "user", message="mine", client_id="c1")
    with pytest.raises(ConflictError):
        await db.add_message("t", "bob", "user", message="bob's", client_id="c1")
    assert await db.get_messages("t", "bob") == []


async def test_a_view_ends_with_its_transaction(
    make_database: MakeDatabase, make_store: MakeStore
) -> None:
    # A declared divergence of the in-memory twin (DIVERGENCES in the conftest).
    db = cast(SQLAlchemyDatabase, await make_database())
    store = cast(SQLAlchemyContextStore, await make_store(session_id="s"))
    async with db.transaction() as tx:
        await tx.credit("u", 5)
    async with store.transaction() as stx:
        branch = await stx.fork()
    with pytest.raises(ConfigurationError):
        await tx.credit("u", 7)
    with pytest.raises(ConfigurationError):
        await branch.append(text("user", "lost?"))
    assert (await db.get_user("u")).available_balance == 5
    assert await db.credit("u", 1) == 6  # the database itself is not stuck behind a lock


async def test_the_blocks_own_exceptions_pass_through(make_database: MakeDatabase) -> None:
    db = cast(SQLAlchemyDatabase, await make_database())

    async def paid_call_that_times_out() -> None:
        async with db.transaction() as tx:
            await tx.credit("u", 5)
            raise TimeoutError("llm call timed out")

    with pytest.raises(TimeoutError, match="llm call"):
        await paid_call_that_times_out()
    assert (await db.get_user("u")).available_balance == 0


async def test_counters_refuse_to_overflow(
    make_database: MakeDatabase, make_store: MakeStore
) -> None:
    db, store = await make_database(), await make_store(session_id="s")
    top = 2**63 - 1
    assert await db.credit("u", top) == top
    with pytest.raises(ValidationError):
        await db.credit("u", 1)
    assert (await db.get_user("u")).available_balance == top
    assert await db.debit("u", 1) == top - 1
    await store.set_context_tokens(top, 0)
    with pytest.raises(ValidationError):
        await store.add_context_tokens(1, 0)
    assert await store.get_context_tokens() == (top, 0)
