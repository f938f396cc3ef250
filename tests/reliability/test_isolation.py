"""Isolation: one tenant's store or database cannot reach another's rows, by any method.

A victim project/session and a victim agent hold data. Attackers are scoped by crafted
ids: SQL ``LIKE`` patterns (``%``, ``_``), the victim's id in another case, with a
trailing or leading character, with quotes and SQL comments. Every public method is called
through each attacker; none may return, count, fork from, clear or change a victim row,
which must be byte-for-byte what it was afterwards. Ids that cannot be stored exactly
(trailing whitespace) are refused with ``ValidationError`` instead.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import ContextMessage, SQLAlchemyContextStore, SQLAlchemyDatabase, User
from convostore.errors import InsufficientBalance, ValidationError
from tests.reliability.helpers import snapshot

VICTIM = "victim"


def crafted(victim: str) -> list[str]:
    """Ids an attacker might use to reach ``victim``'s rows."""
    return [
        "%",
        "_",
        "%%",
        victim[:-1] + "_",
        victim[:3] + "%",
        "%" + victim[3:],
        victim.upper(),
        victim.capitalize(),
        victim + "x",
        "x" + victim,
        victim + "%",
        victim + "\\",
        victim + "'",
        victim + '"',
        f"{victim}' OR '1'='1",
        f"{victim}'; --",
        "' OR 1=1 --",
        "*",
        victim + "\u200b",  # zero-width space
        victim.replace("i", "\u0131"),  # dotless i
    ]


REFUSED = ["victim ", "victim\t", "victim\n", "victim\x00"]


def secret(i: int) -> ContextMessage:
    return ContextMessage(role="user", content=[{"type": "text", "text": f"victim secret {i}"}])


async def probe_store(attacker: SQLAlchemyContextStore) -> None:
    """Every method of the context store, through ``attacker``: nothing of the victim shows."""
    assert await attacker.get_history() == []
    assert await attacker.get_last(10) == []
    assert await attacker.get_context_tokens() == (0, 0)
    if attacker.project != VICTIM:
        assert await attacker.list_sessions() == []
    assert await attacker.pop() is None
    fork = await attacker.fork()
    assert await fork.get_history() == []
    assert await fork.get_context_tokens() == (0, 0)
    await fork.clear()
    await attacker.clear()
    await attacker.add_context_tokens(1, 1)
    await attacker.append(ContextMessage(role="user", content=[{"type": "text", "text": "mine"}]))
    await attacker.replace_history([ContextMessage(role="assistant", content=[])])
    assert len(await attacker.get_history()) == 1
    await attacker.clear()


async def test_context_stores_cannot_reach_another_project_or_session(
    engine: AsyncEngine,
) -> None:
    victim = SQLAlchemyContextStore(engine, project=VICTIM, session_id=VICTIM)
    await victim.append_many([secret(i) for i in range(3)])
    await victim.set_context_tokens(100, 200)
    neighbour = victim.with_session("neighbour")  # same project, another session
    await neighbour.append(secret(9))
    before = await snapshot(engine)

    attackers: list[SQLAlchemyContextStore] = []
    for value in crafted(VICTIM):
        attackers.append(SQLAlchemyContextStore(engine, project=value, session_id=VICTIM))
        attackers.append(SQLAlchemyContextStore(engine, project=VICTIM, session_id=value))
        attackers.append(SQLAlchemyContextStore(engine, project=value, session_id=value))
    for attacker in attackers:
        await probe_store(attacker)
        if attacker.project == VICTIM:
            listed = {s.session_id: s.message_count for s in await attacker.list_sessions()}
            assert listed == {VICTIM: 3, "neighbour": 1}, "same project: the project's own list"

    for value in REFUSED:
        with pytest.raises(ValidationError):
            SQLAlchemyContextStore(engine, project=value, session_id=VICTIM)
        with pytest.raises(ValidationError):
            victim.with_session(value)

    assert await snapshot(engine) == before
    assert [m.content for m in await victim.get_history()] == [secret(i).content for i in range(3)]


async def probe_database(attacker: SQLAlchemyDatabase, user: str, thread: str) -> None:
    """Every method of the agent database, through ``attacker``: nothing of the victim shows."""
    assert await attacker.get_user(user) == User(user_id=user)
    assert await attacker.get_current_thread_id(user) is None
    assert await attacker.get_messages(thread, user) == []
    assert await attacker.get_messages(thread, user, reverse=True, limit=100) == []
    with pytest.raises(InsufficientBalance):
        await attacker.debit(user, 1)
    assert await attacker.credit(user, 1) == 1
    assert await attacker.debit(user, 1) == 0
    message = await attacker.add_message(thread, user, "user", message="mine")
    assert message.idx == 0, "the attacker's thread numbering is its own"
    await attacker.set_current_thread_id(user, thread)
    await attacker.upsert_user(User(user_id=user, available_balance=5))


async def test_agent_databases_cannot_reach_another_agent_user_or_thread(
    engine: AsyncEngine,
) -> None:
    victim = SQLAlchemyDatabase(engine=engine, agent_name=VICTIM)
    await victim.upsert_user(User(user_id=VICTIM, available_balance=1000, current_thread_id=VICTIM))
    for i in range(3):
        await victim.add_message(VICTIM, VICTIM, "user", message=f"victim secret {i}")
    before = await snapshot(engine)
    victim_rows = {table: list(rows) for table, rows in before.items()}

    for value in crafted(VICTIM):
        # Another agent with the victim's user and thread ids.
        await probe_database(SQLAlchemyDatabase(engine=engine, agent_name=value), VICTIM, VICTIM)
        # The default agent (None), with crafted user and thread ids.
        await probe_database(SQLAlchemyDatabase(engine=engine, agent_name=None), value, value)
        # The victim's own agent, reaching with crafted user or thread ids.
        same_agent = SQLAlchemyDatabase(engine=engine, agent_name=VICTIM)
        assert await same_agent.get_messages(VICTIM, value) == []
        assert await same_agent.get_messages(value, VICTIM) == []
        assert await same_agent.get_user(value) == User(user_id=value)
        with pytest.raises(InsufficientBalance):
            await same_agent.debit(value, 1)

    for value in REFUSED:
        with pytest.raises(ValidationError):
            SQLAlchemyDatabase(engine=engine, agent_name=value)
        with pytest.raises(ValidationError):
            await victim.get_user(value)
    with pytest.raises(ValidationError):
        SQLAlchemyDatabase(engine=engine, agent_name="")

    after = await snapshot(engine)
    for table, rows in victim_rows.items():
        victim_after = [row for row in after[table] if row[0] == VICTIM]
        assert victim_after == [row for row in rows if row[0] == VICTIM], table
    user = await victim.get_user(VICTIM)
    assert (user.available_balance, user.current_thread_id) == (1000, VICTIM)
    assert [m.message for m in await victim.get_messages(VICTIM, VICTIM)] == [
        f"victim secret {i}" for i in range(3)
    ]
