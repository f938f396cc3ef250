"""Importers of the databases convostore replaces: axio-context-sqlite and agentstr.

Both read the source with :mod:`sqlite3` (read-only) and write through the same
:class:`~convostore.transfer._writer.Writer` as the JSONL import, so they share its
batching, idempotence and read-back verification.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from convostore import codec
from convostore.errors import ConflictError, SerializationError, ValidationError
from convostore.models import ContextMessage
from convostore.rules import DEFAULT_AGENT_KEY
from convostore.settings import redact
from convostore.sql.retry import translate_errors
from convostore.transfer._format import (
    NoProgress,
    Progress,
    TransferReport,
    check_row,
    source_time,
)
from convostore.transfer._writer import Writer


def _open_source(path: str | Path, tables: Sequence[str], tool: str) -> sqlite3.Connection:
    source = Path(path)
    if not source.is_file():
        raise ValidationError(f"{source}: no such file")
    try:
        conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise ValidationError(f"{source}: not an SQLite database ({exc})") from exc
    missing = [t for t in tables if t not in names]
    if missing:
        conn.close()
        raise ValidationError(f"{source}: not an {tool} database (missing tables {missing})")
    return conn


async def import_axio(
    engine: AsyncEngine,
    path: str | Path,
    *,
    progress: Progress | None = None,
) -> TransferReport:
    """Copy an axio-context-sqlite database into the context store tables of ``engine``.

    Sessions keep their project and id, messages their order; positions are renumbered
    0, 1, 2, ... within each session (axio's are already, unless rows were deleted by
    hand). Payloads (``plain:``, ``gzip:`` + base64, or bare JSON) are decoded and stored in
    convostore's format; token totals come from ``axio_context_tokens``, the preview from
    the first user message, the creation time from the first message. Sessions and messages
    already in the destination are left as they are.

    Raises:
        ValidationError: The file is not an axio database, or a row cannot be stored.
    """
    progress = progress or NoProgress()
    report = TransferReport("import-axio", str(path), redact(engine.url))
    writer = Writer(engine, progress)
    with closing(_open_source(path, ["axio_context_messages"], "axio-context-sqlite")) as src:
        has_tokens = bool(
            src.execute("SELECT 1 FROM sqlite_master WHERE name = 'axio_context_tokens'").fetchone()
        )
        sessions = _axio_sessions(src, has_tokens)
        total = sum(1 + s["next_position"] for s in sessions.values())
        # The source is read here too: its sqlite3 errors come out as DatabaseError.
        with translate_errors():
            await writer.begin()
            progress.start("importing axio sessions", total)
            for session in sessions.values():
                await writer.add("session", session)
            await writer.flush()
            cursor = src.execute(
                "SELECT project, session_id, role, content, created_at"
                " FROM axio_context_messages ORDER BY project, session_id, position, id"
            )
            current: tuple[str, str] | None = None
            position = 0
            for project, session_id, role, content, created_at in cursor:
                if (project, session_id) != current:
                    current, position = (project, session_id), 0
                where = f"axio session {session_id!r} of project {project!r}, message {position}"
                row = {
                    "project": project,
                    "session_id": session_id,
                    "position": position,
                    "role": role,
                    "content": _axio_content(content, where),
                    "created_at": source_time(created_at, where),
                }
                check_row("context_message", row, where)
                await writer.add("context_message", row)
                position += 1
            await writer.finish(report)
    return report


def _axio_content(text: object, where: str) -> Any:
    if not isinstance(text, str):
        raise ValidationError(f"{where}: content is not text")
    try:
        return codec.decode_axio_payload(text)
    except SerializationError as exc:
        raise ValidationError(f"{where}: {exc}") from exc


def _axio_sessions(src: sqlite3.Connection, has_tokens: bool) -> dict[tuple[str, str], Any]:
    """One session row per (project, session_id) found in messages or tokens."""
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    rows = src.execute(
        "SELECT project, session_id, COUNT(*), MIN(created_at), MAX(created_at)"
        " FROM axio_context_messages GROUP BY project, session_id ORDER BY project, session_id"
    )
    for project, session_id, count, first_at, last_at in rows:
        where = f"axio session {session_id!r} of project {project!r}"
        sessions[(project, session_id)] = {
            "project": project,
            "session_id": session_id,
            "input_tokens": 0,
            "output_tokens": 0,
            "next_position": int(count),
            "preview": None,
            "created_at": source_time(first_at, where),
            "updated_at": source_time(last_at, where),
        }
    if has_tokens:
        now = datetime.now(UTC)
        for project, session_id, input_tokens, output_tokens in src.execute(
            "SELECT project, session_id, input_tokens, output_tokens FROM axio_context_tokens"
            " ORDER BY project, session_id"
        ):
            session = sessions.setdefault(
                (project, session_id),
                {
                    "project": project,
                    "session_id": session_id,
                    "next_position": 0,
                    "preview": None,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            session["input_tokens"] = int(input_tokens)
            session["output_tokens"] = int(output_tokens)
    first_user = src.execute(
        "SELECT m.project, m.session_id, m.content FROM axio_context_messages m"
        " JOIN (SELECT project, session_id, MIN(position) AS p FROM axio_context_messages"
        "       WHERE role = 'user' GROUP BY project, session_id) f"
        " ON f.project = m.project AND f.session_id = m.session_id AND f.p = m.position"
        " WHERE m.role = 'user'"
    )
    for project, session_id, content in first_user:
        where = f"axio session {session_id!r} of project {project!r}"
        blocks = _axio_content(content, where)
        if isinstance(blocks, list) and all(isinstance(b, dict) for b in blocks):
            message = ContextMessage.model_construct(role="user", content=blocks)
            sessions[(project, session_id)]["preview"] = message.preview()
    for session in sessions.values():
        check_row("session", session, f"axio session {session['session_id']!r}")
    return sessions


# --- import-agentstr --------------------------------------------------------------------------


async def import_agentstr(
    engine: AsyncEngine,
    path: str | Path,
    *,
    agents: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> TransferReport:
    """Copy an agentstr SQLite database (tables ``user`` and ``message``) into ``engine``.

    Users keep their balance and current thread, messages their ``idx``; each thread's
    ``next_idx`` becomes its highest ``idx`` + 1. A NULL ``agent_name`` becomes the default
    agent (``agent_name=None`` in :class:`~convostore.SQLAlchemyDatabase`). Users and
    messages already in the destination are left as they are (balances are not merged).

    Args:
        engine: The destination, its schema at head.
        path: The agentstr SQLite file (opened read-only: it is not modified).
        agents: Import only these agents (``""`` is the default agent); all by default.
        progress: Told how far the import has got (a progress bar, on the command line).

    Raises:
        ConflictError: Two source messages share (agent, thread, idx) with different users
            (agentstr's key includes the user; convostore's does not). Nothing is written.
        ValidationError: The file is not an agentstr database, or a row cannot be stored.
    """
    progress = progress or NoProgress()
    report = TransferReport("import-agentstr", str(path), redact(engine.url))
    writer = Writer(engine, progress)
    agent_expr = f"COALESCE(agent_name, '{DEFAULT_AGENT_KEY}')"
    where_agents = ""
    params: tuple[str, ...] = ()
    if agents is not None:
        where_agents = f" WHERE {agent_expr} IN ({', '.join('?' for _ in agents)})"
        params = tuple(agents)
    with closing(_open_source(path, ["user", "message"], "agentstr")) as src:
        duplicates = src.execute(
            f"SELECT {agent_expr}, thread_id, idx FROM message{where_agents}"
            " GROUP BY 1, thread_id, idx HAVING COUNT(*) > 1 LIMIT 5",
            params,
        ).fetchall()
        if duplicates:
            raise ConflictError(
                f"{path}: several messages share one (agent, thread, idx), e.g. "
                f"{[tuple(d) for d in duplicates]}; convostore keeps one message per position"
            )
        (users_total,) = src.execute(f"SELECT COUNT(*) FROM user{where_agents}", params).fetchone()
        (messages_total,) = src.execute(
            f"SELECT COUNT(*) FROM message{where_agents}", params
        ).fetchone()
        threads = _agentstr_threads(src, agent_expr, where_agents, params)
        with translate_errors():
            await writer.begin()
            progress.start("importing agentstr data", users_total + len(threads) + messages_total)
            now = datetime.now(UTC)
            for agent, user_id, balance, current in src.execute(
                f"SELECT {agent_expr}, user_id, available_balance, current_thread_id FROM user"
                f"{where_agents} ORDER BY 1, user_id",
                params,
            ):
                row = {
                    "agent_name": agent,
                    "user_id": user_id,
                    "available_balance": balance,
                    "current_thread_id": current or None,
                    "created_at": now,
                    "updated_at": now,
                }
                check_row("user", row, f"agentstr user {user_id!r} of agent {agent!r}")
                await writer.add("user", row)
            for thread in threads:
                await writer.add("thread", thread)
            await writer.flush()
            cursor = src.execute(
                f"SELECT {agent_expr}, thread_id, idx, user_id, role, message, content, kind,"
                " satoshis, extra_inputs, extra_outputs, created_at FROM message"
                f"{where_agents} ORDER BY 1, thread_id, idx",
                params,
            )
            for record in cursor:
                row = _agentstr_message(record)
                await writer.add("message", row)
            await writer.finish(report)
    return report


def _agentstr_threads(
    src: sqlite3.Connection, agent_expr: str, where: str, params: tuple[str, ...]
) -> list[dict[str, Any]]:
    threads = []
    for agent, thread_id, max_idx, first_at, last_at, owner in src.execute(
        f"SELECT {agent_expr}, thread_id, MAX(idx), MIN(created_at), MAX(created_at),"
        " (SELECT f.user_id FROM message f WHERE f.agent_name IS message.agent_name"
        "  AND f.thread_id = message.thread_id ORDER BY f.idx LIMIT 1)"
        f" FROM message{where} GROUP BY 1, thread_id ORDER BY 1, thread_id",
        params,
    ):
        at = f"agentstr thread {thread_id!r} of agent {agent!r}"
        row = {
            "agent_name": agent,
            "thread_id": thread_id,
            "next_idx": int(max_idx) + 1,
            "created_at": source_time(first_at, at),
            "updated_at": source_time(last_at, at),
            "user_id": owner,
        }
        check_row("thread", row, at)
        threads.append(row)
    return threads


def _agentstr_extra(value: object, where: str) -> dict[str, Any]:
    # agentstr writes json.dumps(dict) or NULL, and reads NULL and "" as {}.
    if value is None or value == "":
        return {}
    try:
        parsed = orjson.loads(value) if isinstance(value, str | bytes) else value
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"{where}: invalid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ValidationError(f"{where}: must be a JSON object")
    return parsed


def _agentstr_message(record: Sequence[Any]) -> dict[str, Any]:
    (agent, thread_id, idx, user_id, role, message, content, kind, satoshis, ins, outs, at) = record
    where = f"agentstr message {idx} of thread {thread_id!r} (agent {agent!r})"
    row = {
        "agent_name": agent,
        "thread_id": thread_id,
        "idx": idx,
        "user_id": user_id,
        "role": role,
        "kind": kind or "request",
        "message": message or "",
        "content": content if content is not None else "",
        "satoshis": satoshis,
        "extra_inputs": _agentstr_extra(ins, f"{where} extra_inputs"),
        "extra_outputs": _agentstr_extra(outs, f"{where} extra_outputs"),
        "created_at": source_time(at, where),
    }
    check_row("message", row, where)
    return row
