"""ConvostoreSessionService with the real ``google-adk`` package.

The behaviour suite runs against ADK's own ``DatabaseSessionService`` (on an aiosqlite file,
the reference) and against :class:`ConvostoreSessionService` on every selected backend.
What ADK's service does not do is listed in :data:`REFERENCE_GAPS`, each a strict xfail
on the reference with its reason. A ``Runner`` runs an agent on a canned model (a
``BaseLlm`` subclass; no network) through our service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("google.adk", reason="google-adk is not installed")

from google.adk.agents import LlmAgent
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions import DatabaseSessionService
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.session import Session
from google.adk.tools import ToolContext
from google.genai import types
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    SerializationError,
    ValidationError,
)
from convostore.integrations.adk import ConvostoreSessionService, SessionPage
from convostore.sql.tables import AdkEventRecord, AdkSessionRecord
from tests.conftest import require_backend
from tests.frameworks.conftest import SQL_BACKENDS, open_engine

REFERENCE = "adk-database"

REFERENCE_GAPS: dict[str, tuple[str, type[Exception]]] = {
    "test_concurrent_appends_from_separate_copies_all_land": (
        "ADK's DatabaseSessionService raises StaleSessionError for every copy of a session "
        "that another writer appended to after it was loaded",
        StaleSessionError,
    ),
    "test_a_retried_event_is_stored_once": (
        "ADK's DatabaseSessionService inserts the event again and fails on its primary key",
        IntegrityError,
    ),
}


@pytest.fixture(params=[pytest.param(REFERENCE), *SQL_BACKENDS])
def service_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == REFERENCE:
        gap = REFERENCE_GAPS.get(request.function.__name__)
        if gap is not None:
            reason, error = gap
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason, raises=error))
    else:
        require_backend(request.config, name)
    return name


@pytest.fixture
async def service(service_backend: str, tmp_path: Path) -> AsyncIterator[BaseSessionService]:
    """ADK's own database service (the reference), or ours on a clean database."""
    if service_backend == REFERENCE:
        reference = DatabaseSessionService(f"sqlite+aiosqlite:///{tmp_path / 'adk.db'}")
        yield reference
        await reference.close()
        return
    engine = await open_engine(service_backend, tmp_path)
    yield ConvostoreSessionService(engine)
    await engine.dispose()


def said(text: str, delta: dict[str, Any] | None = None, *, author: str = "user") -> Event:
    return Event(
        invocation_id="inv-1",
        author=author,
        content=types.Content(
            role="user" if author == "user" else "model", parts=[types.Part(text=text)]
        ),
        actions=EventActions(state_delta=dict(delta or {})),
    )


def texts(session: Session | None) -> list[str]:
    assert session is not None
    return [
        part.text or ""
        for event in session.events
        if event.content
        for part in event.content.parts or []
    ]


async def load(service: BaseSessionService, session: Session, **config: Any) -> Session:
    loaded = await service.get_session(
        app_name=session.app_name,
        user_id=session.user_id,
        session_id=session.id,
        config=GetSessionConfig(**config) if config else None,
    )
    assert loaded is not None
    return loaded


# --- The behaviour of ADK's DatabaseSessionService, on it and on ours -----------------


async def test_a_new_session_keeps_its_state_by_scope(service: BaseSessionService) -> None:
    state = {"n": 1, "app:greeting": "hi", "user:name": "Ann", "temp:scratch": True}
    created = await service.create_session(app_name="app", user_id="u1", state=state)

    assert created.state == {"n": 1, "app:greeting": "hi", "user:name": "Ann"}
    assert created.events == []
    loaded = await load(service, created)
    assert (loaded.id, loaded.app_name, loaded.user_id) == (created.id, "app", "u1")
    assert loaded.state == created.state
    other_user = await service.create_session(app_name="app", user_id="u2")
    assert other_user.state == {"app:greeting": "hi"}
    assert await service.get_user_state(app_name="app", user_id="u1") == {"name": "Ann"}
    assert await service.get_user_state(app_name="app", user_id="nobody") == {}


async def test_a_session_id_is_unique_per_app_and_user(service: BaseSessionService) -> None:
    await service.create_session(app_name="app", user_id="u1", session_id="s1")
    with pytest.raises(AlreadyExistsError):
        await service.create_session(app_name="app", user_id="u1", session_id="s1")
    same_id = await service.create_session(app_name="app", user_id="u2", session_id="s1")
    assert same_id.id == "s1"
    assert await service.get_session(app_name="app", user_id="u1", session_id="nope") is None


async def test_events_round_trip_exactly_with_their_deltas(service: BaseSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u1", state={"n": 0})
    call = Event(
        invocation_id="inv-1",
        author="assistant",
        content=types.Content(
            role="model",
            parts=[
                types.Part(text="ünïcödé \U0001f600"),
                types.Part(
                    function_call=types.FunctionCall(id="c1", name="lookup", args={"q": [1, 2.5]})
                ),
            ],
        ),
        custom_metadata={"trace": {"k": [1, None]}},
        actions=EventActions(
            state_delta={"n": 1, "app:hits": 2, "user:last": "lookup", "temp:x": 1}
        ),
    )
    answer = Event(
        invocation_id="inv-1",
        author="assistant",
        content=types.Content(
            role="user",
            parts=[
                types.Part(
                    function_response=types.FunctionResponse(
                        id="c1", name="lookup", response={"result": {"hits": [1]}}
                    )
                )
            ],
        ),
    )
    await service.append_event(session, call)
    await service.append_event(session, answer)

    # temp: reaches the in-memory session only; every other key is stored by scope.
    assert session.state == {"n": 1, "app:hits": 2, "user:last": "lookup", "temp:x": 1}
    loaded = await load(service, session)
    assert loaded.state == {"n": 1, "app:hits": 2, "user:last": "lookup"}
    assert loaded.events == [call, answer]
    assert loaded.events[0].actions.state_delta == {"n": 1, "app:hits": 2, "user:last": "lookup"}
    assert loaded.last_update_time == pytest.approx(answer.timestamp, abs=1e-5)

    mine = await service.create_session(app_name="app", user_id="u1")
    theirs = await service.create_session(app_name="app", user_id="u2")
    assert mine.state == {"app:hits": 2, "user:last": "lookup"}
    assert theirs.state == {"app:hits": 2}


async def test_the_callers_session_equals_the_stored_one_after_append(
    service: BaseSessionService,
) -> None:
    """Storage keeps microseconds; the caller's session must agree with it, as ADK's own
    service makes it agree (it takes ``last_update_time`` back from storage)."""
    session = await service.create_session(app_name="app", user_id="u1")
    now = time.time()  # increasing: ADK's service orders events by timestamp
    for timestamp in (now, now + 1.1234567, now + 2.0000004):
        event = said("hi")
        event.timestamp = timestamp
        await service.append_event(session, event)
        assert await load(service, session) == session, timestamp


async def test_num_recent_events_and_after_timestamp(service: BaseSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u1")
    start = time.time()
    events = [said(f"m{i}") for i in range(5)]
    for i, event in enumerate(events):
        event.timestamp = start + i  # the events' own times, one second apart
        await service.append_event(session, event)

    assert texts(await load(service, session)) == ["m0", "m1", "m2", "m3", "m4"]
    assert texts(await load(service, session, num_recent_events=2)) == ["m3", "m4"]
    assert texts(await load(service, session, num_recent_events=9)) == [f"m{i}" for i in range(5)]
    assert texts(await load(service, session, num_recent_events=0)) == []
    assert texts(await load(service, session, after_timestamp=start + 2)) == ["m2", "m3", "m4"]
    assert texts(await load(service, session, after_timestamp=start + 1, num_recent_events=1)) == [
        "m4"
    ]
    with pytest.raises(ValueError, match="num_recent_events"):
        GetSessionConfig(num_recent_events=-1)


async def test_list_sessions_oldest_update_first_without_events(
    service: BaseSessionService,
) -> None:
    first = await service.create_session(app_name="app", user_id="u1", state={"k": "a"})
    second = await service.create_session(app_name="app", user_id="u2", state={"user:x": 1})
    await service.create_session(app_name="other", user_id="u1")
    await service.append_event(first, said("later", {"app:seen": True}))

    listed = (await service.list_sessions(app_name="app")).sessions
    assert [(s.user_id, s.id) for s in listed] == [("u2", second.id), ("u1", first.id)]
    assert all(s.events == [] for s in listed)
    assert listed[0].state == {"app:seen": True, "user:x": 1}
    assert listed[1].state == {"k": "a", "app:seen": True}
    mine = (await service.list_sessions(app_name="app", user_id="u1")).sessions
    assert [s.id for s in mine] == [first.id]
    assert (await service.list_sessions(app_name="none")).sessions == []


async def test_delete_session_removes_it_and_only_it(service: BaseSessionService) -> None:
    doomed = await service.create_session(app_name="app", user_id="u1", session_id="s1")
    kept = await service.create_session(app_name="app", user_id="u1", session_id="s2")
    await service.append_event(doomed, said("bye"))
    await service.append_event(kept, said("stay"))

    await service.delete_session(app_name="app", user_id="u1", session_id="s1")
    await service.delete_session(app_name="app", user_id="u1", session_id="never")

    assert await service.get_session(app_name="app", user_id="u1", session_id="s1") is None
    assert texts(await load(service, kept)) == ["stay"]
    with pytest.raises(SessionNotFoundError):
        await service.append_event(doomed, said("too late"))
    recreated = await service.create_session(app_name="app", user_id="u1", session_id="s1")
    assert (await load(service, recreated)).events == []


async def test_a_partial_event_is_not_stored(service: BaseSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u1")
    partial = said("stream", {"n": 1})
    partial.partial = True
    await service.append_event(session, partial)
    loaded = await load(service, session)
    assert loaded.events == []
    assert loaded.state == {}


async def test_concurrent_appends_through_one_session_object(service: BaseSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u1")
    await asyncio.gather(
        *(service.append_event(session, said(f"m{i}", {f"k{i}": i})) for i in range(8))
    )

    loaded = await load(service, session)
    assert sorted(texts(loaded)) == sorted(f"m{i}" for i in range(8))
    assert loaded.state == {f"k{i}": i for i in range(8)}


async def test_concurrent_appends_from_separate_copies_all_land(
    service: BaseSessionService,
) -> None:
    created = await service.create_session(app_name="app", user_id="u1")
    copies = [await load(service, created) for _ in range(8)]

    # Each writer holds its own copy, as separate requests or processes would.
    await asyncio.gather(
        *(
            service.append_event(copy, said(f"m{i}", {f"k{i}": i, "user:last": i}))
            for i, copy in enumerate(copies)
        )
    )

    loaded = await load(service, created)
    assert sorted(texts(loaded)) == sorted(f"m{i}" for i in range(8))
    assert loaded.state == {
        **{f"k{i}": i for i in range(8)},
        "user:last": loaded.state["user:last"],
    }


async def test_a_retried_event_is_stored_once(service: BaseSessionService) -> None:
    session = await service.create_session(app_name="app", user_id="u1", state={"n": 0})
    event = said("once", {"n": 1, "app:count": 1})
    await service.append_event(session, event)
    await service.append_event(session, event)

    loaded = await load(service, session)
    assert texts(loaded) == ["once"]
    assert len(session.events) == 1


# --- ConvostoreSessionService specifics -----------------------------------------------


@pytest.fixture
async def ours(sql_engine: AsyncEngine) -> ConvostoreSessionService:
    return ConvostoreSessionService(sql_engine)


async def count_rows(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        sessions = (await conn.execute(select(func.count()).select_from(AdkSessionRecord))).one()
        events = (await conn.execute(select(func.count()).select_from(AdkEventRecord))).one()
    return sessions[0], events[0]


async def test_events_get_gap_free_positions_under_concurrency(
    ours: ConvostoreSessionService, sql_engine: AsyncEngine
) -> None:
    created = await ours.create_session(app_name="app", user_id="u1")
    copies = [await load(ours, created) for _ in range(12)]
    await asyncio.gather(*(ours.append_event(copy, said(f"m{i}")) for i, copy in enumerate(copies)))

    async with sql_engine.connect() as conn:
        positions = list((await conn.execute(select(AdkEventRecord.position))).scalars())
        counter = (await conn.execute(select(AdkSessionRecord.next_position))).scalar_one()
    assert sorted(positions) == list(range(12))
    assert counter == 12
    # Append order is position order, whatever the events' own timestamps say.
    late = said("late")
    late.timestamp = 1.0
    await ours.append_event(created, late)
    assert texts(await load(ours, created))[-1] == "late"


async def test_list_sessions_pages_by_keyset(ours: ConvostoreSessionService) -> None:
    made = []
    for i in range(7):
        session = await ours.create_session(app_name="app", user_id=f"u{i % 3}", session_id=f"s{i}")
        await ours.append_event(session, said("hi"))
        made.append(session.id)

    pages: list[list[str]] = []
    token = None
    while True:
        page = await ours.list_sessions(app_name="app", page_size=3, page_token=token)
        assert isinstance(page, SessionPage)
        pages.append([s.id for s in page.sessions])
        token = page.next_page_token
        if token is None:
            break
    assert pages == [made[0:3], made[3:6], made[6:7]]
    everything = [s.id for s in (await ours.list_sessions(app_name="app")).sessions]
    assert everything == made
    u0 = await ours.list_sessions(app_name="app", user_id="u0", page_size=2)
    assert [s.id for s in u0.sessions] == ["s0", "s3"]
    assert u0.next_page_token is not None
    rest = await ours.list_sessions(app_name="app", user_id="u0", page_token=u0.next_page_token)
    assert [s.id for s in rest.sessions] == ["s6"]
    assert rest.next_page_token is None
    with pytest.raises(ValidationError):
        await ours.list_sessions(app_name="app", page_size=0)
    with pytest.raises(ValidationError):
        await ours.list_sessions(app_name="app", page_token="not-a-token")


async def test_bad_input_is_refused_and_changes_nothing(
    ours: ConvostoreSessionService, sql_engine: AsyncEngine
) -> None:
    session = await ours.create_session(app_name="app", user_id="u1", session_id="s1")
    await ours.append_event(session, said("kept"))
    before = await count_rows(sql_engine)

    with pytest.raises(ValidationError):
        await ours.create_session(app_name="", user_id="u1")
    with pytest.raises(ValidationError):
        await ours.create_session(app_name="app", user_id="u1", session_id="x" * 129)
    with pytest.raises(SerializationError):
        await ours.create_session(app_name="app", user_id="u1", state={"bad": object()})
    with pytest.raises(SerializationError):
        await ours.append_event(session, said("nan", {"n": float("nan")}))
    with pytest.raises(ValidationError):
        await ours.append_event(session, cast(Any, {"author": "user"}))
    with pytest.raises(ConflictError):
        await ours.create_session(app_name="app", user_id="u1", session_id="s1")
    with pytest.raises(NotFoundError):
        await ours.append_event(Session(id="gone", app_name="app", user_id="u1"), said("nowhere"))

    assert await count_rows(sql_engine) == before
    assert texts(await load(ours, session)) == ["kept"]
    assert (await load(ours, session)).state == {}


async def test_a_service_opened_with_a_url_owns_its_engine(tmp_path: Path) -> None:
    service = ConvostoreSessionService(url=str(tmp_path / "own.db"))
    session = await service.create_session(app_name="app", user_id="u1", session_id="s1")
    await service.append_event(session, said("hi"))
    await service.close()
    reopened = ConvostoreSessionService(url=str(tmp_path / "own.db"))
    assert texts(await load(reopened, session)) == ["hi"]
    assert "own.db" in repr(reopened)
    await reopened.close()


async def test_a_service_is_a_facade_with_async_with(tmp_path: Path) -> None:
    """Exactly one of url= or engine=; ``async with`` prepares the schema on entry and
    disposes of only an engine the service opened; a closed service says so."""
    shared = await open_engine("sqlite", tmp_path)
    with pytest.raises(ConfigurationError, match="not both"):
        ConvostoreSessionService(shared, url=str(tmp_path / "other.db"))
    async with ConvostoreSessionService(url=str(tmp_path / "own.db")) as service:
        session = await service.create_session(app_name="app", user_id="u1", session_id="s1")
        await service.append_event(session, said("hi"))
    with pytest.raises(ConfigurationError, match="closed"):
        await service.get_session(app_name="app", user_id="u1", session_id="s1")

    try:
        async with ConvostoreSessionService(shared) as borrowing:
            created = await borrowing.create_session(app_name="app", user_id="u1")
        # The engine was lent, not given: it still works, and so does the service.
        again = ConvostoreSessionService(shared)
        assert (await load(again, created)).id == created.id
        assert (await load(borrowing, created)).id == created.id
    finally:
        await shared.dispose()


# --- A Runner run on a canned model --------------------------------------------------


class CannedLlm(BaseLlm):
    """A model answering from a script, recording what each call was sent."""

    replies: list[LlmResponse]
    seen: list[list[types.Content]] = []

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.seen.append(list(llm_request.contents))
        yield self.replies.pop(0)


def reply(*parts: types.Part) -> LlmResponse:
    return LlmResponse(content=types.Content(role="model", parts=list(parts)))


def remember(item: str, tool_context: ToolContext) -> str:
    """Remember an item for this user."""
    tool_context.state["user:last_item"] = item
    tool_context.state["temp:scratch"] = item
    return f"remembered {item}"


async def test_a_runner_run_persists_events_and_state(ours: ConvostoreSessionService) -> None:
    model = CannedLlm(
        model="canned",
        replies=[
            reply(
                types.Part(function_call=types.FunctionCall(name="remember", args={"item": "milk"}))
            ),
            reply(types.Part(text="Noted.")),
            reply(types.Part(text="You asked me to remember milk.")),
        ],
        seen=[],
    )
    agent = LlmAgent(
        name="assistant",
        model=model,
        instruction="Be terse.",
        tools=[remember],
        output_key="answer",
    )
    runner = Runner(app_name="app", agent=agent, session_service=ours)
    session = await ours.create_session(app_name="app", user_id="u1", state={"app:tone": "dry"})

    async def ask(text: str) -> list[Event]:
        message = types.Content(role="user", parts=[types.Part(text=text)])
        return [
            event
            async for event in runner.run_async(
                user_id="u1", session_id=session.id, new_message=message
            )
        ]

    await ask("remember milk")
    stored = await load(ours, session)
    assert stored.state == {"app:tone": "dry", "user:last_item": "milk", "answer": "Noted."}
    kinds = [
        "text" if part.text else "call" if part.function_call else "response"
        for event in stored.events
        for part in (event.content.parts or [] if event.content else [])
    ]
    assert kinds == ["text", "call", "response", "text"]

    answered = await ask("what did I ask?")
    assert answered[-1].content is not None
    assert answered[-1].content.parts is not None
    assert answered[-1].content.parts[0].text == "You asked me to remember milk."
    # The model's last call was sent the stored conversation before the new question.
    sent = ["".join(part.text or "" for part in content.parts or []) for content in model.seen[-1]]
    assert sent[0] == "remember milk"
    assert sent[-1] == "what did I ask?"
    assert len((await load(ours, session)).events) == 6
    assert await ours.get_user_state(app_name="app", user_id="u1") == {"last_item": "milk"}
