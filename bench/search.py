"""Search over a million messages: the first page's latency, by how common the words are.

    python bench/search.py [--backend sqlite|postgresql|all] [--messages 1000000]
    python bench/search.py --write-cost [--rounds 5]
    python bench/search.py --after-appends 2000 [--rounds 5]

Writes ``--messages`` context messages through the public API (``append_many``, 100 per
session, one project) into a database of its own (a temporary SQLite file; a new
PostgreSQL database on ``CONVOSTORE_BENCH_POSTGRESQL_URL``, default the local server,
dropped at the end). Each message has 12 to 30 words drawn from a 30,000-word vocabulary
with Zipf frequencies (s = 1.1), so a few words are in most messages and most words in
few. It then times ``store.search(query, limit=20)`` over the whole project: queries whose
word is in about 100, 1,000, 10,000 and 100,000 messages, two words together, a prefix,
and one session's search. Each figure is the median (and p95) of 30 calls after 3 warm-up
calls.

``--write-cost`` measures what indexing adds to the write path instead: on two SQLite
files, single ``append`` calls (a commit each) and ``append_many`` of 100 messages, in
alternating rounds, on an engine that writes the search feed and on one made with
``search_index=False``.

``--after-appends N`` times the first search right after N single appends to a fresh
SQLite file (the benchmark's ~1.9 KB messages, ``bench/bench.py``'s pool): on SQLite the
index catches up when a search runs, so this figure includes indexing whatever the writer
thread's idle catch-up had not reached; then the same search again (steady state).
Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import URL, make_url, text
from sqlalchemy.pool import NullPool

from convostore import ContextMessage, SQLAlchemyContextStore, create_engine, migrate

PER_SESSION = 100
VOCABULARY = 30_000
CALLS = 30
WARMUP = 3
WRITERS = 4


def vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 9))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    weights = list(itertools.accumulate(1 / (rank + 1) ** 1.1 for rank in range(VOCABULARY)))
    return ordered, weights


def texts(count: int, seed: int) -> tuple[list[str], Counter[str]]:
    rng = random.Random(seed)
    words, cumulative = vocabulary(rng)
    total = cumulative[-1]
    df: Counter[str] = Counter()
    out = []
    for _ in range(count):
        chosen = [
            words[bisect.bisect(cumulative, rng.random() * total)]
            for _ in range(rng.randint(12, 30))
        ]
        df.update(set(chosen))
        out.append(" ".join(chosen))
    return out, df


def closest(df: Counter[str], target: int) -> str:
    return min(df, key=lambda word: (abs(df[word] - target), word))


async def fill(url: URL, messages: list[str]) -> float:
    engine = create_engine(url)
    started = time.perf_counter()
    sessions = [messages[i : i + PER_SESSION] for i in range(0, len(messages), PER_SESSION)]
    queue = iter(enumerate(sessions))

    async def writer() -> None:
        for number, chunk in queue:
            store = SQLAlchemyContextStore(engine, project="/bench", session_id=f"s{number}")
            await store.append_many(
                [ContextMessage(role="user", content=[{"type": "text", "text": t}]) for t in chunk]
            )

    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return elapsed


async def measure(url: URL, queries: dict[str, tuple[str, str | None]]) -> dict[str, str]:
    engine = create_engine(url)
    store = SQLAlchemyContextStore(engine, project="/bench", session_id="s0")
    results = {}
    try:
        for label, (query, session) in queries.items():
            times = []
            hits = 0
            for call in range(WARMUP + CALLS):
                started = time.perf_counter()
                page = await store.search(query, limit=20, session_id=session)
                if call >= WARMUP:
                    times.append((time.perf_counter() - started) * 1000)
                hits = len(page)
            times.sort()
            p95 = times[int(len(times) * 0.95) - 1]
            results[label] = f"{statistics.median(times):.1f} ms (p95 {p95:.1f}; {hits} hits)"
    finally:
        await engine.dispose()
    return results


async def run_backend(
    backend: str, messages: list[str], queries: dict[str, tuple[str, str | None]]
) -> dict[str, str]:
    if backend == "sqlite":
        directory = tempfile.mkdtemp(prefix="convostore-search-")
        url = URL.create("sqlite+aiosqlite", database=str(Path(directory) / "search.db"))
        await migrate.upgrade(url)
        try:
            written = await fill(url, messages)
            out = await measure(url, queries)
            out["fill"] = f"{written:.0f} s ({len(messages) / written:,.0f} messages/s)"
            size = (Path(directory) / "search.db").stat().st_size
            out["file"] = f"{size / 1e6:,.0f} MB"
            return out
        finally:
            shutil.rmtree(directory)
    admin = make_url(
        os.environ.get(
            "CONVOSTORE_BENCH_POSTGRESQL_URL",
            "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        )
    )
    name = f"convostore_search_{uuid.uuid4().hex[:8]}"
    url = admin.set(database=name)
    engine = create_engine(admin, poolclass=NullPool)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        await migrate.upgrade(url)
        written = await fill(url, messages)
        analyzed = create_engine(url, poolclass=NullPool)
        async with analyzed.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
        await analyzed.dispose()
        out = await measure(url, queries)
        out["fill"] = f"{written:.0f} s ({len(messages) / written:,.0f} messages/s)"
        return out
    finally:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        await engine.dispose()


async def write_cost(rounds: int) -> None:
    """Appends on an engine that writes the search feed and on one that does not."""
    directory = Path(tempfile.mkdtemp(prefix="convostore-write-cost-"))
    texts_, _ = texts(20_000, 3)
    results: dict[tuple[str, str], list[float]] = {}
    modes = {"indexed": True, "not indexed": False}
    try:
        engines = {}
        for mode, index in modes.items():
            url = URL.create("sqlite+aiosqlite", database=str(directory / f"{mode}.db"))
            await migrate.upgrade(url)
            engines[mode] = create_engine(url, search_index=index)
        for round_ in range(rounds):
            order = list(modes) if round_ % 2 == 0 else list(reversed(modes))
            for mode in order:
                store = SQLAlchemyContextStore(
                    engines[mode], project="/bench", session_id=f"r{round_}"
                )
                batch = [
                    ContextMessage(role="user", content=[{"type": "text", "text": t}])
                    for t in texts_[round_ * 1000 : round_ * 1000 + 1000]
                ]
                started = time.perf_counter()
                for message in batch[:500]:
                    await store.append(message)
                single = 500 / (time.perf_counter() - started)
                started = time.perf_counter()
                for i in range(500, 1000, 100):
                    await store.append_many(batch[i : i + 100])
                bulk = 500 / (time.perf_counter() - started)
                results.setdefault((mode, "single"), []).append(single)
                results.setdefault((mode, "bulk"), []).append(bulk)
        for engine in engines.values():
            await engine.dispose()
        sizes = {mode: (directory / f"{mode}.db").stat().st_size for mode in engines}
    finally:
        shutil.rmtree(directory)
    print(f"SQLite, {rounds} alternating rounds, median msgs/s")
    print("| write | search_index=True | search_index=False | ratio |")
    print("|---|---|---|---|")
    for kind, label in (("single", "append (a commit each)"), ("bulk", "append_many of 100")):
        on = statistics.median(results[("indexed", kind)])
        off = statistics.median(results[("not indexed", kind)])
        print(f"| {label} | {on:,.0f} | {off:,.0f} | {on / off:.2f}x |")
    on_size, off_size = sizes["indexed"], sizes["not indexed"]
    ratio = on_size / off_size
    print(f"| file size | {on_size / 1e6:.1f} MB | {off_size / 1e6:.1f} MB | {ratio:.2f}x |")


def _bench_pool() -> list[Any]:
    # bench/bench.py's generated messages (~1.9 KB of JSON each), from this directory.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench

    return list(bench.generate_pool(5, 600, None))


async def after_appends(count: int, rounds: int) -> None:
    """The first search right after ``count`` appends, catch-up included."""
    pool = _bench_pool()
    first: list[float] = []
    again: list[float] = []
    pending: list[int] = []
    for round_ in range(rounds):
        directory = Path(tempfile.mkdtemp(prefix="convostore-after-appends-"))
        try:
            engine = create_engine(URL.create("sqlite+aiosqlite", database=str(directory / "a.db")))
            store = SQLAlchemyContextStore(engine, project="/bench", session_id="s")
            for i in range(count):
                await store.append(pool[(i + round_) % len(pool)].cs)
            async with engine.connect() as conn:
                pending.append(
                    (
                        await conn.execute(
                            text(
                                "SELECT count(*) FROM context_messages WHERE rowid > (SELECT "
                                "watermark FROM search_state WHERE name = 'context_messages')"
                            )
                        )
                    ).scalar_one()
                )
            started = time.perf_counter()
            hits = await store.search("water", limit=20)
            first.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert await store.search("water", limit=20) == hits
            again.append(time.perf_counter() - started)
            await engine.dispose()
        finally:
            shutil.rmtree(directory)
    print(f"SQLite, {count:,} single appends then search('water', limit=20); {rounds} rounds")
    print(f"| rows not indexed yet at the search (median) | {statistics.median(pending):,.0f} |")
    print(f"| first search, catch-up included: median ms | {statistics.median(first) * 1e3:.0f} |")
    print(f"| first search: max ms | {max(first) * 1e3:.0f} |")
    print(f"| the same search again: median ms | {statistics.median(again) * 1e3:.1f} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--write-cost", action="store_true", help="what indexing costs writes")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of --write-cost (6)")
    parser.add_argument("--after-appends", type=int, default=0, help="see the docstring")
    args = parser.parse_args()
    if args.after_appends:
        await after_appends(args.after_appends, args.rounds)
        return
    if args.write_cost:
        await write_cost(args.rounds)
        return
    started = time.perf_counter()
    messages, df = texts(args.messages, args.seed)
    print(f"generated {len(messages):,} texts in {time.perf_counter() - started:.0f} s")
    scale = args.messages / 1_000_000
    rare, uncommon, common, frequent = (
        closest(df, max(1, int(n * scale))) for n in (100, 1_000, 10_000, 100_000)
    )
    queries: dict[str, tuple[str, str | None]] = {
        f"one word in {df[rare]:,} messages": (rare, None),
        f"one word in {df[uncommon]:,} messages": (uncommon, None),
        f"one word in {df[common]:,} messages": (common, None),
        f"one word in {df[frequent]:,} messages": (frequent, None),
        f"two words ({df[uncommon]:,} and {df[frequent]:,})": (f"{uncommon} {frequent}", None),
        f"prefix ({rare[:3]}*)": (f"{rare[:3]}*", None),
        f"one session, word in {df[frequent]:,} messages": (frequent, "s42"),
    }
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    results = {backend: await run_backend(backend, messages, queries) for backend in backends}
    print(f"\n{args.messages:,} messages in one project; search(query, limit=20), first page")
    print("| query | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for label in [*queries, "fill", "file"]:
        row = [results[b].get(label, "") for b in backends]
        if any(row):
            print(f"| {label} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    asyncio.run(main())
