"""``convostore search``: queries on both interfaces; ``convostore reindex``: the back-fill."""

from __future__ import annotations

import json
import sqlite3

from tests.cli.conftest import json_out, ok, run_cli


def test_search_a_project(seeded: str) -> None:
    hits = json_out("search", "hello", "--project", "/work/alpha", "--url", seeded)
    assert [(h["session_id"], h["position"], h["role"]) for h in hits] == [("s-1", 0, "user")]
    assert hits[0]["snippet"] == "Hello [b]x[/b]"
    assert hits[0]["highlights"] == [[0, 5]]
    assert json_out("search", "hello", "--project", "/work/beta", "--url", seeded) == []
    only = json_out(
        "search", "long", "--project", "/work/alpha", "--session", "s-1", "--url", seeded
    )
    assert [h["position"] for h in only] == [1]
    assert only[0]["snippet"].endswith("…")

    shown = ok("search", "hello", "--project", "/work/alpha", "--url", seeded).stdout
    assert "s-1 #0 user" in shown
    assert "[b]x[/b]" in shown  # user text is printed as text, never as markup
    assert (
        "no messages found"
        in ok("search", "absent", "--project", "/work/alpha", "--url", seeded).stdout
    )


def test_search_an_agent(seeded: str) -> None:
    hits = json_out("search", "thread", "--agent", "bot", "--url", seeded)
    assert [(h["thread_id"], h["user_id"], h["idx"]) for h in hits] == [("t-2", "carol", 0)]
    assert json_out("search", "hi", "--agent", "bot", "--user", "carol", "--url", seeded) == []
    assert [
        h["idx"]
        for h in json_out("search", "pay", "--agent", "bot", "--thread", "t-1", "--url", seeded)
    ] == [1]
    assert [
        h["thread_id"] for h in json_out("search", "default", "--agent", "", "--url", seeded)
    ] == ["t-9"]


def _forget_the_index(path: str) -> None:
    with sqlite3.connect(path) as conn:
        # Not indexed yet (revision 0007: the index catches up with rows above the mark).
        for index in ("context_search", "message_search"):
            conn.execute(f"INSERT INTO {index} ({index}) VALUES ('delete-all')")
            conn.execute(f"DELETE FROM {index}_docs")
        conn.execute("UPDATE search_state SET watermark = 0")


def test_reindex_indexes_old_messages(seeded: str) -> None:
    _forget_the_index(seeded)
    report = json_out("reindex", "--batch-size", "1", "--url", seeded)
    assert report == {"indexed": {"context_messages": 3, "messages": 4}}
    assert len(json_out("search", "hello", "--project", "/work/alpha", "--url", seeded)) == 1
    again = ok("reindex", "--url", seeded).stdout
    assert "indexed 0 context messages and 0 agent messages" in again


def test_search_backfill_still_reindexes_with_a_deprecation_message(seeded: str) -> None:
    """Kept for one release: the same work as ``reindex``, and a message on stderr saying
    what replaces it (stdout stays the JSON report)."""
    _forget_the_index(seeded)
    result = run_cli("search", "--backfill", "--batch-size", "2", "--json", "--url", seeded)
    assert result.exit_code == 0, result.stderr
    assert "deprecated" in result.stderr
    assert "convostore reindex" in result.stderr
    assert json.loads(result.stdout) == {"indexed": {"context_messages": 3, "messages": 4}}
    assert len(json_out("search", "hello", "--project", "/work/alpha", "--url", seeded)) == 1


def test_usage_errors(seeded: str) -> None:
    for args in (
        ["search", "--url", seeded],
        ["search", "x", "--url", seeded],
        ["search", "x", "--project", "/p", "--agent", "a", "--url", seeded],
        ["search", "x", "--project", "/p", "--user", "u", "--url", seeded],
        ["search", "x", "--agent", "a", "--session", "s", "--url", seeded],
        ["search", "x", "--backfill", "--url", seeded],
        ["reindex", "--batch-size", "0", "--url", seeded],
        ["reindex", "x", "--url", seeded],
    ):
        assert run_cli(*args).exit_code == 2, args
    bad = run_cli("search", "***", "--project", "/p", "--url", seeded)
    assert bad.exit_code == 1
    assert "no word" in bad.stderr
