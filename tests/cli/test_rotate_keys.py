"""``rotate-keys``, and the other commands reading an encrypted database with the env's keys."""

from __future__ import annotations

import pytest

from convostore.encryption import CLEAR_TEXT_ENV, KEY_ENV, KEYS_ENV, generate_key
from tests.cli.conftest import json_out, ok, run_cli

OLD, NEW = generate_key(), generate_key()


def test_rotate_keys_encrypts_rotates_and_the_commands_read_with_the_env(
    seeded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = json_out("sessions", "show", "s-1", "--url", seeded)
    missing = run_cli("rotate-keys", "--url", seeded)
    assert missing.exit_code == 1
    assert KEYS_ENV in missing.stderr

    monkeypatch.setenv(KEYS_ENV, f"old:{OLD}")
    first = json_out("rotate-keys", "--url", seeded, "--batch-size", "2")
    # 3 context messages; 4 agent messages x 3 payloads.
    assert (first["current"], first["total"], first["changed_meanwhile"]) == ("old", 15, 0)
    assert json_out("sessions", "show", "s-1", "--url", seeded) == plain

    monkeypatch.setenv(KEYS_ENV, f"old:{OLD},new:{NEW}")
    monkeypatch.setenv(KEY_ENV, "new")
    shown = ok("rotate-keys", "--url", seeded)
    assert "15 values rewritten to key 'new'" in shown.stdout
    assert "context_messages:" in shown.stderr  # progress, per batch

    # The old key is gone: everything still reads, and nothing is left to do.
    monkeypatch.setenv(KEYS_ENV, f"new:{NEW}")
    assert json_out("sessions", "show", "s-1", "--url", seeded) == plain
    assert json_out("threads", "show", "t-1", "--agent", "bot", "--url", seeded)["messages"]
    assert json_out("stats", "--url", seeded)["payload_json_bytes"] > 0
    assert json_out("rotate-keys", "--url", seeded)["total"] == 0

    # Store nothing in clear: message texts sealed, previews dropped.
    monkeypatch.setenv(CLEAR_TEXT_ENV, "0")
    assert json_out("rotate-keys", "--url", seeded)["rewritten"] == {
        "messages.message": 4,
        "context_tokens.preview": 2,
        "search_text": 7,  # every message's words leave the search index
    }
    assert {s["preview"] for s in json_out("sessions", "list", "--url", seeded)} == {"(no preview)"}

    # Without the keys, reads fail with one typed line, never garbage.
    monkeypatch.delenv(KEYS_ENV)
    monkeypatch.delenv(CLEAR_TEXT_ENV)
    locked = run_cli("sessions", "show", "s-1", "--url", seeded)
    assert locked.exit_code == 1
    assert "'new'" in locked.stderr

    monkeypatch.setenv(KEYS_ENV, f"new:{NEW}")
    back = json_out("rotate-keys", "--decrypt", "--url", seeded)
    assert (back["current"], back["total"]) == (None, 15 + 4)
    monkeypatch.delenv(KEYS_ENV)
    assert json_out("sessions", "show", "s-1", "--url", seeded) == plain
