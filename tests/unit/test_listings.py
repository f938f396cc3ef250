"""convostore.transfer.listings: the listings behind the CLI read only what they show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from convostore import ContextMessage, SQLAlchemyContextStore, connect
from convostore.transfer import list_sessions


async def test_one_projects_sessions_are_limited_in_sql(tmp_path: Path) -> None:
    engine = await connect(tmp_path / "l.db")
    try:
        for i in range(5):
            store = SQLAlchemyContextStore(engine, project="/p", session_id=f"s{i}")
            await store.append(
                ContextMessage(role="user", content=[{"type": "text", "text": f"hello {i}"}])
            )
        seen: list[tuple[str, Any]] = []
        event.listen(
            engine.sync_engine,
            "before_cursor_execute",
            lambda c, cu, sql, params, *a: seen.append((sql, params)),
        )
        rows = await list_sessions(engine, project="/p", limit=2)
        assert [row.session_id for row in rows] == ["s4", "s3"]
        (listing,) = [(sql, params) for sql, params in seen if "context_tokens" in sql]
        assert "LIMIT" in listing[0]
        assert 2 in listing[1]
        everything = await list_sessions(engine, project="/p")
        assert len(everything) == 5
    finally:
        await engine.dispose()
