"""Tool calls and their results, so that a "latest N" window never splits one from the other.

A model provider rejects a request whose history starts with a tool result whose call was
cut off (HTTP 400), and a session that keeps sending that window cannot recover. So the
latest-N reads (:meth:`convostore.interfaces.ContextStore.get_last`, the adapters' limits
built on it, and ADK's ``num_recent_events``) widen their window back to the call of every
result it holds. A call's results always come after it, so a window that ends at the
newest message holds every stored result of every call it holds.

:func:`tool_ids` recognises the content blocks each adapter stores (call, then result):

* axio (Anthropic-like blocks): ``{"type": "tool_use", "id"}``, then
  ``{"type": "tool_result", "tool_use_id"}``;
* OpenAI Agents SDK items: ``{"type": "function_call", "call_id"}`` (or another
  ``*_call`` item), then ``{"type": "function_call_output", "call_id"}`` (``*_call_output``);
* LangChain (``message_to_dict``): ``{"type": "ai", "data": {"tool_calls": [{"id"}]}}``,
  then ``{"type": "tool", "data": {"tool_call_id"}}``;
* pydantic-ai messages: a part ``{"part_kind": "tool-call", "tool_call_id"}``, then a part
  ``"tool-return"`` or ``"retry-prompt"`` with the same ``tool_call_id``;
* Google ADK events: ``content.parts[].function_call.id``, then
  ``content.parts[].function_response.id``.

A result whose call is not stored at all cannot be paired; it is returned as it is.
Pure: no SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from convostore.errors import ValidationError

__all__ = ["Pairing", "check_exact", "tool_ids", "widened_start"]


def check_exact(exact: object) -> None:
    """``exact=`` of the latest-N reads must be a bool."""
    if type(exact) is not bool:
        raise ValidationError(f"exact must be a bool, not {type(exact).__name__}")


def tool_ids(content: Iterable[Any]) -> tuple[set[str], set[str]]:
    """The ids of the tool calls and of the tool results in one message's content blocks."""
    calls: set[str] = set()
    results: set[str] = set()
    for block in content:
        if isinstance(block, Mapping):
            _collect(block, calls, results)
    return calls, results


def _collect(block: Mapping[str, Any], calls: set[str], results: set[str]) -> None:
    """Add the call and result ids of one content block, whichever framework wrote it."""
    _collect_typed(block, calls, results)
    parts = block.get("parts")
    if isinstance(parts, list):
        _collect_pydantic_ai(parts, calls, results)
    content = block.get("content")
    if isinstance(content, Mapping) and isinstance(content.get("parts"), list):
        _collect_adk(content["parts"], calls, results)


def _collect_typed(block: Mapping[str, Any], calls: set[str], results: set[str]) -> None:
    """Blocks told apart by their ``type``: Anthropic-style and OpenAI Responses items,
    and LangChain's serialized messages."""
    kind = block.get("type")
    if kind == "tool_use":
        _add(calls, block.get("id"))
    elif kind == "tool_result":
        _add(results, block.get("tool_use_id"))
    elif isinstance(kind, str) and kind.endswith("_call_output"):
        _add(results, block.get("call_id"))
    elif isinstance(kind, str) and kind.endswith("_call"):
        _add(calls, block.get("call_id"))
    elif kind in ("ai", "AIMessageChunk", "tool") and isinstance(block.get("data"), Mapping):
        data = block["data"]
        if kind == "tool":
            _add(results, data.get("tool_call_id"))
        else:
            for call in data.get("tool_calls") or ():
                if isinstance(call, Mapping):
                    _add(calls, call.get("id"))


def _collect_pydantic_ai(parts: list[Any], calls: set[str], results: set[str]) -> None:
    """Pydantic AI's message parts, told apart by their ``part_kind``."""
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        part_kind = part.get("part_kind")
        if part_kind == "tool-call":
            _add(calls, part.get("tool_call_id"))
        elif part_kind in ("tool-return", "retry-prompt"):
            _add(results, part.get("tool_call_id"))


def _collect_adk(parts: list[Any], calls: set[str], results: set[str]) -> None:
    """A Google ADK event's parts: function calls and responses share an id."""
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        call, response = part.get("function_call"), part.get("function_response")
        if isinstance(call, Mapping):
            _add(calls, call.get("id"))
        if isinstance(response, Mapping):
            _add(results, response.get("id"))


def _add(ids: set[str], value: object) -> None:
    if isinstance(value, str) and value:
        ids.add(value)


class Pairing:
    """Walks a window backwards from its newest message and says where it may start.

    Feed it the window's messages newest first (:meth:`add`); :attr:`complete` is true
    once every result seen has its call among the messages seen. The window of the
    latest N messages is then widened by feeding older messages until it is complete (or
    the history runs out: the calls missing were never stored).
    """

    def __init__(self) -> None:
        self._calls: set[str] = set()
        self._waiting: set[str] = set()

    def add(self, content: Iterable[Any]) -> None:
        """The content of the next older message."""
        calls, results = tool_ids(content)
        self._calls |= calls
        self._waiting = (self._waiting | results) - self._calls

    @property
    def complete(self) -> bool:
        """Every result seen so far has its call among the messages seen."""
        return not self._waiting


def widened_start(contents: Sequence[Iterable[Any]], count: int) -> int:
    """Where the window of the last ``count`` of ``contents`` must start to split no pair:
    ``len(contents) - count``, or earlier to take in the call of every result the window
    holds (results whose call is not in ``contents`` at all stay unpaired)."""
    ids = [tool_ids(content) for content in contents]
    call_at: dict[str, int] = {}
    for index, (calls, _) in enumerate(ids):
        for call in calls:
            call_at.setdefault(call, index)
    start = max(len(contents) - count, 0)
    index = len(contents) - 1
    # Widening takes in older messages, whose own results may reach further back.
    while index >= start:
        for result in ids[index][1]:
            start = min(start, call_at.get(result, start))
        index -= 1
    return start
