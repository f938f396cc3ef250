"""ConvostoreSession with the real ``openai-agents`` package.

The protocol suite runs against the SDK's own ``SQLiteSession`` (the reference) and against
:class:`ConvostoreSession` on the in-memory store and every selected backend. A ``Runner``
run with a scripted model (no network) persists its items through our session.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("agents", reason="openai-agents is not installed")

from agents import Agent, RunConfig, Runner, function_tool
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem
from agents.memory import Session, SessionSettings, SQLiteSession
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    InMemoryContextStore,
    SerializationError,
    SQLAlchemyContextStore,
    ValidationError,
)
from convostore.integrations.openai_agents import (
    DEFAULT_PROJECT,
    ConvostoreSession,
    item_role,
)
from tests.conftest import require_backend
from tests.frameworks.conftest import SQL_BACKENDS, open_engine

MakeSession = Callable[[str], Session]

ITEMS: list[Any] = [
    {"role": "developer", "content": "Be terse."},
    {"role": "user", "content": "hello"},
    {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "ünïcödé \U0001f600"},
            {
                "type": "input_image",
                "image_url": "data:image/png;base64,iVBORw0K",
                "detail": "auto",
            },
        ],
    },
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "thinking"}],
        "encrypted_content": None,
    },
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "echo",
        "arguments": '{"msg": "x"}',
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "x"},
    {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": "done", "annotations": [], "logprobs": [{"p": 0.25}]}
        ],
    },
]


def said(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


@pytest.fixture(
    params=[
        pytest.param("sdk-sqlite-session"),
        pytest.param("memory"),
        *SQL_BACKENDS,
    ]
)
def session_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name not in ("sdk-sqlite-session", "memory"):
        require_backend(request.config, name)
    return name


@pytest.fixture
async def make_session(session_backend: str, tmp_path: Path) -> AsyncIterator[MakeSession]:
    """``make(session_id)``: sessions of one database (the SDK's own, or ours)."""
    if session_backend == "sdk-sqlite-session":
        opened: list[SQLiteSession] = []

        def make_reference(session_id: str) -> Session:
            opened.append(SQLiteSession(session_id, tmp_path / "sdk.db"))
            return opened[-1]

        yield make_reference
        for session in opened:
            session.close()
        return
    if session_backend == "memory":
        memory = InMemoryContextStore(project=DEFAULT_PROJECT)
        yield lambda session_id: ConvostoreSession.from_store(memory.with_session(session_id))
        return
    engine = await open_engine(session_backend, tmp_path)
    yield lambda session_id: ConvostoreSession(session_id, engine)
    await engine.dispose()


# --- The Session protocol, on the SDK's SQLiteSession and on ours ------------------------


async def test_it_is_a_session(make_session: MakeSession) -> None:
    session = make_session("s1")
    assert isinstance(session, Session)
    assert session.session_id == "s1"


async def test_a_new_session_is_empty(make_session: MakeSession) -> None:
    session = make_session("s1")
    assert await session.get_items() == []
    assert await session.get_items(limit=3) == []
    assert await session.pop_item() is None


async def test_items_round_trip_exactly(make_session: MakeSession) -> None:
    session = make_session("s1")
    await session.add_items(ITEMS[:3])
    await session.add_items(ITEMS[3:])

    items = await session.get_items()

    assert items == ITEMS
    assert json.dumps(items) == json.dumps(ITEMS)  # key order too


async def test_unknown_keys_of_an_item_are_kept_as_the_sdk_keeps_them(
    make_session: MakeSession,
) -> None:
    """Lenient on purpose: an item is the SDK's, stored whole, so a key neither we nor the
    SDK know (a newer API's field) comes back as given rather than being refused."""
    session = make_session("s1")
    item: Any = {"role": "user", "content": "hi", "x_future_field": {"kept": [1, 2]}}
    await session.add_items([item])
    assert await session.get_items() == [item]


async def test_limit_returns_the_latest_items_in_order(make_session: MakeSession) -> None:
    session = make_session("s1")
    await session.add_items([said(f"m{i}") for i in range(5)])

    assert await session.get_items(limit=2) == [said("m3"), said("m4")]
    assert await session.get_items(limit=1) == [said("m4")]
    assert await session.get_items(limit=9) == [said(f"m{i}") for i in range(5)]
    assert await session.get_items(limit=0) == []


async def test_add_nothing_changes_nothing(make_session: MakeSession) -> None:
    session = make_session("s1")
    await session.add_items([])
    assert await session.get_items() == []


async def test_pop_item_removes_the_latest(make_session: MakeSession) -> None:
    session = make_session("s1")
    await session.add_items([said("a"), said("b"), said("c")])

    assert await session.pop_item() == said("c")
    assert await session.get_items() == [said("a"), said("b")]
    await session.add_items([said("d")])
    assert await session.get_items() == [said("a"), said("b"), said("d")]
    assert [await session.pop_item() for _ in range(4)] == [said("d"), said("b"), said("a"), None]


async def test_sessions_are_separate_and_clear_empties_one(make_session: MakeSession) -> None:
    first, second = make_session("s1"), make_session("s2")
    await first.add_items([said("one")])
    await second.add_items([said("two")])

    await first.clear_session()

    assert await first.get_items() == []
    assert await first.pop_item() is None
    assert await second.get_items() == [said("two")]
    await first.add_items([said("again")])
    assert await first.get_items() == [said("again")]


# --- ConvostoreSession specifics --------------------------------------------------------


def engine_of(session: ConvostoreSession) -> AsyncEngine:
    assert isinstance(session.store, SQLAlchemyContextStore)
    return session.store.engine


def pooled(pool: Any) -> int:
    """How many connections the pool holds, unused (a file database's QueuePool)."""
    count: int = pool.checkedin()
    return count


@pytest.mark.parametrize("awaited", [False, True], ids=["close()", "await close()"])
def test_close_works_without_await_as_the_sdks_sessions(tmp_path: Path, awaited: bool) -> None:
    """The SDK's ``SQLiteSession.close()`` is synchronous, so its users write
    ``session.close()`` at the end of their main coroutine: that must close, too, even
    though asyncio.run ends right after it (and awaiting it must keep working)."""
    reference = SQLiteSession("s1", tmp_path / "sdk.db")
    session = ConvostoreSession("s1", url=str(tmp_path / "ours.db"))
    pools = []

    async def main() -> None:
        for each in (reference, session):
            await each.add_items([said("hi")])
        pools.append(engine_of(session).pool)
        assert pooled(pools[0]) == 1
        reference.close()
        if awaited:
            await session.close()
        else:
            session.close()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" included
        asyncio.run(main())
    assert pooled(pools[0]) == 0
    assert engine_of(session).pool is not pools[0]


def test_close_outside_an_event_loop(tmp_path: Path) -> None:
    session = ConvostoreSession("s1", url=str(tmp_path / "ours.db"))
    asyncio.run(session.add_items([said("hi")]))
    pool = engine_of(session).pool
    assert pooled(pool) == 1
    session.close()
    assert pooled(pool) == 0


async def test_the_settings_limit_is_the_default(sql_engine: AsyncEngine) -> None:
    session = ConvostoreSession("s1", sql_engine, session_settings=SessionSettings(limit=2))
    await session.add_items([said(f"m{i}") for i in range(4)])

    assert await session.get_items() == [said("m2"), said("m3")]
    assert len(await session.get_items(limit=3)) == 3
    with pytest.raises(ValidationError):
        await session.get_items(limit=-1)


async def test_add_items_is_all_or_nothing(sql_engine: AsyncEngine) -> None:
    session = ConvostoreSession("s1", sql_engine)
    await session.add_items([said("kept")])

    with pytest.raises(SerializationError):
        await session.add_items([said("a"), {"role": "user", "content": float("nan")}])
    with pytest.raises(ValidationError):
        await session.add_items([said("b"), cast(Any, "not an item")])

    assert await session.get_items() == [said("kept")]


async def test_concurrent_pops_return_each_item_once(sql_engine: AsyncEngine) -> None:
    await ConvostoreSession("s1", sql_engine).add_items([said(f"m{i}") for i in range(10)])
    sessions = [ConvostoreSession("s1", sql_engine) for _ in range(14)]

    popped = await asyncio.gather(*(s.pop_item() for s in sessions))

    assert sorted(str(p["content"]) for p in popped if p is not None) == sorted(
        f"m{i}" for i in range(10)
    )
    assert popped.count(None) == 4


async def test_items_are_labelled_with_a_context_role(sql_engine: AsyncEngine) -> None:
    session = ConvostoreSession("s1", sql_engine, project="agents")
    await session.add_items(ITEMS)

    stored = await SQLAlchemyContextStore(
        sql_engine, session_id="s1", project="agents"
    ).get_history()

    assert [m.role for m in stored] == [
        "system",
        "user",
        "user",
        "assistant",
        "assistant",
        "tool",
        "assistant",
    ]
    assert [m.content for m in stored] == [[item] for item in ITEMS]
    assert item_role({"type": "computer_call_output"}) == "tool"


async def test_a_session_opened_with_a_url_owns_its_engine(tmp_path: Path) -> None:
    session = ConvostoreSession("s1", url=str(tmp_path / "own.db"), migrate=True)
    await session.add_items([said("hi")])
    await session.close()
    reopened = ConvostoreSession("s1", url=str(tmp_path / "own.db"))
    assert await reopened.get_items() == [said("hi")]
    await reopened.close()


# --- A Runner run persisting through the session ----------------------------------------


class ScriptedModel(Model):
    """A model answering from a script, recording the input of every call."""

    def __init__(self, script: list[list[TResponseOutputItem]]) -> None:
        self.script = list(script)
        self.inputs: list[list[TResponseInputItem]] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        self.inputs.append([said(input)] if isinstance(input, str) else list(input))
        return ModelResponse(output=self.script.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the tests run the model without streaming")


def answer(text: str, item_id: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=item_id,
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def call(name: str, arguments: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=f"fc_{call_id}",
        call_id=call_id,
        type="function_call",
        name=name,
        arguments=json.dumps(arguments),
        status="completed",
    )


def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper()


async def test_a_runner_run_persists_its_items(sql_engine: AsyncEngine) -> None:
    model = ScriptedModel(
        [
            [call("shout", {"text": "hi"}, "call_1")],
            [answer("HI it is", "msg_1")],
            [answer("You asked me to shout.", "msg_2")],
        ]
    )
    agent = Agent(name="shouter", instructions="Shout.", model=model, tools=[function_tool(shout)])
    config = RunConfig(tracing_disabled=True)
    session = ConvostoreSession("conversation", sql_engine)

    result = await Runner.run(agent, "shout hi", session=session, run_config=config)

    assert result.final_output == "HI it is"
    items = await ConvostoreSession("conversation", sql_engine).get_items()
    kinds = [item.get("type", item.get("role")) for item in items]
    assert kinds == ["user", "function_call", "function_call_output", "message"]
    assert items[0]["content"] == "shout hi"
    assert items[2]["output"] == "HI"

    again = await Runner.run(agent, "what did I ask?", session=session, run_config=config)

    assert again.final_output == "You asked me to shout."
    # The second call to the model got the whole stored conversation before the new turn.
    assert model.inputs[-1][: len(items)] == items
    assert len(await session.get_items()) == 6
