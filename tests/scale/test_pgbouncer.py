"""PgBouncer in transaction pooling mode: what the URL parameter changes, measured.

The contract, concurrency, fault and concurrent-migration suites run through the same
PgBouncer (the ``pgbouncer`` backend, see ``tests/conftest.py``). These tests reproduce
the measurement of issue 16 — 16 tasks x 50 appends through the public API — and show
that the PgBouncer really pools by transaction: without ``?pgbouncer=transaction`` the
same run loses calls to "prepared statement ... does not exist / already exists", with
it every call is stored.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import URL

from convostore import (
    ConfigurationError,
    ContextMessage,
    DatabaseError,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    create_engine,
)
from convostore.sql.pgbouncer import runs_in_transactions
from tests.conftest import _servers, empty_tables, require_backend

TASKS = 16
EACH = 50


@pytest.fixture
async def bouncer_url(request: pytest.FixtureRequest) -> URL:
    """This session's migrated, emptied database, through PgBouncer."""
    require_backend(request.config, "pgbouncer")
    url = _servers["pgbouncer"].url
    assert url is not None
    await empty_tables(url)
    return url


async def append_from_tasks(url: URL, tasks: int, each: int) -> tuple[int, list[BaseException]]:
    """``tasks`` tasks appending ``each`` messages to their own sessions; (stored, errors).

    Each task has an engine of its own: PgBouncer sees as many clients as there are
    tasks, sharing its server connections (one engine would group-commit their appends
    into one transaction at a time).
    """
    engines = [create_engine(url, pool_size=1, max_overflow=0) for _ in range(tasks)]
    errors: list[BaseException] = []

    async def task(n: int) -> None:
        store = SQLAlchemyContextStore(engines[n], project="bounced", session_id=f"s{n}")
        for i in range(each):
            try:
                await store.append(ContextMessage(role="user", content=[{"i": i}]))
            except DatabaseError as exc:
                errors.append(exc)

    try:
        await asyncio.gather(*(task(n) for n in range(tasks)))
        reader = SQLAlchemyContextStore(engines[0], project="bounced")
        stored = 0
        for n in range(tasks):
            history = await reader.with_session(f"s{n}").get_messages()
            # Whatever failed, positions stay gap-free: availability broke, not integrity.
            assert [m.position for m in history] == list(range(len(history)))
            stored += len(history)
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))
    return stored, errors


async def test_every_append_is_stored_through_transaction_pooling(bouncer_url: URL) -> None:
    stored, errors = await append_from_tasks(bouncer_url, TASKS, EACH)
    assert errors == []
    assert stored == TASKS * EACH


async def test_without_the_parameter_the_pooler_breaks_calls(bouncer_url: URL) -> None:
    # The control: the same PgBouncer, addressed as if it were PostgreSQL itself.
    plain = bouncer_url.difference_update_query(["pgbouncer"])
    stored, errors = await append_from_tasks(plain, TASKS, 20)
    assert errors, "PgBouncer is not pooling by transaction: the test proves nothing"
    assert all(isinstance(exc, DatabaseError) for exc in errors)
    assert "prepared statement" in " ".join(str(exc) for exc in errors)
    assert stored <= TASKS * 20


async def test_the_agent_database_works_through_transaction_pooling(bouncer_url: URL) -> None:
    engines = [create_engine(bouncer_url, pool_size=2, max_overflow=0) for _ in range(8)]
    dbs = [SQLAlchemyDatabase(engine=engine, agent_name="bounced") for engine in engines]
    try:
        added = await asyncio.gather(
            *(dbs[n % 8].add_message("t", "u", "user", message=str(n)) for n in range(40))
        )
        assert sorted(m.idx for m in added) == list(range(40))
        await asyncio.gather(*(dbs[n % 8].credit("u", 1) for n in range(40)))
        assert (await dbs[0].get_user("u")).available_balance == 40
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))


def test_the_parameter_marks_the_engine(bouncer_url: URL) -> None:
    assert runs_in_transactions(create_engine(bouncer_url))
    assert not runs_in_transactions(
        create_engine(bouncer_url.difference_update_query(["pgbouncer"]))
    )
    session_mode = bouncer_url.update_query_dict({"pgbouncer": "session"})
    assert not runs_in_transactions(create_engine(session_mode))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@h/db?pgbouncer=statement", "statement pooling"),
        ("postgresql://u@h/db?pgbouncer=yes", "pgbouncer='yes'"),
        ("mysql://u@h/db?pgbouncer=transaction", "PostgreSQL URLs only"),
    ],
)
def test_unusable_pooler_settings_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_engine(url)
