#!/usr/bin/env python3
"""Benchmark convostore against the raw driver floor and axio-context-sqlite, in one run.

Every system gets its own fresh database and the same deterministic workload (short user
turns, 1-2 KB assistant replies, 4-8 KB tool results of repetitive JSON). Within each phase
the systems alternate over ``--rounds`` rounds, in a rotating order, so load on a shared
machine falls on all of them alike; the report gives medians and the ratios between systems,
next to the targets of issue 5. It measures whatever the installed convostore does: optional
APIs (``append_many``, a latest-n window, ``list_sessions(limit=...)``) are detected at run
time and reported as n/a when absent.

Usage::

    python bench/bench.py                      # SQLite: convostore, raw aiosqlite, axio
    python bench/bench.py --backend all        # and PostgreSQL (asyncpg), MariaDB (asyncmy)
    python bench/bench.py --quick              # a tiny smoke run: a few messages, one round
    python bench/bench.py --profile 300        # cProfile 300 convostore appends instead

Server URLs: ``CONVOSTORE_BENCH_POSTGRESQL_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
and ``CONVOSTORE_BENCH_MARIADB_URL`` (default ``mysql://root@127.0.0.1:3306/``) name the server;
the benchmark creates one database per system and phase there and drops it afterwards.
"""

from __future__ import annotations

import os

# Measure convostore as it runs without the otel extra: the dev environment installs
# OpenTelemetry for the telemetry tests, and every call would otherwise open a (no-op) span.
os.environ.setdefault("CONVOSTORE_TELEMETRY", "off")

import argparse
import asyncio
import cProfile
import gc
import importlib
import inspect
import io
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import uuid4

import orjson
import zstandard
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

import convostore
from convostore import ContextMessage, SQLAlchemyContextStore, SQLAlchemyDatabase, transfer

PROJECT = "bench-project"
CONVOSTORE_NAME = "convostore"
CONCURRENT_TASKS = 64
CONCURRENT_APPENDS = 20  # per task and round
SERVER_POOL = 16  # connections, for convostore and the raw floor alike
AGENT = "bench-agent"
USER = "bench-user"
COMPRESS_ABOVE = 512  # bytes of JSON, as convostore and axio both use
PREVIEW_LENGTH = 80
TIMES = "\u00d7"  # the multiplication sign of ratios

# Whether convostore's engines write the search index (--search-index): a one-item list so
# main() can set it for the whole run.
SEARCH_INDEX = [True]


class NotApplicableError(Exception):
    """The system has no API for this workload."""


# --------------------------------------------------------------------------------------
# The workload: a deterministic pool of messages, cycled through by every system.

_WORD_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use an each "
    "which she do how their if will up other about out many then them these so some her "
    "would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come "
    "made may part over new sound take only little work know place year live me back give "
    "most very after thing our just name good sentence man think say great where help "
    "through much before line right too mean old any same tell boy follow came want show "
    "also around form three small set put end does another well large must big even such "
    "because turn here why ask went men read need land different home us move try kind "
    "hand picture again change off play spell air away animal house point page letter "
    "mother answer found study still learn should world high every near add food between "
    "own below country plant last school father keep tree never start city earth eye light "
    "thought head under story saw left few while along might close something seem next "
    "hard open example begin life always those both paper together got group often run"
)
WORDS = tuple(_WORD_TEXT.split())
TOOL_NAMES = ("read_file", "list_dir", "search_code", "run_tests", "grep", "http_get")
STATUSES = ("ok", "ok", "ok", "modified", "missing", "error")


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
    return " ".join(words).capitalize() + rng.choice(".....?!")


def _prose(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    parts: list[str] = []
    size = 0
    while size < target:
        sentence = _sentence(rng)
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)[:target].rstrip() + "."


def _tool_json(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    records: list[dict[str, Any]] = []
    body = b"[]"
    while len(body) < target:
        n = len(records)
        records.append(
            {
                "id": n,
                "path": f"/srv/app/{rng.choice(WORDS)}/{rng.choice(WORDS)}_{n}.py",
                "name": rng.choice(WORDS),
                "status": rng.choice(STATUSES),
                "size": rng.randint(100, 90_000),
                "lines": rng.randint(1, 2_000),
                "tags": [rng.choice(WORDS) for _ in range(3)],
            }
        )
        body = orjson.dumps({"results": records, "truncated": False})
    return body.decode()


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated message in every system's shape."""

    role: str  # "user" or "assistant", as axio has no "tool" role
    kind: str  # "user", "assistant" or "tool": which generator made it
    blocks: list[dict[str, Any]]  # axio-shaped content blocks
    text: str  # the agent database's message text
    cs: ContextMessage
    axio: Any  # axio.messages.Message, when axio is importable

    @property
    def agent_role(self) -> str:
        return {"user": "user", "assistant": "agent", "tool": "tool"}[self.kind]

    @property
    def agent_kind(self) -> str:
        return {"user": "request", "assistant": "final_response", "tool": "tool_message"}[self.kind]


def generate_pool(seed: int, size: int, axio_message: Any) -> list[Sample]:
    """A conversation of ``size`` messages: user turn, reply, and a tool round every other turn."""
    rng = random.Random(seed)
    pool: list[Sample] = []
    turn = 0
    while len(pool) < size:
        specs: list[tuple[str, str, list[dict[str, Any]], str]] = []
        question = _prose(rng, 50, 200)
        specs.append(("user", "user", [{"type": "text", "text": question}], question))
        if turn % 2 == 1:
            call_id = f"toolu_{rng.getrandbits(64):016x}"
            name = rng.choice(TOOL_NAMES)
            lead = _prose(rng, 60, 160)
            specs.append(
                (
                    "assistant",
                    "assistant",
                    [
                        {"type": "text", "text": lead},
                        {
                            "type": "tool_use",
                            "id": call_id,
                            "name": name,
                            "input": {"query": rng.choice(WORDS), "limit": 50},
                        },
                    ],
                    lead,
                )
            )
            result = _tool_json(rng, 4_000, 8_000)
            specs.append(
                (
                    "user",
                    "tool",
                    [
                        {
                            "type": "tool_result",
                            "tool_use_id": call_id,
                            "content": result,
                            "is_error": False,
                        }
                    ],
                    result,
                )
            )
        reply = _prose(rng, 1_000, 2_000)
        specs.append(("assistant", "assistant", [{"type": "text", "text": reply}], reply))
        for role, kind, blocks, message_text in specs:
            axio = (
                axio_message.from_dict({"role": role, "content": blocks})
                if axio_message is not None
                else None
            )
            pool.append(
                Sample(
                    role=role,
                    kind=kind,
                    blocks=blocks,
                    text=message_text,
                    cs=ContextMessage(role=role, content=blocks),
                    axio=axio,
                )
            )
        turn += 1
    return pool[:size]


class Workload:
    """Cycles through the pool; message ``i`` of a session is always the same message."""

    def __init__(self, pool: list[Sample]) -> None:
        self.pool = pool

    def take(self, count: int, start: int = 0) -> list[Sample]:
        return [self.pool[(start + i) % len(self.pool)] for i in range(count)]


# --------------------------------------------------------------------------------------
# The payload format of the raw floor: convostore's own (header byte + JSON, zstd above
# 512 bytes), so the floor pays for compression like the library does.

_ZSTD_C = zstandard.ZstdCompressor(level=3, write_content_size=True)
_ZSTD_D = zstandard.ZstdDecompressor()


def encode_payload(value: Any) -> bytes:
    raw = orjson.dumps(value)
    if len(raw) > COMPRESS_ABOVE:
        body: bytes = _ZSTD_C.compress(raw)
        if len(body) < len(raw):
            return b"\x03" + body
    return b"\x01" + raw


def decode_payload(data: bytes) -> Any:
    if data[0] == 0x03:
        return orjson.loads(_ZSTD_D.decompress(data[1:]))
    return orjson.loads(data[1:])


def first_text(blocks: Any) -> str:
    for block in blocks:
        if block.get("type") == "text":
            value: str = block["text"]
            return value[:PREVIEW_LENGTH] + ("..." if len(value) > PREVIEW_LENGTH else "")
    return ""


# --------------------------------------------------------------------------------------
# Where fresh databases live: files in a temporary directory, or databases on a server.


class Place:
    """Creates and drops one fresh database per system and phase."""

    backend: str

    async def create(self, name: str) -> str:
        """Create database ``name``; return a SQLAlchemy URL for convostore."""
        raise NotImplementedError

    async def drop(self, name: str) -> None:
        raise NotImplementedError

    def path(self, name: str) -> Path:
        raise NotImplementedError


class SqlitePlace(Place):
    backend = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.db"

    async def create(self, name: str) -> str:
        self.drop_files(name)
        return f"sqlite+aiosqlite:///{self.path(name)}"

    async def drop(self, name: str) -> None:
        self.drop_files(name)

    def drop_files(self, name: str) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with suppress(FileNotFoundError):
                Path(f"{self.path(name)}{suffix}").unlink()


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int
    user: str
    password: str


def parse_server(url: str, default_port: int) -> Server:
    parts = urlsplit(url)
    return Server(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or default_port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


class PostgresPlace(Place):
    backend = "postgresql"

    def __init__(self, url: str) -> None:
        self.server = parse_server(url, 5432)
        self.admin_database = urlsplit(url).path.lstrip("/") or "postgres"

    async def _admin(self, sql: str) -> None:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(
            host=self.server.host,
            port=self.server.port,
            user=self.server.user,
            password=self.server.password or None,
            database=self.admin_database,
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create(self, name: str) -> str:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, name: str) -> str:
        s = self.server
        auth = s.user + (f":{s.password}" if s.password else "")
        return f"postgresql+asyncpg://{auth}@{s.host}:{s.port}/{name}"

    async def drop(self, name: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MariadbPlace(Place):
    backend = "mariadb"

    def __init__(self, url: str) -> None:
        self.server = parse_server(url, 3306)

    async def _admin(self, sql: str) -> None:
        import asyncmy

        s = self.server
        conn = await asyncmy.connect(
            host=s.host, port=s.port, user=s.user, password=s.password, autocommit=True
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql)
        finally:
            conn.close()

    async def create(self, name: str) -> str:
        await self._admin(f"DROP DATABASE IF EXISTS `{name}`")
        await self._admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return self.url(name)

    def url(self, name: str) -> str:
        s = self.server
        auth = s.user + (f":{s.password}" if s.password else "")
        return f"mariadb+asyncmy://{auth}@{s.host}:{s.port}/{name}?charset=utf8mb4"

    async def drop(self, name: str) -> None:
        await self._admin(f"DROP DATABASE IF EXISTS `{name}`")


# --------------------------------------------------------------------------------------
# The raw floor: one thin adapter per driver, the same minimal schema and statements.


class RawDriver:
    """A driver connection behind four calls; SQL is written with ``?`` placeholders."""

    dialect: str

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def commit(self) -> None:
        """Commit what :meth:`execute` started (a no-op where each statement autocommits)."""

    def transaction(self) -> Any:
        """An async context manager around several statements."""
        raise NotImplementedError

    def now(self, offset_seconds: float = 0.0) -> Any:
        return datetime.now(UTC) + timedelta(seconds=offset_seconds)

    async def close(self) -> None:
        raise NotImplementedError


class SqliteDriver(RawDriver):
    dialect = "sqlite"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, path: Path) -> SqliteDriver:
        import aiosqlite

        conn = await aiosqlite.connect(str(path))
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA busy_timeout=5000",
            "PRAGMA synchronous=NORMAL",
        ):
            await conn.execute(pragma)
        return cls(conn)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        await self.conn.execute(sql, args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(await self.conn.execute_fetchall(sql, args))

    async def commit(self) -> None:
        await self.conn.commit()

    @asynccontextmanager
    async def transaction(self) -> Any:
        await self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self.conn.rollback()
            raise
        await self.conn.commit()

    def now(self, offset_seconds: float = 0.0) -> Any:
        return (datetime.now(UTC) + timedelta(seconds=offset_seconds)).isoformat()

    async def vacuum(self) -> None:
        await self.conn.commit()
        await self.conn.execute("VACUUM")
        await self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        await self.conn.close()


class AsyncpgDriver(RawDriver):
    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, place: PostgresPlace, name: str) -> AsyncpgDriver:
        import asyncpg

        s = place.server
        conn = await asyncpg.connect(
            host=s.host, port=s.port, user=s.user, password=s.password or None, database=name
        )
        return cls(conn)

    @staticmethod
    def _sql(sql: str) -> str:
        parts = sql.split("?")
        return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        await self.conn.execute(self._sql(sql), *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(self._sql(sql), rows)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(await self.conn.fetch(self._sql(sql), *args))

    def transaction(self) -> Any:
        return self.conn.transaction()

    async def close(self) -> None:
        await self.conn.close()


class AsyncmyDriver(RawDriver):
    dialect = "mysql"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, place: MariadbPlace, name: str) -> AsyncmyDriver:
        import asyncmy

        s = place.server
        conn = await asyncmy.connect(
            host=s.host,
            port=s.port,
            user=s.user,
            password=s.password,
            database=name,
            charset="utf8mb4",
            autocommit=True,
            binary_prefix=True,
        )
        return cls(conn)

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        async with self.conn.cursor() as cursor:
            await cursor.execute(self._sql(sql), tuple(args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.conn.cursor() as cursor:
            await cursor.executemany(self._sql(sql), [tuple(row) for row in rows])

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Sequence[Any]]:
        async with self.conn.cursor() as cursor:
            await cursor.execute(self._sql(sql), tuple(args))
            return list(await cursor.fetchall())

    @asynccontextmanager
    async def transaction(self) -> Any:
        await self.conn.begin()
        try:
            yield
        except BaseException:
            await self.conn.rollback()
            raise
        await self.conn.commit()

    def now(self, offset_seconds: float = 0.0) -> Any:
        return (datetime.now(UTC) + timedelta(seconds=offset_seconds)).replace(tzinfo=None)

    async def close(self) -> None:
        self.conn.close()


# Column types of the raw schema per dialect.
RAW_TYPES = {
    "sqlite": {
        "project": "TEXT",
        "sid": "TEXT",
        "key": "TEXT",
        "blob": "BLOB",
        "text": "TEXT",
        "ts": "TEXT",
        "int": "INTEGER",
    },
    "postgresql": {
        "project": "TEXT",
        "sid": "TEXT",
        "key": "TEXT",
        "blob": "BYTEA",
        "text": "TEXT",
        "ts": "TIMESTAMPTZ",
        "int": "BIGINT",
    },
    "mysql": {
        "project": "VARCHAR(255)",
        "sid": "VARCHAR(128)",
        "key": "VARCHAR(255)",
        "blob": "LONGBLOB",
        "text": "LONGTEXT",
        "ts": "DATETIME(6)",
        "int": "BIGINT",
    },
}
RAW_DDL = (
    "CREATE TABLE context_messages (project {project} NOT NULL, session_id {sid} NOT NULL, "
    "position {int} NOT NULL, role VARCHAR(16) NOT NULL, content {blob} NOT NULL, "
    "created_at {ts} NOT NULL, PRIMARY KEY (project, session_id, position))",
    "CREATE TABLE agent_messages (agent_name VARCHAR(128) NOT NULL, thread_id {key} NOT NULL, "
    "idx {int} NOT NULL, user_id {key} NOT NULL, role VARCHAR(16) NOT NULL, "
    "kind VARCHAR(32) NOT NULL, message {text} NOT NULL, content {blob} NOT NULL, "
    "satoshis {int}, extra_inputs {blob} NOT NULL, extra_outputs {blob} NOT NULL, "
    "created_at {ts} NOT NULL, PRIMARY KEY (agent_name, thread_id, idx))",
    "CREATE INDEX ix_agent_messages_user ON agent_messages (agent_name, user_id, thread_id)",
)
# PostgreSQL cannot infer parameter types in a SELECT list, so they are cast there.
_PG_CASTS = {"text": "::text", "blob": "::bytea", "ts": "::timestamptz", "int": "::bigint"}


def _p(dialect: str, kind: str) -> str:
    return "?" + (_PG_CASTS[kind] if dialect == "postgresql" else "")


def raw_append_sql(dialect: str) -> str:
    """One statement: the position is computed under the insert's own write lock."""

    def p(kind: str) -> str:
        return _p(dialect, kind)

    return (
        "INSERT INTO context_messages (project, session_id, position, role, content, created_at) "
        f"SELECT {p('text')}, {p('text')}, COALESCE(MAX(position) + 1, 0), {p('text')}, "
        f"{p('blob')}, {p('ts')} FROM context_messages WHERE project = ? AND session_id = ?"
    )


def raw_agent_sql(dialect: str) -> str:
    def p(kind: str) -> str:
        return _p(dialect, kind)

    return (
        "INSERT INTO agent_messages (agent_name, thread_id, idx, user_id, role, kind, message, "
        "content, satoshis, extra_inputs, extra_outputs, created_at) "
        f"SELECT {p('text')}, {p('text')}, COALESCE(MAX(idx) + 1, 0), {p('text')}, "
        f"{p('text')}, {p('text')}, {p('text')}, {p('blob')}, {p('int')}, {p('blob')}, "
        f"{p('blob')}, {p('ts')} FROM agent_messages WHERE agent_name = ? AND thread_id = ?"
    )


RAW_INSERT_ROWS = (
    "INSERT INTO context_messages (project, session_id, position, role, content, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
RAW_LIST = (
    "SELECT m.session_id, COUNT(*), MIN(m.created_at) AS created, "
    "(SELECT f.content FROM context_messages f WHERE f.project = m.project "
    "AND f.session_id = m.session_id AND f.role = 'user' ORDER BY f.position LIMIT 1) "
    "FROM context_messages m WHERE m.project = ? "
    "GROUP BY m.project, m.session_id ORDER BY created DESC"
)


# --------------------------------------------------------------------------------------
# The systems. Each method runs one operation; setup helpers take the fastest route.


class ContextSystem:
    """One implementation of the context-store workloads."""

    name: str
    notes: list[str]

    async def open(self, phase: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def append(self, session: str, sample: Sample) -> None:
        raise NotImplementedError

    async def append_bulk(self, session: str, samples: list[Sample]) -> None:
        raise NotApplicableError

    async def fill(self, session: str, samples: list[Sample]) -> None:
        """Setup: give ``session`` these messages, by the fastest route available."""
        raise NotImplementedError

    async def fill_sessions(self, sessions: int, per_session: list[Sample]) -> None:
        """Setup: ``sessions`` sessions of these messages, with distinct creation times."""
        raise NotImplementedError

    async def history(self, session: str) -> int:
        raise NotImplementedError

    async def window(self, session: str, count: int) -> int:
        raise NotApplicableError

    async def list_sessions(self) -> int:
        raise NotImplementedError

    async def list_page(self, count: int) -> int:
        raise NotApplicableError

    async def fork(self, session: str) -> None:
        raise NotImplementedError

    async def storage(self) -> tuple[float | None, float | None]:
        """(file bytes after VACUUM, payload bytes) per stored message."""
        return None, None


def session_ids(prefix: str, count: int) -> Iterator[str]:
    return (f"{prefix}-{i:06d}" for i in range(count))


class ConvostoreContext(ContextSystem):
    """convostore's SQLAlchemyContextStore on an engine from ``convostore.connect``."""

    name = "convostore"

    def __init__(self, place: Place) -> None:
        self.place = place
        self.notes = []
        self.engine: AsyncEngine | None = None
        self.db = ""
        self._window: Callable[[SQLAlchemyContextStore, int], Awaitable[Sequence[Any]]] | None
        self._window = None
        self._window_checked = False

    async def open(self, phase: str) -> None:
        self.db = f"bench_{os.getpid()}_cs_{phase}"
        url = await self.place.create(self.db)
        self.engine = await convostore.connect(url, migrate=True, search_index=SEARCH_INDEX[0])
        self.store = SQLAlchemyContextStore(self.engine, session_id="s", project=PROJECT)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
        await self.place.drop(self.db)

    def at(self, session: str) -> SQLAlchemyContextStore:
        return self.store.with_session(session)

    async def append(self, session: str, sample: Sample) -> None:
        await self.at(session).append(sample.cs)

    async def append_bulk(self, session: str, samples: list[Sample]) -> None:
        store = self.at(session)
        if not hasattr(store, "append_many"):
            raise NotApplicableError
        await store.append_many([s.cs for s in samples])

    async def fill(self, session: str, samples: list[Sample]) -> None:
        store = self.at(session)
        if hasattr(store, "append_many"):
            for start in range(0, len(samples), 500):
                await store.append_many([s.cs for s in samples[start : start + 500]])
        else:
            for sample in samples:
                await store.append(sample.cs)

    async def fill_sessions(self, sessions: int, per_session: list[Sample]) -> None:
        """A few sessions through the public API; beyond that, copies of one of them.

        Appending 100,000 sessions one transaction each takes minutes, so past 2,000 the
        rows of one template session (written by ``append_many``) are copied to the other
        session ids through SQLAlchemy Core ``executemany`` over convostore's own table
        metadata: every table keyed by (project, session_id), whatever columns it has now,
        with each datetime column set to a distinct creation time.
        """
        ids = list(session_ids("list", sessions))
        if sessions <= 2_000:
            await self._fill_public(ids, per_session)
            return
        template = ids[0]
        await self.fill(template, per_session)
        await self._copy_sessions(template, ids[1:])
        self.notes.append(
            f"{sessions:,} sessions: one written by append_many, copied to the rest by "
            "SQLAlchemy Core executemany into convostore's tables"
        )

    async def _fill_public(self, ids: list[str], per_session: list[Sample]) -> None:
        messages = [s.cs for s in per_session]
        # One transaction for all of them when the store offers one; fewer commits, same rows.
        if hasattr(self.store, "transaction") and hasattr(self.store, "append_many"):
            for start in range(0, len(ids), 500):
                async with self.store.transaction() as bound:
                    for sid in ids[start : start + 500]:
                        await bound.with_session(sid).append_many(messages)
        else:
            for sid in ids:
                await self.fill(sid, per_session)

    async def _copy_sessions(self, template: str, targets: list[str]) -> None:
        from convostore.sql.tables import Base, readable_columns

        assert self.engine is not None
        tables = [
            t for t in Base.metadata.sorted_tables if "project" in t.c and "session_id" in t.c
        ]
        base = datetime.now(UTC) - timedelta(days=30)
        async with self.engine.begin() as conn:
            for table in tables:
                auto = table.autoincrement_column
                # readable_columns: a message table's search feed is not a column everywhere
                # (SQLite keeps none since 0007); the copies need not be searchable.
                result = await conn.execute(
                    select(*readable_columns(table)).where(
                        table.c.project == PROJECT, table.c.session_id == template
                    )
                )
                rows = [dict(row) for row in result.mappings()]
                for row in rows:
                    if auto is not None:
                        row.pop(auto.name, None)
                batch: list[dict[str, Any]] = []
                for n, sid in enumerate(targets, 1):
                    when = base + timedelta(seconds=n)
                    for row in rows:
                        copy = {
                            key: when if isinstance(value, datetime) else value
                            for key, value in row.items()
                        }
                        copy["session_id"] = sid
                        batch.append(copy)
                    if len(batch) >= 5_000:
                        await conn.execute(insert(table), batch)
                        batch = []
                if batch:
                    await conn.execute(insert(table), batch)

    async def history(self, session: str) -> int:
        return len(await self.at(session).get_history())

    async def window(self, session: str, count: int) -> int:
        if not self._window_checked:
            raise NotApplicableError
        if self._window is None:
            raise NotApplicableError
        return len(await self._window(self.at(session), count))

    async def find_window(self, session: str, count: int, expected: list[Sample]) -> None:
        """Find a latest-n method on the store, and keep it only if it returns the latest n."""
        self._window_checked = True
        store = self.at(session)
        candidates: list[tuple[str, Callable[..., Awaitable[Any]]]] = []
        for name in ("get_window", "latest", "get_latest", "last", "tail", "window", "get_last"):
            method = getattr(store, name, None)
            if callable(method):
                candidates.append((name, method))
        with suppress(TypeError, ValueError):
            if "limit" in inspect.signature(store.get_history).parameters:
                candidates.append(("get_history(limit=...)", store.get_history))
        want = [s.blocks for s in expected[-count:]]
        for label, method in candidates:
            call = _count_caller(method)
            try:
                got = await call(store, count)
            except Exception as exc:  # an API of another shape: try the next one
                self.notes.append(f"window: {label} failed ({type(exc).__name__}: {exc})")
                continue
            if [m.content for m in got] == want:
                self._window = call
                self.notes.append(f"window: {label}")
                return
            self.notes.append(f"window: {label} did not return the latest {count}; skipped")
        self.notes.append("window: no latest-n method on the store (n/a)")

    async def list_sessions(self) -> int:
        return len(await self.store.list_sessions())

    def has_page(self) -> bool:
        try:
            return "limit" in inspect.signature(self.store.list_sessions).parameters
        except (TypeError, ValueError):
            return False

    async def list_page(self, count: int) -> int:
        if not self.has_page():
            raise NotApplicableError
        page: Any = await self.store.list_sessions(limit=count)  # type: ignore[call-arg]
        # A page object or a plain list: count what came back either way.
        items = getattr(page, "items", page)
        return len(items() if callable(items) else items)

    async def fork(self, session: str) -> None:
        await self.at(session).fork()

    async def storage(self) -> tuple[float | None, float | None]:
        from convostore.sql.tables import ContextMessageRecord

        assert self.engine is not None
        if SEARCH_INDEX[0] and self.place.backend == "sqlite":
            # SQLite's index catches up after the appends: count it once it has.
            await transfer.backfill(self.engine)
        table = ContextMessageRecord.__tablename__
        async with self.engine.connect() as conn:
            count = (await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
            length = "LENGTH" if self.place.backend == "sqlite" else "OCTET_LENGTH"
            payload = (
                await conn.execute(text(f"SELECT SUM({length}(content)) FROM {table}"))
            ).scalar_one()
        disk: float | None = None
        if isinstance(self.place, SqlitePlace):
            async with self.engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.exec_driver_sql("VACUUM")
                await auto.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            disk = self.place.path(self.db).stat().st_size / count
        return disk, float(payload) / count


def _count_caller(
    method: Callable[..., Awaitable[Any]],
) -> Callable[[SQLAlchemyContextStore, int], Awaitable[Any]]:
    """Call ``method``'s namesake on a store with a count, by keyword where it has one."""
    name = getattr(method, "__name__", "")
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    keyword = next((k for k in ("limit", "n", "count", "size") if k in params), None)

    async def call(store: SQLAlchemyContextStore, count: int) -> Any:
        bound = getattr(store, name)
        if keyword is not None:
            return await bound(**{keyword: count})
        return await bound(count)

    return call


class AxioContext(ContextSystem):
    """axio-context-sqlite's SQLiteContextStore on its own ``connect``."""

    name = "axio"

    def __init__(self, place: SqlitePlace, module: Any) -> None:
        self.place = place
        self.module = module
        self.notes = []
        self.conn: Any = None
        self.db = ""

    async def open(self, phase: str) -> None:
        self.db = f"bench_{os.getpid()}_axio_{phase}"
        await self.place.create(self.db)
        self.conn = await self.module.connect(self.place.path(self.db))

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
        await self.place.drop(self.db)

    def at(self, session: str) -> Any:
        return self.module.SQLiteContextStore(self.conn, session, project=PROJECT)

    async def append(self, session: str, sample: Sample) -> None:
        await self.at(session).append(sample.axio)

    async def fill(self, session: str, samples: list[Sample]) -> None:
        await self._insert_rows([(session, samples, None)])

    async def fill_sessions(self, sessions: int, per_session: list[Sample]) -> None:
        base = datetime.now(UTC) - timedelta(days=30)
        await self._insert_rows(
            [
                (sid, per_session, base + timedelta(seconds=n))
                for n, sid in enumerate(session_ids("list", sessions))
            ]
        )

    async def _insert_rows(self, plan: list[tuple[str, list[Sample], datetime | None]]) -> None:
        # axio has no bulk API: its own table, through its own compress_payload() SQL
        # function and the json.dumps its append uses, in one executemany.
        import json

        rows = []
        for session, samples, when in plan:
            created = (when or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
            for position, sample in enumerate(samples):
                content = json.dumps(sample.axio.to_dict()["content"])
                rows.append((session, PROJECT, position, sample.role, content, created))
        await self.conn.executemany(
            "INSERT INTO axio_context_messages "
            "(session_id, project, position, role, content, created_at) "
            "VALUES (?, ?, ?, ?, compress_payload(?), ?)",
            rows,
        )
        await self.conn.commit()

    async def history(self, session: str) -> int:
        return len(await self.at(session).get_history())

    async def list_sessions(self) -> int:
        return len(await self.at("s").list_sessions())

    async def fork(self, session: str) -> None:
        await self.at(session).fork()

    async def storage(self) -> tuple[float | None, float | None]:
        rows = await self.conn.execute_fetchall(
            "SELECT COUNT(*), SUM(LENGTH(CAST(content AS BLOB))) FROM axio_context_messages"
        )
        count, payload = next(iter(rows))
        await self.conn.commit()
        await self.conn.execute("VACUUM")
        await self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        disk = self.place.path(self.db).stat().st_size / count
        return disk, payload / count


class RawContext(ContextSystem):
    """The floor: the driver itself, a minimal schema, one statement per operation."""

    def __init__(self, place: Place) -> None:
        self.place = place
        self.notes = []
        self.driver: RawDriver | None = None
        self.db = ""
        self.name = {"sqlite": "raw aiosqlite", "postgresql": "raw asyncpg"}.get(
            place.backend, "raw asyncmy"
        )

    async def open(self, phase: str) -> None:
        self.db = f"bench_{os.getpid()}_raw_{phase}"
        await self.place.create(self.db)
        if isinstance(self.place, SqlitePlace):
            self.driver = await SqliteDriver.open(self.place.path(self.db))
        elif isinstance(self.place, PostgresPlace):
            self.driver = await AsyncpgDriver.open(self.place, self.db)
        else:
            assert isinstance(self.place, MariadbPlace)
            self.driver = await AsyncmyDriver.open(self.place, self.db)
        types = RAW_TYPES[self.driver.dialect]
        for ddl in RAW_DDL:
            await self.driver.execute(ddl.format(**types))
        await self.driver.commit()
        self.append_sql = raw_append_sql(self.driver.dialect)
        self.agent_sql = raw_agent_sql(self.driver.dialect)

    async def close(self) -> None:
        if self.driver is not None:
            await self.driver.close()
            self.driver = None
        await self.place.drop(self.db)

    @property
    def d(self) -> RawDriver:
        assert self.driver is not None
        return self.driver

    async def append(self, session: str, sample: Sample) -> None:
        payload = encode_payload(sample.blocks)
        await self.d.execute(
            self.append_sql,
            (PROJECT, session, sample.role, payload, self.d.now(), PROJECT, session),
        )
        await self.d.commit()

    async def append_bulk(self, session: str, samples: list[Sample]) -> None:
        payloads = [(s.role, encode_payload(s.blocks)) for s in samples]
        async with self.d.transaction():
            rows = await self.d.fetch(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM context_messages "
                "WHERE project = ? AND session_id = ?",
                (PROJECT, session),
            )
            first = int(rows[0][0])
            now = self.d.now()
            await self.d.executemany(
                RAW_INSERT_ROWS,
                [
                    (PROJECT, session, first + n, role, payload, now)
                    for n, (role, payload) in enumerate(payloads)
                ],
            )

    async def fill(self, session: str, samples: list[Sample]) -> None:
        await self.append_bulk(session, samples)

    async def fill_sessions(self, sessions: int, per_session: list[Sample]) -> None:
        payloads = [(s.role, encode_payload(s.blocks)) for s in per_session]
        rows = []
        for n, sid in enumerate(session_ids("list", sessions)):
            when = self.d.now(-30 * 86_400 + n)
            for position, (role, payload) in enumerate(payloads):
                rows.append((PROJECT, sid, position, role, payload, when))
        async with self.d.transaction():
            for start in range(0, len(rows), 10_000):
                await self.d.executemany(RAW_INSERT_ROWS, rows[start : start + 10_000])

    async def history(self, session: str) -> int:
        rows = await self.d.fetch(
            "SELECT role, content FROM context_messages WHERE project = ? AND session_id = ? "
            "ORDER BY position",
            (PROJECT, session),
        )
        return len([(role, decode_payload(content)) for role, content in rows])

    async def window(self, session: str, count: int) -> int:
        rows = await self.d.fetch(
            "SELECT role, content FROM context_messages WHERE project = ? AND session_id = ? "
            f"ORDER BY position DESC LIMIT {int(count)}",
            (PROJECT, session),
        )
        return len([(role, decode_payload(content)) for role, content in reversed(rows)])

    async def _list(self, sql: str) -> int:
        rows = await self.d.fetch(sql, (PROJECT,))
        return len(
            [
                (sid, count, created, first_text(decode_payload(first)) if first else "")
                for sid, count, created, first in rows
            ]
        )

    async def list_sessions(self) -> int:
        return await self._list(RAW_LIST)

    async def list_page(self, count: int) -> int:
        return await self._list(f"{RAW_LIST} LIMIT {int(count)}")

    async def fork(self, session: str) -> None:
        async with self.d.transaction():
            await self.d.execute(
                "INSERT INTO context_messages "
                "(project, session_id, position, role, content, created_at) "
                "SELECT project, ?, position, role, content, created_at FROM context_messages "
                "WHERE project = ? AND session_id = ?",
                (uuid4().hex, PROJECT, session),
            )

    async def storage(self) -> tuple[float | None, float | None]:
        length = {"sqlite": "LENGTH", "postgresql": "OCTET_LENGTH"}.get(self.d.dialect, "LENGTH")
        rows = await self.d.fetch(f"SELECT COUNT(*), SUM({length}(content)) FROM context_messages")
        count, payload = int(rows[0][0]), float(rows[0][1])
        disk: float | None = None
        if isinstance(self.d, SqliteDriver) and isinstance(self.place, SqlitePlace):
            await self.d.vacuum()
            disk = self.place.path(self.db).stat().st_size / count
        return disk, payload / count

    # The agent database's floor: the same driver, table agent_messages.

    async def add_message(self, thread: str, sample: Sample) -> None:
        empty = encode_payload({})
        await self.d.execute(
            self.agent_sql,
            (
                AGENT,
                thread,
                USER,
                sample.agent_role,
                sample.agent_kind,
                sample.text,
                encode_payload(""),
                None,
                empty,
                empty,
                self.d.now(),
                AGENT,
                thread,
            ),
        )
        await self.d.commit()

    async def fill_thread(self, thread: str, samples: list[Sample]) -> None:
        for sample in samples:
            await self.add_message(thread, sample)

    async def get_messages(self, thread: str) -> int:
        rows = await self.d.fetch(
            "SELECT idx, user_id, role, kind, message, content, satoshis, extra_inputs, "
            "extra_outputs, created_at FROM agent_messages "
            "WHERE agent_name = ? AND thread_id = ? AND user_id = ? ORDER BY idx",
            (AGENT, thread, USER),
        )
        return len(
            [
                (
                    idx,
                    user,
                    role,
                    kind,
                    msg,
                    decode_payload(c),
                    sat,
                    decode_payload(i),
                    decode_payload(o),
                    at,
                )
                for idx, user, role, kind, msg, c, sat, i, o, at in rows
            ]
        )


class ConvostoreAgent:
    """convostore's SQLAlchemyDatabase (agentstr's API) on its own fresh database."""

    name = "convostore"

    def __init__(self, place: Place) -> None:
        self.place = place
        self.engine: AsyncEngine | None = None
        self.db = ""

    async def open(self, phase: str) -> None:
        self.db = f"bench_{os.getpid()}_csagent_{phase}"
        url = await self.place.create(self.db)
        self.engine = convostore.create_engine(url, search_index=SEARCH_INDEX[0])
        self.database = await SQLAlchemyDatabase(
            engine=self.engine, agent_name=AGENT, migrate=True
        ).async_init()

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
        await self.place.drop(self.db)

    async def add_message(self, thread: str, sample: Sample) -> None:
        await self.database.add_message(
            thread, USER, sample.agent_role, message=sample.text, kind=sample.agent_kind
        )

    async def fill_thread(self, thread: str, samples: list[Sample]) -> None:
        if hasattr(self.database, "transaction"):
            async with self.database.transaction() as bound:
                for sample in samples:
                    await bound.add_message(
                        thread, USER, sample.agent_role, message=sample.text, kind=sample.agent_kind
                    )
        else:
            for sample in samples:
                await self.add_message(thread, sample)

    async def get_messages(self, thread: str) -> int:
        return len(await self.database.get_messages(thread, USER))


# --------------------------------------------------------------------------------------
# Running the phases: alternate the systems, collect samples, take medians.


@dataclass
class Sizes:
    appends: int
    bulk: int
    history: int
    window: int
    window_reads: int
    history_reads: int
    list_sessions: int
    list_messages: int
    list_reads: int
    big_sessions: int
    page_reads: int
    forks: int
    agent_appends: int
    agent_history: int

    @classmethod
    def for_args(cls, args: argparse.Namespace) -> Sizes:
        if args.quick:
            return cls(
                appends=20,
                bulk=50,
                history=100,
                window=50,
                window_reads=5,
                history_reads=2,
                list_sessions=50,
                list_messages=5,
                list_reads=1,
                big_sessions=args.big_sessions and 3_000,
                page_reads=3,
                forks=1,
                agent_appends=20,
                agent_history=100,
            )
        return cls(
            appends=args.appends,
            bulk=1_000,
            history=2_000,
            window=50,
            window_reads=50,
            history_reads=5,
            list_sessions=2_000,
            list_messages=20,
            list_reads=3,
            big_sessions=args.big_sessions,
            page_reads=20,
            forks=3,
            agent_appends=args.appends,
            agent_history=2_000,
        )


@dataclass
class Results:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    na: set[tuple[str, str]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, system: str, value: float) -> None:
        self.samples.setdefault((metric, system), []).append(value)

    def median(self, metric: str, system: str) -> float | None:
        values = self.samples.get((metric, system))
        return statistics.median(values) if values else None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rotated(systems: Sequence[Any], round_number: int) -> list[Any]:
    k = round_number % len(systems)
    return list(systems[k:]) + list(systems[:k])


async def timed(operation: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await operation()
    return time.perf_counter() - start


async def measure(
    results: Results,
    metric: str,
    systems: Sequence[Any],
    operation: Callable[[Any], Awaitable[Any]],
    repeats: int,
    round_number: int,
) -> None:
    """Time ``operation(system)`` ``repeats`` times per system, in milliseconds.

    The systems take turns on every repetition (in an order that rotates), so a burst of
    load from elsewhere on the machine lands on all of them rather than on one.
    """
    for repeat in range(repeats):
        for system in rotated(systems, round_number + repeat):
            if (metric, system.name) in results.na:
                continue
            try:
                elapsed = await timed(partial(operation, system))
            except NotApplicableError:
                results.na.add((metric, system.name))
                continue
            results.add(metric, system.name, elapsed * 1_000)


async def append_rate(
    results: Results,
    metric: str,
    systems: Sequence[Any],
    append: Callable[[Any, str, Sample], Awaitable[None]],
    samples: list[Sample],
    round_number: int,
) -> None:
    """Sequential appends in chunks of 50, the systems taking turns chunk by chunk."""
    session = f"append-{round_number}"
    latencies: dict[str, list[float]] = {system.name: [] for system in systems}
    for system in systems:
        await append(system, session, samples[0])  # creates the session's state
    gc.collect()
    for chunk, start in enumerate(range(0, len(samples), 50)):
        for system in rotated(systems, round_number + chunk):
            for sample in samples[start : start + 50]:
                latencies[system.name].append(await timed(partial(append, system, session, sample)))
    for name, values in latencies.items():
        results.add(metric, name, len(values) / sum(values))
        if metric == "append":
            results.add("append_p50", name, percentile(values, 50) * 1_000)
            results.add("append_p99", name, percentile(values, 99) * 1_000)


async def phase_appends(
    systems: list[ContextSystem], work: Workload, sizes: Sizes, rounds: int, results: Results
) -> None:
    for system in systems:
        await system.open("append")
    try:
        for r in range(rounds):
            samples = work.take(sizes.appends, start=r * 7)
            await append_rate(
                results, "append", systems, lambda sys_, sid, m: sys_.append(sid, m), samples, r
            )
            for system in rotated(systems, r):
                if ("bulk", system.name) in results.na:
                    continue
                batch = work.take(sizes.bulk, start=r * 11)
                session = f"bulk-{r}"
                gc.collect()
                try:
                    elapsed = await timed(partial(system.append_bulk, session, batch))
                except NotApplicableError:
                    results.na.add(("bulk", system.name))
                    continue
                results.add("bulk", system.name, len(batch) / elapsed)
            log(f"  appends: round {r + 1}/{rounds} done")
    finally:
        for system in systems:
            await system.close()


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def phase_concurrent(place: Place, work: Workload, rounds: int, results: Results) -> None:
    """Many conversations at once: CONCURRENT_TASKS tasks, each appending to its own session.

    convostore: one engine (a pool of SERVER_POOL on servers); its appends are group
    committed. The raw floor: one transaction per message, as many at once as the backend
    allows it: on SQLite one connection, each transaction in turn (one writer); on a server
    a pool of SERVER_POOL connections, each task taking one per append.
    """
    samples = work.take(CONCURRENT_APPENDS)
    for r in range(rounds):
        for runner in rotated([_concurrent_convostore, _concurrent_raw], r):
            name, rate = await runner(place, samples, r)
            results.add("concurrent", name, rate)
        sequential = results.median("append", CONVOSTORE_NAME)
        rate_now = results.samples[("concurrent", CONVOSTORE_NAME)][-1]
        if sequential:
            results.add("speedup", CONVOSTORE_NAME, rate_now / sequential)
        log(f"  concurrent appends: round {r + 1}/{rounds} done")


async def _run_writers(
    append: Callable[[str, Sample], Awaitable[None]], samples: list[Sample], r: int
) -> float:
    async def writer(session: str) -> None:
        for sample in samples:
            await append(session, sample)

    sessions = [f"c{r}-{i:03d}" for i in range(CONCURRENT_TASKS)]
    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(writer(s) for s in sessions))
    return CONCURRENT_TASKS * len(samples) / (time.perf_counter() - start)


async def _concurrent_convostore(place: Place, samples: list[Sample], r: int) -> tuple[str, float]:
    db = f"bench_{os.getpid()}_cs_conc{r}"
    url = await place.create(db)
    engine = (
        await convostore.connect(url, search_index=SEARCH_INDEX[0])
        if isinstance(place, SqlitePlace)
        else convostore.create_engine(
            url, pool_size=SERVER_POOL, max_overflow=0, search_index=SEARCH_INDEX[0]
        )
    )
    try:
        await convostore.migrate.prepare(engine, migrate=True)
        store = SQLAlchemyContextStore(engine, session_id="s", project=PROJECT)

        async def append(session: str, sample: Sample) -> None:
            await store.with_session(session).append(sample.cs)

        return CONVOSTORE_NAME, await _run_writers(append, samples, r)
    finally:
        await engine.dispose()
        await place.drop(db)


async def _concurrent_raw(place: Place, samples: list[Sample], r: int) -> tuple[str, float]:
    raw = RawContext(place)
    await raw.open(f"conc{r}")
    try:
        sql = raw.append_sql
        if isinstance(place, PostgresPlace):
            import asyncpg

            s = place.server
            pool = await asyncpg.create_pool(
                host=s.host,
                port=s.port,
                user=s.user,
                password=s.password or None,
                database=raw.db,
                min_size=SERVER_POOL,
                max_size=SERVER_POOL,
            )
            pg_sql = AsyncpgDriver._sql(sql)

            async def append(session: str, sample: Sample) -> None:
                payload = encode_payload(sample.blocks)
                async with pool.acquire() as conn:
                    await conn.execute(
                        pg_sql,
                        PROJECT,
                        session,
                        sample.role,
                        payload,
                        raw.d.now(),
                        PROJECT,
                        session,
                    )

            try:
                return raw.name, await _run_writers(append, samples, r)
            finally:
                await pool.close()
        # SQLite (one writer) and the rest: one connection, one transaction at a time.
        lock = asyncio.Lock()

        async def append_one(session: str, sample: Sample) -> None:
            async with lock:
                await raw.append(session, sample)

        return raw.name, await _run_writers(append_one, samples, r)
    finally:
        await raw.close()


async def phase_history(
    systems: list[ContextSystem], work: Workload, sizes: Sizes, rounds: int, results: Results
) -> None:
    session = "history"
    samples = work.take(sizes.history)
    for system in systems:
        await system.open("history")
    try:
        for system in systems:
            start = time.perf_counter()
            await system.fill(session, samples)
            log(
                f"  history: {system.name} holds {sizes.history:,} messages "
                f"({time.perf_counter() - start:.1f} s)"
            )
            disk, payload = await system.storage()
            if disk is not None:
                results.add("disk", system.name, disk)
            if payload is not None:
                results.add("payload", system.name, payload)
            if isinstance(system, ConvostoreContext):
                await system.find_window(session, sizes.window, samples)
        for r in range(rounds):
            gc.collect()
            await measure(
                results, "history", systems, lambda x: x.history(session), sizes.history_reads, r
            )
            await measure(
                results,
                "window",
                systems,
                lambda x: x.window(session, sizes.window),
                sizes.window_reads,
                r,
            )
            gc.collect()
            await measure(results, "fork", systems, lambda x: x.fork(session), sizes.forks, r)
            log(f"  history/window/fork: round {r + 1}/{rounds} done")
    finally:
        for system in systems:
            await system.close()


async def phase_list(
    systems: list[ContextSystem], work: Workload, sizes: Sizes, rounds: int, results: Results
) -> None:
    for system in systems:
        await system.open("list")
    try:
        per_session = work.take(sizes.list_messages)
        for system in systems:
            start = time.perf_counter()
            await system.fill_sessions(sizes.list_sessions, per_session)
            log(
                f"  list: {system.name} holds {sizes.list_sessions:,} sessions "
                f"({time.perf_counter() - start:.1f} s)"
            )
        for r in range(rounds):
            gc.collect()
            await measure(
                results, "list", systems, lambda x: x.list_sessions(), sizes.list_reads, r
            )
            log(f"  list: round {r + 1}/{rounds} done")
    finally:
        for system in systems:
            await system.close()


async def phase_page(
    systems: list[ContextSystem], work: Workload, sizes: Sizes, rounds: int, results: Results
) -> None:
    convo = next(s for s in systems if isinstance(s, ConvostoreContext))
    # axio has no paged listing, so it is left out; convostore only if it pages.
    paged = [s for s in systems if isinstance(s, RawContext | ConvostoreContext)]
    for system in paged:
        await system.open("page")
    try:
        if not convo.has_page():
            results.notes.append(
                "first page at many sessions: list_sessions() takes no limit (n/a)"
            )
            results.na.add(("page", convo.name))
            return
        per_session = work.take(1)
        for system in paged:
            start = time.perf_counter()
            await system.fill_sessions(sizes.big_sessions, per_session)
            log(
                f"  page: {system.name} holds {sizes.big_sessions:,} sessions "
                f"({time.perf_counter() - start:.1f} s)"
            )
        for r in range(rounds):
            await measure(results, "page", paged, lambda x: x.list_page(50), sizes.page_reads, r)
            log(f"  page: round {r + 1}/{rounds} done")
    finally:
        for system in paged:
            await system.close()


async def phase_agent(
    systems: list[Any], work: Workload, sizes: Sizes, rounds: int, results: Results
) -> None:
    for system in systems:
        await system.open("agent")
    try:
        history = work.take(sizes.agent_history)
        for system in systems:
            await system.fill_thread("history", history)
        for r in range(rounds):
            samples = work.take(sizes.agent_appends, start=r * 5)
            await append_rate(
                results,
                "agent_add",
                systems,
                lambda sys_, tid, m: sys_.add_message(tid, m),
                samples,
                r,
            )
            gc.collect()
            await measure(
                results,
                "agent_get",
                systems,
                lambda x: x.get_messages("history"),
                sizes.history_reads,
                r,
            )
            log(f"  agent database: round {r + 1}/{rounds} done")
    finally:
        for system in systems:
            await system.close()


# --------------------------------------------------------------------------------------
# The report.


@dataclass(frozen=True, slots=True)
class Target:
    """One target of issue 5 for the convostore column."""

    label: str
    other: str | None  # compare with this system's value, or None for an absolute bound
    bound: float
    at_least: bool

    def judge(self, values: dict[str, float | None], convo: str) -> str:
        mine = values.get(convo)
        if mine is None:
            return "n/a"
        if self.other is None:
            measured = mine
            shown = fmt_number(measured)
        else:
            theirs = values.get(self.other)
            if not theirs:
                return "n/a"
            measured = mine / theirs
            shown = f"{measured:.2f}{TIMES}"
        ok = measured >= self.bound if self.at_least else measured <= self.bound
        return "met" if ok else f"missed ({shown})"


@dataclass(frozen=True, slots=True)
class Row:
    metric: str
    label: str
    higher_is_better: bool
    targets: tuple[Target, ...] = ()


def rows_for(backend: str, sizes: Sizes, raw: str) -> list[Row]:
    sqlite = backend == "sqlite"
    append_targets: tuple[Target, ...] = (
        (
            Target(f"≥ 1.0{TIMES} axio", "axio", 1.0, True),
            Target(f"≥ 0.5{TIMES} {raw}", raw, 0.5, True),
        )
        if sqlite
        else (Target(f"≥ 0.7{TIMES} {raw}", raw, 0.7, True),)
        if backend == "postgresql"
        else ()
    )
    concurrent_targets: tuple[Target, ...] = (
        (Target(f"≥ 0.7{TIMES} {raw}", raw, 0.7, True),) if backend == "postgresql" else ()
    )
    return [
        Row("append", "single append (msgs/s)", True, append_targets),
        Row("append_p50", "single append p50 (ms)", False),
        Row("append_p99", "single append p99 (ms)", False),
        Row(
            "concurrent",
            f"{CONCURRENT_TASKS} tasks appending to {CONCURRENT_TASKS} sessions at once (msgs/s)",
            True,
            concurrent_targets,
        ),
        Row(
            "speedup",
            f"  the same, over {CONVOSTORE_NAME}'s own sequential appends ({TIMES})",
            True,
            (Target(f"≥ 3{TIMES}", None, 3.0, True),) if sqlite else (),
        ),
        Row(
            "bulk",
            f"bulk append of {sizes.bulk:,} (msgs/s)",
            True,
            (Target("≥ 30,000 msgs/s", None, 30_000, True),) if sqlite else (),
        ),
        Row(
            "history",
            f"full history read, {sizes.history:,} msgs (ms)",
            False,
            (Target(f"≤ 0.5{TIMES} axio", "axio", 0.5, False),) if sqlite else (),
        ),
        Row(
            "window",
            f"latest {sizes.window} of {sizes.history:,} (ms)",
            False,
            (Target("≤ 1 ms", None, 1.0, False),) if sqlite else (),
        ),
        Row(
            "list",
            f"list sessions, {sizes.list_sessions:,} {TIMES} {sizes.list_messages} (ms)",
            False,
            (Target(f"≤ 0.25{TIMES} axio", "axio", 0.25, False),) if sqlite else (),
        ),
        Row(
            "page",
            f"first page of 50 at {sizes.big_sessions:,} sessions (ms)",
            False,
            (Target("≤ 5 ms", None, 5.0, False),),
        ),
        Row("fork", f"fork of {sizes.history:,} messages (ms)", False),
        Row(
            "disk",
            "bytes on disk per message (after VACUUM)",
            False,
            (Target(f"≤ 0.8{TIMES} axio", "axio", 0.8, False),) if sqlite else (),
        ),
        Row("payload", "stored payload bytes per message", False),
        Row(
            "agent_add",
            "agent database add_message (msgs/s)",
            True,
            (Target(f"≥ 0.5{TIMES} {raw}", raw, 0.5, True),) if sqlite else (),
        ),
        Row("agent_get", f"agent database get_messages of {sizes.agent_history:,} (ms)", False),
    ]


def fmt_number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(mine: float | None, theirs: float | None) -> str:
    if mine is None or not theirs:
        return "n/a"
    return f"{mine / theirs:.2f}{TIMES}"


def render_table(
    backend: str, sizes: Sizes, results: Results, convo: str, others: list[str]
) -> str:
    raw = next((o for o in others if o.startswith("raw")), "raw")
    header = ["workload", convo, *others]
    header += [f"{convo} / {o}" for o in others]
    header += ["target", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows_for(backend, sizes, raw):
        values = {name: results.median(row.metric, name) for name in (convo, *others)}
        if all(v is None for v in values.values()):
            continue
        cells = [row.label, fmt_number(values[convo])]
        cells += [fmt_number(values[o]) for o in others]
        cells += [ratio(values[convo], values[o]) for o in others]
        cells.append("; ".join(t.label for t in row.targets) or "—")
        cells.append("; ".join(t.judge(values, convo) for t in row.targets) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_note() -> str:
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return (
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load} at the end of the run"
    )


# --------------------------------------------------------------------------------------
# Entry points.


def load_axio() -> tuple[Any, Any]:
    """(axio_context_sqlite, axio.messages.Message), or (None, None) where not installed."""
    try:
        module = importlib.import_module("axio_context_sqlite")
        message = importlib.import_module("axio.messages").Message
    except ImportError:
        return None, None
    return module, message


async def run_backend(
    backend: str, place: Place, axio: Any, work: Workload, sizes: Sizes, rounds: int
) -> tuple[str, list[str]]:
    results = Results()
    convo = ConvostoreContext(place)
    raw = RawContext(place)
    systems: list[ContextSystem] = [convo, raw]
    if axio is not None and isinstance(place, SqlitePlace):
        systems.insert(1, AxioContext(place, axio))
    log(f"{backend}: {', '.join(s.name for s in systems)}")
    await phase_appends(systems, work, sizes, rounds, results)
    await phase_concurrent(place, work, rounds, results)
    await phase_history(systems, work, sizes, rounds, results)
    await phase_list(systems, work, sizes, rounds, results)
    if sizes.big_sessions:
        await phase_page(systems, work, sizes, rounds, results)
    await phase_agent([ConvostoreAgent(place), RawContext(place)], work, sizes, rounds, results)
    notes = [f"{s.name}: {n}" for s in systems for n in dict.fromkeys(s.notes)]
    notes += results.notes
    others = [s.name for s in systems if s is not convo]
    return render_table(backend, sizes, results, convo.name, others), notes


def make_place(backend: str, directory: Path) -> Place:
    if backend == "sqlite":
        return SqlitePlace(directory)
    if backend == "postgresql":
        return PostgresPlace(
            os.environ.get(
                "CONVOSTORE_BENCH_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            )
        )
    return MariadbPlace(
        os.environ.get("CONVOSTORE_BENCH_MARIADB_URL", "mysql://root@127.0.0.1:3306/")
    )


async def run(args: argparse.Namespace) -> str:
    axio_module, axio_message = load_axio()
    sizes = Sizes.for_args(args)
    pool = generate_pool(args.seed, 600 if not args.quick else 60, axio_message)
    work = Workload(pool)
    backends = ["sqlite", "postgresql", "mariadb"] if args.backend == "all" else [args.backend]
    rounds = 1 if args.quick else args.rounds
    started = datetime.now(UTC)
    sections = []
    directory = Path(tempfile.mkdtemp(prefix="convostore-bench-"))
    try:
        for backend in backends:
            place = make_place(backend, directory)
            table, notes = await run_backend(backend, place, axio_module, work, sizes, rounds)
            title = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mariadb": "MariaDB"}
            section = f"\n### {title[backend]}\n\n{table}\n"
            if notes:
                section += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
            sections.append(section)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    mean_size = statistics.mean(len(orjson.dumps(s.blocks)) for s in pool)
    axio_line = (
        "axio-context-sqlite "
        + importlib.import_module("importlib.metadata").version("axio-context-sqlite")
        if axio_module is not None
        else "axio-context-sqlite not installed: its column is skipped"
    )
    command = "python bench/bench.py " + " ".join(sys.argv[1:])
    header = [
        f"Run {started:%Y-%m-%d %H:%M} UTC: `{command.strip()}`, seed {args.seed}, "
        f"{rounds} round(s), medians. {machine_note()}. convostore {convostore.__version__}; "
        f"{axio_line}.",
        "",
        f"Messages: {len(pool)} generated ({mean_size:,.0f} bytes of JSON on average), cycled. "
        "Ratios are convostore ÷ the other system: above 1 is better for msgs/s, below 1 is "
        "better for milliseconds and bytes.",
        "",
    ]
    return "\n".join(header) + "\n".join(sections)


async def profile(args: argparse.Namespace, count: int) -> str:
    """cProfile ``count`` convostore appends on a fresh database of ``--backend`` (SQLite
    unless PostgreSQL or MariaDB is named); the top of the profile."""
    pool = generate_pool(args.seed, 60, None)
    directory = Path(tempfile.mkdtemp(prefix="convostore-profile-"))
    backend = args.backend if args.backend in ("postgresql", "mariadb") else "sqlite"
    place = make_place(backend, directory)
    name = f"bench_{os.getpid()}_profile"
    try:
        url = await place.create(name)
        engine = await convostore.connect(url, migrate=True, search_index=SEARCH_INDEX[0])
        store = SQLAlchemyContextStore(engine, session_id="profile", project=PROJECT)
        await store.append(pool[0].cs)
        profiler = cProfile.Profile()
        profiler.enable()
        start = time.perf_counter()
        for n in range(count):
            await store.append(pool[n % len(pool)].cs)
        elapsed = time.perf_counter() - start
        profiler.disable()
        await engine.dispose()
    finally:
        await place.drop(name)
        shutil.rmtree(directory, ignore_errors=True)
    out = io.StringIO()
    out.write(f"{count} appends in {elapsed:.3f} s under cProfile ({count / elapsed:,.0f}/s)\n")
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql", "mariadb", "all"], default="sqlite"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alternation (3)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, one round")
    parser.add_argument("--seed", type=int, default=5, help="workload seed (5)")
    parser.add_argument(
        "--appends", type=int, default=500, help="sequential appends per system and round (500)"
    )
    parser.add_argument(
        "--big-sessions",
        type=int,
        default=100_000,
        help="sessions for the first-page listing (100000; 0 skips it)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "results-latest.md",
        help="where to write the markdown report (bench/results-latest.md)",
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="profile N appends and exit"
    )
    parser.add_argument(
        "--search-index",
        choices=("on", "off"),
        default="on",
        help="convostore engines write the search index (on, the default) or not",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    SEARCH_INDEX[0] = args.search_index == "on"
    if args.profile:
        print(asyncio.run(profile(args, args.profile)))
        return 0
    report = asyncio.run(run(args))
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    log(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
