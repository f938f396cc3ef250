"""The context store contract (axio's ``ContextStore`` plus ``append_many``).

Every test runs against each implementation in ``tests/contract/conftest.py``: the in-memory
reference, SQLite (file and ``:memory:``), PostgreSQL and MariaDB. axio-context-sqlite's
behaviour is the specification (previews, fork, tokens), except that a session is keyed by
project *and* session id everywhere. Tests that need SQL (the raw column, transactions,
reopening) are declared divergences of the implementations that have none: strict xfails
with their reason (``DIVERGENCES`` in ``tests/contract/conftest.py``).
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import text

from convostore import (
    ContextMessage,
    ContextStore,
    ConvostoreError,
    InMemoryContextStore,
    SerializationError,
    SQLAlchemyContextStore,
    ValidationError,
)
from tests.contract.conftest import MakeStore

NO_PREVIEW = "(no preview)"


def user(*texts: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": t} for t in texts])


def assistant(*texts: str) -> ContextMessage:
    return ContextMessage(role="assistant", content=[{"type": "text", "text": t} for t in texts])


def exact(messages: list[ContextMessage]) -> str:
    """A rendering that tells ``1`` from ``1.0`` and ``True``, and sees key order."""
    return json.dumps([m.model_dump() for m in messages], ensure_ascii=False)


def constructed(*, role: Any, content: Any) -> ContextMessage:
    """A message that skips validation, as a caller's look-alike object might."""
    return ContextMessage.model_construct(role=role, content=content)


async def append_many(store: ContextStore, messages: list[ContextMessage]) -> None:
    assert isinstance(store, InMemoryContextStore | SQLAlchemyContextStore)
    await store.append_many(messages)


def sql(store: ContextStore) -> SQLAlchemyContextStore:
    """The store as the SQL implementation it is expected to be: the tests that use this
    are declared divergences of the in-memory twin (``DIVERGENCES`` in the conftest)."""
    return cast(SQLAlchemyContextStore, store)


async def refused(
    label: str, call: Awaitable[object], error: type[Exception] = ValidationError
) -> None:
    """Await ``call`` and fail, naming ``label``, unless it raises ``error``."""
    try:
        await call
    except error:
        return
    pytest.fail(f"{label}: accepted")


class AbortError(Exception):
    """Raised inside a transaction to make it roll back."""


async def state(store: ContextStore) -> tuple[str, tuple[int, int], list[Any]]:
    """Everything a caller can observe about a store's project, for before/after checks."""
    sessions = [info.model_dump() for info in await store.list_sessions()]
    return exact(await store.get_history()), await store.get_context_tokens(), sessions


# --- history -------------------------------------------------------------------------------


async def test_a_new_session_is_empty(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    assert await store.get_history() == []
    assert await store.get_context_tokens() == (0, 0)
    assert await store.list_sessions() == []


async def test_session_id_and_project(make_store: MakeStore) -> None:
    named = await make_store(session_id="s1", project="/work/p")
    assert (named.session_id, named.project) == ("s1", "/work/p")
    first, second = await make_store(), await make_store()
    assert first.session_id
    assert second.session_id
    assert first.session_id != second.session_id


async def test_history_keeps_insertion_order(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    messages = [
        ContextMessage(role="system", content=[{"type": "text", "text": "be brief"}]),
        user("one"),
        assistant("two"),
        ContextMessage(role="tool", content=[{"type": "text", "text": "three"}]),
        user("four"),
        assistant("five"),
    ]
    for message in messages:
        await store.append(message)
    assert await store.get_history() == messages


IMAGE = base64.b64encode(secrets.token_bytes(3000)).decode()

EVERY_BLOCK = [
    ContextMessage(role="user", content=[{"type": "text", "text": "Hello"}]),
    ContextMessage(
        role="user",
        content=[
            {"type": "text", "text": "What is in this picture?"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
            },
        ],
    ),
    ContextMessage(
        role="assistant",
        content=[
            {"type": "text", "text": "Let me look that up."},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "search",
                "input": {
                    "query": "crab 🦀",
                    "filters": {"years": [2020, 2021], "exact": True, "score": 0.5},
                    "nothing": None,
                    "nested": [[{"deep": [1, 1.0, "1"]}]],
                },
            },
        ],
    ),
    ContextMessage(
        role="tool",
        content=[{"type": "tool_result", "tool_use_id": "toolu_01", "content": "plain result"}],
    ),
    ContextMessage(
        role="tool",
        content=[
            {
                "type": "tool_result",
                "tool_use_id": "toolu_02",
                "content": [
                    {"type": "text", "text": "partial"},
                    {"type": "image", "source": {"type": "base64", "data": IMAGE[:64]}},
                ],
                "is_error": True,
            },
            {"type": "tool_result", "tool_use_id": "toolu_03", "content": [], "is_error": False},
        ],
    ),
    ContextMessage(role="assistant", content=[{"type": "text", "text": "NUL \x00, 漢字, é, \n\t"}]),
    ContextMessage(role="assistant", content=[]),
]


async def test_every_kind_of_content_block_round_trips_exactly(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    for message in EVERY_BLOCK:
        await store.append(message)
    history = await store.get_history()
    assert history == EVERY_BLOCK
    assert exact(history) == exact(EVERY_BLOCK)


async def test_history_is_a_copy(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    message = user("original")
    await store.append(message)
    message.content[0]["text"] = "changed after append"
    (read,) = await store.get_history()
    read.content[0]["text"] = "changed after read"
    assert await store.get_history() == [user("original")]


async def test_append_many_appends_consecutively(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("0"))
    await append_many(store, [assistant("1"), user("2"), assistant("3")])
    await store.append(user("4"))
    await append_many(store, [])
    assert await store.get_history() == [
        user("0"),
        assistant("1"),
        user("2"),
        assistant("3"),
        user("4"),
    ]
    (info,) = await store.list_sessions()
    assert (info.message_count, info.preview) == (5, "0")


async def test_append_many_of_nothing_creates_no_session(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await append_many(store, [])
    assert await store.list_sessions() == []


async def test_append_many_is_all_or_nothing(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("kept"))
    before = await state(store)
    bad = ContextMessage(role="user", content=[{"type": "text", "text": "x", "n": math.nan}])
    with pytest.raises(SerializationError):
        await append_many(store, [assistant("good"), bad, assistant("good too")])
    assert await state(store) == before
    await store.append(assistant("next"))
    assert await store.get_history() == [user("kept"), assistant("next")]


# --- clear ---------------------------------------------------------------------------------


async def test_clear_removes_messages_and_tokens(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("hi"))
    await store.set_context_tokens(10, 20)
    await store.clear()
    assert await store.get_history() == []
    assert await store.get_context_tokens() == (0, 0)
    assert await store.list_sessions() == []


async def test_clear_leaves_other_sessions_alone(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1", project="/a")
    sibling = await make_store(session_id="s2", project="/a")
    namesake = await make_store(session_id="s1", project="/b")
    for other in (store, sibling, namesake):
        await other.append(user(f"{other.project} {other.session_id}"))
        await other.set_context_tokens(1, 2)
    await store.clear()
    for other in (sibling, namesake):
        assert await other.get_history() == [user(f"{other.project} {other.session_id}")]
        assert await other.get_context_tokens() == (1, 2)
    assert [info.session_id for info in await sibling.list_sessions()] == ["s2"]
    assert [info.session_id for info in await namesake.list_sessions()] == ["s1"]


async def test_clear_of_an_empty_session(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.clear()
    assert await store.get_history() == []


async def test_a_cleared_session_starts_over(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("old question"))
    await store.append(assistant("old answer"))
    await store.clear()
    await store.append(assistant("new greeting"))
    await store.append(user("new question"))
    assert await store.get_history() == [assistant("new greeting"), user("new question")]
    (info,) = await store.list_sessions()
    assert (info.session_id, info.message_count, info.preview) == ("s1", 2, "new question")


# --- fork ----------------------------------------------------------------------------------


async def test_fork_copies_history_and_tokens(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1", project="/p")
    await store.append(user("question"))
    await store.append(assistant("answer"))
    await store.set_context_tokens(100, 50)
    branch = await store.fork()
    assert branch.session_id != store.session_id
    assert branch.project == "/p"
    assert await branch.get_history() == [user("question"), assistant("answer")]
    assert await branch.get_context_tokens() == (100, 50)


async def test_fork_and_source_are_independent(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("shared"))
    await store.set_context_tokens(1, 1)
    branch = await store.fork()

    await store.append(assistant("source only"))
    await branch.append(assistant("branch only"))
    await store.add_context_tokens(1, 0)
    await branch.add_context_tokens(0, 5)
    assert await store.get_history() == [user("shared"), assistant("source only")]
    assert await branch.get_history() == [user("shared"), assistant("branch only")]
    assert await store.get_context_tokens() == (2, 1)
    assert await branch.get_context_tokens() == (1, 6)

    await store.clear()
    assert await branch.get_history() == [user("shared"), assistant("branch only")]
    assert await branch.get_context_tokens() == (1, 6)
    await branch.append(user("still here"))
    assert len(await branch.get_history()) == 3


async def test_clearing_a_fork_keeps_the_source(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("keep me"))
    branch = await store.fork()
    await branch.clear()
    assert await store.get_history() == [user("keep me")]
    assert [info.session_id for info in await store.list_sessions()] == ["s1"]


async def test_fork_is_listed_newest_first_with_the_same_preview(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("hello there"))
    await store.set_context_tokens(3, 4)
    branch = await store.fork()
    sessions = await store.list_sessions()
    assert [(s.session_id, s.message_count, s.preview) for s in sessions] == [
        (branch.session_id, 1, "hello there"),
        ("s1", 1, "hello there"),
    ]
    assert [(s.input_tokens, s.output_tokens) for s in sessions] == [(3, 4), (3, 4)]


async def test_fork_of_a_fork(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("a"))
    child = await store.fork()
    await child.append(assistant("b"))
    grandchild = await child.fork()
    await grandchild.append(user("c"))
    assert await grandchild.get_history() == [user("a"), assistant("b"), user("c")]
    assert len({store.session_id, child.session_id, grandchild.session_id}) == 3
    assert await store.get_history() == [user("a")]


async def test_fork_of_an_empty_session(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    branch = await store.fork()
    assert branch.session_id != store.session_id
    assert branch.project == store.project
    assert await branch.get_history() == []
    assert await branch.get_context_tokens() == (0, 0)
    assert await store.list_sessions() == []
    await branch.append(user("first"))
    assert await store.get_history() == []
    assert await branch.get_history() == [user("first")]


async def test_fork_of_a_session_with_only_tokens(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.set_context_tokens(7, 8)
    branch = await store.fork()
    assert await branch.get_context_tokens() == (7, 8)
    assert await branch.get_history() == []
    assert await store.list_sessions() == []


# --- tokens --------------------------------------------------------------------------------


async def test_tokens_set_overwrites(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.set_context_tokens(10, 20)
    assert await store.get_context_tokens() == (10, 20)
    await store.set_context_tokens(3, 0)
    assert await store.get_context_tokens() == (3, 0)


async def test_tokens_add_increments(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.add_context_tokens(5, 1)
    await store.add_context_tokens(5, 2)
    await store.add_context_tokens(0, 0)
    assert await store.get_context_tokens() == (10, 3)


async def test_tokens_set_then_add(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("hi"))
    await store.set_context_tokens(100, 200)
    await store.add_context_tokens(1, 2)
    assert await store.get_context_tokens() == (101, 202)
    await store.set_context_tokens(0, 0)
    assert await store.get_context_tokens() == (0, 0)
    assert await store.get_history() == [user("hi")]


async def test_tokens_hold_large_counts(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.set_context_tokens(2**62, 2**62)
    await store.add_context_tokens(2**62 - 1, 0)
    assert await store.get_context_tokens() == (2**63 - 1, 2**62)


async def test_tokens_belong_to_one_session(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1", project="/a")
    sibling = await make_store(session_id="s2", project="/a")
    namesake = await make_store(session_id="s1", project="/b")
    await store.set_context_tokens(1, 2)
    await sibling.add_context_tokens(3, 4)
    assert await store.get_context_tokens() == (1, 2)
    assert await sibling.get_context_tokens() == (3, 4)
    assert await namesake.get_context_tokens() == (0, 0)


async def test_tokens_alone_do_not_list_a_session(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.set_context_tokens(1, 1)
    await store.add_context_tokens(1, 1)
    assert await store.list_sessions() == []


async def test_bad_token_counts_are_refused(make_store: MakeStore) -> None:
    store = await make_store(session_id="s1")
    await store.append(user("hi"))
    await store.set_context_tokens(5, 6)
    before = await state(store)
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("set negative input", lambda: store.set_context_tokens(-1, 0)),
        ("set negative output", lambda: store.set_context_tokens(0, -1)),
        ("add negative", lambda: store.add_context_tokens(-1, 0)),
        ("set bool", lambda: store.set_context_tokens(True, 0)),
        ("add float", lambda: store.add_context_tokens(0, 1.5)),  # type: ignore[arg-type]
        ("set str", lambda: store.set_context_tokens("1", 0)),  # type: ignore[arg-type]
        ("set beyond 64 bits", lambda: store.set_context_tokens(2**63, 0)),
    ]
    for label, call in calls:
        await refused(label, call())
        assert await state(store) == before, label


# --- list_sessions -------------------------------------------------------------------------


async def test_list_sessions_newest_first_with_counts_and_tokens(make_store: MakeStore) -> None:
    # Named against the alphabet, so a tie on created_at would show up as a wrong order.
    first = await make_store(session_id="c-oldest")
    await first.append(user("one"))
    second = await make_store(session_id="b-middle")
    await append_many(second, [user("two"), assistant("2"), user("2 again")])
    await second.set_context_tokens(11, 12)
    third = await make_store(session_id="a-newest")
    await third.append(assistant("three"))
    await first.append(assistant("a later message does not move a session"))

    sessions = await first.list_sessions()
    assert [(s.session_id, s.message_count, s.input_tokens, s.output_tokens) for s in sessions] == [
        ("a-newest", 1, 0, 0),
        ("b-middle", 3, 11, 12),
        ("c-oldest", 2, 0, 0),
    ]
    moments = [s.created_at for s in sessions]
    assert moments == sorted(moments, reverse=True)
    for moment in moments:
        assert moment.tzinfo is not None
        assert moment.utcoffset() == timedelta(0)


async def test_every_store_of_a_project_lists_the_same_sessions(make_store: MakeStore) -> None:
    one = await make_store(session_id="b-one")
    two = await make_store(session_id="a-two")
    idle = await make_store(session_id="idle")
    await one.append(user("1"))
    await two.append(user("2"))
    listings = [await store.list_sessions() for store in (one, two, idle)]
    assert listings[0] == listings[1] == listings[2]
    assert [s.session_id for s in listings[0]] == ["a-two", "b-one"]


PREVIEWS: list[tuple[str, list[ContextMessage], str]] = [
    ("short text", [user("Hello")], "Hello"),
    ("empty text", [user("")], ""),
    ("exactly 80 characters", [user("x" * 80)], "x" * 80),
    ("81 characters", [user("x" * 79 + "yz")], "x" * 79 + "y..."),
    ("long text", [user("word " * 100)], ("word " * 16) + "..."),
    ("80 emoji and more", [user("🦀" * 81)], "🦀" * 80 + "..."),
    ("first text block only", [user("first", "second")], "first"),
    (
        "first text block after an image",
        [
            ContextMessage(
                role="user",
                content=[
                    {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                    {"type": "text", "text": "caption"},
                ],
            )
        ],
        "caption",
    ),
    ("assistant first", [assistant("ignored"), user("the user")], "the user"),
    ("first user message only", [user("first"), assistant("a"), user("second")], "first"),
    ("no user message", [assistant("only me"), ContextMessage(role="system")], NO_PREVIEW),
    (
        "first user message without text",
        [
            ContextMessage(
                role="user", content=[{"type": "tool_result", "tool_use_id": "t", "content": "r"}]
            ),
            user("later text does not count"),
        ],
        NO_PREVIEW,
    ),
    ("first user message empty", [ContextMessage(role="user"), user("later")], NO_PREVIEW),
    ("text with newlines", [user("line one\nline two")], "line one\nline two"),
]


async def test_previews_follow_axio(make_store: MakeStore) -> None:
    """The first user message's first text block, 80 characters then ``...``."""
    for n, (_, messages, _) in enumerate(PREVIEWS):
        store = await make_store(session_id=f"s{n:02}")
        for message in messages:
            await store.append(message)
    listed = {info.session_id: info.preview for info in await store.list_sessions()}
    for n, (label, _, expected) in enumerate(PREVIEWS):
        assert listed[f"s{n:02}"] == expected, label


async def test_previews_of_batched_appends(make_store: MakeStore) -> None:
    store = await make_store(session_id="batch")
    await append_many(store, [assistant("hi"), ContextMessage(role="system")])
    await append_many(store, [user("the first user message"), user("not this one")])
    (info,) = await store.list_sessions()
    assert info.preview == "the first user message"


async def test_list_sessions_sees_only_its_project(make_store: MakeStore) -> None:
    here = await make_store(session_id="s1", project="/here")
    there = await make_store(session_id="s2", project="/there")
    await here.append(user("here"))
    await there.append(user("there"))
    assert [s.session_id for s in await here.list_sessions()] == ["s1"]
    assert [s.session_id for s in await there.list_sessions()] == ["s2"]
    nowhere = await make_store(project="/nowhere")
    assert await nowhere.list_sessions() == []


# --- projects and ids ----------------------------------------------------------------------


async def test_same_session_id_in_two_projects_are_two_sessions(make_store: MakeStore) -> None:
    alpha = await make_store(session_id="shared", project="/alpha")
    beta = await make_store(session_id="shared", project="/beta")
    await alpha.append(user("alpha"))
    await alpha.set_context_tokens(1, 1)
    await beta.append(user("beta"))
    await beta.append(assistant("beta 2"))
    assert await alpha.get_history() == [user("alpha")]
    assert await beta.get_history() == [user("beta"), assistant("beta 2")]
    assert await beta.get_context_tokens() == (0, 0)
    (info,) = await alpha.list_sessions()
    assert (info.message_count, info.preview) == (1, "alpha")

    branch = await beta.fork()
    assert branch.project == "/beta"
    assert {s.session_id for s in await alpha.list_sessions()} == {"shared"}
    await alpha.clear()
    assert await beta.get_history() == [user("beta"), assistant("beta 2")]


AWKWARD = [
    ("O'Brien", "/home/o'brien/project"),
    ('say "hi"', 'C:\\Users\\me\\"quoted"'),
    ("x'; DROP TABLE context_messages; --", "/%_wild%/"),
    ("🦀", "/проект/漢字/🦀"),
    ("S1", "/Case"),
    ("s1", "/case"),
    ("s" * 128, "/" + "p" * 511),
    ("emoji" + "😀" * 123, "/" + "😀" * 511),
]


async def test_awkward_session_ids_and_projects(make_store: MakeStore) -> None:
    stores = [await make_store(session_id=s, project=p) for s, p in AWKWARD]
    for n, store in enumerate(stores):
        await store.append(user(f"message {n}"))
        await store.set_context_tokens(n, n)
    for n, (store, (session_id, project)) in enumerate(zip(stores, AWKWARD, strict=True)):
        assert (store.session_id, store.project) == (session_id, project)
        assert await store.get_history() == [user(f"message {n}")]
        assert await store.get_context_tokens() == (n, n)
        (info,) = await store.list_sessions()
        assert (info.session_id, info.preview) == (session_id, f"message {n}")


async def test_unusable_session_ids_and_projects_are_refused(make_store: MakeStore) -> None:
    bad: list[dict[str, Any]] = [
        {"session_id": ""},
        {"session_id": "s" * 129},
        {"session_id": "s1 "},
        {"session_id": "s\x001"},
        {"session_id": 1},
        {"project": ""},
        {"project": "/" + "p" * 512},
        {"project": "/p\n"},
        {"project": "/p\x00"},
    ]
    for arguments in bad:
        await refused(repr(arguments), make_store(**{"session_id": "s1"} | arguments))


# --- refused messages ----------------------------------------------------------------------

BAD_MESSAGES: list[tuple[str, ContextMessage, type[ConvostoreError]]] = [
    ("unknown role", constructed(role="bot", content=[]), ValidationError),
    ("role None", constructed(role=None, content=[]), ValidationError),
    ("content a str", constructed(role="user", content="hi"), ValidationError),
    ("content None", constructed(role="user", content=None), ValidationError),
    (
        "content a dict",
        constructed(role="user", content={"type": "text"}),
        ValidationError,
    ),
    (
        "content of strs",
        constructed(role="user", content=["hi"]),
        ValidationError,
    ),
    (
        "content of lists",
        constructed(role="user", content=[[{"type": "text"}]]),
        ValidationError,
    ),
    (
        "NaN in a block",
        ContextMessage(role="user", content=[{"type": "text", "text": "x", "score": math.nan}]),
        SerializationError,
    ),
    (
        "infinity deep in a tool input",
        ContextMessage(
            role="assistant",
            content=[{"type": "tool_use", "input": {"a": [{"b": math.inf}]}}],
        ),
        SerializationError,
    ),
    (
        "set in a block",
        ContextMessage(role="user", content=[{"type": "x", "v": {1, 2}}]),
        SerializationError,
    ),
    (
        "bytes in a block",
        ContextMessage(role="user", content=[{"type": "image", "data": b"\x89PNG"}]),
        SerializationError,
    ),
    (
        "int beyond 64 bits",
        ContextMessage(role="user", content=[{"type": "x", "n": 2**64}]),
        SerializationError,
    ),
]


@pytest.mark.parametrize("existing", [False, True], ids=["new session", "existing session"])
async def test_bad_messages_are_refused_and_nothing_is_stored(
    make_store: MakeStore, existing: bool
) -> None:
    store = await make_store(session_id="s1")
    if existing:
        await store.append(user("kept"))
        await store.set_context_tokens(1, 2)
    before = await state(store)
    for label, message, error in BAD_MESSAGES:
        await refused(label, store.append(message), error)
        await refused(label, append_many(store, [user("good"), message]), error)
        assert await state(store) == before, label
    await store.append(assistant("after"))
    assert len(await store.get_history()) == (2 if existing else 1)


async def test_a_misspelt_field_is_refused_by_name_and_nothing_is_stored(
    make_store: MakeStore,
) -> None:
    """``{"contents": ...}`` once stored an empty message; every entry point now refuses it."""
    store = await make_store(session_id="s1")
    await store.append(user("kept"))
    before = await state(store)
    misspelt: Any = {"role": "user", "contents": [{"type": "text", "text": "lost"}]}
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("append", lambda: store.append(misspelt)),
        ("append_many", lambda: append_many(store, [user("good"), misspelt])),
        ("replace_history", lambda: store.replace_history([misspelt])),
    ]
    for label, call in calls:
        with pytest.raises(ValidationError, match="unknown field 'contents'"):
            await call()
        assert await state(store) == before, label


async def test_a_stored_message_can_be_appended_again(make_store: MakeStore) -> None:
    """A stored message's own fields (position, time) are not unknown fields of a message."""
    store = await make_store(session_id="s1")
    await store.append(user("again"))
    [stored] = [m async for m in store.iter_history()]
    await store.append(stored)
    assert await store.get_history() == [user("again"), user("again")]


def test_the_message_model_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="unknown field 'contents'"):
        ContextMessage(role="user", contents=[])  # type: ignore[call-arg]


# --- storage (SQL only) --------------------------------------------------------------------


async def test_content_is_compressed_on_disk(make_store: MakeStore) -> None:
    store = sql(await make_store(session_id="s1"))
    small = [{"type": "text", "text": "Hello"}]
    large = [
        {"type": "text", "text": f"line {n}: the same kind of thing again\n"} for n in range(500)
    ]
    await store.append(ContextMessage(role="user", content=small))
    await store.append(ContextMessage(role="assistant", content=large))
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT content FROM context_messages"
                    " WHERE project = :p AND session_id = :s ORDER BY position"
                ),
                {"p": store.project, "s": store.session_id},
            )
        ).all()
    stored_small, stored_large = (bytes(row.content) for row in rows)
    assert stored_small[0] == 0x01
    assert json.loads(stored_small[1:]) == small
    large_json = json.dumps(large, separators=(",", ":")).encode()
    assert stored_large[0] == 0x03
    assert len(stored_large) < len(large_json) // 4
    assert await store.get_history() == [
        ContextMessage(role="user", content=small),
        ContextMessage(role="assistant", content=large),
    ]


async def test_sessions_survive_close_and_reopen(make_store: MakeStore) -> None:
    shared = sql(await make_store(session_id="s1", project="/p"))
    url = shared.engine.url.render_as_string(hide_password=False)

    writer = SQLAlchemyContextStore(url=url, session_id="s1", project="/p")
    try:
        for message in EVERY_BLOCK:
            await writer.append(message)
        await writer.set_context_tokens(12, 34)
        listed = await writer.list_sessions()
    finally:
        await writer.close()

    reader = SQLAlchemyContextStore(url=url, session_id="s1", project="/p")
    try:
        assert exact(await reader.get_history()) == exact(EVERY_BLOCK)
        assert await reader.get_context_tokens() == (12, 34)
        assert await reader.list_sessions() == listed
        await reader.append(user("after reopening"))
    finally:
        await reader.close()
    assert len(await shared.get_history()) == len(EVERY_BLOCK) + 1


async def test_transaction_commits_together(make_store: MakeStore) -> None:
    store = sql(await make_store(session_id="s1"))
    async with store.transaction() as tx:
        await tx.append(user("question"))
        await tx.append(assistant("answer"))
        await tx.add_context_tokens(5, 7)
        assert len(await tx.get_history()) == 2
    assert await store.get_history() == [user("question"), assistant("answer")]
    assert await store.get_context_tokens() == (5, 7)


async def test_exception_in_transaction_rolls_everything_back(make_store: MakeStore) -> None:
    store = sql(await make_store(session_id="s1"))
    await store.append(user("kept"))
    await store.set_context_tokens(1, 1)
    before = await state(store)

    async def work() -> None:
        async with store.transaction() as tx:
            await tx.append(assistant("never"))
            await tx.add_context_tokens(100, 100)
            await tx.with_session("s2").append(user("never either"))
            raise AbortError

    with pytest.raises(AbortError):
        await work()
    assert await state(store) == before
    assert await store.with_session("s2").get_history() == []


async def test_namespaces_keep_same_named_sessions_apart(make_store: MakeStore) -> None:
    # axio-context-sqlite's db_name: the same project and session ids in two namespaces.
    default = await make_store(session_id="s1", project="/p")
    other = await make_store(session_id="s1", project="/p", namespace="other")
    await default.append(user("default"))
    await other.append(user("other"))
    await other.set_context_tokens(5, 6)
    assert await default.get_history() == [user("default")]
    assert await other.get_history() == [user("other")]
    assert await default.get_context_tokens() == (0, 0)
    assert [s.preview for s in await default.list_sessions()] == ["default"]
    assert [s.preview for s in await other.list_sessions()] == ["other"]

    branch = await other.fork()
    assert [s.session_id for s in await other.list_sessions()] == [branch.session_id, "s1"]
    assert [s.session_id for s in await default.list_sessions()] == ["s1"]
    await other.clear()
    assert await default.get_history() == [user("default")]


@pytest.mark.parametrize("namespace", ["", "a b", "x" * 65, "ns\x1f", 7])
async def test_unusable_namespace_is_refused(make_store: MakeStore, namespace: Any) -> None:
    with pytest.raises(ValidationError, match="namespace"):
        await make_store(session_id="s1", namespace=namespace)


async def test_project_with_the_namespace_separator_is_refused(make_store: MakeStore) -> None:
    with pytest.raises(ValidationError, match="U\\+001F"):
        await make_store(session_id="s1", project="a\x1fb")
