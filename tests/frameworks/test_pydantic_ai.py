"""MessageHistory with the real ``pydantic-ai-slim`` package, on every store.

Histories round-trip through pydantic-ai's own ``ModelMessagesTypeAdapter``; agents run on
pydantic-ai's ``TestModel`` and ``FunctionModel`` (no network, no model calls).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("pydantic_ai", reason="pydantic-ai-slim is not installed")

from pydantic_ai import Agent
from pydantic_ai.messages import (
    BinaryContent,
    ImageUrl,
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage

from convostore import ContextMessage, SerializationError, ValidationError
from convostore.integrations.pydantic_ai import (
    DEFAULT_PROJECT,
    MessageHistory,
    message_role,
    to_context,
)
from tests.frameworks.conftest import MakeStore

PLUS_TWO = dt.timezone(dt.timedelta(hours=2))

MESSAGES: list[ModelMessage] = [
    ModelRequest(
        parts=[
            SystemPromptPart(content="Be terse."),
            UserPromptPart(
                content=[
                    "ünïcödé \U0001f600 look",
                    BinaryContent(data=b"\x89PNG\x00\xff", media_type="image/png"),
                    ImageUrl(url="https://example.invalid/a.png"),
                ],
                timestamp=dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=PLUS_TWO),
            ),
        ],
        instructions="Answer in French.",
    ),
    ModelResponse(
        parts=[
            ThinkingPart(content="hmm", signature="sig"),
            TextPart(content="Voilà"),
            ToolCallPart(tool_name="lookup", args={"q": "x", "n": [1, 2.5]}, tool_call_id="c1"),
            ToolCallPart(tool_name="raw", args='{"x": 1}', tool_call_id="c2"),
        ],
        usage=RequestUsage(input_tokens=10, output_tokens=3, details={"reasoning": 2}),
        model_name="m",
        provider_name="p",
        provider_details={"k": [1]},
        finish_reason="tool_call",
        provider_response_id="r1",
    ),
    ModelRequest(
        parts=[
            ToolReturnPart(
                tool_name="lookup", content={"hits": [1]}, tool_call_id="c1", metadata={"m": 1}
            ),
            ToolReturnPart(tool_name="raw", content="bad", tool_call_id="c2", outcome="retried"),
        ]
    ),
]


def history_on(make_store: MakeStore, session_id: str = "s1") -> MessageHistory:
    return MessageHistory.from_store(make_store(session_id=session_id, project=DEFAULT_PROJECT))


def pydantic_ais_round_trip(messages: list[ModelMessage]) -> list[ModelMessage]:
    """What pydantic-ai's own adapter gives back for ``messages`` after JSON."""
    loaded: list[ModelMessage] = ModelMessagesTypeAdapter.validate_json(
        ModelMessagesTypeAdapter.dump_json(messages)
    )
    return loaded


async def test_messages_round_trip_as_pydantic_ai_serialises_them(make_store: MakeStore) -> None:
    history = history_on(make_store)
    await history.append(MESSAGES[:1])
    await history.append(MESSAGES[1:])

    loaded = await history_on(make_store).load()

    # Equal to pydantic-ai's own JSON round trip (which turns a BinaryContent holding an
    # image into its BinaryImage subclass), and serialising to the very same JSON.
    assert loaded == pydantic_ais_round_trip(MESSAGES)
    assert ModelMessagesTypeAdapter.dump_json(loaded) == ModelMessagesTypeAdapter.dump_json(
        MESSAGES
    )
    assert cast(Any, loaded[0].parts[1]).timestamp.utcoffset() == dt.timedelta(hours=2)


async def test_an_agent_continues_from_the_stored_history(make_store: MakeStore) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    agent = Agent(TestModel(), tools=[add])

    history = history_on(make_store)
    first = await agent.run("add two numbers", message_history=await history.load())
    await history.append(first.new_messages())

    stored = await history_on(make_store).load()
    assert stored == first.all_messages()  # pydantic-ai's own messages come back equal
    assert [message_role(m) for m in stored] == ["user", "assistant", "tool", "assistant"]

    seen: list[list[ModelMessage]] = []

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(list(messages))
        return ModelResponse(parts=[TextPart(content="You asked me to add.")])

    second = await Agent(FunctionModel(answer)).run("what did I ask?", message_history=stored)
    await history.append(second.new_messages())

    assert second.output == "You asked me to add."
    assert seen[0][: len(stored)] == stored  # the model got the stored conversation first
    assert len(await history.load()) == len(stored) + 2


async def test_append_is_all_or_nothing(make_store: MakeStore) -> None:
    history = history_on(make_store)
    await history.append(MESSAGES[:1])

    with pytest.raises(ValidationError):
        await history.append([MESSAGES[1], cast(Any, {"kind": "request", "parts": []})])
    opaque = ModelResponse(parts=[ToolCallPart(tool_name="t", args={"x": object()})])
    with pytest.raises(SerializationError):
        await history.append([MESSAGES[1], opaque])
    with pytest.raises(ValidationError):
        await history.append(cast(Any, MESSAGES[1]))  # one message, not a list of them

    assert await history.load() == pydantic_ais_round_trip(MESSAGES[:1])


async def test_replace_makes_the_new_history_or_keeps_the_old(make_store: MakeStore) -> None:
    history = history_on(make_store)
    await history.append(MESSAGES)

    opaque = ModelResponse(parts=[ToolCallPart(tool_name="t", args={"x": object()})])
    with pytest.raises(SerializationError):
        await history.replace([MESSAGES[0], opaque])
    assert len(await history.load()) == 3

    await history.replace(MESSAGES[1:])
    assert await history.load() == pydantic_ais_round_trip(MESSAGES[1:])
    await history.clear()
    assert await history.load() == []


async def test_conversations_are_separate(make_store: MakeStore) -> None:
    await history_on(make_store, "a").append(MESSAGES[:1])
    assert await history_on(make_store, "b").load() == []


async def test_a_stored_message_that_is_not_pydantic_ais_is_refused(make_store: MakeStore) -> None:
    store = make_store(session_id="s1", project=DEFAULT_PROJECT)
    await store.append(ContextMessage(role="user", content=[{"type": "text", "text": "hi"}]))

    with pytest.raises(SerializationError, match="not a pydantic-ai message"):
        await MessageHistory.from_store(store).load()


def test_each_message_is_one_block_in_pydantic_ais_json() -> None:
    stored = to_context(MESSAGES[1])
    assert stored.role == "assistant"
    assert stored.content == ModelMessagesTypeAdapter.dump_python([MESSAGES[1]], mode="json")
    assert message_role(MESSAGES[0]) == "user"
    assert message_role(MESSAGES[2]) == "tool"


async def test_a_history_opened_with_a_url_owns_its_engine(tmp_path: Path) -> None:
    history = MessageHistory("s1", url=str(tmp_path / "own.db"), migrate=True)
    await history.append(MESSAGES)
    await history.close()
    reopened = MessageHistory("s1", url=str(tmp_path / "own.db"))
    assert len(await reopened.load()) == 3
    assert reopened.session_id == "s1"
    await reopened.close()
