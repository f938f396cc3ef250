#!/usr/bin/env python3
"""LangGraph checkpointers side by side: convostore's ``ConvostoreSaver`` against
``langgraph-checkpoint-sqlite``'s ``AsyncSqliteSaver`` on SQLite and
``langgraph-checkpoint-postgres``'s ``AsyncPostgresSaver`` on PostgreSQL, in one run.

The workload is what a chat graph writes each step: a checkpoint whose state holds the 20
latest messages of a conversation (LangChain messages: questions, replies of 0.3-1.5 KB,
tool calls, tool results of 0.5-2 KB of JSON), then a read of the thread's latest
checkpoint (``aget_tuple``), as the next step does. Each round runs ``--steps`` such
put + get_tuple pairs per saver on a new thread, the savers alternating in a rotating
order; the report gives the median pairs per second and the ratio, and the bytes on disk
per checkpoint (SQLite: the pages of the saver's tables and indexes, from ``dbstat``;
PostgreSQL: ``pg_total_relation_size`` of its tables, indexes and TOAST included).

Usage::

    python bench/langgraph_saver.py                        # SQLite
    python bench/langgraph_saver.py --backend all          # SQLite and PostgreSQL
    python bench/langgraph_saver.py --quick                # smoke: a few steps, one round

Server: ``CONVOSTORE_BENCH_POSTGRESQL_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); one database per saver is created
there and dropped at the end.
"""

from __future__ import annotations

import os

os.environ.setdefault("CONVOSTORE_TELEMETRY", "off")

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from sqlalchemy import make_url, text
from sqlalchemy.pool import NullPool

from convostore import connect, create_engine
from convostore.integrations.langgraph import ConvostoreSaver

OURS = ("langgraph_checkpoints", "langgraph_checkpoint_blobs", "langgraph_checkpoint_writes")
SQLITE_THEIRS = ("checkpoints", "writes")
POSTGRES_THEIRS = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
WORDS = (
    "order",
    "refund",
    "shipping",
    "invoice",
    "account",
    "password",
    "delivery",
    "package",
    "warranty",
    "charge",
    "customer",
    "support",
    "ticket",
    "update",
    "address",
    "payment",
    "subscription",
    "plan",
    "upgrade",
    "cancel",
)


def _prose(rng: random.Random, low: int, high: int) -> str:
    size = rng.randint(low, high)
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < size:
        out.append(rng.choice(WORDS))
    return " ".join(out).capitalize() + "."


def conversation(seed: int, size: int) -> list[BaseMessage]:
    """A deterministic conversation of ``size`` messages (a turn is 2 or 4 messages)."""
    rng = random.Random(seed)
    messages: list[BaseMessage] = []
    while len(messages) < size:
        messages.append(HumanMessage(_prose(rng, 50, 300)))
        if rng.random() < 0.5:
            call_id = f"call_{rng.getrandbits(48):012x}"
            call = {"name": "lookup", "args": {"query": _prose(rng, 10, 40)}, "id": call_id}
            messages.append(AIMessage("", tool_calls=[call]))
            rows = [
                {
                    "id": rng.randint(1, 10**6),
                    "status": rng.choice(WORDS),
                    "note": _prose(rng, 20, 80),
                }
                for _ in range(rng.randint(4, 14))
            ]
            messages.append(ToolMessage(json.dumps(rows), tool_call_id=call_id))
        messages.append(AIMessage(_prose(rng, 300, 1500)))
    return messages


@dataclass
class Saver:
    name: str
    open: Callable[[], AbstractAsyncContextManager[BaseCheckpointSaver[Any]]]
    size: Callable[[], Any]
    rates: list[float] = field(default_factory=list)
    checkpoints: int = 0


async def steps(saver: BaseCheckpointSaver[Any], pool: list[BaseMessage], count: int) -> float:
    """Run ``count`` put + get_tuple pairs on a new thread; pairs per second."""
    thread = uuid.uuid4().hex
    parent: str | None = None
    version: Any = None
    latest_config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    started = time.perf_counter()
    for step in range(count):
        version = saver.get_next_version(version, None)
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=step))
        checkpoint["channel_values"] = {"messages": pool[step : step + 20], "step": step}
        checkpoint["channel_versions"] = {"messages": version, "step": version}
        configurable = {"thread_id": thread, "checkpoint_ns": ""}
        if parent is not None:
            configurable["checkpoint_id"] = parent
        stored = await saver.aput(
            {"configurable": configurable},
            checkpoint,
            {"source": "loop", "step": step, "parents": {}},
            {"messages": version, "step": version},
        )
        parent = stored["configurable"]["checkpoint_id"]
        latest = await saver.aget_tuple(latest_config)
        assert latest is not None
        assert len(latest.checkpoint["channel_values"]["messages"]) == 20
    return count / (time.perf_counter() - started)


def sqlite_savers(directory: Path) -> list[Saver]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    ours_path, theirs_path = directory / "convostore.db", directory / "langgraph.db"

    @asynccontextmanager
    async def ours() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        engine = await connect(str(ours_path))
        try:
            yield ConvostoreSaver(engine)
        finally:
            await engine.dispose()

    @asynccontextmanager
    async def theirs() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        async with AsyncSqliteSaver.from_conn_string(str(theirs_path)) as saver:
            await saver.setup()
            yield saver

    def pages(path: Path, tables: tuple[str, ...]) -> int:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
            names = list(tables)
            names += [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name IN "
                    f"({', '.join('?' for _ in tables)})",
                    tables,
                )
            ]
            query = (
                f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({', '.join('?' for _ in names)})"
            )
            return int(conn.execute(query, names).fetchone()[0])

    return [
        Saver("convostore", ours, lambda: pages(ours_path, OURS)),
        Saver("AsyncSqliteSaver", theirs, lambda: pages(theirs_path, SQLITE_THEIRS)),
    ]


async def postgres_savers(server: str, databases: list[str]) -> list[Saver]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    admin = make_url(server)
    names = [f"bench_lg_{os.getpid()}_{who}" for who in ("ours", "theirs")]
    engine = create_engine(admin, poolclass=NullPool)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for name in names:
            await conn.execute(text(f"CREATE DATABASE {name}"))
            databases.append(name)
    await engine.dispose()
    ours_url, theirs_url = (admin.set(database=name) for name in names)

    @asynccontextmanager
    async def ours() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        engine = await connect(ours_url, migrate=True)
        try:
            yield ConvostoreSaver(engine)
        finally:
            await engine.dispose()

    @asynccontextmanager
    async def theirs() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        plain = theirs_url.set(drivername="postgresql").render_as_string(hide_password=False)
        async with AsyncPostgresSaver.from_conn_string(plain) as saver:
            await saver.setup()
            yield saver

    async def relation_bytes(url: Any, tables: tuple[str, ...]) -> int:
        engine = create_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                for table in tables:
                    await conn.execute(text(f"VACUUM {table}"))
                total = 0
                for table in tables:
                    size = await conn.execute(text(f"SELECT pg_total_relation_size('{table}')"))
                    total += int(size.scalar_one())
                return total
        finally:
            await engine.dispose()

    return [
        Saver("convostore", ours, lambda: relation_bytes(ours_url, OURS)),
        Saver("AsyncPostgresSaver", theirs, lambda: relation_bytes(theirs_url, POSTGRES_THEIRS)),
    ]


async def drop(server: str, databases: list[str]) -> None:
    engine = create_engine(make_url(server), poolclass=NullPool)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for name in databases:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    await engine.dispose()


async def run_backend(savers: list[Saver], args: argparse.Namespace) -> list[str]:
    pool = conversation(args.seed, args.steps + 20)
    for round_number in range(args.rounds):
        order = savers[round_number % len(savers) :] + savers[: round_number % len(savers)]
        for saver in order:
            async with saver.open() as opened:
                saver.rates.append(await steps(opened, pool, args.steps))
                saver.checkpoints += args.steps
    ours, theirs = savers
    sizes = []
    for saver in savers:
        size = saver.size()
        sizes.append((await size if asyncio.iscoroutine(size) else size) / saver.checkpoints)
    rate_ours, rate_theirs = (statistics.median(s.rates) for s in savers)
    return [
        f"| put + get_tuple, pairs/s (median of {args.rounds}) | {rate_ours:,.0f} | "
        f"{rate_theirs:,.0f} | {rate_ours / rate_theirs:.2f}x |",
        f"| bytes on disk per checkpoint | {sizes[0]:,.0f} | {sizes[1]:,.0f} | "
        f"{sizes[0] / sizes[1]:.2f}x |",
        f"<!-- {ours.name} vs {theirs.name} -->",
    ]


async def main(args: argparse.Namespace) -> str:
    lines = [
        "## LangGraph checkpointers",
        "",
        f"{args.steps} steps per saver and round, {args.rounds} rounds; state: 20 messages.",
        "",
    ]
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    for backend in backends:
        with tempfile.TemporaryDirectory() as directory:
            databases: list[str] = []
            server = os.environ.get(
                "CONVOSTORE_BENCH_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            )
            try:
                if backend == "sqlite":
                    savers = sqlite_savers(Path(directory))
                    theirs = "AsyncSqliteSaver"
                else:
                    savers = await postgres_savers(server, databases)
                    theirs = "AsyncPostgresSaver"
                rows = await run_backend(savers, args)
            finally:
                if databases:
                    await drop(server, databases)
        lines += [
            f"### {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}",
            "",
            f"| measure | convostore | {theirs} | convostore / theirs |",
            "|---|---:|---:|---:|",
            *rows[:2],
            "",
        ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="sqlite")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--quick", action="store_true", help="5 steps, one round")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 5, 1
    return args


if __name__ == "__main__":
    print(asyncio.run(main(parse_args())))
