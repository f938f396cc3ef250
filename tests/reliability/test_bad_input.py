"""The bad-input catalogue: every case gets a typed error or round-trips exactly.

Each case calls the public API on every SQL backend. A refused call must raise the named
convostore error and leave every row of the five tables as it was (compared by plain
SELECTs before and after). An accepted call must read back exactly what was written and
leave every row that existed before untouched. Stored-payload cases first corrupt a row
with raw SQL, then the read must raise ``SerializationError`` and change nothing.

``docs/guarantees.md`` carries this catalogue as a table; a test keeps the two in step.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import zstandard
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    User,
    codec,
)
from convostore.errors import ConvostoreError, SerializationError, ValidationError
from tests.reliability.helpers import same_json, snapshot

MiB = 1024 * 1024
DOCS = Path(__file__).resolve().parents[2] / "docs" / "guarantees.md"
METACHARACTERS = ["'; DROP TABLE users; --", "%", "_", "\\", '"', "' OR '1'='1", "`x`", "*/ --"]


@dataclass
class Env:
    """What a case may use: the engine, a store and a database on it, seeded."""

    engine: AsyncEngine
    store: SQLAlchemyContextStore
    db: SQLAlchemyDatabase

    def other_store(self, *, session_id: str = "s", project: str = "p") -> SQLAlchemyContextStore:
        return SQLAlchemyContextStore(self.engine, session_id=session_id, project=project)

    def other_db(self, agent_name: Any) -> SQLAlchemyDatabase:
        return SQLAlchemyDatabase(engine=self.engine, agent_name=agent_name)


Call = Callable[[Env], Awaitable[Any]]


@dataclass
class Case:
    """One bad input: what it is, the call, and the outcome (an error class or ``None``).

    With ``outcome=None`` the call must succeed and ``check`` must confirm the exact
    round trip. ``corrupt`` is raw SQL run first (stored-payload cases).
    """

    id: str
    what: str
    call: Call
    outcome: type[ConvostoreError] | None
    check: Callable[[Env, Any], Awaitable[bool]] | None = None
    corrupt: Callable[[], tuple[str, dict[str, Any]]] | None = None
    known_gap: str | None = None

    @property
    def outcome_text(self) -> str:
        text = "round-trips exactly" if self.outcome is None else self.outcome.__name__
        return text if self.known_gap is None else f"{text} wanted; known gap: {self.known_gap}"

    def param(self) -> Any:
        if self.known_gap is None:
            return pytest.param(self, id=self.id)
        mark = pytest.mark.xfail(strict=True, reason=self.known_gap)
        return pytest.param(self, id=self.id, marks=mark)


def text_message(value: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": value}])


def build(model: type[Any], **fields: Any) -> Any:
    """A model instance that skipped validation, as a caller's buggy code might hand over."""
    return model.model_construct(**fields)


# --- round-trip checks -----------------------------------------------------------------------


async def history_is(env: Env, store: SQLAlchemyContextStore, content: Any) -> bool:
    history = await store.get_history()
    return len(history) == 1 and same_json(history[0].content, content)


def stored_content(content: Any, *, project: str = "p", session_id: str = "s") -> Call:
    async def call(env: Env) -> Any:
        store = env.other_store(project=project, session_id=session_id)
        await store.append(ContextMessage(role="user", content=content))
        return store

    return call


async def content_round_trips(env: Env, store: Any) -> bool:
    history = await store.get_history()
    return len(history) == 1 and bool(await history_is(env, store, history[0].content))


def same_content(content: Any) -> Callable[[Env, Any], Awaitable[bool]]:
    async def check(env: Env, store: Any) -> bool:
        return await history_is(env, store, content)

    return check


def every_id(value: str) -> Call:
    """Use ``value`` as agent, user, thread, project and session id at once."""

    async def call(env: Env) -> Any:
        db = env.other_db(value)
        await db.upsert_user(User(user_id=value, available_balance=3, current_thread_id=value))
        await db.add_message(value, value, "user", message=value, content=value)
        store = env.other_store(project=value, session_id=value)
        await store.append(text_message(value))
        await store.add_context_tokens(1, 2)
        return value

    return call


async def every_id_reads_back(env: Env, value: str) -> bool:
    db = env.other_db(value)
    user = await db.get_user(value)
    messages = await db.get_messages(value, value)
    store = env.other_store(project=value, session_id=value)
    sessions = await store.list_sessions()
    return (
        user == User(user_id=value, available_balance=3, current_thread_id=value)
        and [(m.thread_id, m.user_id, m.message, m.content) for m in messages]
        == [(value, value, value, value)]
        and await history_is(env, store, [{"type": "text", "text": value}])
        and [(s.session_id, s.message_count) for s in sessions] == [(value, 1)]
        and await store.get_context_tokens() == (1, 2)
    )


def agent_message(**overrides: Any) -> Call:
    args: dict[str, Any] = {"thread_id": "t-new", "user_id": "u", "role": "user"}
    args.update(overrides)
    return lambda env: env.db.add_message(**args)


async def agent_message_round_trips(env: Env, returned: Any) -> bool:
    (stored,) = await env.db.get_messages(returned.thread_id, returned.user_id)
    return bool(
        stored.model_dump(exclude={"created_at"}) == returned.model_dump(exclude={"created_at"})
        and same_json(stored.extra_inputs, returned.extra_inputs)
        and same_json(stored.extra_outputs, returned.extra_outputs)
    )


# --- payloads planted with raw SQL ------------------------------------------------------------


@cache
def zstd_bomb() -> bytes:
    """A zstd frame that declares (and holds) 65 MiB of zeros: over the 64 MiB maximum."""
    return bytes([codec.ZSTD]) + zstandard.ZstdCompressor().compress(bytes(65 * MiB))


@cache
def zstd_bomb_without_size() -> bytes:
    """The same bomb without a declared content size, so only the output cap stops it."""
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    chunks = compressor.compressobj()
    body = chunks.compress(bytes(65 * MiB)) + chunks.flush()
    return bytes([codec.ZSTD]) + body


@cache
def zlib_bomb() -> bytes:
    return bytes([codec.ZLIB]) + zlib.compress(bytes(65 * MiB), 9)


def plant_context(payload: Callable[[], bytes]) -> Callable[[], tuple[str, dict[str, Any]]]:
    return lambda: (
        "UPDATE context_messages SET content = :data WHERE project = 'seed' AND position = 1",
        {"data": payload()},
    )


def plant_agent(payload: Callable[[], bytes]) -> Callable[[], tuple[str, dict[str, Any]]]:
    return lambda: (
        "UPDATE messages SET content = :data WHERE agent_name = 'seed' AND idx = 1",
        {"data": payload()},
    )


GARBAGE: dict[str, Callable[[], bytes]] = {
    "garbage": lambda: b"\x00\xffnot a payload",
    "empty": lambda: b"",
    "unknown-header": lambda: b"\x7f[]",
    "bad-json": lambda: b'\x01[{"a": ',
    "truncated-zstd": lambda: codec.encode([{"x": list(range(2000))}])[:-4],
    "truncated-zlib": lambda: codec.encode([{"x": list(range(2000))}], codec="zlib")[:-4],
    "zstd-bomb": zstd_bomb,
    "zstd-bomb-no-size": zstd_bomb_without_size,
    "zlib-bomb": zlib_bomb,
}


# --- the catalogue ----------------------------------------------------------------------------

CASES: list[Case] = [
    # Values that are not JSON.
    Case(
        "content-nan",
        "context content holding NaN",
        lambda e: e.store.append(build(ContextMessage, role="user", content=[{"x": math.nan}])),
        SerializationError,
    ),
    Case(
        "content-infinity",
        "context content holding -Infinity",
        lambda e: e.store.append(build(ContextMessage, role="user", content=[{"x": -math.inf}])),
        SerializationError,
    ),
    Case(
        "content-set",
        "context content holding a set",
        lambda e: e.store.append(build(ContextMessage, role="user", content=[{"x": {1, 2}}])),
        SerializationError,
    ),
    Case(
        "content-bytes",
        "context content holding bytes",
        lambda e: e.store.append(build(ContextMessage, role="user", content=[{"x": b"\x00"}])),
        SerializationError,
    ),
    Case(
        "content-big-int",
        "context content holding 2**64 (beyond 64 bits)",
        lambda e: e.store.append(build(ContextMessage, role="user", content=[{"x": 2**64}])),
        SerializationError,
    ),
    Case(
        "content-int-key",
        "context content with a non-string object key",
        lambda e: e.store.append(build(ContextMessage, role="user", content=[{1: "x"}])),
        SerializationError,
    ),
    Case(
        "content-surrogate",
        "context content with a lone UTF-16 surrogate",
        lambda e: e.store.append(text_message("\ud800")),
        SerializationError,
    ),
    Case(
        "extra-datetime",
        "add_message extra_inputs holding a datetime",
        agent_message(extra_inputs={"when": datetime(2024, 1, 1, tzinfo=UTC)}),
        SerializationError,
    ),
    Case(
        "extra-nan",
        "add_message extra_outputs holding NaN",
        agent_message(extra_outputs={"x": [1.0, math.nan]}),
        SerializationError,
    ),
    Case(
        "extra-object",
        "add_message extra_inputs holding an arbitrary object",
        agent_message(extra_inputs={"x": object()}),
        SerializationError,
    ),
    Case(
        "batch-one-bad",
        "append_many whose last of 3 messages holds NaN",
        lambda e: e.store.append_many(
            [
                text_message("a"),
                text_message("b"),
                build(ContextMessage, role="user", content=[{"x": math.nan}]),
            ]
        ),
        SerializationError,
    ),
    Case(
        "replace-one-bad",
        "replace_history whose last message holds a set",
        lambda e: e.store.replace_history(
            [text_message("a"), build(ContextMessage, role="user", content=[{"x": {1}}])]
        ),
        SerializationError,
    ),
    # Sizes.
    Case(
        "content-over-max",
        "context content of 64 MiB + 1 byte of JSON (default maximum 64 MiB)",
        lambda e: e.store.append(
            build(ContextMessage, role="user", content=[{"x": "x" * (64 * MiB)}])
        ),
        SerializationError,
    ),
    Case(
        "extra-over-max",
        "add_message content string of 64 MiB (JSON over the maximum)",
        agent_message(content="x" * (64 * MiB)),
        SerializationError,
    ),
    Case(
        "content-1mib",
        "context content of 1 MiB of text",
        stored_content([{"type": "text", "text": "é" * MiB}]),
        None,
        same_content([{"type": "text", "text": "é" * MiB}]),
    ),
    # Roles and kinds.
    Case(
        "context-role",
        'context message role "developer"',
        lambda e: e.store.append({"role": "developer", "content": []}),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case(
        "context-role-forged",
        'context role "admin" forced past the model',
        lambda e: e.store.append(build(ContextMessage, role="admin", content=[])),
        ValidationError,
    ),
    Case("agent-role", 'add_message role "admin"', agent_message(role="admin"), ValidationError),
    Case("agent-role-case", 'add_message role "User"', agent_message(role="User"), ValidationError),
    Case("agent-kind", 'add_message kind "other"', agent_message(kind="other"), ValidationError),
    Case("agent-kind-none", "add_message kind None", agent_message(kind=None), ValidationError),
    # Ids: empty, over-long, whitespace, NUL, surrogates.
    Case("empty-user", 'user_id ""', lambda e: e.db.credit("", 1), ValidationError),
    Case("empty-thread", 'thread_id ""', agent_message(thread_id=""), ValidationError),
    Case(
        "empty-session",
        'session_id ""',
        lambda e: e.other_store(session_id="").get_history(),
        ValidationError,
    ),
    Case(
        "empty-project",
        'project ""',
        lambda e: e.other_store(project="").get_history(),
        ValidationError,
    ),
    Case(
        "empty-agent",
        'agent_name ""',
        lambda e: e.other_db("").get_user("u"),
        ValidationError,
    ),
    Case(
        "long-user",
        "user_id of 256 characters",
        lambda e: e.db.credit("u" * 256, 1),
        ValidationError,
    ),
    Case(
        "long-thread",
        "thread_id of 256 characters",
        agent_message(thread_id="t" * 256),
        ValidationError,
    ),
    Case(
        "long-session",
        "session_id of 129 characters",
        lambda e: e.other_store(session_id="s" * 129).get_history(),
        ValidationError,
    ),
    Case(
        "long-project",
        "project of 513 characters",
        lambda e: e.other_store(project="p" * 513).get_history(),
        ValidationError,
    ),
    Case(
        "long-agent",
        "agent_name of 129 characters",
        lambda e: e.other_db("a" * 129).get_user("u"),
        ValidationError,
    ),
    Case(
        "max-length-emoji-ids",
        "user_id and thread_id of 255 emoji (1020 bytes each)",
        agent_message(thread_id="😀" * 255, user_id="👩" * 255),
        None,
        agent_message_round_trips,
    ),
    Case("trailing-space", 'user_id "alice "', lambda e: e.db.credit("alice ", 1), ValidationError),
    Case("nul-user", 'user_id "a\\x00b"', lambda e: e.db.credit("a\x00b", 1), ValidationError),
    Case(
        "nul-session",
        'session_id "s\\x00"',
        lambda e: e.other_store(session_id="s\x00x").get_history(),
        ValidationError,
    ),
    Case(
        "surrogate-user",
        "user_id with a lone surrogate",
        lambda e: e.db.credit("\udc00", 1),
        ValidationError,
    ),
    # Amounts.
    Case("credit-negative", "credit(-1)", lambda e: e.db.credit("alice", -1), ValidationError),
    Case("debit-negative", "debit(-1)", lambda e: e.db.debit("alice", -1), ValidationError),
    Case("credit-2**63", "credit(2**63)", lambda e: e.db.credit("alice", 2**63), ValidationError),
    Case(
        "balance-negative",
        "upsert_user with available_balance -1",
        lambda e: e.db.upsert_user(
            build(User, user_id="alice", available_balance=-1, current_thread_id=None)
        ),
        ValidationError,
    ),
    Case(
        "satoshis-negative", "add_message satoshis -1", agent_message(satoshis=-1), ValidationError
    ),
    Case(
        "tokens-negative",
        "set_context_tokens(-1, 0)",
        lambda e: e.store.set_context_tokens(-1, 0),
        ValidationError,
    ),
    Case(
        "tokens-add-negative",
        "add_context_tokens(0, -5)",
        lambda e: e.store.add_context_tokens(0, -5),
        ValidationError,
    ),
    Case("get-last-negative", "get_last(-1)", lambda e: e.store.get_last(-1), ValidationError),
    Case(
        "limit-negative",
        "get_messages limit -1",
        lambda e: e.db.get_messages("t", "alice", limit=-1),
        ValidationError,
    ),
    # Wrong types from callers without a type checker.
    Case("int-user", "user_id 42 (int)", lambda e: e.db.credit(42, 1), ValidationError),  # type: ignore[arg-type]
    Case("none-thread", "thread_id None", agent_message(thread_id=None), ValidationError),
    Case(
        "int-session",
        "session_id 5 (int)",
        lambda e: e.other_store(session_id=5).get_history(),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case("int-agent", "agent_name 7 (int)", lambda e: e.other_db(7).get_user("u"), ValidationError),
    Case("none-content", "add_message content None", agent_message(content=None), ValidationError),
    Case("bytes-message", "add_message message b'x'", agent_message(message=b"x"), ValidationError),
    Case(
        "list-extras",
        "add_message extra_inputs [1] (list)",
        agent_message(extra_inputs=[1]),
        ValidationError,
    ),
    Case(
        "dict-content",
        "context content {} (dict instead of list)",
        lambda e: e.store.append({"role": "user", "content": {}}),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case(
        "str-blocks",
        'context content ["text"] (blocks that are not objects)',
        lambda e: e.store.append({"role": "user", "content": ["text"]}),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case("none-message", "append(None)", lambda e: e.store.append(None), ValidationError),  # type: ignore[arg-type]
    Case(
        "none-batch",
        "append_many(None)",
        lambda e: e.store.append_many(None),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case(
        "none-history",
        "replace_history(None)",
        lambda e: e.store.replace_history(None),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case("bool-credit", "credit(True)", lambda e: e.db.credit("alice", True), ValidationError),
    Case("float-debit", "debit(1.0)", lambda e: e.db.debit("alice", 1.0), ValidationError),  # type: ignore[arg-type]
    Case("str-credit", 'credit("5")', lambda e: e.db.credit("alice", "5"), ValidationError),  # type: ignore[arg-type]
    Case(
        "bool-satoshis", "add_message satoshis True", agent_message(satoshis=True), ValidationError
    ),
    Case(
        "bool-balance",
        "upsert_user available_balance True",
        lambda e: e.db.upsert_user({"user_id": "alice", "available_balance": True}),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case(
        "str-balance",
        'upsert_user available_balance "5"',
        lambda e: e.db.upsert_user({"user_id": "alice", "available_balance": "5"}),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case("none-user", "upsert_user(None)", lambda e: e.db.upsert_user(None), ValidationError),  # type: ignore[arg-type]
    Case(
        "float-tokens",
        "set_context_tokens(1.0, 2)",
        lambda e: e.store.set_context_tokens(1.0, 2),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case(
        "str-before",
        'get_messages before_idx "3"',
        lambda e: e.db.get_messages("t", "alice", before_idx="3"),  # type: ignore[arg-type]
        ValidationError,
    ),
    Case(
        "mapping-message",
        "a plain dict as the message (role + content)",
        stored_content([{"type": "text", "text": "from a dict"}]),
        None,
        same_content([{"type": "text", "text": "from a dict"}]),
    ),
    # NUL bytes and emoji where text is JSON.
    Case(
        "nul-emoji-content",
        "context content with NUL, emoji and astral characters",
        stored_content([{"type": "text", "text": "a\x00b 😀 𝄞 \U0010ffff", "\x00": "👩‍👩‍👧"}]),
        None,
        same_content([{"type": "text", "text": "a\x00b 😀 𝄞 \U0010ffff", "\x00": "👩‍👩‍👧"}]),
    ),
    Case(
        "nul-agent-content",
        "add_message content and extras with NUL and emoji",
        agent_message(content="a\x00b😀", extra_inputs={"\x00k": "v\x00😀"}, message="😀 ok"),
        None,
        agent_message_round_trips,
    ),
    Case(
        "nul-message-text",
        'add_message message "a\\x00b" (a text column)',
        agent_message(message="a\x00b"),
        ValidationError,
    ),
    Case(
        "mixed-numbers",
        "content holding 1, 1.0, True, -0.0, 2**64-1 side by side",
        stored_content([{"v": [1, 1.0, True, -0.0, 2**64 - 1, None]}]),
        None,
        same_content([{"v": [1, 1.0, True, -0.0, 2**64 - 1, None]}]),
    ),
    # SQL metacharacters and quotes, as every id at once.
    *[
        Case(f"meta-{i}", f"every id = {value!r}", every_id(value), None, every_id_reads_back)
        for i, value in enumerate(METACHARACTERS)
    ],
]

# Corrupt stored payloads, each read through every method that decodes it.
for name, payload in GARBAGE.items():
    CASES += [
        Case(
            f"stored-{name}-history",
            f"context row holding {name} bytes: get_history",
            lambda e: e.other_store(project="seed", session_id="s").get_history(),
            SerializationError,
            corrupt=plant_context(payload),
        ),
        Case(
            f"stored-{name}-agent",
            f"messages row holding {name} bytes: get_messages",
            lambda e: e.other_db("seed").get_messages("t", "u"),
            SerializationError,
            corrupt=plant_agent(payload),
        ),
    ]
CASES += [
    Case(
        "stored-wrong-shape-agent",
        "messages row whose content is valid JSON but a list, not a string",
        lambda e: e.other_db("seed").get_messages("t", "u"),
        SerializationError,
        corrupt=plant_agent(lambda: codec.encode(["not", "a", "string"])),
    ),
    Case(
        "stored-wrong-shape-history",
        "context row whose content is valid JSON but an object, not a list of blocks",
        lambda e: e.other_store(project="seed", session_id="s").get_history(),
        SerializationError,
        corrupt=plant_context(lambda: codec.encode({"not": "a list"})),
    ),
    Case(
        "stored-garbage-pop",
        "pop() of a context row holding garbage bytes",
        lambda e: e.other_store(project="seed", session_id="s").pop(),
        SerializationError,
        corrupt=lambda: (
            "UPDATE context_messages SET content = :data WHERE project = 'seed' AND position = 2",
            {"data": b"\x02garbage"},
        ),
    ),
    Case(
        "stored-garbage-last",
        "get_last(1) of a context row holding garbage bytes",
        lambda e: e.other_store(project="seed", session_id="s").get_last(1),
        SerializationError,
        corrupt=lambda: (
            "UPDATE context_messages SET content = :data WHERE project = 'seed' AND position = 2",
            {"data": b"\x03garbage"},
        ),
    ),
]


async def seed(engine: AsyncEngine) -> Env:
    """Rows every case must leave alone: a context session and an agent thread, plus users."""
    store = SQLAlchemyContextStore(engine, project="seed", session_id="s")
    await store.append_many([text_message(f"seed {i}") for i in range(3)])
    await store.set_context_tokens(5, 6)
    db = SQLAlchemyDatabase(engine=engine, agent_name="seed")
    await db.credit("alice", 10)
    for i in range(3):
        await db.add_message("t", "u", "user", message=f"m{i}", content=f"c{i}")
    return Env(engine, store, db)


@pytest.mark.parametrize("case", [case.param() for case in CASES])
async def test_bad_input(engine: AsyncEngine, case: Case) -> None:
    env = await seed(engine)
    if case.corrupt is not None:
        statement, params = case.corrupt()
        async with engine.begin() as conn:
            await conn.execute(text(statement), params)
    before = await snapshot(engine)

    if case.outcome is not None:
        with pytest.raises(case.outcome):
            await case.call(env)
        assert await snapshot(engine) == before, "a refused call changed the database"
        return

    result = await case.call(env)
    assert case.check is not None
    assert await case.check(env, result), "did not round-trip exactly"
    after = await snapshot(engine)
    for table, rows in before.items():
        missing = [row for row in rows if row not in after[table]]
        assert not missing, f"{table}: rows that existed before changed or vanished"


def catalogue_table() -> str:
    """The catalogue as the markdown table in docs/guarantees.md."""
    lines = ["| Case | Input | Outcome |", "| --- | --- | --- |"]
    for case in CASES:
        what = case.what.replace("|", "\\|")
        lines.append(f"| `{case.id}` | {what} | {case.outcome_text} |")
    return "\n".join(lines)


def test_the_docs_list_every_case_with_its_outcome() -> None:
    assert catalogue_table() in DOCS.read_text(encoding="utf-8"), (
        "docs/guarantees.md is out of date: paste tests.reliability.test_bad_input."
        "catalogue_table() into it"
    )
