"""The viewer's server time on SQLite: the session list at 100,000 sessions and transcript
pages of a 100,000-message session (target of issue 25: <= 50 ms each).

    python bench/ui.py [--sessions 100000] [--messages 100000] [--calls 30]
    python bench/ui.py --quick            # a smoke run: small sizes, a few calls

Writes one project into a temporary SQLite file: ``--sessions`` sessions of one message
each (rows inserted through the library's tables, so every payload is encoded as the
façades encode it) and one session of ``--messages`` messages (through ``append_many``).
Then times requests to the viewer's ASGI app in process, from the request to the last byte
of the rendered page (no network, no browser): the server time. Each figure is the median
and p95 of ``--calls`` calls after 3 warm-up calls.
"""

from __future__ import annotations

import os

os.environ.setdefault("CONVOSTORE_TELEMETRY", "off")

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import URL, insert

from convostore import ContextMessage, SQLAlchemyContextStore, connect
from convostore.sql.engine import create_engine
from convostore.sql.tables import ContextMessageRecord, ContextSessionRecord
from convostore.ui import create_app, read_only

PROJECT = "/bench/ui"
BIG = "big-session"


async def write(url: URL, sessions: int, messages: int) -> None:
    engine = await connect(url, migrate=True)
    try:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        batch = 5000
        for first in range(0, sessions, batch):
            ids = range(first, min(sessions, first + batch))
            moments = [start + timedelta(seconds=i) for i in ids]
            async with engine.begin() as conn:
                await conn.execute(
                    insert(ContextSessionRecord),
                    [
                        {
                            "project": PROJECT,
                            "session_id": f"s-{i:07d}",
                            "input_tokens": i % 5000,
                            "output_tokens": i % 700,
                            "next_position": 1,
                            "preview": f"question number {i} about the weather",
                            "created_at": at,
                            "updated_at": at,
                        }
                        for i, at in zip(ids, moments, strict=True)
                    ],
                )
                await conn.execute(
                    insert(ContextMessageRecord),
                    [
                        {
                            "project": PROJECT,
                            "session_id": f"s-{i:07d}",
                            "position": 0,
                            "role": "user",
                            "content": [
                                {"type": "text", "text": f"question number {i} about the weather"}
                            ],
                            "created_at": at,
                        }
                        for i, at in zip(ids, moments, strict=True)
                    ],
                )
        store = SQLAlchemyContextStore(engine, project=PROJECT, session_id=BIG)
        for first in range(0, messages, batch):
            await store.append_many(
                [
                    ContextMessage(
                        role="user" if i % 2 == 0 else "assistant",
                        content=[{"type": "text", "text": f"message {i}: " + "lorem ipsum " * 20}],
                    )
                    for i in range(first, min(messages, first + batch))
                ]
            )
    finally:
        await engine.dispose()


async def call(app: Any, path: str, **query: Any) -> tuple[int, int]:
    """One GET through the app: its status and the size of the page."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": urlencode(query).encode(),
        "headers": [(b"host", b"127.0.0.1:8765")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
    }
    status, size = 0, 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size


async def timed(app: Any, calls: int, path: str, **query: Any) -> tuple[float, float, int]:
    for _ in range(3):
        status, size = await call(app, path, **query)
        assert status == 200, (path, query, status)
    times = []
    for _ in range(calls):
        begin = time.perf_counter()
        await call(app, path, **query)
        times.append((time.perf_counter() - begin) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, size


async def run(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as directory:
        url = URL.create("sqlite+aiosqlite", database=str(Path(directory) / "ui.db"))
        begin = time.perf_counter()
        await write(url, args.sessions, args.messages)
        written = time.perf_counter() - begin
        engine = read_only(create_engine(url))
        app = create_app(engine)
        middle = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=args.sessions // 2)
        cases = [
            ("projects, first page", "/", {}),
            ("session list, first page", "/sessions", {"project": PROJECT}),
            (
                "session list, a page in the middle",
                "/sessions",
                {"project": PROJECT, "before_at": middle.isoformat(), "before_id": "s-9999999"},
            ),
            ("transcript, first page", "/transcript", {"project": PROJECT, "session": BIG}),
            (
                "transcript, a page in the middle",
                "/transcript",
                {"project": PROJECT, "session": BIG, "after": args.messages // 2},
            ),
            (
                "transcript, last page",
                "/transcript",
                {"project": PROJECT, "session": BIG, "before": args.messages},
            ),
            (
                "transcript, go to a position",
                "/transcript",
                {"project": PROJECT, "session": BIG, "at": args.messages * 3 // 4},
            ),
        ]
        lines = [
            f"SQLite, {args.sessions:,} sessions and a {args.messages:,}-message session "
            f"(written in {written:.0f} s); median and p95 of {args.calls} calls, 50 rows a page",
            "",
            "| page | median ms | p95 ms | page bytes |",
            "|---|---:|---:|---:|",
        ]
        try:
            for name, path, query in cases:
                median, p95, size = await timed(app, args.calls, path, **query)
                lines.append(f"| {name} | {median:.1f} | {p95:.1f} | {size:,} |")
        finally:
            await engine.dispose()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few calls")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.messages, args.calls = 300, 300, 3
    print(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
