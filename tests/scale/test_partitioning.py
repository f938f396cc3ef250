"""The large-tables recipe: hash partitions by scope keep data, behaviour and index use.

Each test gets a database of its own on the PostgreSQL server, migrated through Alembic,
partitioned by :func:`convostore.sql.partitioning.partition_by_scope` and dropped afterwards.
The query-plan test reruns ``tests/backends/test_query_plans.py``'s cases on the
partitioned schema: the same statements must read the same indexes (the partition's
copy of them), in exactly one partition.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, text

from convostore import (
    ConfigurationError,
    ContextMessage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    create_engine,
)
from convostore.sql.partitioning import (
    SCOPES,
    drop_partition,
    partition_by_scope,
    partition_names,
)
from tests.backends.test_query_plans import (
    CASES,
    Captured,
    Case,
    _check,
    capture_plans,
    expect_known_gap,
)
from tests.conftest import create_server_database, drop_database, require_backend, run_sync

pytestmark = pytest.mark.postgresql


@pytest.fixture
async def fresh(request: pytest.FixtureRequest) -> AsyncIterator[URL]:
    require_backend(request.config, "postgresql")
    url = await create_server_database("postgresql")
    try:
        yield url
    finally:
        await drop_database(url)


def message(text_: str) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": text_}])


async def relkinds(url: URL) -> dict[str, str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT relname, relkind::text FROM pg_class WHERE relname = ANY(:names)"),
                {"names": [*SCOPES, *partition_names("context_messages", 4)]},
            )
            return {str(name): str(kind) for name, kind in rows}
    finally:
        await engine.dispose()


async def test_rows_survive_and_writes_go_on(fresh: URL) -> None:
    engine = create_engine(fresh)
    stores = [SQLAlchemyContextStore(engine, project="p", session_id=f"s{n}") for n in range(12)]
    db = SQLAlchemyDatabase(engine=engine, agent_name="a")
    try:
        for n, store in enumerate(stores):
            await store.append_many([message(f"{n}.{i}") for i in range(n + 1)])
            await db.add_message(f"t{n}", "u", "user", message=str(n), client_id=f"c{n}")
        before = [await store.get_messages() for store in stores]
        await partition_by_scope(engine, partitions=4)
        assert await relkinds(fresh) == {
            "context_messages": "p",
            "messages": "p",
            **dict.fromkeys(partition_names("context_messages", 4), "r"),
        }
        assert [await store.get_messages() for store in stores] == before
        # Positions continue from the counters; client ids still catch retries.
        stored = await stores[3].append(message("more"), client_id="again")
        assert stored.position == 4
        assert (await stores[3].append(message("more"), client_id="again")).position == 4
        assert (await db.add_message("t5", "u", "user", message="x", client_id="c5")).idx == 0
        assert [m.idx for m in await db.get_messages("t5", "u")] == [0]
        fork = await stores[11].fork(at=5)
        assert len(await fork.get_history()) == 5
        with pytest.raises(ConfigurationError, match="already partitioned"):
            await partition_by_scope(engine, partitions=4)
    finally:
        await engine.dispose()


async def test_a_partition_drops_whole(fresh: URL) -> None:
    engine = create_engine(fresh)
    try:
        await partition_by_scope(engine, partitions=4, tables=["context_messages"])
        stores = [
            SQLAlchemyContextStore(engine, project="p", session_id=f"s{n}") for n in range(40)
        ]
        for store in stores:
            await store.append(message("x"))
        victim = partition_names("context_messages", 4)[0]
        async with engine.connect() as conn:
            doomed = {
                str(s) for (s,) in await conn.execute(text(f"SELECT session_id FROM {victim}"))
            }
        assert 0 < len(doomed) < 40
        await drop_partition(engine, "context_messages", victim)
        for store in stores:
            expected = 0 if store.session_id in doomed else 1
            assert len(await store.get_history()) == expected
        with pytest.raises(ConfigurationError, match="not a partition"):
            await drop_partition(engine, "context_messages", "context_tokens")
    finally:
        await engine.dispose()


async def test_what_cannot_be_partitioned_is_refused(fresh: URL, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        await partition_by_scope(create_engine(str(tmp_path / "x.db")))
    engine = create_engine(fresh)
    try:
        for partitions in (1, 2000, True):
            with pytest.raises(ConfigurationError, match="partitions"):
                await partition_by_scope(engine, partitions=partitions)
        with pytest.raises(ConfigurationError, match="cannot partition"):
            await partition_by_scope(engine, tables=["users"])
    finally:
        await engine.dispose()


# --- the same queries seek the same indexes ---------------------------------------------


@pytest.fixture(scope="module")
def partitioned_plans(request: pytest.FixtureRequest) -> Iterator[dict[str, Captured]]:
    require_backend(request.config, "postgresql")
    url = run_sync(create_server_database("postgresql"))

    async def capture() -> dict[str, Captured]:
        engine = create_engine(url)
        try:
            await partition_by_scope(engine, partitions=8)
        finally:
            await engine.dispose()
        return await capture_plans("postgresql", url)

    try:
        yield run_sync(capture())
    finally:
        run_sync(drop_database(url))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_partitioned_hot_query_uses_its_index(
    case: Case, partitioned_plans: dict[str, Captured], request: pytest.FixtureRequest
) -> None:
    expect_known_gap(request, (case.id, "postgresql"))
    captured = partitioned_plans[case.id]
    for plan in captured.plans:
        for access in plan.accesses:
            assert access.index is not None, f"{access.table} is read without an index\n{plan}"
            assert access.bounded, f"{access.table} is read whole, through {access.index}\n{plan}"
        # Pruned to the one partition the scope hashes to.
        read = [
            node["Relation Name"]
            for node in _relations(json.loads(plan.raw))
            if node["Node Type"] != "ModifyTable"  # an INSERT's target is the parent
            and node["Relation Name"].rsplit("_p", 1)[0] in SCOPES
        ]
        assert len(set(read)) <= 1, f"reads several partitions: {sorted(set(read))}\n{plan}"
    for check in case.checks:
        if "postgresql" in check.backends:
            _check(check, captured.matching(check.pattern))


def _relations(value: object) -> Iterator[dict[str, str]]:
    """Every plan node that names a relation."""
    if isinstance(value, dict):
        if "Relation Name" in value:
            yield value
        for item in value.values():
            yield from _relations(item)
    elif isinstance(value, list):
        for item in value:
            yield from _relations(item)
