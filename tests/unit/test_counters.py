"""convostore.sql.counters: statements built once, keyed on everything that shapes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, UniqueConstraint, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from convostore.sql.counters import bump_counter, update_site

metadata = MetaData()
# Two unique keys, so the key of the upsert (ON CONFLICT (...)) is visible in its SQL.
tallies = Table(
    "tallies",
    metadata,
    Column("a", String, primary_key=True),
    Column("b", String, primary_key=True),
    Column("n", Integer, nullable=False),
    Column("note", String),
    UniqueConstraint("a", name="one_per_a"),
)


async def _engine(path: Path) -> tuple[AsyncEngine, list[str]]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    seen: list[str] = []
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda c, cu, sql, *a: seen.append(sql)
    )
    return engine, seen


def _keep_note(new: Any) -> dict[str, Any]:
    return {"note": new.note}


async def test_the_upsert_key_is_part_of_the_statement_key(tmp_path: Path) -> None:
    """The same columns split differently between key and inserted values are two
    statements: keyed on the column list alone, the second call ran the first's upsert."""
    engine, seen = await _engine(tmp_path / "k.db")
    try:
        async with engine.begin() as conn:
            first = await bump_counter(
                conn, tallies, {"a": "x", "b": "1"}, counter="n", n=2, also_update=_keep_note
            )
            second = await bump_counter(
                conn,
                tallies,
                {"a": "x"},
                counter="n",
                n=3,
                insert_values={"b": "1"},
                also_update=_keep_note,
            )
        assert (first, second) == (2, 5)
        conflicts = [sql[sql.index("ON CONFLICT") :].split(")")[0] for sql in seen]
        assert conflicts == ["ON CONFLICT (a, b", "ON CONFLICT (a"]
    finally:
        await engine.dispose()


async def test_an_update_that_captures_values_is_refused(tmp_path: Path) -> None:
    """A closure is keyed on its code but builds from what it captured: refused, since the
    statement it shaped first would be reused for every later value."""
    engine, _ = await _engine(tmp_path / "c.db")
    note = "captured"
    try:
        async with engine.begin() as conn:
            with pytest.raises(TypeError, match="captures nothing"):
                await bump_counter(
                    conn,
                    tallies,
                    {"a": "x", "b": "1"},
                    counter="n",
                    n=1,
                    also_update=lambda new: {"note": note},
                )
    finally:
        await engine.dispose()


def test_plain_functions_are_keyed_on_their_code() -> None:
    assert update_site(None) is None
    assert update_site(_keep_note) is _keep_note.__code__
    assert update_site(lambda new: {"note": new.note}) is not None

    def with_default(new: Any, extra: int = 1) -> dict[str, Any]:
        return {}

    with pytest.raises(TypeError):
        update_site(with_default)
