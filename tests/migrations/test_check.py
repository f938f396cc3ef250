"""``migrate.check()``: the revision and the schema compared with this convostore."""

from __future__ import annotations

from sqlalchemy import URL

from convostore import migrate
from tests.migrations.conftest import execute


async def test_check_at_head_below_head_and_with_drift(empty_url: URL) -> None:
    empty = await migrate.check(empty_url)
    assert (empty.current, empty.at_head, empty.ok) == (None, False, False)
    assert empty.head == migrate.head()

    await migrate.upgrade(empty_url)
    at_head = await migrate.check(empty_url)
    assert (at_head.current, at_head.drift, at_head.ok) == (migrate.head(), None, True)

    # An index dropped by hand: at head by its revision, yet not the schema of the models.
    await execute(
        empty_url,
        "DROP INDEX ix_messages_agent_name_user_id_thread_id"
        + (" ON messages" if empty_url.get_backend_name() in ("mysql", "mariadb") else ""),
    )
    drifted = await migrate.check(empty_url)
    assert drifted.at_head
    assert not drifted.ok
    assert drifted.drift is not None
    assert "ix_messages_agent_name_user_id_thread_id" in drifted.drift

    await migrate.downgrade(empty_url, "-1")
    below = await migrate.check(empty_url)
    assert (below.at_head, below.drift, below.ok) == (False, None, False)
