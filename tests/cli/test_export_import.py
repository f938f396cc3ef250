"""``convostore export`` / ``import``: exact round trips on every backend, idempotent imports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from sqlalchemy import URL

from convostore import ContextMessage, Database, SQLAlchemyContextStore, connect
from convostore.transfer import EXPORT_FORMAT, EXPORT_VERSION, RECORD_TYPES
from tests.cli.conftest import json_out, ok, records, run_cli, url_arg


def test_round_trip_through_backend(seeded: str, db_url: URL, tmp_path: Path) -> None:
    """SQLite → export → import into the backend → export: the same records, byte for byte."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    ok("export", "--url", seeded, "--output", str(first))
    header = orjson.loads(first.read_bytes().splitlines()[0])
    assert header["format"] == EXPORT_FORMAT
    assert header["version"] == EXPORT_VERSION
    assert header["counts"] == {
        "user": 1,
        "thread": 3,
        "message": 4,
        "session": 2,
        "context_message": 3,
        "langgraph_checkpoint": 0,
        "langgraph_blob": 0,
        "langgraph_write": 0,
    }

    target = url_arg(db_url)
    report = json_out("import", str(first), "--url", target)
    assert report["verified"] is True
    present = {name: count for name, count in header["counts"].items() if count}
    assert {k: v["inserted"] for k, v in report["counts"].items()} == present

    ok("export", "--url", target, "--output", str(second))
    assert first.read_bytes().splitlines()[1:] == second.read_bytes().splitlines()[1:]

    again = json_out("import", str(first), "--url", target)
    assert all(c["inserted"] == 0 for c in again["counts"].values())
    assert {k: v["skipped"] for k, v in again["counts"].items()} == present

    async def continues() -> None:
        # Counters were restored: new writes land after the imported positions.
        engine = await connect(target)
        try:
            store = SQLAlchemyContextStore(engine, project="/work/alpha", session_id="s-1")
            await store.append(ContextMessage(role="user", content=[]))
            assert len(await store.get_history()) == 3
        finally:
            await engine.dispose()
        bot = Database(target, agent_name="bot")
        try:
            message = await bot.add_message("t-1", "alice", "user", message="after")
            assert message.idx == 2
            assert (await bot.get_user("alice")).available_balance == 250
        finally:
            await bot.close()

    asyncio.run(continues())


def test_export_to_stdout_and_import_from_stdin(seeded: str, tmp_path: Path) -> None:
    exported = ok("export", "--url", seeded)
    lines = exported.stdout_bytes.splitlines()
    assert orjson.loads(lines[0])["format"] == EXPORT_FORMAT
    # The seeded database holds no LangGraph checkpoints (tests/frameworks/test_langgraph.py
    # exports and imports those).
    core = {name for name in RECORD_TYPES if not name.startswith("langgraph_")}
    assert {orjson.loads(line)["type"] for line in lines[1:]} == core
    assert "verified" in exported.stderr  # the summary stays off the data stream

    target = str(tmp_path / "copy.db")
    report = json_out("import", "-", "--url", target, input=exported.stdout_bytes)
    assert report["counts"]["context_message"]["inserted"] == 3


def test_payloads_are_decoded_json_and_times_are_utc(seeded: str, tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    ok("export", "--url", seeded, "-o", str(out))
    by_type: dict[str, list[dict[str, object]]] = {}
    for record in records(out):
        by_type.setdefault(record["type"], []).append(record)
    paid = next(m for m in by_type["message"] if m["kind"] == "requires_payment")
    assert paid["extra_outputs"] == {"invoice": "lnbc1", "nested": [1, 2.5, None]}
    assert paid["satoshis"] == 21
    first = by_type["context_message"][0]
    assert first["content"] == [{"type": "text", "text": "Hello [b]x[/b]"}]
    assert all(str(r["created_at"]).endswith("Z") for rs in by_type.values() for r in rs)
    assert {t["agent_name"] for t in by_type["thread"]} == {"", "bot"}


def test_invalid_files_are_refused_with_the_line(tmp_path: Path) -> None:
    target = str(tmp_path / "t.db")
    bad = tmp_path / "bad.jsonl"

    bad.write_text('{"format": "something-else"}\n')
    result = run_cli("import", str(bad), "--url", target)
    assert result.exit_code == 1
    assert "line 1" in result.stderr

    bad.write_text('{"format": "convostore-export", "version": 99}\n')
    assert "version 99" in run_cli("import", str(bad), "--url", target).stderr

    header = '{"format": "convostore-export", "version": 1}\n'
    bad.write_text(header + '{"type": "session", "project": "p"}\n')
    result = run_cli("import", str(bad), "--url", target)
    assert result.exit_code == 1
    assert "line 2 (session): missing fields" in result.stderr

    message = (
        '{"type": "context_message", "project": "p", "session_id": "s", "position": 0,'
        ' "role": "robot", "content": [], "created_at": "2024-01-01T00:00:00Z"}\n'
    )
    missing = run_cli("import", "--url", target, str(tmp_path / "missing.jsonl"))
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: cannot read")
    bad.write_text(header + message)
    result = run_cli("import", str(bad), "--url", target)
    assert result.exit_code == 1
    assert "line 2 (context_message): role must be one of" in result.stderr
    assert "Traceback" not in result.output


def test_truncated_file_is_detected(seeded: str, tmp_path: Path) -> None:
    full = tmp_path / "full.jsonl"
    ok("export", "--url", seeded, "-o", str(full))
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"\n".join(full.read_bytes().splitlines()[:-1]) + b"\n")
    result = run_cli("import", str(cut), "--url", str(tmp_path / "t.db"))
    assert result.exit_code == 1
    assert "truncated" in result.stderr


def test_hand_written_file_without_parent_records(tmp_path: Path) -> None:
    """Messages without their thread/session records still import, with counters set."""
    source = tmp_path / "hand.jsonl"
    lines = [
        {"format": "convostore-export", "version": 1},
        {
            "type": "context_message",
            "project": "p",
            "session_id": "s",
            "position": 4,
            "role": "user",
            "content": [{"type": "text", "text": "hi"}],
            "created_at": "2024-05-01T10:00:00+02:00",
        },
        {
            "type": "message",
            "agent_name": "a",
            "thread_id": "t",
            "idx": 7,
            "user_id": "u",
            "role": "user",
            "kind": "request",
            "message": "m",
            "content": "",
            "satoshis": None,
            "extra_inputs": {},
            "extra_outputs": {},
            "created_at": "2024-05-01T08:00:00Z",
        },
    ]
    source.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    target = str(tmp_path / "t.db")
    ok("import", str(source), "--url", target)
    out = tmp_path / "out.jsonl"
    ok("export", "--url", target, "-o", str(out))
    exported = {r["type"]: r for r in records(out)}
    assert exported["thread"]["next_idx"] == 8
    assert exported["session"]["next_position"] == 5
    assert exported["context_message"]["created_at"] == "2024-05-01T08:00:00.000000Z"
