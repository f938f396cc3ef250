"""Listing and history at 100k and at 10 million context messages on PostgreSQL.

    python bench/partitioned.py [--url URL] [--partitions 16] [--messages 10000000]

Creates a database of its own on the server at ``--url`` (default: the local
``postgres@127.0.0.1:5432``), migrates it, hash-partitions the message tables with
``convostore.sql.partitioning.partition_by_scope`` (``--partitions 0``: leave them plain),
and generates the messages server-side (``INSERT ... SELECT generate_series``), 100 per
session over 10 projects. It times two calls through the public API on the same sessions
first at 100k messages, then after growing the database to ``--messages``:

* ``list_sessions(limit=50)``: the first page of a project's sessions;
* ``get_messages(limit=50, reverse=True)``: a session's latest 50 messages.

Each figure is the median of 300 calls spread over 300 sessions. The database is dropped
at the end. Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import URL, make_url, text
from sqlalchemy.pool import NullPool

from convostore import SQLAlchemyContextStore, create_engine, migrate
from convostore.sql.partitioning import partition_by_scope

PER_SESSION = 100
PROJECTS = 10
BASE_MESSAGES = 100_000
CHUNK_SESSIONS = 10_000
CALLS = 300

SESSIONS = text(
    "INSERT INTO context_tokens (project, session_id, input_tokens, output_tokens, "
    "next_position, preview, created_at, updated_at) "
    "SELECT 'project-' || (s % :projects), 's' || s, 0, 0, :per, 'hello', "
    "now() - make_interval(secs => s), now() - make_interval(secs => s) "
    "FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) s"
)
MESSAGES = text(
    "INSERT INTO context_messages (project, session_id, position, role, content, created_at) "
    "SELECT 'project-' || (s % :projects), 's' || s, p, 'user', "
    # convostore's payload format: header byte 0x01 (plain JSON), then the JSON itself.
    "'\\x01'::bytea || "
    'convert_to(\'[{"type":"text","text":"message \' || p || \'"}]\', \'UTF8\'), '
    "now() FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) s, "
    "generate_series(0, :per - 1) p"
)


async def generate(url: URL, first: int, last: int) -> None:
    engine = create_engine(url, poolclass=NullPool, deadline=0)
    try:
        for start in range(first, last + 1, CHUNK_SESSIONS):
            end = min(last, start + CHUNK_SESSIONS - 1)
            params = {"projects": PROJECTS, "per": PER_SESSION, "first": start, "last": end}
            async with engine.begin() as conn:
                await conn.execute(SESSIONS, params)
                await conn.execute(MESSAGES, params)
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
            await conn.commit()
    finally:
        await engine.dispose()


async def median_ms(call: Callable[[int], Awaitable[object]], sessions: list[int]) -> float:
    for n in sessions[:20]:
        await call(n)  # warm the pool and the statement caches
    times = []
    for n in sessions:
        started = time.perf_counter()
        await call(n)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def measure(url: URL, sessions: list[int]) -> dict[str, float]:
    engine = create_engine(url)

    async def first_page(n: int) -> object:
        view = SQLAlchemyContextStore(engine, project=f"project-{n % PROJECTS}")
        page = await view.list_sessions(limit=50)
        assert len(page) == 50
        return page

    async def latest(n: int) -> object:
        view = SQLAlchemyContextStore(engine, project=f"project-{n % PROJECTS}", session_id=f"s{n}")
        messages = await view.get_messages(limit=50, reverse=True)
        assert len(messages) == 50
        assert messages[0].position == PER_SESSION - 1
        return messages

    try:
        return {
            "list_sessions(limit=50)": await median_ms(first_page, sessions),
            "get_messages(limit=50, reverse=True)": await median_ms(latest, sessions),
        }
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--messages", type=int, default=10_000_000)
    args = parser.parse_args()
    admin = make_url(args.url)
    name = f"convostore_bench_{uuid.uuid4().hex[:8]}"
    url = admin.set(database=name)
    engine = create_engine(admin, poolclass=NullPool)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        await migrate.upgrade(url)
        if args.partitions:
            partitioned = create_engine(url)
            await partition_by_scope(partitioned, partitions=args.partitions)
            await partitioned.dispose()
        base_sessions = BASE_MESSAGES // PER_SESSION
        sampled = random.Random(16).sample(range(base_sessions), CALLS)
        started = time.perf_counter()
        await generate(url, 0, base_sessions - 1)
        results = {BASE_MESSAGES: await measure(url, sampled)}
        await generate(url, base_sessions, args.messages // PER_SESSION - 1)
        generated = time.perf_counter() - started
        results[args.messages] = await measure(url, sampled)
        layout = f"{args.partitions} hash partitions" if args.partitions else "unpartitioned"
        print(f"PostgreSQL, {layout}; generated server-side in {generated:.0f} s")
        print(f"| call | {BASE_MESSAGES:,} messages | {args.messages:,} messages | ratio |")
        print("|---|---|---|---|")
        for call in results[BASE_MESSAGES]:
            small, large = results[BASE_MESSAGES][call], results[args.messages][call]
            print(f"| `{call}` | {small:.2f} ms | {large:.2f} ms | {large / small:.2f}x |")
    finally:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
