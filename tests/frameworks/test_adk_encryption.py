"""ADK sessions on an encrypted engine: state and events sealed, rotated, read back."""

from __future__ import annotations

import pytest

pytest.importorskip("google.adk", reason="google-adk is not installed")

from google.adk.events.event import Event
from google.genai import types
from sqlalchemy import URL

from convostore.integrations.adk import ConvostoreSessionService
from convostore.sql.engine import create_engine
from convostore.sql.rotation import rotate
from tests.backends.encrypted import payload_keys, raw_values, ring

SECRET = "ADK-secret-5521"


async def test_adk_state_and_events_are_sealed_and_rotate(db_url: URL) -> None:
    engine = create_engine(db_url, encryption=ring("k1", current="k1"))
    try:
        service = ConvostoreSessionService(engine)
        state = {"plan": SECRET, "app:shared": SECRET, "user:pref": SECRET}
        session = await service.create_session(app_name="app", user_id="u", state=state)
        parts = [types.Part(text=f"{SECRET} hello")]
        await service.append_event(
            session,
            Event(
                author="user", invocation_id="i", content=types.Content(role="user", parts=parts)
            ),
        )
        stored = await raw_values(engine)
        adk = {k: v for k, v in stored.items() if k.startswith("adk_")}
        assert {k: len(v) for k, v in adk.items()} == {
            "adk_sessions.state": 1,
            "adk_events.event": 1,
            "adk_app_states.state": 1,
            "adk_user_states.state": 1,
        }
        assert not any(SECRET.encode() in value for values in adk.values() for value in values)
        both = ring("k1", "k2", current="k2")
        assert (await rotate(engine, both)).total == 4
        assert set(await payload_keys(engine)) == {"k2"}
    finally:
        await engine.dispose()
    reader = create_engine(db_url, encryption=ring("k2", current="k2"))
    try:
        got = await ConvostoreSessionService(reader).get_session(
            app_name="app", user_id="u", session_id=session.id
        )
        assert got is not None
        assert got.state == state
        content = got.events[0].content
        assert content is not None
        assert content.parts is not None
        assert content.parts[0].text == f"{SECRET} hello"
    finally:
        await reader.dispose()
