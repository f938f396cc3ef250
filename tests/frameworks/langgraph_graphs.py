"""Graphs for the LangGraph tests (no model calls), and the bodies of their child processes.

Kept apart from the test modules so a spawned child imports convostore and LangGraph, and
nothing of pytest.
"""

from __future__ import annotations

import asyncio
import operator
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from convostore.integrations.langgraph import ConvostoreSaver

BARRIER_TIMEOUT_S = 60


class ApprovalState(TypedDict):
    """A conversation whose tool call waits for a person's answer."""

    messages: Annotated[list[AnyMessage], add_messages]


def _propose(state: ApprovalState) -> dict[str, Any]:
    call = {"name": "refund", "args": {"amount": 30}, "id": "call-1", "type": "tool_call"}
    return {"messages": [AIMessage("Refund 30?", tool_calls=[call])]}


def _review(state: ApprovalState) -> dict[str, Any]:
    answer = interrupt({"question": "approve the refund?"})
    return {"messages": [ToolMessage(f"answer: {answer}", tool_call_id="call-1")]}


def _close(state: ApprovalState) -> dict[str, Any]:
    return {"messages": [AIMessage("Done.")]}


def approval_graph(saver: ConvostoreSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    """propose -> review (interrupts for an answer) -> close."""
    builder = StateGraph(ApprovalState)
    builder.add_node("propose", _propose)
    builder.add_node("review", _review)
    builder.add_node("close", _close)
    builder.add_edge(START, "propose")
    builder.add_edge("propose", "review")
    builder.add_edge("review", "close")
    builder.add_edge("close", END)
    return builder.compile(checkpointer=saver)


class CounterState(TypedDict):
    """A counter that a loop bumps to ``target``, logging each step."""

    count: int
    target: int
    log: Annotated[list[str], operator.add]


def _bump(state: CounterState) -> dict[str, Any]:
    return {"count": state["count"] + 1, "log": [f"step-{state['count'] + 1}"]}


def _again(state: CounterState) -> str:
    return "bump" if state["count"] < state["target"] else END


def counter_graph(saver: ConvostoreSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    """bump, looping until ``count == target``: one checkpoint per step."""
    builder = StateGraph(CounterState)
    builder.add_node("bump", _bump)
    builder.add_edge(START, "bump")
    builder.add_conditional_edges("bump", _again)
    return builder.compile(checkpointer=saver)


def nested_graph(saver: ConvostoreSaver) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A parent whose ``approval`` node is the approval graph, as a subgraph."""
    inner = StateGraph(ApprovalState)
    inner.add_node("propose", _propose)
    inner.add_node("review", _review)
    inner.add_edge(START, "propose")
    inner.add_edge("propose", "review")
    inner.add_edge("review", END)
    parent = StateGraph(ApprovalState)
    parent.add_node("approval", inner.compile())
    parent.add_node("close", _close)
    parent.add_edge(START, "approval")
    parent.add_edge("approval", "close")
    parent.add_edge("close", END)
    return parent.compile(checkpointer=saver)


async def resume_approval(url: str, thread_id: str, answer: str) -> list[str]:
    """Resume the interrupted approval of ``thread_id`` with ``answer``: the contents of
    the final messages."""
    async with ConvostoreSaver.from_url(url) as saver:
        graph = approval_graph(saver)
        config = {"configurable": {"thread_id": thread_id}}
        result = await graph.ainvoke(Command(resume=answer), config)
        return [str(message.content) for message in result["messages"]]


def resume_in_child(url: str, thread_id: str, answer: str, results: Queue[Any]) -> None:
    """Child process: :func:`resume_approval`, reporting ``("ok", contents)`` or a traceback."""
    try:
        results.put(("ok", asyncio.run(resume_approval(url, thread_id, answer))))
    except BaseException:
        results.put((traceback.format_exc(), None))


async def count_threads(url: str, thread_ids: list[str], target: int) -> None:
    """Run the counter graph to ``target`` on each thread, all at once on one saver."""
    async with ConvostoreSaver.from_url(url) as saver:
        graph = counter_graph(saver)
        await asyncio.gather(
            *(
                graph.ainvoke(
                    {"count": 0, "target": target, "log": []},
                    {"configurable": {"thread_id": thread_id}},
                )
                for thread_id in thread_ids
            )
        )


def count_in_child(
    url: str, thread_ids: list[str], target: int, barrier: Barrier, results: Queue[Any]
) -> None:
    """Child process: wait for the others, then :func:`count_threads`; report as above."""
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
        asyncio.run(count_threads(url, thread_ids, target))
        results.put(("ok", None))
    except BaseException:
        results.put((traceback.format_exc(), None))


def first_message() -> HumanMessage:
    """The person's opening message."""
    return HumanMessage("I was charged twice.")
