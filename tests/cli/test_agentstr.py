"""``convostore import-agentstr``: agentstr's documented SQLite schema into any backend."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from sqlalchemy import URL

from convostore import Database
from tests.cli.conftest import json_out, run_cli, url_arg

# agentstr 0.6's tables, as its SQLiteDatabase creates them.
AGENTSTR_SCHEMA = """
CREATE TABLE user (
    agent_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    available_balance INTEGER NOT NULL,
    current_thread_id TEXT,
    PRIMARY KEY (agent_name, user_id)
);
CREATE INDEX idx_user_agent_name ON user (agent_name);
CREATE TABLE message (
    agent_name TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    message TEXT,
    content TEXT NOT NULL,
    kind TEXT,
    satoshis INTEGER,
    extra_inputs TEXT,
    extra_outputs TEXT,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (agent_name, thread_id, idx, user_id)
);
CREATE INDEX idx_message_agent_name ON message (agent_name);
CREATE INDEX idx_message_thread_id ON message (thread_id);
"""


def build_agentstr(path: Path, schema: str = AGENTSTR_SCHEMA) -> None:
    """An agentstr database with two agents, as agentstr's own methods would write it."""
    with sqlite3.connect(path) as conn:
        conn.executescript(schema)
        conn.executemany(
            "INSERT INTO user VALUES (?, ?, ?, ?)",
            [("bot", "alice", 1000, "t-a"), ("bot", "bob", 0, None), ("other", "alice", 5, "x")],
        )
        rows = [
            ("bot", "t-a", 0, "alice", "user", "hello", "hello", "request", None, None, None),
            (
                "bot",
                "t-a",
                1,
                "alice",
                "agent",
                "pay me",
                '{"amount": 10}',
                "requires_payment",
                10,
                json.dumps({"k": [1, 2]}),
                json.dumps({"invoice": "lnbc"}),
            ),
            ("bot", "t-a", 2, "alice", "user", None, "", None, None, "", None),
            ("bot", "t-b", 0, "bob", "user", "q", "q", "request", None, None, None),
            ("other", "t-a", 0, "alice", "user", "same id", "x", "request", None, None, None),
        ]
        conn.executemany(
            "INSERT INTO message VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            # agentstr writes datetime.now(timezone.utc).isoformat()
            [(*row, f"2025-03-0{1 + row[2]}T12:00:00.123456+00:00") for row in rows],
        )


def test_import_agentstr(backend: str, db_url: URL, tmp_path: Path) -> None:
    source = tmp_path / "agentstr.db"
    build_agentstr(source)
    target = url_arg(db_url)

    report = json_out("import-agentstr", str(source), "--url", target)
    assert report["verified"] is True
    assert {k: (v["source"], v["inserted"]) for k, v in report["counts"].items()} == {
        "user": (3, 3),
        "thread": (3, 3),
        "message": (5, 5),
    }
    again = json_out("import-agentstr", str(source), "--url", target)
    assert {k: v["inserted"] for k, v in again["counts"].items()} == {
        "user": 0,
        "thread": 0,
        "message": 0,
    }

    async def check() -> None:
        bot = Database(target, agent_name="bot")
        try:
            alice = await bot.get_user("alice")
            assert (alice.available_balance, alice.current_thread_id) == (1000, "t-a")
            messages = await bot.get_messages("t-a", "alice")
            assert [m.idx for m in messages] == [0, 1, 2]
            assert messages[1].extra_inputs == {"k": [1, 2]}
            assert messages[1].extra_outputs == {"invoice": "lnbc"}
            assert messages[1].satoshis == 10
            assert messages[1].content == '{"amount": 10}'
            assert (messages[2].message, messages[2].kind, messages[2].extra_inputs) == (
                "",
                "request",
                {},
            )
            assert messages[0].created_at.isoformat() == "2025-03-01T12:00:00.123456+00:00"
            new = await bot.add_message("t-a", "alice", "user", message="next")
            assert new.idx == 3
        finally:
            await bot.close()
        other = Database(target, agent_name="other")
        try:
            assert (await other.get_user("alice")).available_balance == 5
            assert len(await other.get_messages("t-a", "alice")) == 1
        finally:
            await other.close()

    asyncio.run(check())


def test_null_agent_name_becomes_the_default_agent(tmp_path: Path) -> None:
    source = tmp_path / "nullable.db"
    build_agentstr(source, AGENTSTR_SCHEMA.replace("agent_name TEXT NOT NULL", "agent_name TEXT"))
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE user SET agent_name = NULL WHERE agent_name = 'other'")
        conn.execute("UPDATE message SET agent_name = NULL WHERE agent_name = 'other'")
    target = str(tmp_path / "t.db")
    report = json_out("import-agentstr", str(source), "--url", target, "--agent", "")
    assert report["counts"]["message"]["inserted"] == 1

    async def check() -> None:
        default = Database(target)
        try:
            assert (await default.get_user("alice")).available_balance == 5
            assert [m.message for m in await default.get_messages("t-a", "alice")] == ["same id"]
        finally:
            await default.close()

    asyncio.run(check())


def test_colliding_positions_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "dup.db"
    build_agentstr(source)
    with sqlite3.connect(source) as conn:
        conn.execute(
            "INSERT INTO message VALUES ('bot', 't-a', 1, 'mallory', 'user', 'x', 'x',"
            " 'request', NULL, NULL, NULL, '2025-03-01T00:00:00')"
        )
    target = tmp_path / "t.db"
    result = run_cli("import-agentstr", str(source), "--url", str(target))
    assert result.exit_code == 1
    assert "share one (agent, thread, idx)" in result.stderr


def test_not_an_agentstr_database(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    result = run_cli("import-agentstr", str(other), "--url", str(tmp_path / "t.db"))
    assert result.exit_code == 1
    assert "not an agentstr database" in result.stderr
