"""convostore's URL options: parsed, checked, applied to the pool, hidden from the driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from convostore import SQLAlchemyDatabase, create_engine
from convostore.errors import ConfigurationError
from convostore.sql.options import DEFAULT_DEADLINE_S, parse_deadline
from convostore.sql.profile import profile_of
from convostore.sql.runner import TransactionRunner
from convostore.sql.types import writes_search_index
from tests.conftest import _servers, require_backend


def pool_settings(url: str, **kwargs: Any) -> dict[str, Any]:
    pool: Any = create_engine(url, **kwargs).sync_engine.pool
    return {
        "size": pool.size(),
        "overflow": pool._max_overflow,
        "timeout": pool._timeout,
        "recycle": pool._recycle,
        "pre_ping": pool._pre_ping,
    }


def test_pool_settings_come_from_the_url() -> None:
    url = (
        "postgresql://u@h/db?pool_size=3&max_overflow=7&pool_timeout=2.5"
        "&pool_recycle=600&pool_pre_ping=true"
    )
    assert pool_settings(url) == {
        "size": 3,
        "overflow": 7,
        "timeout": 2.5,
        "recycle": 600,
        "pre_ping": True,
    }


def test_arguments_override_the_url() -> None:
    settings = pool_settings("mysql://u@h/db?pool_size=3&pool_pre_ping=false", pool_size=9)
    assert (settings["size"], settings["pre_ping"]) == (9, False)


def test_pools_without_a_size_ignore_the_size_options() -> None:
    engine = create_engine("postgresql://u@h/db?pool_size=3&pool_recycle=60", poolclass=NullPool)
    assert isinstance(engine.sync_engine.pool, NullPool)
    assert engine.sync_engine.pool._recycle == 60


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("pool_size=0", "pool_size='0'"),
        ("pool_size=many", "not a number"),
        ("max_overflow=-2", "max_overflow='-2'"),
        ("pool_timeout=nan", "pool_timeout='nan'"),
        ("pool_pre_ping=maybe", "use true or false"),
        ("search_index=sometimes", "use true or false"),
        ("deadline=-1", "deadline=-1.0"),
        ("deadline=soon", "expected seconds"),
        ("deadline=inf", "finite"),
        ("deadline=1&deadline=2", "more than once"),
    ],
)
def test_unusable_values_are_refused(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_engine(f"postgresql://u:secret@h/db?{query}")


def test_search_index_comes_from_the_url_or_the_argument() -> None:
    assert writes_search_index(create_engine("postgresql://u@h/db"))
    assert not writes_search_index(create_engine("postgresql://u@h/db?search_index=off"))
    assert writes_search_index(
        create_engine("postgresql://u@h/db?search_index=false", search_index=True)
    )
    assert not writes_search_index(create_engine("sqlite+aiosqlite://", search_index=False))
    # The driver never sees it.
    assert "search_index" not in str(create_engine("sqlite+aiosqlite:///x.db?search_index=0").url)


def test_deadlines() -> None:
    assert profile_of(create_engine("postgresql://u@h/db")).deadline == DEFAULT_DEADLINE_S
    assert TransactionRunner(create_engine("postgresql://u@h/db?deadline=2.5")).deadline == 2.5
    assert TransactionRunner(create_engine("postgresql://u@h/db?deadline=0")).deadline is None
    assert TransactionRunner(create_engine("postgresql://u@h/db?deadline=off")).deadline is None
    assert TransactionRunner(create_engine("postgresql://u@h/db", deadline=4)).deadline == 4.0
    # The argument wins over the URL; engines made elsewhere get the default.
    assert (
        TransactionRunner(create_engine("postgresql://u@h/db?deadline=1", deadline=0)).deadline
        is None
    )
    assert profile_of(create_async_engine("postgresql+asyncpg://u@h/db")).deadline == (
        DEFAULT_DEADLINE_S
    )
    assert parse_deadline(None) is None
    with pytest.raises(ConfigurationError):
        parse_deadline(True)


async def test_sqlite_busy_timeout_never_exceeds_the_deadline(tmp_path: Path) -> None:
    for deadline, busy in ((0.25, 250), (60, 5000), (0, 5000)):
        engine = create_engine(str(tmp_path / "x.db"), deadline=deadline)
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() == busy
        finally:
            await engine.dispose()


async def test_the_driver_never_sees_the_options(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db?deadline=5&pool_size=2&pool_recycle=60"
    engine = create_engine(url.replace("sqlite:///", "sqlite+aiosqlite:///"), fast_sqlite=False)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
async def test_server_drivers_never_see_the_options(
    backend: str, request: pytest.FixtureRequest
) -> None:
    require_backend(request.config, backend)
    url = _servers[backend].url
    assert url is not None
    options = {"deadline": "5", "pool_size": "2", "pool_recycle": "60", "pool_pre_ping": "1"}
    engine = create_engine(url.update_query_dict(options))
    db = SQLAlchemyDatabase(engine=engine, agent_name="opts")
    try:
        assert (await db.get_user("u")).available_balance == 0
    finally:
        await engine.dispose()
