"""A database for the viewer's tests: written through the façades, with hostile text in it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import URL, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import ContextMessage, SQLAlchemyContextStore, SQLAlchemyDatabase
from convostore.encryption import Keyring
from convostore.sql.engine import create_engine
from convostore.sql.tables import (
    AdkAppStateRecord,
    AdkEventRecord,
    AdkSessionRecord,
    AdkUserStateRecord,
)

PROJECT: Final = "/work/alpha"
OTHER_PROJECT: Final = "/work/beta"
SESSION: Final = "s-1"
AGENT: Final = "bot"
XSS: Final = (
    '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    '<a href="javascript:window.__pwned = 3" id="evil">click</a> " onmouseover="x" \''
)
"""Message text that would run script if any of it reached the page unescaped."""
HOSTILE_PROJECT: Final = '/h"><img src=x onerror="window.__pwned = 4">'
HOSTILE_SESSION: Final = "s'><b onmouseover='window.__pwned = 5'>"
HOSTILE_USER: Final = '"><script>window.__pwned = 6</script>'
"""Ids are any text too: these go into links, attributes and headings."""
# A 1x1 PNG, as an image block carries it.
PIXEL: Final = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cf000000030101001818dd8d0000000049454e44ae426082"
    )
).decode()


def conversation() -> list[ContextMessage]:
    """A short agent turn: a question, a tool call, its result, an answer with hostile text."""
    return [
        ContextMessage(
            role="user", content=[{"type": "text", "text": "What is the weather in Oslo?"}]
        ),
        ContextMessage(
            role="assistant",
            content=[
                {"type": "text", "text": "Let me look that up."},
                {"type": "tool_use", "id": "call-1", "name": "weather", "input": {"city": "Oslo"}},
            ],
        ),
        ContextMessage(
            role="user",
            content=[
                {"type": "tool_result", "tool_use_id": "call-1", "content": "4 °C, light rain"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                },
            ],
        ),
        ContextMessage(
            role="assistant",
            content=[{"type": "text", "text": f"It is 4 °C and raining in Oslo. {XSS}"}],
        ),
    ]


async def seed(url: URL, *, keyring: Keyring | None = None) -> None:
    """Both interfaces' data: two projects (one session forked), an agent with a user."""
    engine = create_engine(url, encryption=keyring)
    try:
        await _seed(engine)
    finally:
        await engine.dispose()


async def _seed(engine: AsyncEngine) -> None:
    store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=SESSION, migrate=False)
    await store.append_many(conversation())
    await store.add_context_tokens(1200, 345)
    await store.fork(at=2)
    other = SQLAlchemyContextStore(engine, project=OTHER_PROJECT, session_id="s-2", migrate=False)
    await other.append(ContextMessage(role="user", content=[{"type": "text", "text": XSS}]))
    hostile = SQLAlchemyContextStore(
        engine, project=HOSTILE_PROJECT, session_id=HOSTILE_SESSION, migrate=False
    )
    await hostile.append(ContextMessage(role="user", content=[{"type": "text", "text": XSS}]))
    db = SQLAlchemyDatabase(engine=engine, agent_name=AGENT, migrate=False)
    await db.credit(HOSTILE_USER, 7)
    await db.add_message(HOSTILE_SESSION, HOSTILE_USER, "user", message=XSS)
    await db.credit("alice", 250)
    await db.set_current_thread_id("alice", "t-1")
    await db.add_message("t-1", "alice", "user", message="pay me for the forecast", content="hi")
    await db.add_message(
        "t-1",
        "alice",
        "agent",
        message=f"invoice {XSS}",
        kind="requires_payment",
        satoshis=21,
        extra_outputs={"invoice": "lnbc1"},
    )


ADK_APP: Final = "weather_app"


async def seed_adk(url: URL, *, keyring: Keyring | None = None) -> None:
    """An ADK session as convostore.integrations.adk stores it (written to its tables here:
    google-adk itself needs Python 3.12): state in three scopes, three events."""
    engine = create_engine(url, encryption=keyring)
    now = datetime.now(UTC)
    key = {"app_name": ADK_APP, "user_id": "u-1", "session_id": "adk-1"}
    events = [
        {"author": "user", "content": {"role": "user", "parts": [{"text": "Weather in Oslo?"}]}},
        {
            "author": "forecaster",
            "content": {
                "role": "model",
                "parts": [{"function_call": {"name": "get_forecast", "args": {"city": "Oslo"}}}],
            },
        },
        {
            "author": "forecaster",
            "content": {"role": "model", "parts": [{"text": f"Rainy. {XSS}"}]},
            "actions": {"state_delta": {"last_city": "Oslo"}},
        },
    ]
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(AdkSessionRecord),
                [
                    {
                        **key,
                        "state": {"last_city": "Oslo"},
                        "next_position": len(events),
                        "created_at": now,
                        "updated_at": now,
                    }
                ],
            )
            await conn.execute(
                insert(AdkEventRecord),
                [
                    {
                        **key,
                        "position": i,
                        "event_id": f"e-{i}",
                        "timestamp": now,
                        "event": {"id": f"e-{i}", **event},
                    }
                    for i, event in enumerate(events)
                ],
            )
            await conn.execute(
                insert(AdkUserStateRecord),
                [{**key, "state": {"units": "metric"}, "updated_at": now}],
            )
            await conn.execute(
                insert(AdkAppStateRecord),
                [{"app_name": ADK_APP, "state": {"model": "demo"}, "updated_at": now}],
            )
    finally:
        await engine.dispose()


async def long_session(url: URL, count: int, *, session: str = "long") -> None:
    """A session of ``count`` numbered messages, written in large batches."""
    engine = create_engine(url)
    try:
        store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=session, migrate=False)
        batch = 2000
        for start in range(0, count, batch):
            await store.append_many(
                [
                    ContextMessage(
                        role="user" if i % 2 == 0 else "assistant",
                        content=[{"type": "text", "text": f"message number {i}"}],
                    )
                    for i in range(start, min(count, start + batch))
                ]
            )
    finally:
        await engine.dispose()
