"""Latest-N windows never split a tool call from its result, with each framework's own types.

OpenAI ``get_items(limit=)``, ADK ``num_recent_events``, and ``get_last`` on the stores of
the LangChain, pydantic-ai and axio adapters: parallel calls, a window boundary inside a
group of results, and the exact count when asked for.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("agents")
pytest.importorskip("google.adk")
pytest.importorskip("langchain_core")
pytest.importorskip("pydantic_ai")
pytest.importorskip("axio")

from axio.blocks import TextBlock, ToolResultBlock, ToolUseBlock
from axio.messages import Message
from google.adk.events.event import Event
from google.adk.sessions.base_session_service import GetSessionConfig
from google.genai import types
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic_ai.messages import (
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.integrations.adk import ConvostoreSessionService
from convostore.integrations.axio import AxioContextStore
from convostore.integrations.langchain import ConvostoreChatMessageHistory
from convostore.integrations.openai_agents import ConvostoreSession
from convostore.integrations.pydantic_ai import MessageHistory


async def test_openai_items_keep_each_output_with_its_call(sql_engine: AsyncEngine) -> None:
    session = ConvostoreSession("pairs", sql_engine)
    items: list[Any] = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": "rain"},
        {"role": "assistant", "content": "Sunny in Paris, rain in Rome."},
    ]
    await session.add_items(items)

    # The boundary falls inside the group of outputs: widened to the first call.
    assert await session.get_items(limit=3) == items[1:]
    assert await session.get_items(limit=2) == items[1:]
    assert await session.get_items(limit=1) == items[-1:]
    exact = ConvostoreSession("pairs", sql_engine, exact_limit=True)
    assert await exact.get_items(limit=3) == items[3:]


def _adk_event(author: str, part: types.Part) -> Event:
    return Event(author=author, content=types.Content(role="model", parts=[part]))


async def test_adk_recent_events_keep_each_response_with_its_call(
    sql_engine: AsyncEngine,
) -> None:
    service = ConvostoreSessionService(sql_engine)
    session = await service.create_session(app_name="app", user_id="u", session_id="pairs")
    calls = types.Content(
        role="model",
        parts=[
            types.Part(function_call=types.FunctionCall(id="f1", name="weather", args={})),
            types.Part(function_call=types.FunctionCall(id="f2", name="weather", args={})),
        ],
    )
    events = [
        _adk_event("user", types.Part(text="weather?")),
        Event(author="agent", content=calls),
        _adk_event(
            "agent",
            types.Part(
                function_response=types.FunctionResponse(id="f1", name="weather", response={})
            ),
        ),
        _adk_event(
            "agent",
            types.Part(
                function_response=types.FunctionResponse(id="f2", name="weather", response={})
            ),
        ),
        _adk_event("agent", types.Part(text="Sunny and rainy.")),
    ]
    for event in events:
        await service.append_event(session, event)

    async def recent(n: int, svc: ConvostoreSessionService = service) -> list[str]:
        stored = await svc.get_session(
            app_name="app",
            user_id="u",
            session_id="pairs",
            config=GetSessionConfig(num_recent_events=n),
        )
        assert stored is not None
        return [event.id for event in stored.events]

    ids = [event.id for event in events]
    assert await recent(2) == ids[1:]
    assert await recent(1) == ids[-1:]
    exact = ConvostoreSessionService(sql_engine, exact_recent_events=True)
    assert await recent(2, exact) == ids[-2:]


async def test_langchain_tool_messages_keep_their_call(sql_engine: AsyncEngine) -> None:
    history = ConvostoreChatMessageHistory("pairs", sql_engine)
    call = AIMessage(
        "",
        tool_calls=[
            {"name": "weather", "args": {}, "id": "t1", "type": "tool_call"},
            {"name": "weather", "args": {}, "id": "t2", "type": "tool_call"},
        ],
    )
    await history.aadd_messages(
        [
            HumanMessage("weather?"),
            call,
            ToolMessage("sunny", tool_call_id="t1"),
            ToolMessage("rain", tool_call_id="t2"),
            AIMessage("Sunny and rainy."),
        ]
    )
    window = await history.store.get_last(2)
    assert [m.content[0]["type"] for m in window] == ["ai", "tool", "tool", "ai"]
    assert len(await history.store.get_last(2, exact=True)) == 2


async def test_pydantic_ai_tool_returns_keep_their_call(sql_engine: AsyncEngine) -> None:
    history = MessageHistory("pairs", sql_engine)
    messages = [
        ModelRequest(parts=[UserPromptPart("weather?")]),
        ModelResponse(
            parts=[
                ToolCallPart("weather", {}, tool_call_id="p1"),
                ToolCallPart("weather", {}, tool_call_id="p2"),
            ]
        ),
        ModelRequest(
            parts=[
                ToolReturnPart("weather", "sunny", tool_call_id="p1"),
                ToolReturnPart("weather", "rain", tool_call_id="p2"),
            ]
        ),
        ModelResponse(parts=[TextPart("Sunny and rainy.")]),
    ]
    await history.append(messages)
    window = await history.store.get_last(2)
    back = ModelMessagesTypeAdapter.validate_python([m.content[0] for m in window])
    assert back == messages[1:]


async def test_axio_tool_results_keep_their_call(sql_engine: AsyncEngine) -> None:
    store = AxioContextStore(sql_engine, session_id="pairs", project="/p")
    messages = [
        Message(role="user", content=[TextBlock(text="weather?")]),
        Message(
            role="assistant",
            content=[
                ToolUseBlock(id="a1", name="weather", input={}),
                ToolUseBlock(id="a2", name="weather", input={}),
            ],
        ),
        Message(role="user", content=[ToolResultBlock(tool_use_id="a1", content="sunny")]),
        Message(role="user", content=[ToolResultBlock(tool_use_id="a2", content="rain")]),
        Message(role="assistant", content=[TextBlock(text="Sunny and rainy.")]),
    ]
    await store.append_many(messages)
    window = await store.store.get_last(3)
    assert [m.role for m in window] == ["assistant", "user", "user", "assistant"]
    assert window[0].content[0]["type"] == "tool_use"
