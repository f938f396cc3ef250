"""Model-based tests: random sequences of calls against SQL and the in-memory reference.

Each hypothesis example drives one SQL implementation and the in-memory reference with the
same random sequence of operations and requires identical results (created_at aside)
after every step: the same return values, the same errors, the same state read back.
SQLite runs the larger budget; PostgreSQL and MariaDB a smaller one.

The state machines are sync (hypothesis drives them); each example runs the async API on
an event loop of its own, with an engine created inside that loop, and starts from empty
tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import (
    ContextMessage,
    InMemoryContextStore,
    InMemoryDatabase,
    MemoryStorage,
    SQLAlchemyContextStore,
    SQLAlchemyDatabase,
    User,
    create_engine,
)
from convostore.errors import ConvostoreError
from convostore.interfaces import AgentDatabase, ContextStore
from convostore.models import KINDS, ROLES
from tests.reliability.helpers import TABLES, tagged
from tests.reliability.strategies import TEXT, content_blocks, json_values

T = TypeVar("T")


def budget(backend: str) -> settings:
    examples = 40 if backend == "sqlite" else 10
    return settings(
        max_examples=examples,
        stateful_step_count=30,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


class AsyncMachine(RuleBasedStateMachine):
    """A state machine with its own event loop and an engine on an emptied database."""

    url: ClassVar[URL]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine: AsyncEngine = self.run(self._open())

    async def _open(self) -> AsyncEngine:
        engine = create_engine(self.url)
        async with engine.begin() as conn:
            for table in reversed(TABLES):  # children first
                await conn.execute(text(f"DELETE FROM {table}"))
        return engine

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def both(
        self, sql: Coroutine[Any, Any, Any], memory: Coroutine[Any, Any, Any]
    ) -> tuple[Any, Any]:
        """Run one call on each side; both must succeed or both raise the same error type."""
        outcomes = []
        for call in (sql, memory):
            try:
                outcomes.append(("ok", self.run(call)))
            except ConvostoreError as exc:
                outcomes.append(("error", type(exc)))
        (sql_kind, sql_value), (mem_kind, mem_value) = outcomes
        assert (sql_kind, mem_kind) == ("ok", "ok") or (sql_kind, sql_value) == (
            mem_kind,
            mem_value,
        ), f"SQL gave {outcomes[0]}, memory gave {outcomes[1]}"
        return sql_value, mem_value

    def teardown(self) -> None:
        try:
            self.run(self.engine.dispose())
        finally:
            self.loop.close()


# --- context store ---------------------------------------------------------------------------

ROLE = st.sampled_from(["user", "assistant", "system", "tool"])
MESSAGE = st.builds(ContextMessage, role=ROLE, content=content_blocks(max_blocks=2, max_leaves=4))
MESSAGES = st.lists(MESSAGE, max_size=5)
TOKENS = st.integers(min_value=0, max_value=10**6)
PICK = st.integers(min_value=0, max_value=10**6)
PROJECTS = ("/project", "/project-2")


def history_of(messages: list[ContextMessage]) -> list[Any]:
    return [(m.role, tagged(m.content)) for m in messages]


class ContextStoreMachine(AsyncMachine):
    """Sessions of two projects; forks join the pool of sessions the rules pick from."""

    @initialize()
    def open_sessions(self) -> None:
        storage = MemoryStorage()
        self.pairs: list[tuple[ContextStore, ContextStore]] = []
        for project in PROJECTS:
            for name in ("a", "b"):
                sql = SQLAlchemyContextStore(self.engine, session_id=name, project=project)
                memory = InMemoryContextStore(storage, session_id=name, project=project)
                self.pairs.append((sql, memory))

    def pick(self, index: int) -> tuple[ContextStore, ContextStore]:
        return self.pairs[index % len(self.pairs)]

    @rule(i=PICK, message=MESSAGE)
    def append(self, i: int, message: ContextMessage) -> None:
        sql, memory = self.pick(i)
        self.both(sql.append(message), memory.append(message))

    @rule(i=PICK, messages=MESSAGES)
    def append_many(self, i: int, messages: list[ContextMessage]) -> None:
        sql, memory = self.pick(i)
        self.both(sql.append_many(messages), memory.append_many(messages))

    @rule(i=PICK, messages=st.lists(MESSAGE, min_size=1, max_size=3), bad=json_values(3))
    def append_many_with_a_bad_message(
        self, i: int, messages: list[ContextMessage], bad: Any
    ) -> None:
        """A batch whose last message cannot be stored: nothing of it is, on either side."""
        sql, memory = self.pick(i)
        poisoned = ContextMessage.model_construct(
            role="user", content=[{"x": float("nan"), "v": bad}]
        )
        batch = [*messages, poisoned]
        self.both(sql.append_many(batch), memory.append_many(batch))

    @rule(i=PICK)
    def clear(self, i: int) -> None:
        sql, memory = self.pick(i)
        self.both(sql.clear(), memory.clear())

    @precondition(lambda self: len(self.pairs) < 12)
    @rule(i=PICK)
    def fork(self, i: int) -> None:
        sql, memory = self.pick(i)
        forks = self.both(sql.fork(), memory.fork())
        assert forks[0].project == forks[1].project == sql.project
        self.pairs.append(forks)

    @rule(i=PICK, tokens=st.tuples(TOKENS, TOKENS), add=st.booleans())
    def tokens(self, i: int, tokens: tuple[int, int], add: bool) -> None:
        sql, memory = self.pick(i)
        if add:
            self.both(sql.add_context_tokens(*tokens), memory.add_context_tokens(*tokens))
        else:
            self.both(sql.set_context_tokens(*tokens), memory.set_context_tokens(*tokens))

    @rule(i=PICK)
    def get_tokens(self, i: int) -> None:
        sql, memory = self.pick(i)
        got = self.both(sql.get_context_tokens(), memory.get_context_tokens())
        assert got[0] == got[1]

    @rule(i=PICK)
    def get_history(self, i: int) -> None:
        sql, memory = self.pick(i)
        got = self.both(sql.get_history(), memory.get_history())
        assert history_of(got[0]) == history_of(got[1])

    @rule(i=PICK, count=st.integers(min_value=-1, max_value=8))
    def get_last(self, i: int, count: int) -> None:
        sql, memory = self.pick(i)
        got = self.both(sql.get_last(count), memory.get_last(count))
        if count >= 0:
            assert history_of(got[0]) == history_of(got[1])

    @rule(i=PICK)
    def pop(self, i: int) -> None:
        sql, memory = self.pick(i)
        got = self.both(sql.pop(), memory.pop())
        assert (got[0] is None) == (got[1] is None)
        if got[0] is not None:
            assert history_of([got[0]]) == history_of([got[1]])

    @rule(i=PICK, messages=MESSAGES)
    def replace_history(self, i: int, messages: list[ContextMessage]) -> None:
        sql, memory = self.pick(i)
        self.both(sql.replace_history(messages), memory.replace_history(messages))

    @rule(i=PICK)
    def list_sessions(self, i: int) -> None:
        sql, memory = self.pick(i)
        listed = self.both(sql.list_sessions(), memory.list_sessions())
        # Fork ids are random on each side: translate the reference's ids to SQL's.
        to_sql = {m.session_id: s.session_id for s, m in self.pairs if m.project == sql.project}
        sql_view = {
            s.session_id: (s.message_count, s.preview, s.input_tokens, s.output_tokens)
            for s in listed[0]
        }
        memory_view = {
            to_sql[s.session_id]: (s.message_count, s.preview, s.input_tokens, s.output_tokens)
            for s in listed[1]
        }
        assert sql_view == memory_view
        created = [s.created_at for s in listed[0]]
        assert created == sorted(created, reverse=True), "newest first"

    @invariant()
    def message_counts_agree(self) -> None:
        """Cheap whole-state check after every step: every session's length on both sides."""
        if not hasattr(self, "pairs"):
            return
        for sql, memory in self.pairs:
            got = self.both(sql.get_last(1), memory.get_last(1))
            assert history_of(got[0]) == history_of(got[1])


# --- agent database --------------------------------------------------------------------------

# Few ids, so random calls keep meeting the same rows; crafted ids get their own suite.
USER_IDS = ("alice", "Alice")
THREAD_IDS = ("t1", "_")
USERS = st.sampled_from(USER_IDS)
THREADS = st.sampled_from(THREAD_IDS)
AMOUNT = st.integers(min_value=0, max_value=500)
AGENTS: tuple[str | None, ...] = ("agent", None)
OPTIONAL_IDX = st.one_of(st.none(), st.integers(min_value=-1, max_value=6))


def message_view(message: Any) -> Any:
    dumped = message.model_dump(exclude={"created_at"})
    return tagged(dumped)


class AgentDatabaseMachine(AsyncMachine):
    """Two agents (one of them ``None``) sharing one database, each with a reference twin."""

    @initialize()
    def open_databases(self) -> None:
        storage = MemoryStorage()
        self.pairs: list[tuple[AgentDatabase, AgentDatabase]] = [
            (
                SQLAlchemyDatabase(engine=self.engine, agent_name=agent),
                InMemoryDatabase(storage, agent_name=agent),
            )
            for agent in AGENTS
        ]

    def pick(self, index: int) -> tuple[AgentDatabase, AgentDatabase]:
        return self.pairs[index % len(self.pairs)]

    @rule(
        i=PICK,
        user=USERS,
        balance=st.integers(min_value=0, max_value=1000),
        thread=st.one_of(st.none(), THREADS),
    )
    def upsert_user(self, i: int, user: str, balance: int, thread: str | None) -> None:
        sql, memory = self.pick(i)
        value = User(user_id=user, available_balance=balance, current_thread_id=thread)
        self.both(sql.upsert_user(value), memory.upsert_user(value))

    @rule(i=PICK, user=USERS, amount=AMOUNT)
    def credit(self, i: int, user: str, amount: int) -> None:
        sql, memory = self.pick(i)
        got = self.both(sql.credit(user, amount), memory.credit(user, amount))
        assert got[0] == got[1]

    @rule(i=PICK, user=USERS, amount=AMOUNT)
    def debit(self, i: int, user: str, amount: int) -> None:
        sql, memory = self.pick(i)
        got = self.both(sql.debit(user, amount), memory.debit(user, amount))
        assert got[0] == got[1]

    @rule(i=PICK, user=USERS)
    def get_user(self, i: int, user: str) -> None:
        sql, memory = self.pick(i)
        got = self.both(sql.get_user(user), memory.get_user(user))
        assert got[0] == got[1]

    @rule(i=PICK, user=USERS, thread=st.one_of(st.none(), THREADS))
    def set_current_thread(self, i: int, user: str, thread: str | None) -> None:
        sql, memory = self.pick(i)
        self.both(
            sql.set_current_thread_id(user, thread), memory.set_current_thread_id(user, thread)
        )

    @rule(i=PICK, user=USERS)
    def get_current_thread(self, i: int, user: str) -> None:
        sql, memory = self.pick(i)
        got = self.both(sql.get_current_thread_id(user), memory.get_current_thread_id(user))
        assert got[0] == got[1]

    @rule(
        i=PICK,
        thread=THREADS,
        user=USERS,
        role=st.sampled_from(sorted(ROLES)),
        kind=st.sampled_from(sorted(KINDS)),
        message=TEXT.filter(lambda t: "\x00" not in t),
        content=TEXT,
        satoshis=st.one_of(st.none(), AMOUNT),
        extra_inputs=st.dictionaries(TEXT, json_values(4), max_size=3),
        extra_outputs=st.one_of(st.none(), st.dictionaries(TEXT, json_values(4), max_size=2)),
    )
    def add_message(
        self,
        i: int,
        thread: str,
        user: str,
        role: str,
        kind: str,
        message: str,
        content: str,
        satoshis: int | None,
        extra_inputs: dict[str, Any],
        extra_outputs: dict[str, Any] | None,
    ) -> None:
        sql, memory = self.pick(i)
        args = (thread, user, role, message, content, kind, satoshis, extra_inputs, extra_outputs)
        got = self.both(sql.add_message(*args), memory.add_message(*args))
        assert message_view(got[0]) == message_view(got[1])

    @rule(i=PICK, thread=THREADS, user=USERS)
    def add_message_with_a_bad_extra(self, i: int, thread: str, user: str) -> None:
        sql, memory = self.pick(i)
        args = (thread, user, "user", "m", "c", "request", None, {"bad": {1, 2}}, None)
        self.both(sql.add_message(*args), memory.add_message(*args))

    @rule(
        i=PICK,
        thread=THREADS,
        user=USERS,
        limit=st.one_of(st.none(), st.integers(min_value=-1, max_value=6)),
        before=OPTIONAL_IDX,
        after=OPTIONAL_IDX,
        reverse=st.booleans(),
    )
    def get_messages(
        self,
        i: int,
        thread: str,
        user: str,
        limit: int | None,
        before: int | None,
        after: int | None,
        reverse: bool,
    ) -> None:
        sql, memory = self.pick(i)
        options: dict[str, Any] = {
            "limit": limit,
            "before_idx": before,
            "after_idx": after,
            "reverse": reverse,
        }
        got = self.both(
            sql.get_messages(thread, user, **options), memory.get_messages(thread, user, **options)
        )
        if limit is None or limit >= 0:
            assert [message_view(m) for m in got[0]] == [message_view(m) for m in got[1]]

    @rule(i=PICK, thread=THREADS, user=USERS, after=OPTIONAL_IDX, reverse=st.booleans())
    def page(self, i: int, thread: str, user: str, after: int | None, reverse: bool) -> None:
        """A page of two after a cursor: the common paging call, drawn more often."""
        sql, memory = self.pick(i)
        options: dict[str, Any] = {"limit": 2, "after_idx": after, "reverse": reverse}
        got = self.both(
            sql.get_messages(thread, user, **options), memory.get_messages(thread, user, **options)
        )
        assert [message_view(m) for m in got[0]] == [message_view(m) for m in got[1]]

    @invariant()
    def same_users_and_threads(self) -> None:
        """After every step: every user and every thread read whole, on both sides."""
        if not hasattr(self, "pairs"):
            return
        for sql, memory in self.pairs:
            for user in USER_IDS:
                got = self.both(sql.get_user(user), memory.get_user(user))
                assert got[0] == got[1]
                for thread in THREAD_IDS:
                    got = self.both(
                        sql.get_messages(thread, user), memory.get_messages(thread, user)
                    )
                    assert [message_view(m) for m in got[0]] == [message_view(m) for m in got[1]]


@pytest.mark.parametrize("machine", [ContextStoreMachine, AgentDatabaseMachine])
def test_sql_matches_the_reference(
    machine: type[AsyncMachine], clean_url: URL, backend: str
) -> None:
    bound = type(machine.__name__, (machine,), {"url": clean_url})
    run_state_machine_as_test(bound, settings=budget(backend))
