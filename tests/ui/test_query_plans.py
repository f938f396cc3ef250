"""EXPLAIN on every SQL backend: the viewer's reads (convostore.transfer.browse) seek
through their indexes, with the machinery of tests/backends/test_query_plans.py.

The same database (filled through the public API), the same recording of what each call
really sends, the same reduction of each backend's plan: every table read goes through an
index with at least one column bounded, and the named reads go through the index the
page was built on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore.sql.engine import create_engine
from convostore.transfer import browse
from tests.backends.test_query_plans import (
    AGENT,
    LONG_SESSION,
    PRIMARY,
    PROJECT,
    SESSION_KEY,
    THREAD,
    THREAD_KEY,
    Captured,
    Check,
    Explainer,
    _check,
    fill,
    recording,
)

Call = Callable[[AsyncEngine], Awaitable[object]]


@dataclass(frozen=True)
class Case:
    id: str
    call: Call
    checks: tuple[Check, ...]


CASES = (
    Case(
        "context_page(after=p)",
        lambda e: browse.context_page(e, project=PROJECT, session_id=LONG_SESSION, after=120),
        (
            Check(
                r"FROM context_messages",
                "context_messages",
                (PRIMARY,),
                (*SESSION_KEY, "position"),
            ),
        ),
    ),
    Case(
        "context_page(before=p)",
        lambda e: browse.context_page(e, project=PROJECT, session_id=LONG_SESSION, before=250),
        (
            Check(
                r"FROM context_messages",
                "context_messages",
                (PRIMARY,),
                (*SESSION_KEY, "position"),
            ),
        ),
    ),
    Case(
        "session_summary",
        lambda e: browse.session_summary(e, project=PROJECT, session_id=LONG_SESSION),
        (Check(r"FROM context_tokens", "context_tokens", (PRIMARY,), SESSION_KEY),),
    ),
    Case(
        "thread_page(after=i)",
        lambda e: browse.thread_page(e, agent=AGENT, thread_id=THREAD, after=3),
        (Check(r"FROM messages", "messages", (PRIMARY,), (*THREAD_KEY, "idx")),),
    ),
    Case(
        "thread_summary",
        lambda e: browse.thread_summary(e, agent=AGENT, thread_id=THREAD),
        (Check(r"FROM threads", "threads", (PRIMARY,), THREAD_KEY),),
    ),
    Case(
        "list_users(after=u)",
        lambda e: browse.list_users(e, agent=AGENT, after="user-0"),
        (Check(r"FROM users", "users", (PRIMARY,), ("agent_name",)),),
    ),
    # The loose index scans: each value one seek, whatever the number of rows.
    Case("list_projects", lambda e: browse.list_projects(e, after="project-0"), ()),
    Case("list_agents", lambda e: browse.list_agents(e), ()),
)


async def capture_plans(backend: str, url: URL) -> dict[str, Captured]:
    engine = create_engine(url)
    try:
        await fill(engine)
        async with engine.connect() as conn:
            if backend == "postgresql":
                await conn.exec_driver_sql("ANALYZE")
                await conn.commit()
            elif backend == "mariadb":
                tables = "context_tokens, context_messages, threads, messages, users"
                (await conn.exec_driver_sql(f"ANALYZE TABLE {tables}")).all()
        sent: dict[str, list[tuple[str, Any]]] = {}
        for case in CASES:
            with recording(engine) as sent[case.id]:
                await case.call(engine)
        captured = {}
        async with engine.connect() as conn:
            explainer = Explainer(conn, backend)
            await explainer.load_schema()
            for case in CASES:
                captured[case.id] = Captured([await explainer.explain(*s) for s in sent[case.id]])
            await conn.rollback()
        return captured
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def plan_cache() -> dict[str, dict[str, Captured]]:
    return {}


@pytest.fixture
async def plans(
    backend: str, db_url: URL, plan_cache: dict[str, dict[str, Captured]]
) -> dict[str, Captured]:
    if backend not in plan_cache:
        plan_cache[backend] = await capture_plans(backend, db_url)
    return plan_cache[backend]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_browse_reads_seek_their_index(
    case: Case, backend: str, plans: dict[str, Captured]
) -> None:
    captured = plans[case.id]
    assert captured.plans, "nothing was sent"
    for plan in captured.plans:
        for access in plan.accesses:
            assert access.index is not None, f"{access.table} is read without an index\n{plan}"
            assert access.bounded, f"{access.table} is read whole, through {access.index}\n{plan}"
    for check in case.checks:
        if backend in check.backends:
            _check(check, captured.matching(check.pattern))
