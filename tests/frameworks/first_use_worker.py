"""Each adapter's first use of a new database, for ``test_first_use_adapters`` (imported
by spawned children too, so it imports no pytest).

For every adapter, :data:`WRITERS` maps its name to a coroutine that opens the adapter on
``url`` (its own engine) and writes :data:`ITEMS` items, one call each, under ``key``; and
:data:`COUNTERS` to one that counts what ``key`` holds.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

ITEMS = 3
BARRIER_TIMEOUT_S = 60

Writer = Callable[[str, str], Awaitable[None]]
Counter = Callable[[str, str], Awaitable[int]]


async def adk_write(url: str, key: str) -> None:
    from google.adk.events.event import Event
    from google.genai import types

    from convostore.integrations.adk import ConvostoreSessionService

    service = ConvostoreSessionService(url=url)
    try:
        session = await service.create_session(app_name="app", user_id="u", session_id=key)
        for n in range(ITEMS):
            content = types.Content(role="user", parts=[types.Part(text=f"{key}.{n}")])
            await service.append_event(
                session, Event(invocation_id="i", author="user", content=content)
            )
    finally:
        await service.close()


async def adk_count(url: str, key: str) -> int:
    from convostore.integrations.adk import ConvostoreSessionService

    service = ConvostoreSessionService(url=url)
    try:
        session = await service.get_session(app_name="app", user_id="u", session_id=key)
        return -1 if session is None else len(session.events)
    finally:
        await service.close()


async def openai_write(url: str, key: str) -> None:
    from convostore.integrations.openai_agents import ConvostoreSession

    session = ConvostoreSession(key, url=url)
    try:
        for n in range(ITEMS):
            await session.add_items([{"role": "user", "content": f"{key}.{n}"}])
    finally:
        await session.store.close()


async def openai_count(url: str, key: str) -> int:
    from convostore.integrations.openai_agents import ConvostoreSession

    session = ConvostoreSession(key, url=url)
    try:
        return len(await session.get_items())
    finally:
        await session.store.close()


async def langchain_write(url: str, key: str) -> None:
    from langchain_core.messages import HumanMessage

    from convostore.integrations.langchain import ConvostoreChatMessageHistory

    history = ConvostoreChatMessageHistory(key, url=url)
    try:
        for n in range(ITEMS):
            await history.aadd_messages([HumanMessage(content=f"{key}.{n}")])
    finally:
        await history.aclose()


async def langchain_count(url: str, key: str) -> int:
    from convostore.integrations.langchain import ConvostoreChatMessageHistory

    history = ConvostoreChatMessageHistory(key, url=url)
    try:
        return len(await history.aget_messages())
    finally:
        await history.aclose()


async def pydantic_ai_write(url: str, key: str) -> None:
    from pydantic_ai.messages import ModelRequest, UserPromptPart

    from convostore.integrations.pydantic_ai import MessageHistory

    history = MessageHistory(key, url=url)
    try:
        for n in range(ITEMS):
            await history.append([ModelRequest(parts=[UserPromptPart(content=f"{key}.{n}")])])
    finally:
        await history.close()


async def pydantic_ai_count(url: str, key: str) -> int:
    from convostore.integrations.pydantic_ai import MessageHistory

    history = MessageHistory(key, url=url)
    try:
        return len(await history.load())
    finally:
        await history.close()


async def axio_write(url: str, key: str) -> None:
    from axio.blocks import TextBlock
    from axio.messages import Message

    from convostore.integrations.axio import AxioContextStore

    store = AxioContextStore(url=url, session_id=key)
    try:
        for n in range(ITEMS):
            await store.append(Message("user", [TextBlock(f"{key}.{n}")]))
    finally:
        await store.close()


async def axio_count(url: str, key: str) -> int:
    from convostore.integrations.axio import AxioContextStore

    store = AxioContextStore(url=url, session_id=key)
    try:
        return len(await store.get_history())
    finally:
        await store.close()


WRITERS: dict[str, Writer] = {
    "adk": adk_write,
    "openai_agents": openai_write,
    "langchain": langchain_write,
    "pydantic_ai": pydantic_ai_write,
    "axio": axio_write,
}
COUNTERS: dict[str, Counter] = {
    "adk": adk_count,
    "openai_agents": openai_count,
    "langchain": langchain_count,
    "pydantic_ai": pydantic_ai_count,
    "axio": axio_count,
}


async def write_all(adapter: str, url: str, keys: list[str]) -> None:
    """One task per key, all started together."""
    await asyncio.gather(*(WRITERS[adapter](url, key) for key in keys))


def in_process(
    adapter: str, url: str, keys: list[str], barrier: Barrier, results: Queue[str]
) -> None:
    """Wait for the other processes, write ``keys`` from tasks, put "ok" or the traceback."""
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
        asyncio.run(write_all(adapter, url, keys))
        results.put("ok")
    except BaseException:
        results.put(traceback.format_exc())
