"""``get_last`` never splits a tool call from its results (:mod:`convostore.pairs`).

On every implementation: the window widens back to the call of each result it holds,
parallel calls and a boundary inside a group of results included; ``exact=True`` keeps the
old exact count; a result whose call was never stored stays as it is.
"""

from __future__ import annotations

from typing import Any

import pytest

from convostore import ContextMessage, ValidationError
from tests.contract.conftest import MakeStore


def text(role: str, words: str) -> ContextMessage:
    return ContextMessage(role=role, content=[{"type": "text", "text": words}])


def calls(*ids: str) -> ContextMessage:
    blocks: list[dict[str, Any]] = [
        {"type": "tool_use", "id": i, "name": "lookup", "input": {}} for i in ids
    ]
    return ContextMessage(role="assistant", content=blocks)


def result(call_id: str) -> ContextMessage:
    block = {"type": "tool_result", "tool_use_id": call_id, "content": f"found {call_id}"}
    return ContextMessage(role="user", content=[block])


def ids(messages: list[ContextMessage]) -> list[str]:
    """Each message as a short label: its text, ``call:a,b`` or ``result:a``."""
    labels = []
    for message in messages:
        block = message.content[0]
        if block["type"] == "text":
            labels.append(block["text"])
        elif block["type"] == "tool_use":
            labels.append("call:" + ",".join(b["id"] for b in message.content))
        else:
            labels.append("result:" + block["tool_use_id"])
    return labels


PARALLEL = [
    text("user", "q"),
    calls("a", "b"),
    result("a"),
    result("b"),
    text("assistant", "done"),
]


async def test_a_window_starting_inside_a_group_of_results_widens_to_the_call(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    await store.append_many(PARALLEL)
    whole = ["call:a,b", "result:a", "result:b", "done"]
    assert ids(await store.get_last(2)) == whole
    assert ids(await store.get_last(3)) == whole
    assert ids(await store.get_last(1)) == ["done"]
    assert ids(await store.get_last(4)) == whole
    assert ids(await store.get_last(5)) == ["q", *whole]


async def test_exact_keeps_the_exact_count(make_store: MakeStore) -> None:
    store = await make_store()
    await store.append_many(PARALLEL)
    assert ids(await store.get_last(2, exact=True)) == ["result:b", "done"]
    with pytest.raises(ValidationError):
        await store.get_last(2, exact=1)  # type: ignore[arg-type]


async def test_widening_follows_results_that_the_widened_part_holds(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    await store.append_many(
        [text("user", "q"), calls("p"), calls("q"), result("p"), result("q"), text("user", "ok")]
    )
    # result:q needs call:q, whose window holds result:p, which needs call:p.
    assert ids(await store.get_last(2)) == [
        "call:p",
        "call:q",
        "result:p",
        "result:q",
        "ok",
    ]


async def test_a_result_whose_call_was_never_stored_stays_as_it_is(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    await store.append_many(
        [text("user", "q"), calls("a"), result("a"), result("gone"), text("user", "ok")]
    )
    assert ids(await store.get_last(2)) == ["result:gone", "ok"]
    assert ids(await store.get_last(3)) == ["call:a", "result:a", "result:gone", "ok"]


async def test_a_call_far_back_is_found_across_pages(make_store: MakeStore) -> None:
    store = await make_store()
    chatter = [text("assistant", f"progress {i}") for i in range(120)]
    await store.append_many([text("user", "q"), calls("slow"), *chatter, result("slow")])
    window = await store.get_last(1)
    assert len(window) == 122
    assert ids(window)[0] == "call:slow"
    assert ids(window)[-1] == "result:slow"
