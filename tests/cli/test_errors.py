"""Every command reports a bad configuration as one line on stderr, never a traceback."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from convostore.cli import app
from tests.cli.conftest import run_cli

# What each required parameter gets, so that the command reaches its --url.
EXTRA: dict[tuple[str, ...], list[str]] = {("search",): ["hello", "--project", "/p"]}
VALUES = {
    "revision": "base",
    "older_than": "30d",
    "session_id": "s-1",
    "thread_id": "t-1",
    "agent": "bot",
}


def commands() -> list[tuple[list[str], Any]]:
    """Every leaf command that takes --url, by its words on the command line."""
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, words: list[str]) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in sorted(children.items()):
                walk(child, [*words, name])
        elif any(param.name == "url" for param in command.params):
            found.append((words, command))

    walk(typer.main.get_command(app), [])
    return found


def arguments(command: Any, existing_file: Path) -> list[str]:
    out: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        value = VALUES.get(param.name, str(existing_file))
        out += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    return out


@pytest.mark.parametrize(
    ("words", "command"), commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_an_unsupported_url_is_one_line(
    words: list[str], command: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOSTORE_ENCRYPTION_KEYS", "k1:" + base64.b64encode(bytes(32)).decode())
    existing = tmp_path / "input.jsonl"
    existing.write_text("")
    extra = EXTRA.get(tuple(words), [])
    argv = [*words, *arguments(command, existing), *extra, "--url", "oracle://app@db/x"]
    result = run_cli(*argv)
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert (
        result.stderr.strip()
        == "error: unsupported database backend 'oracle' in 'oracle://app@db/x'"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "convostore.cli", "stats", "--url", "oracle://app@db/x"],
        ["-m", "convostore.migrate", "upgrade", "--url", "oracle://app@db/x"],
    ],
    ids=["convostore", "python -m convostore.migrate"],
)
def test_the_installed_entry_points_print_one_line(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unsupported database backend 'oracle' in 'oracle://app@db/x'"
    ]
