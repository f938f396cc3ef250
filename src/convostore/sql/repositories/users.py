"""Users of one agent: balance and current thread."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    select,
    update,
)

from convostore.models import (
    User,
)
from convostore.sql.counters import bump_counter
from convostore.sql.dml import Executor, family_of, upsert
from convostore.sql.repositories.rows import _users
from convostore.sql.runner import TransactionRunner

__all__ = ["UserRepository", "credit"]


async def credit(
    runner: TransactionRunner, agent_key: str, user_id: str, amount: int, now: datetime
) -> int:
    """Credit a user in a transaction of its own; return the new balance.

    The credit is the transaction's one statement, so its commit rides along with it on
    SQLite's thin driver (:mod:`convostore.sql.sqlite_driver`).
    """
    return await runner.run(
        lambda executor: UserRepository(executor, agent_key)._credit(
            user_id, amount, now, last=True
        )
    )


class UserRepository:
    """Users of one agent."""

    def __init__(self, session: Executor, agent_key: str) -> None:
        self._session = session
        self._agent = agent_key
        self._kind = family_of(session)

    def _key(self, user_id: str) -> tuple[Any, ...]:
        return (_users.c.agent_name == self._agent, _users.c.user_id == user_id)

    async def get_or_none(self, user_id: str) -> User | None:
        """The stored user, or ``None``."""
        stmt = select(_users.c.available_balance, _users.c.current_thread_id).where(
            *self._key(user_id)
        )
        row = (await self._session.execute(stmt)).one_or_none()
        if row is None:
            return None
        return User(
            user_id=user_id, available_balance=row.available_balance, current_thread_id=row[1]
        )

    async def upsert(self, user: User, now: datetime) -> None:
        """Create the user or overwrite its balance and current thread (agentstr's semantics)."""
        values = {
            "agent_name": self._agent,
            "user_id": user.user_id,
            "available_balance": user.available_balance,
            "current_thread_id": user.current_thread_id,
            "created_at": now,
            "updated_at": now,
        }
        stmt = upsert(
            self._kind,
            _users,
            values,
            key=["agent_name", "user_id"],
            update=lambda new: {
                "available_balance": new.available_balance,
                "current_thread_id": new.current_thread_id,
                "updated_at": new.updated_at,
            },
        )
        await self._session.execute(stmt)

    async def set_current_thread(self, user_id: str, thread_id: str | None, now: datetime) -> None:
        """Set the user's current thread, creating the user with a zero balance if needed."""
        values = {
            "agent_name": self._agent,
            "user_id": user_id,
            "available_balance": 0,
            "current_thread_id": thread_id,
            "created_at": now,
            "updated_at": now,
        }
        stmt = upsert(
            self._kind,
            _users,
            values,
            key=["agent_name", "user_id"],
            update=lambda new: {
                "current_thread_id": new.current_thread_id,
                "updated_at": new.updated_at,
            },
        )
        await self._session.execute(stmt)

    async def credit(self, user_id: str, amount: int, now: datetime) -> int:
        """Add ``amount`` to the balance in one atomic statement; return the new balance."""
        return await self._credit(user_id, amount, now, last=False)

    async def _credit(self, user_id: str, amount: int, now: datetime, *, last: bool) -> int:
        return await bump_counter(
            self._session,
            _users,
            {"agent_name": self._agent, "user_id": user_id},
            counter="available_balance",
            n=amount,
            insert_values={"current_thread_id": None, "created_at": now, "updated_at": now},
            also_update=lambda new: {"updated_at": new.updated_at},
            last=last,
        )

    async def debit(self, user_id: str, amount: int, now: datetime) -> bool:
        """Subtract ``amount`` if the balance covers it, in one atomic statement.

        Returns:
            Whether the balance was debited; ``False`` changes nothing.
        """
        stmt = (
            update(_users)
            .where(*self._key(user_id), _users.c.available_balance >= amount)
            .values(available_balance=_users.c.available_balance - amount, updated_at=now)
        )
        result = await self._session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]
