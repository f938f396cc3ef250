"""convostore as axio's context store, tested with the real ``axio`` package (Python 3.12+).

The behaviour suite runs against axio-context-sqlite itself (the store we replace, as the
reference) and against :class:`AxioContextStore` on every selected backend.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

pytest.importorskip("axio", reason="axio is not installed (it needs Python 3.12+)")

from axio.agent import Agent
from axio.blocks import (
    AudioBlock,
    ImageBlock,
    ProviderBlock,
    ReasoningBlock,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from axio.compaction import AutoCompactStore
from axio.context import ContextStore as AxioBaseStore
from axio.messages import Message
from axio.testing import (
    StubTransport,
    make_echo_tool,
    make_text_response,
    make_tool_use_response,
)
from axio.types import Usage
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import SerializationError
from convostore.context import default_project
from convostore.integrations.axio import (
    CREATED_AT_FORMAT,
    AtomicAutoCompactStore,
    AxioContextStore,
    connect,
)
from tests.conftest import require_backend
from tests.frameworks.conftest import (
    SQL_BACKENDS,
    SimulatedCrashError,
    crash_on,
    inserts_messages,
    open_engine,
)

MakeAxioStore = Callable[..., Awaitable[AxioBaseStore]]

CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")

EVERY_BLOCK = [
    Message("system", [TextBlock("You are terse.")]),
    Message("user", [TextBlock("Describe this"), ImageBlock("image/png", b"\x89PNG\x00\xff")]),
    Message(
        "assistant",
        [
            ReasoningBlock("thinking", signature="sig==", id="r1", provider="anthropic"),
            TextBlock("Let me look.", signature="t-sig", provider="anthropic"),
            ToolUseBlock("call_1", "lookup", {"q": "x", "n": 1.5, "deep": {"ok": [True, None]}}),
            ProviderBlock("openai", "web_search_call", {"id": "ws_1", "status": "completed"}),
        ],
    ),
    Message(
        "user",
        [
            ToolResultBlock("call_1", "plain text result"),
            ToolResultBlock(
                "call_2",
                [TextBlock("partial"), AudioBlock("audio/wav", b"RIFF\x00\x01")],
                is_error=True,
            ),
        ],
    ),
    Message("assistant", [TextBlock("Done: ünïcödé ✓ \U0001f600")]),
]


def user(text: str) -> Message:
    return Message("user", [TextBlock(text)])


def assistant(text: str) -> Message:
    return Message("assistant", [TextBlock(text)])


@pytest.fixture(
    params=[pytest.param("axio-context-sqlite", marks=pytest.mark.sqlite), *SQL_BACKENDS]
)
def axio_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require_backend(request.config, "sqlite" if name == "axio-context-sqlite" else name)
    return name


@pytest.fixture
async def make_axio_store(axio_backend: str, tmp_path: Path) -> AsyncIterator[MakeAxioStore]:
    """``make(session_id, project)``: the reference store or ours, sharing one database."""
    if axio_backend == "axio-context-sqlite":
        reference = pytest.importorskip("axio_context_sqlite")
        conn = await reference.connect(tmp_path / "reference.db")

        async def make_reference(session_id: str, project: str = "/proj") -> AxioBaseStore:
            store: AxioBaseStore = reference.SQLiteContextStore(conn, session_id, project)
            return store

        yield make_reference
        await conn.close()
        return
    engine = await open_engine(axio_backend, tmp_path)

    async def make(session_id: str, project: str = "/proj") -> AxioBaseStore:
        return AxioContextStore(engine, session_id, project)

    yield make
    await engine.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await connect(tmp_path / "chat.db")
    yield engine
    await engine.dispose()


# --- The behaviour axio-context-sqlite has, on the reference and on every backend ---------


async def test_every_block_type_round_trips_exactly(make_axio_store: MakeAxioStore) -> None:
    store = await make_axio_store("s1")
    assert isinstance(store, AxioBaseStore)
    for message in EVERY_BLOCK:
        await store.append(message)

    assert await store.get_history() == EVERY_BLOCK


async def test_history_is_per_session_and_starts_empty(make_axio_store: MakeAxioStore) -> None:
    first, second = await make_axio_store("s1"), await make_axio_store("s2")
    assert await first.get_history() == []
    await first.append(user("one"))
    await second.append(user("two"))
    await first.append(assistant("three"))

    assert await first.get_history() == [user("one"), assistant("three")]
    assert await second.get_history() == [user("two")]


async def test_clear_removes_messages_and_tokens_of_that_session_only(
    make_axio_store: MakeAxioStore,
) -> None:
    store, other = await make_axio_store("s1"), await make_axio_store("s2")
    await store.append(user("hi"))
    await store.set_context_tokens(10, 20)
    await other.append(user("keep"))
    await other.set_context_tokens(1, 2)

    await store.clear()

    assert await store.get_history() == []
    assert await store.get_context_tokens() == (0, 0)
    assert await other.get_history() == [user("keep")]
    assert await other.get_context_tokens() == (1, 2)
    await store.append(user("again"))
    assert await store.get_history() == [user("again")]


async def test_fork_is_an_independent_copy(make_axio_store: MakeAxioStore) -> None:
    store = await make_axio_store("s1")
    await store.append(user("q"))
    await store.append(assistant("a"))
    await store.set_context_tokens(7, 8)

    fork = await store.fork()

    assert type(fork) is type(store)
    assert fork.session_id != store.session_id
    assert await fork.get_history() == [user("q"), assistant("a")]
    assert await fork.get_context_tokens() == (7, 8)
    await fork.append(user("only in the fork"))
    await store.append(user("only in the original"))
    await fork.add_context_tokens(1, 1)
    assert await store.get_history() == [user("q"), assistant("a"), user("only in the original")]
    assert await fork.get_history() == [user("q"), assistant("a"), user("only in the fork")]
    assert await store.get_context_tokens() == (7, 8)
    assert await fork.get_context_tokens() == (8, 9)


async def test_tokens_are_set_and_added(make_axio_store: MakeAxioStore) -> None:
    store = await make_axio_store("s1")
    assert await store.get_context_tokens() == (0, 0)
    await store.add_context_tokens(3, 4)
    assert await store.get_context_tokens() == (3, 4)
    await store.set_context_tokens(100, 200)
    assert await store.get_context_tokens() == (100, 200)
    await store.add_context_tokens(1, 2)
    assert await store.get_context_tokens() == (101, 202)


async def test_list_sessions_with_counts_previews_and_tokens(
    make_axio_store: MakeAxioStore,
) -> None:
    long = "x" * 100
    a = await make_axio_store("a")
    await a.append(Message("system", [TextBlock("not a preview")]))
    await a.append(user(long))
    await a.append(user("second user message"))
    await a.set_context_tokens(5, 6)
    b = await make_axio_store("b")
    await b.append(assistant("no user text here"))
    await b.append(Message("user", [ToolResultBlock("c", "result")]))
    await (await make_axio_store("empty")).set_context_tokens(1, 1)
    await (await make_axio_store("elsewhere", "/other")).append(user("other project"))

    sessions = {info.session_id: info for info in await a.list_sessions()}

    assert set(sessions) == {"a", "b"}
    assert (sessions["a"].message_count, sessions["a"].preview) == (3, "x" * 80 + "...")
    assert (sessions["a"].input_tokens, sessions["a"].output_tokens) == (5, 6)
    assert (sessions["b"].message_count, sessions["b"].preview) == (2, "(no preview)")
    assert (sessions["b"].input_tokens, sessions["b"].output_tokens) == (0, 0)
    assert all(CREATED_AT.match(info.created_at) for info in sessions.values())


async def test_close_leaves_the_callers_database_open(make_axio_store: MakeAxioStore) -> None:
    store = await make_axio_store("s1")
    await store.append(user("hi"))
    await store.close()
    assert await (await make_axio_store("s1")).get_history() == [user("hi")]


# --- convostore specifics ----------------------------------------------------------------


async def test_list_sessions_is_newest_first(sqlite_engine: AsyncEngine) -> None:
    for session_id in ("a", "b", "c"):
        await AxioContextStore(sqlite_engine, session_id, "/p").append(user(session_id))
    listed = await AxioContextStore(sqlite_engine, "a", "/p").list_sessions()
    assert [info.session_id for info in listed] == ["c", "b", "a"]
    assert CREATED_AT_FORMAT == "%Y-%m-%d %H:%M:%S"


async def test_large_messages_are_compressed_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "chat.db"
    engine = await connect(path)
    store = AxioContextStore(engine, "s1", "/p")
    await store.append(user("short"))
    await store.append(user("a long message " * 1000))
    await engine.dispose()

    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT content FROM context_messages ORDER BY position").fetchall()
    headers = [bytes(content)[0] for (content,) in rows]
    assert headers == [0x01, 0x03]
    assert len(rows[1][0]) < 1000


async def test_history_and_tokens_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    engine = await connect(path)
    store = AxioContextStore(engine, "s1", "/p")
    for message in EVERY_BLOCK:
        await store.append(message)
    await store.add_context_tokens(11, 22)
    await store.close()
    await engine.dispose()

    engine = await connect(str(path))
    reopened = AxioContextStore(engine, "s1", "/p")
    assert await reopened.get_history() == EVERY_BLOCK
    assert await reopened.get_context_tokens() == (11, 22)
    assert [info.message_count for info in await reopened.list_sessions()] == [len(EVERY_BLOCK)]
    await engine.dispose()


async def test_close_disposes_only_an_engine_the_store_opened(
    tmp_path: Path, sqlite_engine: AsyncEngine
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
    owner = AxioContextStore(url=url, session_id="s1", project="/p", migrate=True)
    guest = AxioContextStore(sqlite_engine, "s1", "/p")
    disposed: list[object] = []
    for engine in (owner.store.engine, sqlite_engine):
        event.listen(engine.sync_engine, "engine_disposed", disposed.append)
    await owner.append(user("hi"))
    await guest.append(user("hi"))

    await owner.close()
    await guest.close()

    assert disposed == [owner.store.engine.sync_engine]
    reopened = AxioContextStore(url=url, session_id="s1", project="/p")
    assert await reopened.get_history() == [user("hi")]
    await reopened.close()


async def test_from_history_writes_a_new_session_on_the_default_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOSTORE_DATABASE_URL", str(tmp_path / "default.db"))
    monkeypatch.chdir(tmp_path)
    store = await AxioContextStore.from_history(EVERY_BLOCK)
    try:
        assert await store.get_history() == EVERY_BLOCK
        assert store.project == default_project()
    finally:
        await store.close()


async def test_replace_history_is_all_or_nothing(sql_engine: AsyncEngine) -> None:
    store = AxioContextStore(sql_engine, "s1", "/p")
    for message in EVERY_BLOCK:
        await store.append(message)
    not_json = Message("assistant", [ToolUseBlock("c", "t", {"values": {1, 2}})])

    with pytest.raises(SerializationError):
        await store.replace_history([user("new"), not_json])

    assert await store.get_history() == EVERY_BLOCK
    await store.replace_history([user("new"), assistant("answer")])
    assert await store.get_history() == [user("new"), assistant("answer")]


# --- An axio Agent persisting through the store ----------------------------------------


async def test_an_agent_run_persists_its_conversation(sql_engine: AsyncEngine) -> None:
    transport = StubTransport(
        [make_tool_use_response("echo", "call_1", {"msg": "ping"}), make_text_response("Done")]
    )
    agent = Agent(system="Use the echo tool.", transport=transport, tools=[make_echo_tool()])
    store = AxioContextStore(sql_engine, "run", "/p")

    assert await agent.run("say ping", store) == "Done"

    history = await AxioContextStore(sql_engine, "run", "/p").get_history()
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    prompt = history[0].content[0]
    assert isinstance(prompt, TextBlock)
    assert prompt.text.endswith("say ping")
    assert history[1].content == [ToolUseBlock("call_1", "echo", {"msg": "ping"})]
    [result] = history[2].content
    assert isinstance(result, ToolResultBlock)
    assert (result.tool_use_id, result.content, result.is_error) == (
        "call_1",
        '{"msg": "ping"}',
        False,
    )
    assert history[3].content == [TextBlock("Done")]
    assert await store.get_context_tokens() == (20, 10)

    again = Agent(system="", transport=StubTransport([make_text_response("Still here")]))
    assert await again.run("still there?", store) == "Still here"
    assert len(await store.get_history()) == 6


# --- Compaction -------------------------------------------------------------------------


def summarizer() -> StubTransport:
    return StubTransport([make_text_response("SUMMARY")])


async def seeded(engine: AsyncEngine, turns: int = 4) -> AxioContextStore:
    store = AxioContextStore(engine, "live", "/p")
    for i in range(turns):
        await store.append(user(f"question {i}"))
        await store.append(assistant(f"answer {i}"))
    return store


def compacted(kept: list[Message]) -> list[Message]:
    return [user("SUMMARY"), assistant("Understood, context restored."), *kept]


@pytest.mark.parametrize("wrapper", [AutoCompactStore, AtomicAutoCompactStore])
async def test_auto_compaction_wrapping_our_store(
    sql_engine: AsyncEngine, wrapper: type[AutoCompactStore]
) -> None:
    store = await seeded(sql_engine)
    auto = wrapper(store, summarizer(), keep_recent=2, max_tokens=100)
    await auto.add_context_tokens(50, 5)
    assert len(await store.get_history()) == 8

    await auto.add_context_tokens(500, 10)

    assert await store.get_history() == compacted([user("question 3"), assistant("answer 3")])
    assert await store.get_context_tokens() == (550, 15)
    assert type(await auto.fork()) is wrapper


async def test_atomic_compaction_removes_its_snapshot_session(sql_engine: AsyncEngine) -> None:
    store = await seeded(sql_engine)
    auto = AtomicAutoCompactStore(store, summarizer(), keep_recent=2, max_tokens=100)

    await auto.add_context_tokens(500, 0)

    assert [info.session_id for info in await store.list_sessions()] == ["live"]


async def test_an_agent_run_through_auto_compaction(sql_engine: AsyncEngine) -> None:
    store = await seeded(sql_engine, turns=3)
    auto = AtomicAutoCompactStore(store, summarizer(), keep_recent=2, max_tokens=100)
    transport = StubTransport([make_text_response("A1", usage=Usage(1000, 5))])

    assert await Agent(system="", transport=transport).run("next", auto) == "A1"

    history = await store.get_history()
    assert history[:3] == compacted([assistant("answer 2")])
    assert [m.role for m in history[3:]] == ["user", "assistant"]
    assert history[4] == assistant("A1")
    assert await store.get_context_tokens() == (1000, 5)


async def test_a_crash_during_atomic_compaction_keeps_the_history(
    sql_engine: AsyncEngine,
) -> None:
    store = await seeded(sql_engine)
    before = await store.get_history()
    auto = AtomicAutoCompactStore(store, summarizer(), keep_recent=2, max_tokens=100)

    with crash_on(sql_engine, inserts_messages), pytest.raises(SimulatedCrashError):
        await auto.add_context_tokens(500, 0)

    assert await store.get_history() == before


async def test_the_same_crash_loses_the_history_with_axios_own_compaction(
    sql_engine: AsyncEngine,
) -> None:
    # The failure AtomicAutoCompactStore exists for: clear() committed, appends lost.
    store = await seeded(sql_engine)
    auto = AutoCompactStore(store, summarizer(), keep_recent=2, max_tokens=100)

    with crash_on(sql_engine, inserts_messages), pytest.raises(SimulatedCrashError):
        await auto.add_context_tokens(500, 0)

    assert await store.get_history() == []


async def test_db_name_keeps_stores_apart(sqlite_engine: AsyncEngine) -> None:
    # axio-context-sqlite's table-name prefix: same project and session ids, two names.
    default = AxioContextStore(sqlite_engine, "s1", "/p")
    other = AxioContextStore(sqlite_engine, "s1", "/p", "other_prefix")
    assert (default.db_name, other.db_name) == ("axio_context", "other_prefix")
    await default.append(user("in the default tables"))
    await other.append(user("in other_prefix"))
    assert [m.content[0].text for m in await other.get_history()] == ["in other_prefix"]
    assert [s.preview for s in await default.list_sessions()] == ["in the default tables"]
    branch = await other.fork()
    assert branch.db_name == "other_prefix"
    assert len(await default.list_sessions()) == 1


@pytest.mark.parametrize("db_name", ["", "has space", "semi;colon", None])
def test_unusable_db_name_is_refused(db_name: object) -> None:
    from convostore import ValidationError

    with pytest.raises(ValidationError):
        AxioContextStore(None, "s1", "/p", db_name, url="sqlite://:memory:")  # type: ignore[arg-type]


async def test_connect_creates_the_directory_as_axio_context_sqlite_does(tmp_path: Path) -> None:
    """Lenient on purpose: axio-context-sqlite's connect() makes the file's directory, and
    code written for it relies on that (convostore's own connect() refuses instead)."""
    from convostore import ConfigurationError
    from convostore import connect as convostore_connect

    path = tmp_path / "new" / "dir" / "context.db"
    with pytest.raises(ConfigurationError, match="create it first"):
        await convostore_connect(path)
    conn = await connect(path)
    try:
        assert path.is_file()
    finally:
        await conn.close()
