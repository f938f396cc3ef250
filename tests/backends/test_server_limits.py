"""Server limits that no retry can overcome: refused with ``ValidationError``, never
passed off as a transient ``DatabaseError``.

* MariaDB's ``max_allowed_packet`` (16 MiB by default): before the fix a 24 MiB payload,
  under convostore's 64 MiB maximum, failed with "(2006) MySQL server has gone away".
  The engine now reads the setting at start-up and measures each statement before
  sending it.
* PostgreSQL's program limits (SQLSTATE class 54: an index row too large, too many
  arguments) are translated to ``ValidationError``, and are not retried.
"""

from __future__ import annotations

import base64
import os

import pytest
from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError

from convostore import ContextMessage, SQLAlchemyContextStore, ValidationError, create_engine
from convostore.sql.retry import is_retryable, translate_errors
from tests.conftest import require_backend, server_database

MIB = 1024 * 1024


def database(request: pytest.FixtureRequest, name: str) -> URL:
    require_backend(request.config, name)
    url = server_database(name).url
    assert url is not None
    return url


@pytest.fixture
def mariadb(request: pytest.FixtureRequest) -> URL:
    return database(request, "mariadb")


@pytest.fixture
def postgresql(request: pytest.FixtureRequest) -> URL:
    return database(request, "postgresql")


def incompressible_text(size: int) -> str:
    # Random bytes in base64: the codec's compression keeps about three quarters of it.
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


async def test_a_payload_over_max_allowed_packet_is_refused_before_sending(mariadb: URL) -> None:
    store = SQLAlchemyContextStore(url=mariadb, session_id="packet")
    try:
        await store.append(ContextMessage(role="user"))  # started: the limit is known
        big = ContextMessage(
            role="user", content=[{"type": "text", "text": incompressible_text(24 * MIB)}]
        )
        with pytest.raises(ValidationError, match="max_allowed_packet of 16777216 bytes"):
            await store.append(big)
        with pytest.raises(ValidationError, match="max_allowed_packet"):
            await store.append_many([ContextMessage(role="user"), big])
        # Nothing was sent, so the connection is fine and nothing was stored.
        await store.append(ContextMessage(role="assistant"))
        assert [m.role for m in await store.get_history()] == ["user", "assistant"]
        # Under the limit is stored.
        fits = incompressible_text(8 * MIB)
        await store.append(ContextMessage(role="user", content=[{"type": "text", "text": fits}]))
        history = await store.get_history()
        assert history[-1].content == [{"type": "text", "text": fits}]
    finally:
        await store.close()


async def test_a_program_limit_on_postgresql_is_a_validation_error(postgresql: URL) -> None:
    engine = create_engine(postgresql)
    try:
        async with engine.connect() as conn:
            arguments = ", ".join(str(n) for n in range(101))
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(text(f"SELECT concat({arguments})"))
        assert not is_retryable(caught.value)
        limit = pytest.raises(ValidationError, match="beyond a limit of the database server")
        with limit, translate_errors():
            raise caught.value
    finally:
        await engine.dispose()
