"""The agent database contract (agentstr's ``BaseDatabase`` plus credit/debit).

Every test runs against each implementation in ``tests/contract/conftest.py``: the in-memory
reference, SQLite (file and ``:memory:``), PostgreSQL and MariaDB. What agentstr's SQLite
backend does is the specification; where a test needs SQL (raw columns, transactions,
reopening a file), the implementations that have none are declared divergences: strict
xfails with their reason (``DIVERGENCES`` in ``tests/contract/conftest.py``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import text

from convostore import (
    AgentDatabase,
    ConvostoreError,
    InsufficientBalance,
    Message,
    SerializationError,
    SQLAlchemyDatabase,
    User,
    ValidationError,
)
from tests.contract.conftest import MakeDatabase

KINDS = ["request", "requires_payment", "tool_message", "requires_input", "final_response", "error"]
ROLES = ["user", "agent", "tool"]
MAX_ID = 255


def sql(db: AgentDatabase) -> SQLAlchemyDatabase:
    """The database as the SQL implementation it is expected to be: the tests that use this
    are declared divergences of the in-memory twin (``DIVERGENCES`` in the conftest)."""
    return cast(SQLAlchemyDatabase, db)


def reopen_conn_str(implementation: str, db: AgentDatabase) -> str:
    """A connection string that reaches the same storage from a new engine.

    The SQLite file is reopened through agentstr's ``sqlite://PATH`` form; servers by URL.
    """
    url = sql(db).engine.url
    if implementation.startswith("sqlite"):
        return f"sqlite://{url.database}"
    return url.render_as_string(hide_password=False)


async def add_thread(db: AgentDatabase, thread_id: str, user_id: str, count: int) -> list[Message]:
    return [await db.add_message(thread_id, user_id, "user", message=f"m{i}") for i in range(count)]


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


def idxs(messages: list[Message]) -> list[int]:
    return [m.idx for m in messages]


def assert_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)


# --- users ---------------------------------------------------------------------------------


async def test_unknown_user_has_zero_balance_and_no_thread(make_database: MakeDatabase) -> None:
    db = await make_database()
    assert await db.get_user("nobody") == User(
        user_id="nobody", available_balance=0, current_thread_id=None
    )
    assert await db.get_current_thread_id("nobody") is None


async def test_reading_an_unknown_user_does_not_create_it(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.get_user("ghost")
    assert await db.debit("ghost", 0) == 0
    with pytest.raises(InsufficientBalance):
        await db.debit("ghost", 1)


async def test_upsert_creates_a_user(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.upsert_user(User(user_id="alice", available_balance=100, current_thread_id="t1"))
    assert await db.get_user("alice") == User(
        user_id="alice", available_balance=100, current_thread_id="t1"
    )


async def test_upsert_overwrites_balance_and_current_thread(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.upsert_user(User(user_id="alice", available_balance=100, current_thread_id="t1"))
    await db.upsert_user(User(user_id="alice", available_balance=7, current_thread_id=None))
    assert await db.get_user("alice") == User(
        user_id="alice", available_balance=7, current_thread_id=None
    )
    await db.upsert_user(User(user_id="alice", available_balance=0, current_thread_id="t2"))
    assert await db.get_user("alice") == User(
        user_id="alice", available_balance=0, current_thread_id="t2"
    )


async def test_upsert_accepts_look_alike_users(make_database: MakeDatabase) -> None:
    """agentstr's own ``User`` (any object with the fields) is accepted."""
    db = await make_database()
    await db.upsert_user(
        SimpleNamespace(user_id="bob", available_balance=3, current_thread_id="t")  # type: ignore[arg-type]
    )
    assert await db.get_user("bob") == User(
        user_id="bob", available_balance=3, current_thread_id="t"
    )


async def test_upsert_refuses_unknown_fields_by_name(make_database: MakeDatabase) -> None:
    """A misspelt or extra field is refused, as ``add_messages`` refuses an unknown key."""
    db = await make_database()
    await db.upsert_user(User(user_id="alice", available_balance=7))
    for extra in ({"tier": "gold"}, {"balance": 5}):
        with pytest.raises(ValidationError, match=f"unknown field '{next(iter(extra))}'"):
            await db.upsert_user({"user_id": "alice", "available_balance": 1} | extra)  # type: ignore[arg-type]
    assert await db.get_user("alice") == User(user_id="alice", available_balance=7)


def test_the_user_model_refuses_unknown_fields() -> None:
    """``User(user_id="u", balance=5)`` once made a user with a zero balance."""
    with pytest.raises(ValidationError, match="unknown field 'balance'"):
        User(user_id="u", balance=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="available_balance"):
        User(user_id="u", available_balance=-1)


async def test_upsert_does_not_touch_other_users(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.upsert_user(User(user_id="alice", available_balance=1))
    await db.upsert_user(User(user_id="bob", available_balance=2))
    assert (await db.get_user("alice")).available_balance == 1
    assert (await db.get_user("bob")).available_balance == 2


async def test_upsert_accepts_the_largest_balance(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.upsert_user(User(user_id="rich", available_balance=2**63 - 1))
    assert (await db.get_user("rich")).available_balance == 2**63 - 1


# --- current thread ------------------------------------------------------------------------


async def test_set_current_thread_on_unknown_user_creates_it(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.set_current_thread_id("carol", "t1")
    assert await db.get_current_thread_id("carol") == "t1"
    assert await db.get_user("carol") == User(
        user_id="carol", available_balance=0, current_thread_id="t1"
    )


async def test_set_current_thread_updates_and_clears(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.set_current_thread_id("carol", "t1")
    await db.set_current_thread_id("carol", "t2")
    assert await db.get_current_thread_id("carol") == "t2"
    await db.set_current_thread_id("carol", None)
    assert await db.get_current_thread_id("carol") is None


async def test_set_current_thread_keeps_the_balance(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.upsert_user(User(user_id="dave", available_balance=42, current_thread_id="old"))
    await db.set_current_thread_id("dave", "new")
    assert await db.get_user("dave") == User(
        user_id="dave", available_balance=42, current_thread_id="new"
    )


async def test_clearing_the_thread_of_an_unknown_user(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.set_current_thread_id("erin", None)
    assert await db.get_user("erin") == User(user_id="erin")


# --- add_message ---------------------------------------------------------------------------


async def test_add_message_returns_the_stored_message(make_database: MakeDatabase) -> None:
    db = await make_database()
    before = datetime.now(UTC)
    added = await db.add_message(
        "t1",
        "u1",
        "agent",
        message="the answer",
        content="42",
        kind="final_response",
        satoshis=21,
        extra_inputs={"q": "what?"},
        extra_outputs={"tokens": 3},
    )
    after = datetime.now(UTC)
    assert added.model_dump(exclude={"created_at"}) == {
        "agent_name": "agent",
        "thread_id": "t1",
        "user_id": "u1",
        "idx": 0,
        "message": "the answer",
        "content": "42",
        "role": "agent",
        "kind": "final_response",
        "satoshis": 21,
        "extra_inputs": {"q": "what?"},
        "extra_outputs": {"tokens": 3},
    }
    assert_utc(added.created_at)
    assert before <= added.created_at <= after
    assert await db.get_messages("t1", "u1") == [added]


async def test_add_message_defaults(make_database: MakeDatabase) -> None:
    db = await make_database()
    added = await db.add_message("t1", "u1", "user")
    assert (added.message, added.content, added.kind, added.satoshis) == ("", "", "request", None)
    assert (added.extra_inputs, added.extra_outputs) == ({}, {})
    assert await db.get_messages("t1", "u1") == [added]


async def test_idx_counts_from_zero_per_thread(make_database: MakeDatabase) -> None:
    db = await make_database()
    assert idxs(await add_thread(db, "t1", "u1", 3)) == [0, 1, 2]
    assert idxs(await add_thread(db, "t2", "u1", 2)) == [0, 1]
    assert (await db.add_message("t1", "u1", "agent")).idx == 3


async def test_idx_is_shared_by_the_users_of_a_thread(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.add_message("t1", "u1", "user")
    await db.add_message("t1", "u2", "user")
    await db.add_message("t1", "u1", "agent")
    assert idxs(await db.get_messages("t1", "u1")) == [0, 2]
    assert idxs(await db.get_messages("t1", "u2")) == [1]


async def test_every_role_and_kind_is_accepted(make_database: MakeDatabase) -> None:
    db = await make_database()
    pairs = [(role, kind) for role in ROLES for kind in KINDS]
    for role, kind in pairs:
        await db.add_message("t1", "u1", role, kind=kind)
    assert [(m.role, m.kind) for m in await db.get_messages("t1", "u1")] == pairs


EXTRAS: dict[str, Any] = {
    "nested": {"list": [1, 2.5, -3, True, False, None, [], {}], "deep": [[{"x": [[[]]]}]]},
    "unicode": "héllo wörld · 漢字 · Ελληνικά",
    "emoji": "🦀🐍👩‍👩‍👧‍👦",
    "nul": "before\x00after",
    "escapes": 'quote" backslash\\ newline\n tab\t',
    "ints": [0, -1, 2**63 - 1, -(2**63)],
    "floats": [0.1, 1e-300, 1.7976931348623157e308, -2.5],
    "": "empty key",
}


async def test_extras_round_trip_exactly(make_database: MakeDatabase) -> None:
    db = await make_database()
    added = await db.add_message(
        "t1", "u1", "tool", extra_inputs=EXTRAS, extra_outputs={"echo": EXTRAS}
    )
    (stored,) = await db.get_messages("t1", "u1")
    assert stored.extra_inputs == EXTRAS
    assert stored.extra_outputs == {"echo": EXTRAS}
    assert added == stored


async def test_returned_message_is_what_is_stored_not_the_arguments(
    make_database: MakeDatabase,
) -> None:
    """Tuples come back as lists, and mutating the arguments afterwards changes nothing."""
    db = await make_database()
    inputs: dict[str, Any] = {"pair": (1, 2), "items": [1]}
    added = await db.add_message("t1", "u1", "user", extra_inputs=inputs)
    inputs["items"].append(2)
    assert added.extra_inputs == {"pair": [1, 2], "items": [1]}
    assert await db.get_messages("t1", "u1") == [added]


async def test_text_fields_round_trip_unicode(make_database: MakeDatabase) -> None:
    db = await make_database()
    message = "emoji 🦀, accents é, CJK 漢字, quotes ' \" `, sql ; -- %_"
    content = "content may hold NUL \x00 and 🦀"
    await db.add_message("t1", "u1", "user", message=message, content=content)
    (stored,) = await db.get_messages("t1", "u1")
    assert (stored.message, stored.content) == (message, content)


async def test_megabytes_of_content_round_trip(make_database: MakeDatabase) -> None:
    db = await make_database()
    # Random hex only halves under compression, so several MB still reach the database.
    content = secrets.token_hex(2 * 1024 * 1024)
    message = "m" * (1024 * 1024)
    added = await db.add_message("t1", "u1", "agent", message=message, content=content)
    (stored,) = await db.get_messages("t1", "u1")
    assert stored.content == content
    assert stored.message == message
    assert stored == added


async def test_satoshis_round_trip(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.add_message("t1", "u1", "agent", satoshis=0)
    await db.add_message("t1", "u1", "agent", satoshis=2**63 - 1)
    await db.add_message("t1", "u1", "agent", satoshis=None)
    assert [m.satoshis for m in await db.get_messages("t1", "u1")] == [0, 2**63 - 1, None]


async def test_created_at_is_aware_utc_and_non_decreasing(make_database: MakeDatabase) -> None:
    db = await make_database()
    await add_thread(db, "t1", "u1", 3)
    stored = await db.get_messages("t1", "u1")
    for message in stored:
        assert_utc(message.created_at)
    moments = [m.created_at for m in stored]
    assert moments == sorted(moments)


# --- get_messages --------------------------------------------------------------------------


async def test_unknown_thread_has_no_messages(make_database: MakeDatabase) -> None:
    db = await make_database()
    assert await db.get_messages("nothing", "u1") == []


async def test_get_messages_filters_by_thread_and_user(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.add_message("t1", "u1", "user", message="a")
    await db.add_message("t2", "u1", "user", message="b")
    await db.add_message("t1", "u2", "user", message="c")
    await db.add_message("t1", "u1", "agent", message="d")
    assert [m.message for m in await db.get_messages("t1", "u1")] == ["a", "d"]
    assert [m.message for m in await db.get_messages("t2", "u1")] == ["b"]
    assert [m.message for m in await db.get_messages("t1", "u2")] == ["c"]
    assert await db.get_messages("t2", "u2") == []


PAGES: list[tuple[dict[str, Any], list[int]]] = [
    ({}, [0, 1, 2, 3, 4, 5]),
    ({"reverse": True}, [5, 4, 3, 2, 1, 0]),
    ({"limit": 2}, [0, 1]),
    ({"limit": 0}, []),
    ({"limit": 100}, [0, 1, 2, 3, 4, 5]),
    ({"limit": 2, "reverse": True}, [5, 4]),
    ({"before_idx": 3}, [0, 1, 2]),
    ({"after_idx": 3}, [4, 5]),
    ({"before_idx": 0}, []),
    ({"after_idx": 5}, []),
    ({"after_idx": -1}, [0, 1, 2, 3, 4, 5]),
    ({"before_idx": 100}, [0, 1, 2, 3, 4, 5]),
    ({"after_idx": 1, "before_idx": 5}, [2, 3, 4]),
    ({"after_idx": 2, "before_idx": 3}, []),
    ({"after_idx": 4, "before_idx": 2}, []),
    ({"after_idx": 1, "before_idx": 5, "reverse": True}, [4, 3, 2]),
    ({"after_idx": 1, "before_idx": 5, "limit": 2}, [2, 3]),
    ({"after_idx": 1, "before_idx": 5, "limit": 2, "reverse": True}, [4, 3]),
    ({"before_idx": 4, "limit": 2, "reverse": True}, [3, 2]),
    ({"after_idx": 1, "limit": 2}, [2, 3]),
]


async def test_pagination(make_database: MakeDatabase) -> None:
    db = await make_database()
    await add_thread(db, "t1", "u1", 6)
    for query, expected in PAGES:
        assert idxs(await db.get_messages("t1", "u1", **query)) == expected, query


async def test_pagination_counts_only_the_users_messages(make_database: MakeDatabase) -> None:
    """Bounds are idx values of the thread; ``limit`` counts the user's messages only."""
    db = await make_database()
    for i in range(6):
        await db.add_message("t1", "u1" if i % 2 == 0 else "u2", "user", message=str(i))
    assert idxs(await db.get_messages("t1", "u1", after_idx=0, limit=1)) == [2]
    assert idxs(await db.get_messages("t1", "u2", before_idx=5, reverse=True)) == [3, 1]
    assert idxs(await db.get_messages("t1", "u1", limit=2, reverse=True)) == [4, 2]


async def test_paging_backwards_visits_every_message_once(make_database: MakeDatabase) -> None:
    db = await make_database()
    await add_thread(db, "t1", "u1", 7)
    seen: list[int] = []
    before: int | None = None
    while page := await db.get_messages("t1", "u1", before_idx=before, limit=3, reverse=True):
        seen.extend(idxs(page))
        before = page[-1].idx
    assert seen == [6, 5, 4, 3, 2, 1, 0]


# --- agent scope ---------------------------------------------------------------------------


async def test_agents_do_not_see_each_others_rows(make_database: MakeDatabase) -> None:
    first = await make_database(agent_name="first")
    second = await make_database(agent_name="second")
    await first.upsert_user(User(user_id="u1", available_balance=50, current_thread_id="t1"))
    await first.add_message("t1", "u1", "user", message="for the first agent")

    assert await second.get_user("u1") == User(user_id="u1")
    assert await second.get_current_thread_id("u1") is None
    assert await second.get_messages("t1", "u1") == []

    added = await second.add_message("t1", "u1", "user", message="for the second agent")
    assert added.idx == 0
    assert added.agent_name == "second"
    assert await second.credit("u1", 5) == 5
    await second.set_current_thread_id("u1", "t9")

    assert await first.get_user("u1") == User(
        user_id="u1", available_balance=50, current_thread_id="t1"
    )
    assert [m.message for m in await first.get_messages("t1", "u1")] == ["for the first agent"]
    assert (await first.add_message("t1", "u1", "agent")).idx == 1


async def test_two_objects_of_one_agent_share_rows(make_database: MakeDatabase) -> None:
    """The positive control for the isolation tests: same name, same data."""
    one = await make_database(agent_name="same")
    other = await make_database(agent_name="same")
    await one.upsert_user(User(user_id="u1", available_balance=9, current_thread_id="t1"))
    await one.add_message("t1", "u1", "user", message="hello")
    assert await other.get_user("u1") == User(
        user_id="u1", available_balance=9, current_thread_id="t1"
    )
    assert [m.message for m in await other.get_messages("t1", "u1")] == ["hello"]
    assert (await other.add_message("t1", "u1", "agent")).idx == 1


async def test_agent_name_none_is_an_agent_of_its_own(make_database: MakeDatabase) -> None:
    unnamed = await make_database(agent_name=None)
    named = await make_database(agent_name="named")
    assert unnamed.agent_name is None

    added = await unnamed.add_message("t1", "u1", "user", message="no name")
    assert added.agent_name is None
    await unnamed.upsert_user(User(user_id="u1", available_balance=5, current_thread_id="t1"))

    assert await named.get_messages("t1", "u1") == []
    assert await named.get_user("u1") == User(user_id="u1")
    await named.add_message("t1", "u1", "user", message="named")

    (stored,) = await unnamed.get_messages("t1", "u1")
    assert stored == added
    assert await unnamed.get_user("u1") == User(
        user_id="u1", available_balance=5, current_thread_id="t1"
    )
    again = await make_database(agent_name=None)
    assert [m.message for m in await again.get_messages("t1", "u1")] == ["no name"]


async def test_unusable_agent_names_are_refused(make_database: MakeDatabase) -> None:
    """The empty name in particular, so no agent can collide with ``agent_name=None``."""
    for agent_name in ["", "a" * 129, "agent ", "a\x00b", 7]:
        await refused(f"agent_name={agent_name!r}", make_database(agent_name=agent_name))


# --- balances ------------------------------------------------------------------------------


async def test_credit_creates_and_adds(make_database: MakeDatabase) -> None:
    db = await make_database()
    assert await db.credit("u1", 10) == 10
    assert await db.credit("u1", 5) == 15
    assert await db.credit("u1", 0) == 15
    assert await db.get_user("u1") == User(user_id="u1", available_balance=15)


async def test_credit_keeps_the_current_thread(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.set_current_thread_id("u1", "t1")
    assert await db.credit("u1", 3) == 3
    assert await db.get_current_thread_id("u1") == "t1"


async def test_debit_subtracts_and_returns_the_new_balance(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.upsert_user(User(user_id="u1", available_balance=10, current_thread_id="t1"))
    assert await db.debit("u1", 4) == 6
    assert await db.debit("u1", 6) == 0
    assert await db.debit("u1", 0) == 0
    assert await db.get_user("u1") == User(
        user_id="u1", available_balance=0, current_thread_id="t1"
    )


async def test_insufficient_balance_changes_nothing(make_database: MakeDatabase) -> None:
    db = await make_database()
    await db.upsert_user(User(user_id="u1", available_balance=10, current_thread_id="t1"))
    with pytest.raises(InsufficientBalance):
        await db.debit("u1", 11)
    assert await db.get_user("u1") == User(
        user_id="u1", available_balance=10, current_thread_id="t1"
    )


async def test_debit_of_an_unknown_user(make_database: MakeDatabase) -> None:
    db = await make_database()
    assert await db.debit("nobody", 0) == 0
    with pytest.raises(InsufficientBalance):
        await db.debit("nobody", 1)
    assert await db.get_user("nobody") == User(user_id="nobody")


# --- refused input leaves the data unchanged -----------------------------------------------

Call = Callable[[AgentDatabase], Awaitable[object]]
Refusal = tuple[str, Call, type[ConvostoreError]]


class Unserializable:
    pass


def _add(**overrides: Any) -> Call:
    arguments: dict[str, Any] = {"thread_id": "t1", "user_id": "u1", "role": "user"} | overrides

    def call(db: AgentDatabase) -> Awaitable[object]:
        return db.add_message(**arguments)

    return call


REFUSED: dict[str, list[Refusal]] = {
    "role and kind": [
        ("unknown role", _add(role="admin"), ValidationError),
        ("role in the wrong case", _add(role="User"), ValidationError),
        ("empty role", _add(role=""), ValidationError),
        ("role None", _add(role=None), ValidationError),
        ("unknown kind", _add(kind="chat"), ValidationError),
        ("kind None", _add(kind=None), ValidationError),
    ],
    "message ids": [
        ("empty thread", _add(thread_id=""), ValidationError),
        ("thread too long", _add(thread_id="t" * (MAX_ID + 1)), ValidationError),
        ("thread ending in a space", _add(thread_id="t1 "), ValidationError),
        ("thread ending in a newline", _add(thread_id="t1\n"), ValidationError),
        ("thread with NUL", _add(thread_id="t\x001"), ValidationError),
        ("thread not a str", _add(thread_id=1), ValidationError),
        ("empty user", _add(user_id=""), ValidationError),
        ("user too long", _add(user_id="u" * (MAX_ID + 1)), ValidationError),
        ("user ending in a tab", _add(user_id="u1\t"), ValidationError),
        ("user NUL", _add(user_id="\x00"), ValidationError),
    ],
    "message fields": [
        ("message with NUL", _add(message="a\x00b"), ValidationError),
        ("message not a str", _add(message=b"bytes"), ValidationError),
        ("content not a str", _add(content={"a": 1}), ValidationError),
        ("negative satoshis", _add(satoshis=-1), ValidationError),
        ("satoshis bool", _add(satoshis=True), ValidationError),
        ("satoshis float", _add(satoshis=1.5), ValidationError),
        ("satoshis beyond 64 bits", _add(satoshis=2**63), ValidationError),
        ("extras not a mapping", _add(extra_inputs=["a"]), ValidationError),
    ],
    "extras": [
        ("NaN", _add(extra_inputs={"x": math.nan}), SerializationError),
        ("infinity", _add(extra_outputs={"x": [math.inf]}), SerializationError),
        ("deep -infinity", _add(extra_outputs={"a": [{"b": [-math.inf]}]}), SerializationError),
        ("set", _add(extra_inputs={"x": {1, 2}}), SerializationError),
        ("bytes", _add(extra_inputs={"x": b"raw"}), SerializationError),
        ("datetime", _add(extra_outputs={"at": datetime.now(UTC)}), SerializationError),
        ("object", _add(extra_outputs={"o": Unserializable()}), SerializationError),
        ("int beyond 64 bits", _add(extra_inputs={"n": 2**64}), SerializationError),
        ("non-str key", _add(extra_inputs={"x": {1: "one"}}), SerializationError),
        (
            "good inputs, bad outputs",
            _add(extra_inputs={"ok": 1}, extra_outputs={"x": math.nan}),
            SerializationError,
        ),
    ],
    "users": [
        (
            "negative balance",
            lambda db: db.upsert_user(User.model_construct(user_id="u1", available_balance=-1)),
            ValidationError,
        ),
        (
            "negative balance in a look-alike",
            lambda db: db.upsert_user(
                SimpleNamespace(user_id="u1", available_balance=-5, current_thread_id=None)  # type: ignore[arg-type]
            ),
            ValidationError,
        ),
        (
            "balance beyond 64 bits",
            lambda db: db.upsert_user(User(user_id="u1", available_balance=2**63)),
            ValidationError,
        ),
        (
            "user id too long",
            lambda db: db.upsert_user(User(user_id="u" * (MAX_ID + 1), available_balance=1)),
            ValidationError,
        ),
        (
            "current thread ending in a space",
            lambda db: db.upsert_user(User(user_id="u1", current_thread_id="t2 ")),
            ValidationError,
        ),
        (
            "set a thread too long",
            lambda db: db.set_current_thread_id("u1", "t" * 256),
            ValidationError,
        ),
        ("set an empty thread", lambda db: db.set_current_thread_id("u1", ""), ValidationError),
        ("set for an empty user", lambda db: db.set_current_thread_id("", "t2"), ValidationError),
    ],
    "amounts": [
        ("credit negative", lambda db: db.credit("u1", -1), ValidationError),
        ("credit bool", lambda db: db.credit("u1", True), ValidationError),
        ("credit float", lambda db: db.credit("u1", 1.0), ValidationError),  # type: ignore[arg-type]
        ("credit beyond 64 bits", lambda db: db.credit("u1", 2**63), ValidationError),
        ("credit empty user", lambda db: db.credit("", 1), ValidationError),
        ("debit negative", lambda db: db.debit("u1", -1), ValidationError),
        ("debit bool", lambda db: db.debit("u1", True), ValidationError),
        ("debit too much", lambda db: db.debit("u1", 11), InsufficientBalance),
    ],
}


@pytest.mark.parametrize("group", list(REFUSED))
async def test_refused_calls_leave_the_data_unchanged(
    make_database: MakeDatabase, group: str
) -> None:
    db = await make_database()
    await db.upsert_user(User(user_id="u1", available_balance=10, current_thread_id="t1"))
    await db.add_message("t1", "u1", "user", message="kept", extra_inputs={"k": 1})
    before = (await db.get_user("u1"), await db.get_messages("t1", "u1"))

    for label, call, error in REFUSED[group]:
        await refused(label, call(db), error)
        after = (await db.get_user("u1"), await db.get_messages("t1", "u1"))
        assert after == before, label
    assert await db.get_messages("t2", "u1") == []
    # A refused message takes no idx: the next one follows the last stored message.
    assert (await db.add_message("t1", "u1", "agent")).idx == 1


READS_REFUSED: list[tuple[str, Call]] = [
    ("get_user empty id", lambda db: db.get_user("")),
    ("get_user too long", lambda db: db.get_user("u" * (MAX_ID + 1))),
    ("get_current_thread_id NUL", lambda db: db.get_current_thread_id("a\x00")),
    ("limit negative", lambda db: db.get_messages("t1", "u1", limit=-1)),
    ("limit str", lambda db: db.get_messages("t1", "u1", limit="2")),  # type: ignore[arg-type]
    ("before_idx float", lambda db: db.get_messages("t1", "u1", before_idx=1.5)),  # type: ignore[arg-type]
    ("after_idx bool", lambda db: db.get_messages("t1", "u1", after_idx=True)),
    ("thread too long", lambda db: db.get_messages("t" * 256, "u1")),
]


async def test_bad_read_arguments_are_refused(make_database: MakeDatabase) -> None:
    db = await make_database()
    for label, call in READS_REFUSED:
        await refused(label, call(db))


# --- ids -----------------------------------------------------------------------------------

AWKWARD_IDS = [
    "O'Brien",
    'say "hi"',
    "x'; DROP TABLE users; --",
    "100% _match_",
    "back\\slash",
    "🦀 crab",
    "漢字",
    " leading space",
    "new\nline inside",
    "u" * MAX_ID,
    "😀" * MAX_ID,
]


async def test_awkward_ids_round_trip(make_database: MakeDatabase) -> None:
    db = await make_database()
    for n, awkward in enumerate(AWKWARD_IDS):
        await db.upsert_user(User(user_id=awkward, available_balance=n, current_thread_id=awkward))
        await db.add_message(awkward, awkward, "user", message=f"hello {n}")
    for n, awkward in enumerate(AWKWARD_IDS):
        assert await db.get_user(awkward) == User(
            user_id=awkward, available_balance=n, current_thread_id=awkward
        )
        (stored,) = await db.get_messages(awkward, awkward)
        assert (stored.thread_id, stored.user_id, stored.idx) == (awkward, awkward, 0)
        assert stored.message == f"hello {n}"


async def test_ids_are_compared_exactly(make_database: MakeDatabase) -> None:
    """No backend may fold case, accents or width in a key (MariaDB's default collations do)."""
    db = await make_database()
    ids = ["alice", "Alice", "ALICE", "cafe", "café", "cafe\u0301", "\uff41", "a", "ß", "ss"]
    for n, same in enumerate(ids):
        await db.credit(same, n + 1)
        await db.add_message(same, same, "user", message=same)
    for n, same in enumerate(ids):
        assert (await db.get_user(same)).available_balance == n + 1, same
        assert [m.message for m in await db.get_messages(same, same)] == [same]


# --- persistence and transactions (SQL; divergences of the twin) --------------------------


async def test_data_survives_close_and_reopen(
    make_database: MakeDatabase, implementation: str
) -> None:
    db = await make_database(agent_name="keeper")
    conn_str = reopen_conn_str(implementation, db)

    writer = await SQLAlchemyDatabase(conn_str, agent_name="keeper").async_init()
    try:
        await writer.upsert_user(User(user_id="u1", available_balance=8, current_thread_id="t1"))
        await writer.add_message("t1", "u1", "user", message="remember me", extra_inputs=EXTRAS)
        written = await writer.get_messages("t1", "u1")
    finally:
        await writer.close()

    reader = await SQLAlchemyDatabase(conn_str, agent_name="keeper").async_init()
    try:
        assert await reader.get_user("u1") == User(
            user_id="u1", available_balance=8, current_thread_id="t1"
        )
        assert await reader.get_messages("t1", "u1") == written
        assert (await reader.add_message("t1", "u1", "agent")).idx == 1
    finally:
        await reader.close()
    assert idxs(await db.get_messages("t1", "u1")) == [0, 1]


async def test_large_content_is_compressed_on_disk(make_database: MakeDatabase) -> None:
    db = sql(await make_database())
    await db.add_message("t1", "u1", "user", content="small")
    await db.add_message("t1", "u1", "user", content="a rather repetitive answer. " * 2000)
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT idx, content FROM messages WHERE thread_id = 't1' ORDER BY idx")
            )
        ).all()
    small, large = (bytes(row.content) for row in rows)
    assert small == b'\x01"small"'
    assert large[0] == 0x03
    assert len(large) < len("a rather repetitive answer. " * 2000) // 10


async def test_transaction_commits_every_call_together(make_database: MakeDatabase) -> None:
    db = sql(await make_database())
    async with db.transaction() as tx:
        await tx.credit("u1", 10)
        await tx.debit("u1", 3)
        await tx.add_message("t1", "u1", "user", message="paid")
        await tx.add_message("t1", "u1", "agent", message="answer")
        await tx.set_current_thread_id("u1", "t1")
    assert await db.get_user("u1") == User(
        user_id="u1", available_balance=7, current_thread_id="t1"
    )
    assert [(m.idx, m.message) for m in await db.get_messages("t1", "u1")] == [
        (0, "paid"),
        (1, "answer"),
    ]


async def test_transaction_sees_its_own_writes(make_database: MakeDatabase) -> None:
    db = sql(await make_database())
    async with db.transaction() as tx:
        await tx.upsert_user(User(user_id="u1", available_balance=4))
        assert (await tx.get_user("u1")).available_balance == 4
        await tx.add_message("t1", "u1", "user")
        assert idxs(await tx.get_messages("t1", "u1")) == [0]


async def test_exception_in_transaction_rolls_everything_back(
    make_database: MakeDatabase,
) -> None:
    db = sql(await make_database())
    await db.upsert_user(User(user_id="u1", available_balance=10, current_thread_id="t0"))
    await db.add_message("t1", "u1", "user", message="before")
    before = (await db.get_user("u1"), await db.get_messages("t1", "u1"))

    async def work() -> None:
        async with db.transaction() as tx:
            await tx.debit("u1", 5)
            await tx.credit("u2", 5)
            await tx.add_message("t1", "u1", "agent", message="never")
            await tx.add_message("t2", "u1", "agent", message="never")
            await tx.set_current_thread_id("u1", "t2")
            raise AbortError

    with pytest.raises(AbortError):
        await work()

    assert (await db.get_user("u1"), await db.get_messages("t1", "u1")) == before
    assert await db.get_user("u2") == User(user_id="u2")
    assert await db.get_messages("t2", "u1") == []
    # The rolled-back idx allocation is undone too.
    assert (await db.add_message("t1", "u1", "agent")).idx == 1


async def test_refused_debit_in_transaction_rolls_back_earlier_calls(
    make_database: MakeDatabase,
) -> None:
    db = sql(await make_database())

    async def work() -> None:
        async with db.transaction() as tx:
            await tx.add_message("t1", "u1", "user", message="question")
            await tx.debit("u1", 1)

    with pytest.raises(InsufficientBalance):
        await work()
    assert await db.get_messages("t1", "u1") == []
