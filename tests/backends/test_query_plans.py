"""EXPLAIN on every SQL backend: the hot queries read through their indexes.

Nothing here re-types convostore's SQL. A database is filled through the public API, each
hot call is made once while SQLAlchemy's ``before_cursor_execute`` event records the
statements it really sends (text and driver parameters), and those statements are then
explained with those parameters on the same engine:

* SQLite: ``EXPLAIN QUERY PLAN``, on the database as users have it (no ``ANALYZE``).
* PostgreSQL: ``EXPLAIN (FORMAT JSON)`` after ``ANALYZE``, with ``enable_seqscan`` and
  ``enable_sort`` off for the statement, so a plan with a sequential scan or a sort means
  no index could serve the query, not that the table is small enough to scan.
* MariaDB: ``EXPLAIN FORMAT=JSON`` after ``ANALYZE TABLE``.

Each plan is reduced to the same few facts on every backend (which index each table is
read through and with which columns bounded, whether rows are sorted, which unique index
an upsert resolves conflicts on) and checked against what the schema was built for. The
results are summarized in docs/performance.md, "Query plans"; a gap is a strict xfail
with its reason, so it stays visible and a fix shows up as an XPASS failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import URL, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convostore import ContextMessage, SessionInfo, SQLAlchemyContextStore, SQLAlchemyDatabase
from convostore.models import ThreadInfo
from convostore.sql.engine import create_engine

# Big enough for the planners to choose as they would on a real database: with 50
# sessions per project PostgreSQL reads one session's tokens row through a bitmap over the
# (project, created_at) index (50 rows on two heap pages are priced below a primary-key
# descent); with 200 it takes the primary key.
PROJECTS = 3
SESSIONS = 200
SESSION_MESSAGES = 10
LONG_SESSION_MESSAGES = 300
AGENTS = 3
THREADS = 150
THREAD_MESSAGES = 10
USERS = 3

PROJECT = "project-1"
LONG_SESSION = "long"
AGENT = "agent-1"
THREAD = "thread-0007"
USER = f"user-{7 % USERS}"

TABLES = ("context_tokens", "context_messages", "threads", "messages", "users")
PRIMARY = "PRIMARY KEY"  # how a table's primary key index is named in the facts below

# Where a backend's plan misses what the schema promises, keyed by (test case, backend):
# each becomes a strict xfail with its reason. None at the moment: the keyset pages used
# to filter instead of seek on SQLite and PostgreSQL until the cursor gained a redundant
# `created_at <= :c` bound (see docs/performance.md, "Query plans").
KNOWN_GAPS: dict[tuple[str, str], str] = {}


# --- The facts a plan is reduced to ---------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One read of a table: through which index, with which columns bounded."""

    table: str
    index: str | None  # None: no index at all (a full table scan)
    bounded: tuple[str, ...]  # index columns the read seeks on; () means a full index scan


@dataclass
class Plan:
    """What one statement's plan does, the same way on every backend."""

    statement: str
    accesses: list[Access] = field(default_factory=list)
    sort: str | None = None  # None; "partial" (only ties of an index-ordered prefix); "full"
    arbiters: tuple[str, ...] = ()  # unique indexes an upsert resolves conflicts on
    raw: str = ""

    def __str__(self) -> str:
        return f"{self.statement}\n--- plan ---\n{self.raw}"


@dataclass
class Captured:
    """The statements one hot call sent, each with its plan."""

    plans: list[Plan]

    def matching(self, pattern: str) -> list[Plan]:
        return [p for p in self.plans if re.search(pattern, p.statement, re.DOTALL)]


# --- Filling a database and recording what the hot calls send ---------------------------


def text_block(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text}]


def context_messages(count: int) -> list[ContextMessage]:
    reply = "a reply of a few words " * 10
    return [
        ContextMessage(role="user" if i % 2 == 0 else "assistant", content=text_block(reply))
        for i in range(count)
    ]


async def fill(engine: AsyncEngine) -> None:
    """Projects of sessions and agents of threads, a transaction per project or agent."""
    for p in range(PROJECTS):
        store = SQLAlchemyContextStore(engine, project=f"project-{p}")
        async with store.transaction() as tx:
            for s in range(SESSIONS):
                session_id = f"session-{s:04d}"
                await tx.with_session(session_id).append_many(
                    context_messages(SESSION_MESSAGES),
                    client_ids=[f"{session_id}-{i}" for i in range(SESSION_MESSAGES)],
                )
    long = SQLAlchemyContextStore(engine, project=PROJECT, session_id=LONG_SESSION)
    await long.append_many(
        context_messages(LONG_SESSION_MESSAGES),
        client_ids=[f"{LONG_SESSION}-{i}" for i in range(LONG_SESSION_MESSAGES)],
    )
    for a in range(AGENTS):
        database = SQLAlchemyDatabase(engine=engine, agent_name=f"agent-{a}")
        async with database.transaction() as tx:
            for t in range(THREADS):
                thread_id = f"thread-{t:04d}"
                await tx.add_messages(
                    thread_id,
                    f"user-{t % USERS}",
                    [
                        {"role": "user", "message": f"m{i}", "client_id": f"{thread_id}-{i}"}
                        for i in range(THREAD_MESSAGES)
                    ],
                )


@contextmanager
def recording(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """Record ``(statement, parameters)`` of everything sent on ``engine`` meanwhile."""
    sent: list[tuple[str, Any]] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        # An executemany explains like its first row.
        sent.append((statement, parameters[0] if many else parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


@dataclass
class Api:
    """The façades the hot calls are made on, and cursors taken from earlier pages."""

    store: SQLAlchemyContextStore
    database: SQLAlchemyDatabase
    window_before: int = 0
    sessions_before: SessionInfo | None = None
    threads_before: ThreadInfo | None = None


Call = Callable[[Api], Awaitable[object]]


async def _append(api: Api) -> None:
    await api.store.append(ContextMessage(role="user", content=text_block("one more")))


async def _append_retry(api: Api) -> None:
    # The id is stored already: this is a retry, answered by the client_id lookup.
    await api.store.append(
        ContextMessage(role="user", content=text_block("retried")), client_id=f"{LONG_SESSION}-5"
    )


async def _add_message(api: Api) -> None:
    await api.database.add_message(THREAD, USER, "user", message="one more")


async def _add_message_retry(api: Api) -> None:
    await api.database.add_message(THREAD, USER, "user", message="retried", client_id=f"{THREAD}-5")


async def _forks(api: Api) -> None:
    await api.store.fork()
    await api.store.fork(at=LONG_SESSION_MESSAGES // 2)


@dataclass(frozen=True)
class Check:
    """What the statements matching ``pattern`` must do; ``backends`` limits where they run."""

    pattern: str
    table: str
    indexes: tuple[str, ...] = ()  # the read of ``table`` goes through one of these
    bounded: tuple[str, ...] = ()  # ...seeking on (at least) these columns
    sort: tuple[str | None, ...] = (None,)  # sorts allowed
    arbiter: bool = False  # an upsert: conflicts resolve on the primary key alone
    reads: bool = True  # False: an INSERT ... VALUES, which must read no table at all
    backends: tuple[str, ...] = ("sqlite", "postgresql", "mariadb")


@dataclass(frozen=True)
class Case:
    id: str
    call: Call
    checks: tuple[Check, ...]


SESSION_KEY = ("project", "session_id")
THREAD_KEY = ("agent_name", "thread_id")
NOT_POSTGRESQL = ("sqlite", "mariadb")
TIES_SORTED = (None, "partial")  # the index orders by time; only equal times get sorted

CASES = (
    Case(
        "append",
        _append,
        (
            Check(
                r"^INSERT INTO context_tokens ",
                "context_tokens",
                arbiter=True,
                reads=False,
                backends=NOT_POSTGRESQL,
            ),
            Check(
                r"^INSERT INTO context_messages ",
                "context_messages",
                reads=False,
                backends=NOT_POSTGRESQL,
            ),
            # PostgreSQL: one statement, the counter bumped in a data-modifying CTE.
            Check(
                r"^WITH bumped AS\s*\(INSERT INTO context_tokens ",
                "context_tokens",
                arbiter=True,
                reads=False,
                backends=("postgresql",),
            ),
        ),
    ),
    Case(
        "append retry: find by client_id",
        _append_retry,
        (
            Check(
                r"^SELECT .*FROM context_messages\s.*client_id = ",
                "context_messages",
                ("ix_context_messages_project_session_id_client_id",),
                (*SESSION_KEY, "client_id"),
            ),
        ),
    ),
    Case(
        "get_history",
        lambda api: api.store.get_history(),
        (Check(r"FROM context_messages", "context_messages", (PRIMARY,), SESSION_KEY),),
    ),
    Case(
        "get_messages(limit=50, reverse=True)",
        lambda api: api.store.get_messages(limit=50, reverse=True),
        (Check(r"FROM context_messages", "context_messages", (PRIMARY,), SESSION_KEY),),
    ),
    Case(
        "get_messages(before=p, limit=50, reverse=True)",
        lambda api: api.store.get_messages(before=api.window_before, limit=50, reverse=True),
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
        "get_context_tokens",
        lambda api: api.store.get_context_tokens(),
        (Check(r"FROM context_tokens", "context_tokens", (PRIMARY,), SESSION_KEY),),
    ),
    Case(
        "list_sessions()",
        lambda api: api.store.list_sessions(),
        (
            Check(
                r"FROM context_tokens",
                "context_tokens",
                ("ix_context_tokens_project_created_at",),
                ("project",),
                TIES_SORTED,
            ),
        ),
    ),
    Case(
        "list_sessions(limit=50, before=s)",
        lambda api: api.store.list_sessions(limit=50, before=api.sessions_before),
        (
            Check(
                r"FROM context_tokens",
                "context_tokens",
                ("ix_context_tokens_project_created_at",),
                ("project",),
                TIES_SORTED,
            ),
        ),
    ),
    Case(
        "fork(), fork(at=p)",
        _forks,
        (
            Check(
                r"^SELECT context_tokens\.next_position ",
                "context_tokens",
                (PRIMARY,),
                SESSION_KEY,
            ),
            Check(
                r"^INSERT INTO context_tokens .*SELECT",
                "context_tokens",
                (PRIMARY,),
                SESSION_KEY,
            ),
            # The unique client_id index leads with the session key too: either index
            # reads exactly the source session's rows.
            Check(
                r"^INSERT INTO context_messages .*SELECT",
                "context_messages",
                (PRIMARY, "ix_context_messages_project_session_id_client_id"),
                SESSION_KEY,
            ),
        ),
    ),
    Case(
        "add_message",
        _add_message,
        (
            Check(
                r"^INSERT INTO threads ",
                "threads",
                arbiter=True,
                reads=False,
                backends=NOT_POSTGRESQL,
            ),
            Check(r"^INSERT INTO messages ", "messages", reads=False, backends=NOT_POSTGRESQL),
            Check(
                r"^WITH bumped AS\s*\(INSERT INTO threads ",
                "threads",
                arbiter=True,
                reads=False,
                backends=("postgresql",),
            ),
        ),
    ),
    Case(
        "add_message retry: find by client_id",
        _add_message_retry,
        (
            Check(
                r"^SELECT .*FROM messages\s.*client_id = ",
                "messages",
                ("ix_messages_agent_name_thread_id_client_id",),
                (*THREAD_KEY, "client_id"),
            ),
        ),
    ),
    Case(
        "agent get_messages(limit=50, reverse=True)",
        lambda api: api.database.get_messages(THREAD, USER, limit=50, reverse=True),
        (
            Check(
                r"FROM messages",
                "messages",
                (PRIMARY, "ix_messages_agent_name_user_id_thread_id"),
                THREAD_KEY,
            ),
        ),
    ),
    Case(
        "list_threads(limit=50)",
        lambda api: api.database.list_threads(USER, limit=50),
        (
            Check(
                r"FROM threads",
                "threads",
                ("ix_threads_agent_name_user_id_updated_at",),
                ("agent_name", "user_id"),
                TIES_SORTED,
            ),
        ),
    ),
    Case(
        "list_threads(limit=50, before=t)",
        lambda api: api.database.list_threads(USER, limit=50, before=api.threads_before),
        (
            Check(
                r"FROM threads",
                "threads",
                ("ix_threads_agent_name_user_id_updated_at",),
                ("agent_name", "user_id"),
                TIES_SORTED,
            ),
        ),
    ),
)

# Keyset pages: the cursor must bound the index read, or a deep page reads every row
# above it. (case id, table, the column the cursor bounds)
SEEKS = (
    ("get_messages(before=p, limit=50, reverse=True)", "context_messages", "position"),
    ("list_sessions(limit=50, before=s)", "context_tokens", "created_at"),
    ("list_threads(limit=50, before=t)", "threads", "updated_at"),
)


# --- EXPLAIN, per backend -------------------------------------------------------------


@dataclass
class Explainer:
    """Explains statements on one connection and reduces the plans to :class:`Plan`."""

    conn: AsyncConnection
    backend: str
    primary: dict[str, str] = field(default_factory=dict)  # table -> its PK index's name
    # PostgreSQL partition (table or index) -> its parent: a hash-partitioned table's plan
    # names the partition it reads (convostore.sql.partitioning), checked as the table itself.
    parents: dict[str, str] = field(default_factory=dict)
    unique: dict[str, tuple[str, ...]] = field(default_factory=dict)  # table -> unique indexes

    async def load_schema(self) -> None:
        for table in TABLES:
            if self.backend == "sqlite":
                rows = (await self.conn.exec_driver_sql(f"PRAGMA index_list({table})")).all()
                self.primary[table] = next(r.name for r in rows if r.origin == "pk")
            elif self.backend == "postgresql":
                if not self.parents:
                    inherited = await self.conn.exec_driver_sql(
                        "SELECT c.relname, p.relname FROM pg_inherits i"
                        " JOIN pg_class c ON c.oid = i.inhrelid"
                        " JOIN pg_class p ON p.oid = i.inhparent"
                    )
                    pairs: Any = inherited.all()
                    self.parents = {str(child): str(parent) for child, parent in pairs}
                    self.parents = self.parents or {"": ""}  # loaded, none found
                self.primary[table] = (
                    await self.conn.exec_driver_sql(
                        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                        " WHERE i.indrelid = $1::regclass AND i.indisprimary",
                        (table,),
                    )
                ).scalar_one()
            else:
                self.primary[table] = "PRIMARY"
                indexes = (await self.conn.exec_driver_sql(f"SHOW INDEX FROM {table}")).mappings()
                self.unique[table] = tuple(
                    sorted(
                        {self._name(table, i["Key_name"]) for i in indexes if not i["Non_unique"]}
                    )
                )

    def _name(self, table: str, index: str) -> str:
        return PRIMARY if index == self.primary.get(table) else index

    async def explain(self, statement: str, parameters: Any) -> Plan:
        if self.backend == "sqlite":
            return await self._sqlite(statement, parameters)
        if self.backend == "postgresql":
            return await self._postgresql(statement, parameters)
        return await self._mariadb(statement, parameters)

    async def _sqlite(self, statement: str, parameters: Any) -> Plan:
        result = await self.conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        details = [str(row["detail"]) for row in result.mappings()]
        plan = Plan(statement, raw="\n".join(details))
        for detail in details:
            access = re.match(
                r"(SCAN|SEARCH) (\w+)(?: AS \w+)?"
                r"(?: USING (?:COVERING )?INDEX (\w+)| USING (?:INTEGER )?PRIMARY KEY)?"
                r"(?: \((.*)\))?",
                detail,
            )
            if access and access.group(2) in TABLES:
                verb, table, index, cond = access.groups()
                if index is None and "PRIMARY KEY" in detail:
                    index = self.primary[table]
                bounded = tuple(re.findall(r"(\w+)[<>=]", cond or "")) if verb == "SEARCH" else ()
                plan.accesses.append(
                    Access(table, None if index is None else self._name(table, index), bounded)
                )
            elif "TEMP B-TREE FOR RIGHT PART OF ORDER BY" in detail:
                plan.sort = plan.sort or "partial"
            elif "TEMP B-TREE FOR" in detail and "ORDER BY" in detail:
                plan.sort = "full"
        conflict = re.search(r"ON CONFLICT \(([^)]*)\)", statement)
        if conflict:
            target = {c.strip() for c in conflict.group(1).split(",")}
            table = re.match(r"INSERT INTO (\w+)", statement)
            assert table is not None
            plan.arbiters = tuple(await self._sqlite_unique_indexes(table.group(1), target))
        return plan

    async def _sqlite_unique_indexes(self, table: str, columns: set[str]) -> list[str]:
        """The unique indexes of ``table`` on exactly ``columns`` (an ON CONFLICT target)."""
        found = []
        for row in (await self.conn.exec_driver_sql(f"PRAGMA index_list({table})")).all():
            if not row.unique:
                continue
            info = await self.conn.exec_driver_sql(f"PRAGMA index_info({row.name})")
            if {r.name for r in info.all()} == columns:
                found.append(self._name(table, row.name))
        return found

    async def _postgresql(self, statement: str, parameters: Any) -> Plan:
        await self.conn.rollback()  # end the transaction a previous query began
        async with self.conn.begin():
            # Tables this small are cheaper to scan and sort than to read through an
            # index; with both priced out, a Seq Scan or Sort left means no index fits.
            await self.conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            await self.conn.exec_driver_sql("SET LOCAL enable_sort = off")
            result = await self.conn.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + statement, parameters
            )
            document = result.scalar_one()
        if isinstance(document, str):
            document = json.loads(document)
        plan = Plan(statement, raw=json.dumps(document, indent=1))
        for node in _nodes(document[0]["Plan"], "Plans"):
            kind = node["Node Type"]
            table: str = node.get("Relation Name", "")
            table = self.parents.get(table, table)
            if "Index Name" in node:
                node["Index Name"] = self.parents.get(node["Index Name"], node["Index Name"])
            if kind == "ModifyTable":
                plan.arbiters = tuple(
                    self._name(table, i) for i in node.get("Conflict Arbiter Indexes", ())
                )
            elif kind in ("Index Scan", "Index Only Scan"):
                cond = node.get("Index Cond", "")
                plan.accesses.append(
                    Access(table, self._name(table, node["Index Name"]), _columns_in(cond))
                )
            elif kind == "Bitmap Heap Scan":
                for child in _nodes(node, "Plans"):
                    if child["Node Type"] == "Bitmap Index Scan":
                        cond = child.get("Index Cond", "")
                        index = self._name(
                            table, self.parents.get(child["Index Name"], child["Index Name"])
                        )
                        plan.accesses.append(Access(table, index, _columns_in(cond)))
            elif table in TABLES and kind != "Bitmap Index Scan":
                plan.accesses.append(Access(table, None, ()))  # Seq Scan and the like
            elif kind == "Incremental Sort":
                plan.sort = plan.sort or "partial"
            elif kind == "Sort":
                plan.sort = "full"
        return plan

    async def _mariadb(self, statement: str, parameters: Any) -> Plan:
        result = await self.conn.exec_driver_sql("EXPLAIN FORMAT=JSON " + statement, parameters)
        document = json.loads(result.scalar_one())
        plan = Plan(statement, raw=json.dumps(document, indent=1))
        for node in _dicts(document):
            if "filesort" in node:
                plan.sort = "full"
            table = node.get("table_name")
            if table not in TABLES or "access_type" not in node:
                continue  # the target of an INSERT carries no access_type: it is not read
            if node["access_type"] in ("ALL", "index") or not node.get("key"):
                plan.accesses.append(Access(table, None, ()))
            else:
                index = self._name(table, node["key"])
                plan.accesses.append(Access(table, index, tuple(node.get("used_key_parts", ()))))
        upsert = re.match(r"INSERT INTO (\w+) .* ON DUPLICATE KEY UPDATE ", statement, re.DOTALL)
        if upsert:
            # MySQL/MariaDB take a duplicate on ANY unique index as the conflict.
            plan.arbiters = self.unique[upsert.group(1)]
        return plan


def _nodes(node: dict[str, Any], children: str) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get(children, ()):
        yield from _nodes(child, children)


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dicts(item)


def _columns_in(condition: str) -> tuple[str, ...]:
    """Column names compared in a PostgreSQL index condition, in order."""
    return tuple(re.findall(r'\(?"?(\w+)"?\)?(?:::\w+)? (?:=|<|>|<=|>=) ', condition))


# --- Running it all once per backend ----------------------------------------------------


async def capture_plans(backend: str, url: URL) -> dict[str, Captured]:
    """Fill the database, make every hot call and explain what each one sent."""
    engine = create_engine(url)
    try:
        await fill(engine)
        async with engine.connect() as conn:
            if backend == "postgresql":
                await conn.exec_driver_sql("ANALYZE")
                await conn.commit()
            elif backend == "mariadb":
                (await conn.exec_driver_sql(f"ANALYZE TABLE {', '.join(TABLES)}")).all()
        api = Api(
            SQLAlchemyContextStore(engine, project=PROJECT, session_id=LONG_SESSION),
            SQLAlchemyDatabase(engine=engine, agent_name=AGENT),
        )
        latest = await api.store.get_messages(limit=50, reverse=True)
        api.window_before = latest[-1].position
        # Deep cursors: near the top of a listing, MariaDB rightly reads from the top rather
        # than seek (the rows it skips are few); a deep page is where seeking matters.
        api.sessions_before = (await api.store.list_sessions(limit=150))[-1]
        api.threads_before = (await api.database.list_threads(USER, limit=40))[-1]
        sent: dict[str, list[tuple[str, Any]]] = {}
        for case in CASES:
            with recording(engine) as sent[case.id]:
                await case.call(api)
        captured = {}
        async with engine.connect() as conn:
            explainer = Explainer(conn, backend)
            await explainer.load_schema()
            for case in CASES:
                plans = [await explainer.explain(s, p) for s, p in sent[case.id]]
                captured[case.id] = Captured(plans)
            await conn.rollback()
        return captured
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def plan_cache() -> dict[str, dict[str, Captured]]:
    """Plans per backend, computed by the first test that needs them.

    Filling a database is most of the cost, so every test of a backend reads one set of
    plans; the tests only inspect them.
    """
    return {}


@pytest.fixture
async def plans(
    backend: str, db_url: URL, plan_cache: dict[str, dict[str, Captured]]
) -> dict[str, Captured]:
    if backend not in plan_cache:
        plan_cache[backend] = await capture_plans(backend, db_url)
    return plan_cache[backend]


def expect_known_gap(request: pytest.FixtureRequest, key: tuple[str, str]) -> None:
    reason = KNOWN_GAPS.get(key)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))


# --- The tests --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hot_query_uses_its_index(
    case: Case, backend: str, plans: dict[str, Captured], request: pytest.FixtureRequest
) -> None:
    expect_known_gap(request, (case.id, backend))
    captured = plans[case.id]
    # Whatever else the call sends reads through an index too: no full scan anywhere.
    for plan in captured.plans:
        for access in plan.accesses:
            assert access.index is not None, f"{access.table} is read without an index\n{plan}"
            assert access.bounded, f"{access.table} is read whole, through {access.index}\n{plan}"
    for check in case.checks:
        if backend in check.backends:
            _check(check, captured.matching(check.pattern))


def _check(check: Check, matched: Sequence[Plan]) -> None:
    assert matched, f"no statement sent matches {check.pattern!r}"
    for plan in matched:
        if check.arbiter:
            assert plan.arbiters == (PRIMARY,), (
                f"the upsert on {check.table} resolves conflicts on {plan.arbiters}, "
                f"not the primary key alone\n{plan}"
            )
        if not check.reads:
            # Reads of other tables (SQLite lists the foreign-key lookup of child rows in
            # an upsert's plan) are held to the no-full-scan rule above.
            assert all(a.table != check.table for a in plan.accesses), (
                f"an INSERT ... VALUES reads {check.table}\n{plan}"
            )
            continue
        reads = [a for a in plan.accesses if a.table == check.table]
        assert reads, f"{check.table} is not read\n{plan}"
        for access in reads:
            assert access.index in check.indexes, (
                f"{check.table} is read through {access.index}, not {check.indexes}\n{plan}"
            )
            missing = [c for c in check.bounded if c not in access.bounded]
            assert not missing, f"the read of {check.table} does not seek on {missing}\n{plan}"
        assert plan.sort in check.sort, f"rows are sorted ({plan.sort})\n{plan}"


@pytest.mark.parametrize(
    ("case_id", "table", "column"), SEEKS, ids=[case_id for case_id, _, _ in SEEKS]
)
def test_keyset_page_seeks_to_its_cursor(
    case_id: str,
    table: str,
    column: str,
    backend: str,
    plans: dict[str, Captured],
    request: pytest.FixtureRequest,
) -> None:
    """A page after a cursor starts reading at the cursor: its cost is the page's."""
    expect_known_gap(request, (f"seek: {case_id}", backend))
    for plan in plans[case_id].plans:
        for access in plan.accesses:
            if access.table == table:
                assert column in access.bounded, (
                    f"the cursor on {column} does not bound the index read of {table}; "
                    f"a deep page reads every row before it\n{plan}"
                )
