"""``sessions``, ``threads``, ``stats`` and ``prune`` (the last two on every backend)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import URL

from tests.cli.conftest import json_out, ok, records, run_cli, seed, url_arg


def test_sessions_list_across_and_within_projects(seeded: str) -> None:
    every = json_out("sessions", "list", "--url", seeded)
    assert {(s["project"], s["session_id"], s["message_count"]) for s in every} == {
        ("/work/alpha", "s-1", 2),
        ("/work/beta", "s-2", 1),
    }
    alpha = json_out("sessions", "list", "--project", "/work/alpha", "--url", seeded)
    assert [(s["session_id"], s["input_tokens"], s["output_tokens"]) for s in alpha] == [
        ("s-1", 120, 45)
    ]
    assert alpha[0]["preview"] == "Hello [b]x[/b]"
    assert json_out("sessions", "list", "--project", "/nowhere", "--url", seeded) == []
    assert len(json_out("sessions", "list", "--limit", "1", "--url", seeded)) == 1

    table = ok("sessions", "list", "--url", seeded).stdout
    assert "/work/beta" in table
    assert "[b]x[/b]" in table  # user text is shown as text, never as rich markup


def test_sessions_show(seeded: str) -> None:
    shown = json_out("sessions", "show", "s-1", "--url", seeded)
    assert shown["project"] == "/work/alpha"
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]
    assert shown["messages"][1]["content"][1]["name"] == "search"

    text = ok("sessions", "show", "s-1", "--url", seeded).stdout
    assert "[0] user" in text
    assert "Hello [b]x[/b]" in text
    assert 'search({"q":0.1})' in text

    missing = run_cli("sessions", "show", "nope", "--url", seeded)
    assert missing.exit_code == 1
    assert "no session 'nope'" in missing.stderr
    wrong = run_cli("sessions", "show", "s-1", "--project", "/work/beta", "--url", seeded)
    assert wrong.exit_code == 1


def test_session_id_in_several_projects_needs_project(tmp_path: Path) -> None:
    source = tmp_path / "two.jsonl"
    lines: list[Any] = [{"format": "convostore-export", "version": 1}]
    for project in ("/a", "/b"):
        lines.append(
            {
                "type": "context_message",
                "project": project,
                "session_id": "same",
                "position": 0,
                "role": "user",
                "content": [{"type": "text", "text": project}],
                "created_at": "2025-01-01T00:00:00Z",
            }
        )
    source.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    url = str(tmp_path / "t.db")
    ok("import", str(source), "--url", url)
    ambiguous = run_cli("sessions", "show", "same", "--url", url)
    assert ambiguous.exit_code == 1
    assert "pass --project" in ambiguous.stderr
    chosen = json_out("sessions", "show", "same", "--project", "/b", "--url", url)
    assert chosen["messages"][0]["content"][0]["text"] == "/b"


def test_threads_list_and_show(seeded: str) -> None:
    threads = json_out("threads", "list", "--agent", "bot", "--url", seeded)
    assert {(t["thread_id"], t["user_id"], t["message_count"]) for t in threads} == {
        ("t-1", "alice", 2),
        ("t-2", "carol", 1),
    }
    only = json_out("threads", "list", "--agent", "bot", "--user", "carol", "--url", seeded)
    assert [t["thread_id"] for t in only] == ["t-2"]
    default = json_out("threads", "list", "--agent", "", "--url", seeded)
    assert [(t["thread_id"], t["user_id"]) for t in default] == [("t-9", "bob")]

    shown = json_out("threads", "show", "t-1", "--agent", "bot", "--url", seeded)
    assert [(m["idx"], m["role"], m["kind"]) for m in shown["messages"]] == [
        (0, "user", "request"),
        (1, "agent", "requires_payment"),
    ]
    assert shown["messages"][1]["extra_outputs"]["invoice"] == "lnbc1"
    by_user = json_out(
        "threads", "show", "t-1", "--agent", "bot", "--user", "alice", "--url", seeded
    )
    assert by_user["messages"] == shown["messages"]

    text = ok("threads", "show", "t-1", "--agent", "bot", "--url", seeded).stdout
    assert "21 sats" in text
    assert "hi ✓" in text

    missing = run_cli("threads", "show", "t-1", "--agent", "other", "--url", seeded)
    assert missing.exit_code == 1
    assert "no messages in thread 't-1'" in missing.stderr


def test_stats(db_url: URL) -> None:
    """On every backend: stats read one snapshot through the transaction runner."""
    seed(db_url)
    seeded = url_arg(db_url)
    stats = json_out("stats", "--url", seeded)
    assert stats["rows"] == {
        "users": 1,
        "threads": 3,
        "messages": 4,
        "context_tokens": 2,
        "context_messages": 3,
    }
    assert (stats["sessions"], stats["threads"], stats["projects"], stats["agents"]) == (2, 3, 2, 2)
    # The 2.4 kB answer is compressed, so JSON outweighs what is stored.
    assert stats["payload_json_bytes"] > 2400
    assert stats["compression_ratio"] > 2
    assert "compression ratio" in ok("stats", "--url", seeded).stdout


def _aged_export(path: Path, now: datetime) -> None:
    """Two sessions and two threads: one of each 40 days old, one an hour old."""
    lines: list[Any] = [{"format": "convostore-export", "version": 1}]
    for name, age in (("old", timedelta(days=40)), ("new", timedelta(hours=1))):
        at = (now - age).isoformat()
        lines += [
            {
                "type": "context_message",
                "project": "/p",
                "session_id": name,
                "position": 0,
                "role": "user",
                "content": [],
                "created_at": at,
            },
            {
                "type": "message",
                "agent_name": "bot",
                "thread_id": name,
                "idx": 0,
                "user_id": "u",
                "role": "user",
                "kind": "request",
                "message": name,
                "content": "",
                "satoshis": None,
                "extra_inputs": {},
                "extra_outputs": {},
                "created_at": at,
            },
        ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))


@pytest.mark.parametrize(
    ("scope", "sessions", "threads"),
    [((), 1, 1), (("--project", "/p"), 1, 0), (("--agent", "bot"), 0, 1)],
)
def test_prune(
    db_url: URL, tmp_path: Path, scope: tuple[str, ...], sessions: int, threads: int
) -> None:
    """On every backend, since the re-check under the delete locks rows (FOR UPDATE)."""
    url = url_arg(db_url)
    source = tmp_path / "aged.jsonl"
    _aged_export(source, datetime.now(UTC))
    ok("import", str(source), "--url", url)

    dry = json_out("prune", "--older-than", "30d", *scope, "--dry-run", "--url", url)
    assert (dry["sessions"], dry["threads"], dry["dry_run"]) == (sessions, threads, True)
    assert (dry["context_messages"], dry["messages"]) == (sessions, threads)
    assert json_out("stats", "--url", url)["rows"]["context_tokens"] == 2

    done = json_out("prune", "--older-than", "30d", *scope, "--url", url)
    assert (done["sessions"], done["threads"]) == (sessions, threads)
    ok("export", "--url", url, "-o", str(tmp_path / "left.jsonl"))
    left = records(tmp_path / "left.jsonl")
    kept = {(r["type"], r.get("session_id") or r.get("thread_id")) for r in left}
    assert ("session", "new") in kept
    assert ("thread", "new") in kept
    assert (("session", "old") in kept) == (sessions == 0)
    assert (("thread", "old") in kept) == (threads == 0)
    again = json_out("prune", "--older-than", "30d", *scope, "--url", url)
    assert (again["sessions"], again["threads"]) == (0, 0)
    assert "deleted 0 sessions" in ok("prune", "--older-than", "2w", *scope, "--url", url).stdout
