"""``convostore db``: the packaged migrations on every backend, from any directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import URL

from convostore import migrate
from tests.cli.conftest import json_out, ok, run_cli, url_arg


def test_upgrade_check_downgrade(
    backend: str, fresh_server_database: URL | None, tmp_path: Path
) -> None:
    url = url_arg(fresh_server_database) if fresh_server_database else str(tmp_path / "new.db")
    assert "upgraded from (empty) to" in ok("db", "upgrade", "--url", url).stdout
    state = json_out("db", "current", "--url", url)
    assert state["current"] == state["head"] == migrate.head()
    assert state["at_head"] is True
    assert json_out("db", "check", "--url", url)["ok"] is True
    assert "already at" in ok("db", "upgrade", "--url", url).stdout

    ok("db", "downgrade", "base", "--yes", "--url", url)
    assert json_out("db", "current", "--url", url)["current"] is None
    failed = run_cli("db", "check", "--url", url)
    assert failed.exit_code == 1
    assert "expected" in failed.stderr


def test_downgrade_to_base_needs_confirmation(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    ok("db", "upgrade", "--url", path)
    refused = run_cli("db", "downgrade", "base", "--url", path)
    assert refused.exit_code == 1
    assert "--yes" in refused.stderr
    assert json_out("db", "current", "--url", path)["at_head"] is True


def test_runs_from_any_directory_as_a_module(tmp_path: Path) -> None:
    """End to end: a new process, outside the checkout, finds the packaged migrations."""
    target = tmp_path / "elsewhere.db"
    done = subprocess.run(
        [sys.executable, "-m", "convostore.cli", "db", "upgrade", "--url", str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert target.exists()
    shown = subprocess.run(
        [sys.executable, "-m", "convostore.cli", "db", "current"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": "", "CONVOSTORE_DATABASE_URL": f"sqlite:///{target}"},
    )
    assert shown.returncode == 0, shown.stderr
    assert migrate.head() in shown.stdout


def test_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    for args in (("db", "current"), ("sessions", "list"), ("stats",)):
        result = run_cli(*args, "--url", str(missing))
        assert result.exit_code == 1
        assert result.stderr.startswith("error: no database at")
        assert "Traceback" not in result.output
    assert not missing.exists()


def test_password_is_never_printed() -> None:
    url = "postgresql://someone:s3cr3t-pw@127.0.0.1:1/none"
    for args in (("db", "current"), ("db", "upgrade"), ("stats",), ("sessions", "list")):
        result = run_cli(*args, "--url", url)
        assert result.exit_code == 1, result.output
        assert "s3cr3t-pw" not in result.output
        assert "Traceback" not in result.output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    path = str(tmp_path / "u.db")
    assert run_cli("prune", "--url", path).exit_code == 2
    assert run_cli("prune", "--older-than", "3 fortnights", "--url", path).exit_code == 2
    both = run_cli("prune", "--older-than", "1d", "--project", "p", "--agent", "a", "--url", path)
    assert both.exit_code == 2
    assert run_cli("no-such-command").exit_code == 2
    assert run_cli("threads", "list", "--url", path).exit_code == 2  # --agent is required


def test_version() -> None:
    assert ok("--version").stdout.strip() == "0.1.0"
