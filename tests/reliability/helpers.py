"""Shared helpers of the reliability suites: exact comparisons and raw table snapshots."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Children last, so the order also reads as "what a cascade would empty".
TABLES = ("users", "threads", "messages", "context_tokens", "context_messages")
_ORDER = {
    "users": "agent_name, user_id",
    "threads": "agent_name, thread_id",
    "messages": "agent_name, thread_id, idx",
    "context_tokens": "project, session_id",
    "context_messages": "project, session_id, position",
}

Snapshot = dict[str, list[tuple[Any, ...]]]


def tagged(value: Any) -> Any:
    """``value`` with the type of every scalar attached, so ``1``, ``1.0`` and ``True`` differ.

    Floats are tagged with ``repr`` so ``-0.0`` and ``0.0`` differ too. Tuples and lists
    compare alike (tuples are stored as lists).
    """
    kind = type(value)
    if kind is dict:
        return ("dict", sorted((key, tagged(child)) for key, child in value.items()))
    if kind is list or kind is tuple:
        return ("list", [tagged(child) for child in value])
    if kind is float:
        return ("float", repr(value))
    return (kind.__name__, value)


def same_json(left: Any, right: Any) -> bool:
    """Whether two JSON values are equal including the type of every scalar."""
    return bool(tagged(left) == tagged(right))


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


async def snapshot(engine: AsyncEngine) -> Snapshot:
    """Every row of the five tables, by plain SELECTs, in key order."""
    result: Snapshot = {}
    async with engine.connect() as conn:
        for table in TABLES:
            rows = await conn.execute(text(f"SELECT * FROM {table} ORDER BY {_ORDER[table]}"))
            result[table] = [tuple(_plain(v) for v in row) for row in rows]
    return result


def row_count(snap: Snapshot) -> int:
    """How many rows a snapshot holds in all."""
    return sum(len(rows) for rows in snap.values())
