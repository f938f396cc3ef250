"""ConvostoreChatMessageHistory with the real ``langchain-core`` package, on every store.

Messages round-trip through LangChain's own serialisation; ``RunnableWithMessageHistory``
runs a chain on langchain-core's fake chat model (no network), through the async methods
(``ainvoke``) and the sync ones (``invoke``, on the background loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("langchain_core", reason="langchain-core is not installed")

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from sqlalchemy import URL, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    ConfigurationError,
    ContextMessage,
    SerializationError,
    SQLAlchemyContextStore,
    ValidationError,
    create_engine,
)
from convostore.integrations import langchain
from convostore.integrations.langchain import (
    DEFAULT_PROJECT,
    ConvostoreChatMessageHistory,
    message_role,
)
from convostore.sql.profile import committers_of, profile_of
from convostore.sql.tables import ContextMessageRecord
from tests.backends.encrypted import ring
from tests.conftest import _servers, empty_tables, run_sync
from tests.frameworks.conftest import MakeStore

# langchain-core 1.x deprecates it in favour of LangGraph, yet it is how chains take a history.
pytestmark = pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")

MESSAGES: list[BaseMessage] = [
    SystemMessage(content="Be terse.", id="m0"),
    HumanMessage(
        content=[
            {"type": "text", "text": "ünïcödé \U0001f600"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        ],
        name="alice",
        additional_kwargs={"locale": "fr", "n": [1, 2.5, None]},
    ),
    AIMessage(
        content="",
        id="run-1",
        tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "call_1", "type": "tool_call"}],
        invalid_tool_calls=[
            {"name": "bad", "args": "{oops", "id": "call_2", "error": "bad json", "type": "x"}
        ],
        additional_kwargs={"refusal": None},
        response_metadata={"model_name": "fake", "finish_reason": "tool_calls", "logprobs": None},
        usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
    ),
    ToolMessage(content="42", tool_call_id="call_1", artifact={"raw": [4, 2]}, status="error"),
    FunctionMessage(content="{}", name="legacy"),
    ChatMessage(content="Looks fine.", role="critic"),
    AIMessageChunk(content="partial", id="run-2", chunk_position="last"),
    AIMessage(content=[{"type": "text", "text": "done", "annotations": []}]),
]


def history_on(make_store: MakeStore, session_id: str = "s1") -> ConvostoreChatMessageHistory:
    return ConvostoreChatMessageHistory.from_store(
        make_store(session_id=session_id, project=DEFAULT_PROJECT)
    )


async def test_it_is_a_chat_message_history(make_store: MakeStore) -> None:
    history = history_on(make_store)
    assert isinstance(history, BaseChatMessageHistory)
    assert history.session_id == "s1"
    assert await history.aget_messages() == []


async def test_every_message_type_round_trips_exactly(make_store: MakeStore) -> None:
    history = history_on(make_store)
    await history.aadd_messages(MESSAGES[:3])
    await history.aadd_messages(MESSAGES[3:])

    loaded = await history_on(make_store).aget_messages()

    assert loaded == MESSAGES
    assert [type(m) for m in loaded] == [type(m) for m in MESSAGES]
    assert [message_to_dict(m) for m in loaded] == [message_to_dict(m) for m in MESSAGES]
    assert [message_role(m) for m in loaded] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "user",
        "assistant",
        "assistant",
    ]


async def test_add_is_all_or_nothing_and_clear_empties(make_store: MakeStore) -> None:
    history = history_on(make_store)
    await history.aadd_messages(MESSAGES[:1])

    with pytest.raises(ValidationError):
        await history.aadd_messages([MESSAGES[1], cast(Any, "not a message")])
    nan = HumanMessage(content="x", additional_kwargs={"x": float("nan")})
    with pytest.raises(SerializationError):
        await history.aadd_messages([MESSAGES[1], nan])
    with pytest.raises(ValidationError):
        await history.aadd_messages(cast(Any, MESSAGES[1]))

    assert await history.aget_messages() == MESSAGES[:1]
    other = history_on(make_store, "s2")
    await other.aadd_messages(MESSAGES[1:2])
    await history.aclear()
    assert await history.aget_messages() == []
    assert await other.aget_messages() == MESSAGES[1:2]


async def test_a_stored_message_that_is_not_langchains_is_refused(make_store: MakeStore) -> None:
    store = make_store(session_id="s1", project=DEFAULT_PROJECT)
    await store.append(ContextMessage(role="user", content=[{"type": "text", "text": "hi"}]))

    with pytest.raises(SerializationError, match="not a LangChain message"):
        await ConvostoreChatMessageHistory.from_store(store).aget_messages()


def recording_chain(replies: list[str], seen: list[list[BaseMessage]]) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be terse."), MessagesPlaceholder("history"), ("human", "{question}")]
    )

    def record(value: Any) -> Any:
        seen.append(value.to_messages())
        return value

    model = GenericFakeChatModel(messages=iter(AIMessage(content=r) for r in replies))
    return prompt | RunnableLambda(record) | model


async def test_runnable_with_message_history_async(make_store: MakeStore) -> None:
    seen: list[list[BaseMessage]] = []
    chain = RunnableWithMessageHistory(
        recording_chain(["Hello!", "You said hi."], seen),
        lambda session_id: history_on(make_store, session_id),
        input_messages_key="question",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": "chat-1"}}

    await chain.ainvoke({"question": "Hi"}, config=config)
    answer = await chain.ainvoke({"question": "What did I say?"}, config=config)

    assert answer.content == "You said hi."
    stored = await history_on(make_store, "chat-1").aget_messages()
    assert [(m.type, m.content) for m in stored] == [
        ("human", "Hi"),
        ("ai", "Hello!"),
        ("human", "What did I say?"),
        ("ai", "You said hi."),
    ]
    assert seen[1][1:3] == stored[:2]  # the second call got the stored turn first


# --- sync methods, on the background loop ----------------------------------------------


@pytest.fixture
def sync_url(sql_backend: str, tmp_path: Path) -> URL:
    """A clean database of each selected SQL backend, for sync code (no loop here)."""
    if sql_backend == "sqlite":
        return URL.create("sqlite+aiosqlite", database=str(tmp_path / "sync.db"))
    url = _servers[sql_backend].url
    assert url is not None
    run_sync(empty_tables(url))
    return url


@pytest.fixture
def sync_history(sync_url: URL) -> Iterator[ConvostoreChatMessageHistory]:
    history = ConvostoreChatMessageHistory("s1", url=sync_url)
    yield history
    history.close()


def test_sync_methods_round_trip(sync_history: ConvostoreChatMessageHistory) -> None:
    sync_history.add_messages(MESSAGES)
    sync_history.add_user_message("and one more")

    assert sync_history.messages == [*MESSAGES, HumanMessage(content="and one more")]
    with pytest.raises(ValidationError):
        sync_history.add_messages([MESSAGES[0], cast(Any, 1)])
    assert len(sync_history.messages) == len(MESSAGES) + 1
    sync_history.clear()
    assert sync_history.messages == []


def test_runnable_with_message_history_sync(sync_url: URL) -> None:
    seen: list[list[BaseMessage]] = []
    opened: list[ConvostoreChatMessageHistory] = []

    def history_for(session_id: str) -> ConvostoreChatMessageHistory:
        opened.append(ConvostoreChatMessageHistory(session_id, url=sync_url))
        return opened[-1]

    chain = RunnableWithMessageHistory(
        recording_chain(["Hello!", "You said hi."], seen),
        history_for,
        input_messages_key="question",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": "chat-1"}}
    try:
        chain.invoke({"question": "Hi"}, config=config)
        answer = chain.invoke({"question": "What did I say?"}, config=config)

        assert answer.content == "You said hi."
        assert [m.content for m in opened[-1].messages] == [
            "Hi",
            "Hello!",
            "What did I say?",
            "You said hi.",
        ]
        assert [m.content for m in seen[1][1:3]] == ["Hi", "Hello!"]
    finally:
        for history in opened:
            history.close()


def test_the_sync_twin_engine_has_the_profile_of_its_source(sync_url: URL) -> None:
    # The twin of a search_index=False engine used to write search feeds again: it copied
    # only the keyring. It copies the whole profile now.
    source = create_engine(
        sync_url, search_index=False, deadline=7, encryption=ring("k1", current="k1")
    )
    history = ConvostoreChatMessageHistory("s1", source)
    try:
        history.add_messages([HumanMessage(content="words a search would find")])
        assert [m.content for m in history.messages] == ["words a search would find"]
        # Stored, with no feed: NULL (a LangChain message's feed, written, is '').
        assert run_sync(_search_feeds(sync_url)) == [None]
        twin = langchain._bridge.twin_engine(source)
        assert twin is not source
        assert profile_of(twin) == profile_of(source)
        assert (profile_of(twin).deadline, profile_of(twin).keyring) == (
            7.0,
            profile_of(source).keyring,
        )
        assert committers_of(twin) is not committers_of(source)
    finally:
        history.close()
        run_sync(source.dispose())


async def _search_feeds(url: URL) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Since 0007 an SQLite row carries no feed (the index catches up by itself):
                # one NULL per stored message, the column being gone.
                columns = await conn.run_sync(
                    lambda sync: {c["name"] for c in inspect(sync).get_columns("context_messages")}
                )
                assert "search_text" not in columns
                count = await conn.scalar(select(func.count()).select_from(ContextMessageRecord))
                return [None] * (count or 0)
            return list((await conn.execute(select(ContextMessageRecord.search_text))).scalars())
    finally:
        await engine.dispose()


async def test_sync_and_async_methods_share_the_conversation(
    sql_engine: AsyncEngine, tmp_path: Path
) -> None:
    # Sync calls made while this loop runs block it, and use the twin engine's connections.
    history = ConvostoreChatMessageHistory("s1", sql_engine)
    await history.aadd_messages(MESSAGES[:2])
    history.add_messages(MESSAGES[2:4])

    assert history.messages == MESSAGES[:4]
    assert await history.aget_messages() == MESSAGES[:4]
    stored = await SQLAlchemyContextStore(
        sql_engine, session_id="s1", project=DEFAULT_PROJECT
    ).get_history()
    assert [m.role for m in stored] == ["system", "user", "assistant", "tool"]


def test_sync_methods_refuse_an_in_memory_sqlite_database() -> None:
    history = ConvostoreChatMessageHistory("s1", create_engine("sqlite://:memory:"))
    with pytest.raises(ConfigurationError, match="in-memory SQLite"):
        _ = history.messages
