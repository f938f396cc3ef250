"""The quickstart behind `make demo`: one process writes through both interfaces, another reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(step: str, cwd: Path) -> str:
    env = {
        k: v for k, v in os.environ.items() if k not in ("CONVOSTORE_DATABASE_URL", "DATABASE_URL")
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), step],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_writes_in_one_process_and_reads_in_another(tmp_path: Path) -> None:
    assert "wrote a thread for alice" in run("write", tmp_path)
    assert (tmp_path / "convostore.db").is_file()  # the default embedded database
    out = run("read", tmp_path)
    assert "alice: balance 95, current thread thread-1" in out
    assert "[0] user: What is 2 + 2?" in out
    assert "[1] agent: 4" in out
    assert "assistant: Hi! How can I help?" in out
    assert "tokens (in, out): (12, 7)" in out
    assert "session demo-session: 2 messages, 'Hello'" in out


def test_demo_twice_in_one_directory_reads_the_same(tmp_path: Path) -> None:
    """``make demo`` run again in the same checkout (the usual second try)."""
    run("write", tmp_path)
    first = run("read", tmp_path)
    run("write", tmp_path)
    assert run("read", tmp_path) == first
    assert "[2]" not in first
